"""Seconds to a trusted error bar, per sampling method × precision, on the linear-Gaussian oracle.

The problem of tests/test_nn_linear_gaussian.py (n = 20, d = 3, nβ = 5, γ = 2; 5 observables × 3
fields, χ exact from :class:`spectro.nn.oracles.LinearGaussianOracle`). For each case: a pilot run
of ``--pilot`` draws gives every χ entry's stderr se_j and the sampling seconds t (the whole
``run_susceptibility`` call); the draws needed for the target stderr s* on *every* entry are
D = pilot·max_j (se_j/s*)² (ESS grows linearly with draws), the predicted seconds t·D/pilot. The
check run with D draws (capped at ``--cap``) must then reach max_j se_j ≤ 1.25·s* (the stderr is
itself estimated), and agree with the exact χ (max |z| < 4). s* = ``--target`` × max_j |χ_j|.

Baseline: ``sgld`` is devinterp's SGLD update bit for bit (tests/test_nn_kernels.py), so its
draws, ESS and error bars are devinterp's; the seconds here are spectro's loop, not devinterp's
(devinterp's wall time on the reference job: benchmarks/bench_vs_devinterp.py). The ratio printed
last is baseline seconds / best method's seconds, each from its check run (t_check·(max se/s*)²: the
check run's measured ESS per second; exact where the check landed on s*, extrapolated otherwise).

    python benchmarks/time_to_stderr.py [--pilot 150] [--target 0.1] [--cap 3000] [--cases sgld,sghmc,...]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CASES = {  # name: (SamplerConfig settings, ε, batch size)
    "sgld": (dict(method="sgld"), 3e-3, None),
    "sghmc": (dict(method="sghmc", options={"friction": 2.0}), 0.04, None),
    "rmsprop_sgld_warmup": (dict(method="rmsprop_sgld_warmup"), 1e-3, None),
    "sgld_minibatch": (dict(method="sgld"), 2e-3, 5),
    "sgld_minibatch_cv": (dict(method="sgld", control_variate=True), 2e-3, 5),
}


def run(case: str, precision: str, draws: int, seed: int):
    from test_nn_linear_gaussian import GAMMA, NBETA, _problem, _specs, squared_loss

    from spectro.nn import ProbeSet, SamplerConfig, run_susceptibility
    from spectro.nn.oracles import LinearGaussianOracle

    kw, eps, batch = CASES[case]
    model, X, y, w_star = _problem()
    observables, fields, O, F = _specs()
    burn = 300 if case == "rmsprop_sgld_warmup" else 100
    cfg = SamplerConfig(**kw, epsilon=eps, gamma=GAMMA, nbeta=NBETA, chains=16, draws=draws, steps_per_draw=1,
                        burn_in=burn, batch_size=batch, seed=seed, n_batches=None, precision=precision,
                        master_dtype=torch.float32)
    t0 = time.perf_counter()
    sus = run_susceptibility(model, squared_loss, (X, y), ProbeSet({"train": (X, y)}), observables, fields, cfg)
    secs = time.perf_counter() - t0
    exact = LinearGaussianOracle(X.numpy(), y.numpy(), w_star.numpy(), NBETA, GAMMA).susceptibility(O, F)
    return sus, exact, secs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pilot", type=int, default=150)
    ap.add_argument("--target", type=float, default=0.1)
    ap.add_argument("--cap", type=int, default=3000)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--precisions", default="fp32,bf16")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    flags = ""
    if Path("/proc/cpuinfo").exists():
        words = set(Path("/proc/cpuinfo").read_text().split())
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma") if f in words)
    print(f"machine: {platform.processor() or platform.machine()}; ISA: {flags}; torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}; 1 thread")
    rows, agree = [], True
    for precision in a.precisions.split(","):
        for case in a.cases.split(","):
            sus, exact, t_pilot = run(case, precision, a.pilot, seed=1)
            target = a.target * np.abs(exact).max()
            need = a.pilot * float(np.max(sus.stderr / target) ** 2)
            predicted = t_pilot * need / a.pilot
            draws = int(min(a.cap, max(a.pilot, math.ceil(need))))
            sus2, _, t_check = run(case, precision, draws, seed=2)
            worst = float(np.max(sus2.stderr) / target)
            z = float(np.max(np.abs(sus2.z_scores(exact))))
            ok = z < 4 and (worst <= 1.25 or draws == a.cap)
            agree &= z < 4
            rows.append((case, precision, t_check * worst**2, draws, t_check, worst, z, ok))
            print(f"{case:22s} {precision}  pilot {t_pilot:6.1f} s -> predicted {predicted:7.1f} s ({need:7.0f} draws); "
                  f"check {draws} draws {t_check:6.1f} s: max se/s* = {worst:.2f}, max|z| vs exact = {z:.2f} "
                  f"{'ok' if ok else 'NOT REACHED'}; seconds to s* from the check run's ESS: {t_check * worst**2:.1f}",
                  flush=True)
    base = {r[1]: r[2] for r in rows if r[0] == "sgld"}
    best = min(rows, key=lambda r: r[2])
    print(f"agree: {'yes' if agree else 'no'} (every case's chi within 4 stderr of the exact chi)")
    ratio = base.get(best[1], float("nan")) / best[2]
    print(f"time-to-stderr ratio: {ratio:.2f} (sgld {best[1]} / {best[0]} {best[1]}: seconds to max stderr "
          f"{a.target} x max|chi| from each check run, t_check x (max se / s*)^2; devinterp's own loop not timed here)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
