"""Linear response measured directly on a transformer (issue 24, item 1; spectro.nn.reweighting).

For each component (the full model and weight-restricted heads: each restricted posterior is its
own reweighting experiment) sample the posterior of L_n + h·ψ_a at h = ±δ for the chosen fields
(per-domain ``dL:<domain>`` and a few per-token point masses) with the h = 0 run's seed (common
random numbers), and compare FD = (⟨φ⟩_{+δ} − ⟨φ⟩_{−δ})/(2δ·nβ) with χ = −Cov(φ, ψ_a) at h = 0 for
every observable φ (mean loss of the base probes and of each domain). δ_a = c/(nβ·sd_0(ψ_a)) for
two c. z-scores use the paired (CRN) calibrated error; the chain jackknife is reported beside it.
Writes rows.csv, linear_response.json (rows, summary, δ's, timings, command, machine) and
linear_response.png (FD against χ with error bars; the z histogram).

    python experiments/validate_linear_response.py --checkpoint builtin:tiny --out runs/validate-lr-tiny
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_error_bars import job_config, machine  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="builtin:tiny")
    p.add_argument("--corpus", default="fixture")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--components", nargs="+", default=["full", "l0h1", "l1h2"])
    p.add_argument("--domain-fields", nargs="+", default=None, help="per-domain fields dL:<domain> to reweight (default: all)")
    p.add_argument("--tokens", type=int, default=2, help="per-token fields: this many (first domain, sample 0, spread positions)")
    p.add_argument("--positions", type=int, nargs="+", default=None, help="per-token field positions (instead of --tokens)")
    p.add_argument("--c", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--burn-in", type=int, default=100)
    p.add_argument("--steps-per-draw", type=int, default=2)
    p.add_argument("--base", type=int, default=8, help="base probe windows")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--per-domain", type=int, default=2)
    p.add_argument("--context", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="no sampling: combine these linear_response.json records (runs of other components) into --out")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    args.epsilon = args.gamma = args.nbeta = None
    import torch

    from spectro.jobs.nn_config import JobConfig
    from spectro.jobs.nn_prepare import _prepare
    from spectro.models import head_restriction, next_token_loss
    from spectro.nn.fields import SubsetFields, TokenPointMasses
    from spectro.nn.observables import MeanLoss
    from spectro.nn.reweighting import ResponseConfig, linear_response

    torch.set_num_threads(args.threads)
    cfg = job_config(args, args.seed)
    cfg["sampler"].update({"burn_in": args.burn_in, "steps_per_draw": args.steps_per_draw})
    cfg["probes"]["base"] = args.base
    prep = _prepare(JobConfig.from_dict(cfg), False, lambda s: print(s, file=sys.stderr))
    obs = [MeanLoss("base")] + [MeanLoss(d) for d in prep.domains]
    n_pos = prep.context - 1
    positions = args.positions or [int(x) for x in np.linspace(2, n_pos - 1, args.tokens).round()]
    unknown = sorted(set(args.domain_fields or []) - set(prep.domains))
    if unknown or not all(0 <= t < n_pos for t in positions):
        print(f"validate_linear_response: unknown domain {unknown} or position outside 0..{n_pos - 1}", file=sys.stderr)
        return 2
    fields = [SubsetFields({d: d for d in prep.domains}, base="base"),
              TokenPointMasses((prep.domains[0], [0]), base="base", positions=positions)]
    chosen = [prep.domains.index(d) for d in args.domain_fields or prep.domains]
    chosen += [len(prep.domains) + j for j in range(len(positions))]
    rows, metas = [], {}
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for name in args.components:
        if name == "full":
            restriction = None
        else:
            layer, head = (int(x) for x in name[1:].split("h"))
            restriction = head_restriction(prep.model, layer, head)
        rs, meta = linear_response(prep.model, next_token_loss, prep.train, prep.probe, obs, fields, prep.sampler,
                                   ResponseConfig(fields=chosen, c=tuple(args.c)), restriction=restriction,
                                   component=name, log=lambda s: print(s, file=sys.stderr, flush=True))
        rows += rs
        metas[name] = meta
        summary = write(args, cfg, rows, metas, t0)  # after every component: a cut-short run keeps its record
    s = summary["z"]["all"]
    print(f"{s['n']} entries: rms z {s['rms_z']:.2f}, max |z| {s['max_abs_z']:.2f} (jackknife: rms "
          f"{summary['z_jackknife']['all']['rms_z']:.2f}, max {summary['z_jackknife']['all']['max_abs_z']:.2f}); "
          f"{s['flagged']} flagged")
    return 0


def write(args, cfg, rows, metas, t0) -> dict:
    return save(args.out, rows, {"command": " ".join([sys.executable, *sys.argv]), "config": cfg, "meta": metas,
                                 "seconds": time.perf_counter() - t0, "machine": machine(),
                                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": os.getloadavg()})


def save(out: Path, rows, record: dict) -> dict:
    """rows.csv, linear_response.json (the record, the summary, the rows) and linear_response.png; the summary."""
    from spectro.nn.reweighting import summarize

    summary = {"z": summarize(rows, "z"), "z_jackknife": summarize(rows, "z_jackknife")}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rows.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0].to_dict()))
        w.writeheader()
        for r in rows:
            w.writerow(r.to_dict())
    record = {**record, "summary": summary, "rows": [r.to_dict() for r in rows]}
    (out / "linear_response.json").write_text(json.dumps(record, indent=1))
    plot(rows, out / "linear_response.png")
    return summary


def merge(records: list[Path], out: Path) -> int:
    """One record of several runs (e.g. components run as separate processes): rows combined, each
    part's command, config, meta, machine and date kept."""
    from spectro.nn.reweighting import ResponseRow

    parts = [json.loads(Path(r).read_text()) for r in records]
    rows = [ResponseRow(**d) for part in parts for d in part["rows"]]
    summary = save(out, rows, {"command": " ".join([sys.executable, *sys.argv]),
                               "parts": [{k: v for k, v in part.items() if k != "rows"} for part in parts]})
    s = summary["z"]["all"]
    print(f"{s['n']} entries: rms z {s['rms_z']:.2f}, max |z| {s['max_abs_z']:.2f}; {s['flagged']} flagged")
    return 0


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4.2))
    comps = sorted({r.component for r in rows})
    for j, c in enumerate(comps):
        rs = [r for r in rows if r.component == c]
        ax[0].errorbar([r.chi for r in rs], [r.fd for r in rs], yerr=[r.diff_se for r in rs], fmt="o", ms=3,
                       color=f"C{j}", label=c, alpha=0.8)
    lim = max(abs(r.chi) for r in rows) * 1.1
    ax[0].plot([-lim, lim], [-lim, lim], "k-", lw=0.5)
    ax[0].set_xlabel("χ = −Cov(φ, ψ) at h = 0")
    ax[0].set_ylabel("(⟨φ⟩₊δ − ⟨φ⟩₋δ) / (2δ·nβ)")
    ax[0].set_xscale("symlog", linthresh=lim / 100)
    ax[0].set_yscale("symlog", linthresh=lim / 100)
    ax[0].legend(fontsize=8)
    z = np.array([r.z for r in rows])
    ax[1].hist(z, bins=np.linspace(-4.5, 4.5, 37), density=True, alpha=0.7, label=f"z (rms {np.sqrt(np.mean(z**2)):.2f})")
    x = np.linspace(-4.5, 4.5, 200)
    ax[1].plot(x, np.exp(-x**2 / 2) / np.sqrt(2 * np.pi), "k-", lw=1, label="N(0, 1)")
    ax[1].set_xlabel("z = (FD − χ) / paired stderr")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
