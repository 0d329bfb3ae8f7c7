"""Weight-restricted per-token susceptibilities: spectro against devinterp 2.0.1, in one run.

The job (identical for both; Baker et al. 2025's estimator, devinterp's ``susceptibilities``):

* model: a 2-layer GPT-2 from ``transformers`` (d_model 128, 4 heads, context 64, vocab 512,
  eager attention, dropout 0 so train/eval mode agree), trained inside this script for a fixed
  number of AdamW steps with a fixed seed on a synthetic corpus (a sparse bigram language
  with copied segments, so that both n-gram and induction structure exist to be measured);
* weight restrictions ``full`` + ``l0h0 l0h1 l1h0 l1h1`` (devinterp's ``create_param_masks``);
* SGLD with ε = 1e-3, nβ = 30, γ = 300, minibatch 16 of a 4096-sequence training set,
  4 chains × 100 draws (one step per draw, no burn-in), all chains seeing the same minibatch
  sequence (devinterp's default ``match_sampling_input_ids_across_chains=True``);
* observables per draw: the mean loss L̄ on 16 fixed training sequences (devinterp's sampling
  task observable, ``batches_per_draw=1``) and the per-token losses ℓ_xy of 16 fixed probe
  sequences (16 × 63 = 1008 probe tokens);
* estimator: χ^C_xy = −(E_C[φ_C·ψ_xy] − E_C[φ_C]·E_full[ψ_xy]), φ_C = L̄(w) − L_ref,
  ψ_xy = ℓ_xy − L̄(w), with devinterp's L_ref (its ``init_loss`` mean), read back from its
  output and handed to spectro, so both compute exactly the same estimand.

devinterp runs ``devinterp.slt.susceptibilities.susceptibilities`` (its public entry point,
which calls ``sample`` once per restriction and then ``compute_susceptibilities``); spectro
runs ``spectro.nn.component_susceptibility(..., shared_batches=True)`` with its default CPU
execution (chains looped over 2 worker threads with one intra-op thread each, frozen-module
memo). Both run after ``torch.set_num_threads(2)``; warm-up (one tiny run of each, before any
timing) is excluded for both, and spectro's cached L_n(w*) is cleared before its timed run, so
each side pays for its own reference-loss evaluation. With ``--repeats N`` both sides are
timed N times, interleaved, and the fastest of each is used (on a machine shared with other
jobs: two OpenMP threads stall badly when another process takes a core).

Agreement criterion. Two independent Monte Carlo runs of the same estimator can only agree
within their sampling errors, so the check is statistical. devinterp reports no error bar;
its raw draws (the zarr files it writes) are fed through spectro's streaming estimator, which
(i) must reproduce devinterp's own ``sus`` (to float32 rounding: the same estimand and formula,
checked, not assumed) and (ii) gives devinterp's estimate a standard error computed exactly as
spectro's own (Geyer multi-chain MCSE on the per-draw series, docs/design.md §4). For each component C and probe token
xy, ``z = (χ_spectro − χ_devinterp) / sqrt(se_spectro² + se_devinterp²)``. ``agree: yes`` iff for
every component

1. ``mean(z²) ≤ 1.5·ν/(ν−2)``: under agreement z is t-like with ν the Welch–Satterthwaite
   degrees of freedom of the two runs' errors (:func:`welch_dof`, from each entry's effective
   dof ESS/(2(κ−1))), so E[z²] = ν/(ν−2); the 1.5 allows for the strong correlation between
   tokens (mean z² over 1008 correlated tokens has far fewer than 1008 degrees of freedom);
2. ``|z| > 4`` for at most 0.5 % of the tokens (no localised disagreement; ≈ 0.006 % expected);
3. the Pearson correlation r of the two estimate vectors (equivalently of the z-scored vectors,
   as Baker et al. compare them) is at least ``r_exp − 0.05``, where
   ``r_exp = V / sqrt((V + s̄_s²)(V + s̄_d²))`` is the correlation two noisy copies of the same
   vector would have given the error bars (V = across-token variance of χ net of noise,
   s̄² = mean squared error) — the token structure itself is reproduced, not only its scale;
4. ``r_exp ≥ 0.5``: the runs resolve token structure at all (else 1–3 would be vacuous).

The last two lines printed are ``agree: yes|no`` and ``ratio: X`` (devinterp wall time /
spectro wall time, whole job, each including its own L(w*) evaluation).

Also reported: the machine's fp32 matmul rate (2048² matmul, measured before, between and
after the runs), the job's FLOPs (``torch.utils.flop_counter`` over runs of 2 and 4 draws of
each side, extrapolated linearly to the full number of draws; spectro counted with one worker,
since the counter is thread-local — with two workers a layer-1 head's frozen layer 0 is
evaluated once per worker per step, ≈ 1 % more), the achieved FLOP rate of the whole job
against the matmul rate, and the memory of spectro's engine (a restricted posterior plus the
streaming accumulator): process RSS at 9 points of a run of 4× the draws, and the Python-heap
peak (tracemalloc) of runs of 1× and 4× the draws.

Usage::

    python benchmarks/bench_vs_devinterp.py            # the full job (a few minutes)
    python benchmarks/bench_vs_devinterp.py --quick    # < 1 minute, for iterating
    python benchmarks/bench_vs_devinterp.py --precision bf16   # spectro in bf16 compute, devinterp fp32

With ``--precision bf16`` (or fp16) spectro samples with bf16 forward/backward on fp32 master
weights (``SamplerConfig.precision``) while devinterp runs fp32; the agreement check is unchanged
(a bf16 bias would show up as disagreement). Before the last two lines it prints the CPU's bf16
ISA (``amx_bf16``, ``avx512_bf16`` in /proc/cpuinfo) and the measured bf16 vs fp32 matmul rate.

``--step fused|compiled`` runs spectro's update hand-fused or through ``torch.compile``
(``SamplerConfig.step``; default eager). With ``compiled`` the process compiles into a fresh
(empty) inductor cache during spectro's warm-up run, and the script prints the compile cost of a
fresh process on a cold and on a warm cache (``benchmarks/profile_step.py``); the timed runs use
the graphs already compiled, and ``ratio:`` adds the cold-cache compile seconds to spectro's time.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # devinterp's per-chain progress bars (read when tqdm is imported)

import argparse
import contextlib
import gc
import json
import math
import platform
import random
import sys
import tempfile
import threading
import time
import tracemalloc
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

VOCAB, SEQ, D_MODEL, N_HEADS, N_LAYERS = 512, 64, 128, 4, 2


# ---------------------------------------------------------------------- job definition
@dataclass
class Job:
    components: list[str] = field(default_factory=lambda: ["l0h0", "l0h1", "l1h0", "l1h1"])
    chains: int = 4
    draws: int = 100
    batch_size: int = 16
    epsilon: float = 1e-3
    nbeta: float = 30.0
    gamma: float = 300.0
    n_train: int = 4096
    n_probe: int = 16  # sequences; × (SEQ − 1) probe tokens
    n_base: int = 16  # sequences of the sampling-task observable (batches_per_draw = 1)
    train_steps: int = 200
    n_batches: int | None = None  # error series: one point per draw (the engine's default)
    threads: int = 2
    seed: int = 0
    device: str = "cpu"  # both sides sample here (benchmarks/bench_gpu.py runs the job on CUDA)
    precision: str = "fp32"  # spectro's compute precision (devinterp always runs fp32)
    step: str = "eager"  # spectro's update execution (SamplerConfig.step)

    @property
    def probe_tokens(self) -> int:
        return self.n_probe * (SEQ - 1)


def synthetic_corpus(n: int, seed: int) -> torch.Tensor:
    """[n, SEQ] token ids: a sparse bigram language (8 successors per token, Zipf weights,
    10 % uniform resets) where half of the sequences copy an earlier segment (induction)."""
    table = np.random.default_rng(12345)  # the language itself is fixed
    succ = table.integers(0, VOCAB, size=(VOCAB, 8))
    p = 1.0 / np.arange(1, 9)
    cdf = np.cumsum(p / p.sum())
    g = np.random.default_rng(seed)
    out = np.empty((n, SEQ), dtype=np.int64)
    tok = g.integers(0, VOCAB, size=n)
    choice = np.minimum(np.searchsorted(cdf, g.random((n, SEQ))), 7)
    reset = g.random((n, SEQ)) < 0.1
    uniform = g.integers(0, VOCAB, size=(n, SEQ))
    for j in range(SEQ):
        out[:, j] = tok
        tok = np.where(reset[:, j], uniform[:, j], succ[tok, choice[:, j]])
    for i in np.nonzero(g.random(n) < 0.5)[0]:
        length = g.integers(8, 24)
        src = g.integers(0, SEQ // 2 - length)
        dst = g.integers(SEQ // 2, SEQ - length)
        out[i, dst : dst + length] = out[i, src : src + length]
    return torch.from_numpy(out)


def make_model(seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ, n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, use_cache=False,
    )
    cfg._attn_implementation = "eager"  # vmappable attention
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg)


def train(model, data: torch.Tensor, steps: int, seed: int, batch: int = 32, lr: float = 3e-3) -> float:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        x = data[torch.randint(0, data.shape[0], (batch,), generator=g)]
        logits = model(x, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return float(loss.detach())


def token_loss(out, ids: torch.Tensor) -> torch.Tensor:
    """Per-token next-token cross-entropy [batch, SEQ − 1] (devinterp's ``lm_cross_entropy_loss``)."""
    logits = out.logits if hasattr(out, "logits") else out[0]
    if logits.dtype in (torch.bfloat16, torch.float16):  # --precision bf16/fp16: the loss in fp32
        logits = logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return -logp.gather(-1, ids[:, 1:, None])[..., 0]


def observable_rows(n_rows: int, n_samples: int, obs_seed: int = 1337) -> list[int]:
    """The rows devinterp's ``Observable`` evaluates (``DeterministicShuffledSampler``), in order."""
    return random.Random(obs_seed).sample(range(n_rows), n_samples)


# ---------------------------------------------------------------------- measurements
def matmul_rate(seconds: float = 1.0, n: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of a square n×n matmul in ``dtype`` (best of repeated timings over ~``seconds``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = math.inf
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def precision_report(precision: str) -> tuple[list[str], dict]:
    """Lines (and their numbers) on the low-precision hardware: ISA flags, measured bf16 (or fp16)
    vs fp32 matmul rates."""
    from spectro.devices import cpu_isa

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    isa = cpu_isa()
    r32, rlow = matmul_rate(n=1024), matmul_rate(n=1024, dtype=low)
    lines = [f"ISA: amx_bf16 {'yes' if isa['amx_bf16'] else 'no'}, avx512_bf16 {'yes' if isa['avx512_bf16'] else 'no'}, "
             f"avx512f {'yes' if isa['avx512f'] else 'no'} (/proc/cpuinfo)",
             f"matmul 1024^2: {precision} {rlow:.0f} GFLOP/s vs fp32 {r32:.0f} GFLOP/s ({rlow / r32:.2f}x)"]
    if not isa["amx_bf16"]:
        lines.append("the >= 5x bf16 speed-up target needs AMX (amx_bf16): not measurable on this CPU; the ratio below "
                     "is what bf16 compute gives here")
    return lines, {"spectro": precision, "devinterp": "fp32", **isa, "matmul_gflops_fp32": r32, f"matmul_gflops_{precision}": rlow}


def model_rates(model, data: torch.Tensor, batch: int, seconds: float = 1.5) -> dict[str, float]:
    """GFLOP/s of the plain eager model (one copy, no sampler): forward of 2·batch sequences and
    forward+backward (all weights) of ``batch`` sequences — the ceiling any sampler built on this
    model's eager forward can reach."""
    x_f, x_b = data[: 2 * batch], data[:batch]

    def fwd():
        with torch.no_grad():
            token_loss(model(x_f), x_f)

    def fwd_bwd():
        token_loss(model(x_b), x_b).mean().backward()
        model.zero_grad(set_to_none=True)

    out = {}
    for name, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
        flops = count_flops(fn)
        fn()
        best = math.inf
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = flops / best / 1e9
    return out


def memory_check(setup: Setup, job: Job, ref: float) -> dict:
    """spectro's engine (one restricted posterior + the streaming accumulator, as inside
    component_susceptibility) over 4× the job's draws: process RSS at 8 points of the run, and
    the Python-heap peak (tracemalloc) of runs of 1× and 4× the draws."""
    from spectro.engine import MomentAccumulator
    from spectro.nn import LocalizedPosterior, ProbeSet, Restriction, SamplerConfig, TokenPointMasses
    from spectro.nn.observables import MeanLoss, concat

    probe = ProbeSet({"train": setup.base, "probe": setup.probe})
    phi, tok = MeanLoss("train", reference=ref), TokenPointMasses("probe", base="train")
    comp = job.components[-1]
    out = {"component": comp}
    for draws in (job.draws, 4 * job.draws):
        cfg = SamplerConfig(epsilon=job.epsilon, gamma=job.gamma, nbeta=job.nbeta, chains=job.chains, draws=draws,
                            batch_size=job.batch_size, n_batches=job.n_batches)
        post = LocalizedPosterior(setup.model, token_loss, setup.train_data, cfg, Restriction.from_devinterp(setup.model, comp),
                                  shared_batches=True)
        acc = MomentAccumulator(job.chains, 1, job.probe_tokens, draws, n_batches=job.n_batches)
        rss_track: list[tuple[int, float]] = []
        sampler = RSSPeak()

        def on_draw(d, post=post, acc=acc, track=rss_track, n=draws):
            losses = probe.evaluate(post, d.weights)
            acc.update(concat([phi], losses, probe), concat([tok], losses, probe))
            if d.index % (n // 8) == 0 or d.index == n - 1:
                track.append((d.index + 1, sampler.rss() / 2**20))

        post.init_loss  # outside the measurement (cached)
        gc.collect()
        tracemalloc.start()
        post.sample(on_draw)
        _, tpeak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[draws] = {"tracemalloc_peak_bytes": tpeak, "rss_mib": rss_track}
    d1, d4 = job.draws, 4 * job.draws
    track = out[d4]["rss_mib"]
    print(f"\nspectro engine memory ({comp} posterior + streaming accumulator, {job.probe_tokens} fields):")
    print(f"  process RSS (MiB) during a {d4}-draw run, by draw: " + ", ".join(f"{i}: {r:.0f}" for i, r in track))
    print(f"  Python heap peak (tracemalloc): {out[d1]['tracemalloc_peak_bytes'] / 2**20:.2f} MiB at {d1} draws, "
          f"{out[d4]['tracemalloc_peak_bytes'] / 2**20:.2f} MiB at {d4} draws; RSS change over the second half of the run "
          f"{track[-1][1] - track[len(track) // 2][1]:+.1f} MiB (the first draws warm up the allocator's per-thread arenas); "
          f"the only per-draw record is the loss trace, 4 bytes per chain-draw")
    return out


class RSSPeak:
    """Peak resident set size (bytes) over a block, sampled every 5 ms in a thread."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.start = self.rss()
        self.peak = self.start
        self._stop = threading.Event()

        def watch():
            while not self._stop.is_set():
                self.peak = max(self.peak, self.rss())
                time.sleep(0.005)

        self._t = threading.Thread(target=watch, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ---------------------------------------------------------------------- the two implementations
class Setup:
    """Model, data and the probe selections shared by both runs."""

    def __init__(self, job: Job):
        self.job = job
        torch.manual_seed(job.seed)
        self.train_data = synthetic_corpus(job.n_train, seed=job.seed + 1)
        probe_pool = synthetic_corpus(job.n_probe, seed=job.seed + 2)  # held out
        self.model = make_model(job.seed)
        t0 = time.perf_counter()
        self.train_loss = train(self.model, self.train_data, job.train_steps, job.seed)
        self.train_seconds = time.perf_counter() - t0
        # what devinterp's observables evaluate, in its order
        self.base = self.train_data[observable_rows(job.n_train, job.n_base)]
        self.probe_pool = probe_pool
        self.probe = probe_pool[observable_rows(job.n_probe, job.n_probe)]

    def datasets(self):
        from datasets import Dataset

        train = Dataset.from_dict({"input_ids": self.train_data.numpy()}).with_format("torch")
        probe = Dataset.from_dict({"input_ids": self.probe_pool.numpy()}).with_format("torch")
        return train, probe


def run_devinterp(setup: Setup, job: Job, out_dir: Path, draws: int | None = None, components=None):
    """devinterp's public entry point; returns (sus [n_comp, k], per-phase seconds, zarr paths)."""
    import devinterp.slt.susceptibilities as dsus
    from devinterp.slt.weight_restrictions import create_param_masks

    components = components or job.components
    draws = draws or job.draws
    train_ds, probe_ds = setup.datasets()
    restrictions = {"full": None, **{c: create_param_masks(setup.model, c) for c in components}}
    phases: dict[str, float] = {}
    original = dsus.sample

    def timed_sample(*args, param_masks=None, output_path=None, **kwargs):
        t0 = time.perf_counter()
        out = original(*args, param_masks=param_masks, output_path=output_path, **kwargs)
        phases[Path(str(output_path)).stem.removeprefix("samples_")] = time.perf_counter() - t0
        return out

    dsus.sample = timed_sample
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            tree = dsus.susceptibilities(
                setup.model, train_ds, {"train": (train_ds, 1), "probe": (probe_ds, 1)}, restrictions,
                sampling_task="train", lr=job.epsilon, n_beta=job.nbeta, localization=job.gamma,
                num_chains=job.chains, num_draws=draws, batch_size=job.batch_size,
                output_path=out_dir / "samples.zarr", device=job.device,
            )
            total = time.perf_counter() - t0
    finally:
        dsus.sample = original
    phases["compute_susceptibilities"] = total - sum(phases.values())
    phases["total"] = total
    sus = tree["susceptibilities"]
    wr = [str(w) for w in sus["wr"].values]
    chi = np.stack([sus["sus"].sel(wr=c).values for c in components])
    ctx = tree["context"]["input_ids"].values.reshape(job.n_probe, SEQ)
    assert torch.equal(torch.from_numpy(ctx), setup.probe), "probe rows differ from devinterp's observable"
    assert set(wr) == set(components)
    paths = {w: out_dir / f"samples_{w}.zarr" for w in ["full", *components]}
    return chi, phases, paths


def devinterp_draws(path: Path):
    """(L̄ draws [chain, draw], probe losses [chain, draw, k], init-loss mean) from a zarr file."""
    import xarray as xr

    ds = xr.open_datatree(str(path), engine="zarr", consolidated=False).dataset
    train = ds["loss_train"].values.astype(np.float64)
    probe = ds["loss_probe"].values.astype(np.float64)
    C, T = probe.shape[:2]
    return train.mean(axis=(2, 3)), probe.reshape(C, T, -1), float(ds["init_loss"].values.mean())


def devinterp_with_errors(paths: dict, components: list[str], n_batches: int | None = None):
    """devinterp's raw draws through spectro's streaming Baker estimator: (χ, stderr, L_ref, dof)."""
    from spectro.engine import MomentAccumulator
    from spectro.nn import baker_susceptibility

    def accumulate(lbar, probe, ref):
        C, T, k = probe.shape
        acc = MomentAccumulator(C, 1, k, T, n_batches=n_batches)
        phi = (lbar - ref)[:, :, None]
        psi = probe - lbar[:, :, None]
        acc.update(torch.from_numpy(phi.transpose(1, 0, 2).copy()), torch.from_numpy(psi.transpose(1, 0, 2).copy()))
        return acc

    lbar_f, probe_f, ref = devinterp_draws(paths["full"])
    full = accumulate(lbar_f, probe_f, ref)
    chi, se, dof = [], [], []
    for c in components:
        lbar, probe, _ = devinterp_draws(paths[c])
        s = baker_susceptibility(accumulate(lbar, probe, ref), full)
        chi.append(s.chi[0])
        se.append(s.stderr[0])
        dof.append(s.dof[0])
    return np.stack(chi), np.stack(se), ref, np.stack(dof)


def run_spectro(setup: Setup, job: Job, phi_reference: float | None, draws: int | None = None, components=None,
                seed: int = 0, posterior_options: dict | None = None, chains: int | None = None, chain_offset: int = 0,
                precision: str | None = None):
    """spectro's component_susceptibility; returns (χ, stderr, per-phase seconds, results).
    ``chains``/``chain_offset``: a block of the job's chains (chain c's draws depend only on (seed, c))."""
    from spectro.nn import ProbeSet, Restriction, SamplerConfig, TokenPointMasses, component_susceptibility

    components = components or job.components
    draws = draws or job.draws
    cfg = SamplerConfig(
        method="sgld", epsilon=job.epsilon, gamma=job.gamma, nbeta=job.nbeta, chains=chains or job.chains,
        chain_offset=chain_offset, draws=draws,
        batch_size=job.batch_size, seed=seed, n_batches=job.n_batches if job.n_batches is None else min(job.n_batches, draws),
        eval_batch_size=64, device=job.device, precision=precision or job.precision, step=job.step,
    )
    probe = ProbeSet({"train": setup.base, "probe": setup.probe})
    restr = {c: Restriction.from_devinterp(setup.model, c) for c in components}
    t0 = time.perf_counter()
    out = component_susceptibility(
        setup.model, token_loss, setup.train_data, probe, restr, TokenPointMasses("probe", base="train"), cfg,
        phi_reference=phi_reference,
        shared_batches=True,  # devinterp's default: every chain sees the same minibatch sequence
        posterior_options=posterior_options,
    )
    total = time.perf_counter() - t0
    chi = np.stack([out[c].chi[0] for c in components])
    se = np.stack([out[c].stderr[0] for c in components])
    phases = {k.removesuffix("_s"): v for k, v in out[components[0]].meta["timing"].items()}
    phases["total"] = total
    return chi, se, phases, out


def paired_precision_check(setup: Setup, job: Job, ref: float, chi_low: np.ndarray, se_low: np.ndarray) -> tuple[list[str], dict]:
    """Common random numbers: chain c of the low-precision job and of an fp32 job with the same seed
    share minibatches and noise, so the per-chain difference d_c = χ_low,c − χ_fp32,c isolates the
    effect of the compute precision. Each chain is run alone (chain_offset = c: the same draws as in
    the job) in both precisions; Baker's χ per chain pairs it with chain c of the full run.

    Per token and component: the paired error se_p = sd_c(d_c)/√C (t with C − 1 dof) and the job's
    own error se (the low-precision run's stderr). Reported: the bias |mean_c d_c| against se_p
    (resolvable differences), and against se (what the bias adds to the error of a result:
    √(1 + (bias/se)²)). The LLC likewise."""
    from scipy import stats

    per_chain = {"low": [], "fp32": []}
    llc = {"low": [], "fp32": []}
    for c in range(job.chains):
        for key, prec in (("low", job.precision), ("fp32", "fp32")):
            forget_cached_init_loss()
            chi, _, _, out = run_spectro(setup, job, ref, chains=1, chain_offset=c, precision=prec)
            per_chain[key].append(chi)
            llc[key].append([out[comp].meta["full_sampling"]["llc"] for comp in job.components[:1]]
                            + [out[comp].meta["sampling"]["llc"] for comp in job.components])
    d = np.stack(per_chain["low"]) - np.stack(per_chain["fp32"])  # [C, components, tokens]
    C = d.shape[0]
    bias, se_p = d.mean(0), d.std(0, ddof=1) / math.sqrt(C)
    t_crit = float(stats.t.ppf(0.975, C - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_paired = bias / se_p
        rel = np.abs(bias) / se_low
    dl = np.asarray(llc["low"]) - np.asarray(llc["fp32"])  # [C, 1 + components]: full, then each component
    llc_bias, llc_se_p = dl.mean(0), dl.std(0, ddof=1) / math.sqrt(C)
    names = ["full", *job.components]
    lines = [f"{job.precision} vs fp32, same seed (common random numbers; each of the {C} chains run alone in both "
             f"precisions; paired t with {C - 1} dof, two-sided 95 % critical value {t_crit:.2f}):"]
    for i, comp in enumerate(job.components):
        lines.append(f"  {comp}: per-token χ bias / paired se: |t| > {t_crit:.2f} for {100 * np.mean(np.abs(t_paired[i]) > t_crit):.1f}% "
                     f"of tokens (5 % expected with no bias), median |t| {np.nanmedian(np.abs(t_paired[i])):.2f}; "
                     f"bias / the run's own stderr: median {np.nanmedian(rel[i]):.3f}, max {np.nanmax(rel[i]):.3f}; "
                     f"paired se / own se: median {np.nanmedian(se_p[i] / se_low[i]):.3f}")
    llc32 = np.asarray(llc["fp32"]).mean(0)
    lines.append("  LLC bias (low − fp32) ± paired se (fp32 LLC): " + ", ".join(
        f"{n} {b:+.1e} ± {e:.1e} ({v:.2f})" for n, b, e, v in zip(names, llc_bias, llc_se_p, llc32)))
    record = {"chains": C, "t_crit": t_crit, "frac_t_gt_crit": [float(np.mean(np.abs(t) > t_crit)) for t in t_paired],
              "median_bias_over_own_se": [float(np.nanmedian(r)) for r in rel],
              "max_bias_over_own_se": [float(np.nanmax(r)) for r in rel],
              "llc_bias": dict(zip(names, llc_bias.tolist())), "llc_paired_se": dict(zip(names, llc_se_p.tolist())),
              "llc_fp32": dict(zip(names, llc32.tolist()))}
    return lines, record


def step_compile_cost(job: Job) -> dict[str, float]:
    """step="compiled": compile seconds of the job's posteriors in a fresh process, on an empty
    (cold) and then the filled (warm) inductor cache (``benchmarks/profile_step.py``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from profile_step import compile_cost

    quick = job.n_train < Job().n_train
    c = compile_cost(job.precision, "sgld", quick=quick)
    return {"cold": c["cold"]["compile_s"], "warm": c["warm"]["compile_s"]}


def forget_cached_init_loss() -> None:
    """spectro caches L_n(w*) per (model, data, loss); the timed run must pay for it again."""
    from spectro.nn.posterior import forget_init_losses

    forget_init_losses()


# ---------------------------------------------------------------------- agreement
def welch_dof(se_s, dof_s, se_d, dof_d) -> float:
    """Median Welch–Satterthwaite dof of z = Δχ / sqrt(se_s² + se_d²) from each side's t dof."""
    v = (se_s**2 + se_d**2) ** 2 / (se_s**4 / dof_s + se_d**4 / dof_d)
    return float(np.median(v))


def agreement(chi_s, se_s, chi_d, se_d, nu: float):
    """Per-component statistics and the verdict (see the module docstring).

    ``nu``: degrees of freedom of z = Δχ / sqrt(se_s² + se_d²) (:func:`welch_dof` of the two
    runs' error estimates); under agreement z is t-like and E[z²] = ν/(ν − 2).
    """
    nu = max(float(nu), 3.0)
    z2_max = 1.5 * nu / (nu - 2.0)
    rows = []
    ok = True
    for i in range(chi_s.shape[0]):
        a, b, sa, sb = chi_s[i], chi_d[i], se_s[i], se_d[i]
        z = (a - b) / np.sqrt(sa**2 + sb**2)
        r = float(np.corrcoef(a, b)[0, 1])
        V = max(0.5 * (a.var() + b.var()) - 0.5 * (np.mean(sa**2) + np.mean(sb**2)), 0.0)
        r_exp = V / math.sqrt((V + np.mean(sa**2)) * (V + np.mean(sb**2))) if V > 0 else 0.0
        row = {
            "mean_z2": float(np.mean(z**2)),
            "mean_z2_max": z2_max,
            "frac_abs_z_gt_4": float(np.mean(np.abs(z) > 4)),
            "max_abs_z": float(np.abs(z).max()),
            "pearson_r": r,
            "r_expected": r_exp,
            "median_snr_spectro": float(np.median(np.abs(a) / sa)),
            "median_snr_devinterp": float(np.median(np.abs(b) / sb)),
            "se_ratio": float(np.sqrt(np.mean(sa**2) / np.mean(sb**2))),
        }
        row["ok"] = bool(row["mean_z2"] <= z2_max and row["frac_abs_z_gt_4"] <= 0.005 and r >= r_exp - 0.05 and r_exp >= 0.5)
        ok &= row["ok"]
        rows.append(row)
    return ok, rows


# ---------------------------------------------------------------------- FLOPs
def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def analytic_flops_per_token_forward() -> float:
    """Matmul FLOPs of one token's forward (eager attention computes the full T×T scores)."""
    d, f, T = D_MODEL, 4 * D_MODEL, SEQ
    per_layer = 3 * d * d + d * d + 2 * d * f + 2 * T * d  # qkv, out-proj, mlp, scores + mix
    return 2.0 * (N_LAYERS * per_layer + d * VOCAB)


# ---------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small job for iterating (< 1 minute; no FLOP/memory checks)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draws", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1,
                    help="time each side this many times, interleaved, and use the fastest (for machines shared with other jobs)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--skip-flops", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="keep devinterp's zarr output here (default: a temporary folder)")
    ap.add_argument("--save", type=Path, default=None, help="write the χ vectors and errors to this .npz")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                    help="spectro's compute precision (devinterp always runs fp32 on the same job)")
    ap.add_argument("--step", choices=["eager", "fused", "compiled"], default="eager",
                    help="spectro's update execution (SamplerConfig.step); 'compiled' also measures the compile cost on a "
                         "cold and a warm inductor cache and adds the cold figure to spectro's time in 'ratio:'")
    ap.add_argument("--no-paired", action="store_true",
                    help="with --precision bf16/fp16: skip the same-seed comparison with fp32 (runs every chain alone in "
                         "both precisions, about twice spectro's time)")
    args = ap.parse_args(argv)

    job = Job(threads=args.threads)
    if args.quick:
        job = Job(components=["l0h1", "l1h0"], draws=20, n_train=512, train_steps=25, threads=args.threads)
        args.skip_flops = args.skip_memory = True
    if args.draws:
        job.draws = args.draws
    job.precision = args.precision
    job.step = args.step
    compile_cache = None
    if job.step == "compiled":  # this process compiles into a fresh inductor cache: the warm-up pays the cold compile
        compile_cache = tempfile.TemporaryDirectory(prefix="spectro-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = compile_cache.name
    torch.set_num_threads(job.threads)
    warnings.filterwarnings("ignore")
    import transformers  # noqa: F401  (import time outside the measurements)
    import devinterp  # noqa: F401
    import spectro

    cmd = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None else " ".join(argv)
    print(f"command: python benchmarks/{cmd}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
          f"devinterp 2.0.1, spectro {spectro.__version__}; torch.set_num_threads({job.threads}) for both")
    print(f"job: GPT-2 {N_LAYERS}L d{D_MODEL} h{N_HEADS} ctx{SEQ} V{VOCAB}; restrictions full+{','.join(job.components)}; "
          f"{job.chains} chains x {job.draws} draws; batch {job.batch_size}; eps {job.epsilon} nbeta {job.nbeta} gamma {job.gamma}; "
          f"{job.n_train} train seqs; {job.probe_tokens} probe tokens; L̄ on {job.n_base} seqs; spectro precision "
          f"{job.precision}, step {job.step}")
    rates = [matmul_rate()]
    print(f"matmul fp32 2048^2: {rates[0]:.0f} GFLOP/s (load {load_average()})")

    setup = Setup(job)
    print(f"model: trained {job.train_steps} AdamW steps in {setup.train_seconds:.1f} s, final train loss {setup.train_loss:.3f} "
          f"(uniform: {math.log(VOCAB):.3f})")

    mr = model_rates(setup.model, setup.train_data, job.batch_size)
    print("eager model alone (one copy, 2 threads): " + ", ".join(f"{k} {v:.0f} GFLOP/s ({100 * v / rates[0]:.0f}% of matmul)" for k, v in mr.items()))

    # warm-up, excluded from timing: a tiny run of each (imports, allocator, oneDNN kernels)
    with tempfile.TemporaryDirectory() as tmp:
        run_devinterp(setup, job, Path(tmp), draws=2, components=job.components[:1])
    t_warm = time.perf_counter()
    run_spectro(setup, job, None, draws=2, components=job.components[:1])
    t_warm = time.perf_counter() - t_warm
    gc.collect()
    compile_s: dict[str, float] = {}
    if job.step == "compiled":
        from spectro.nn.kernels import compile_seconds

        compile_s["this process (cold cache)"] = sum(compile_seconds().values())
        print(f"compile (step compiled): spectro's warm-up run ({t_warm:.1f} s) compiled {len(compile_seconds())} graphs in "
              f"{compile_s['this process (cold cache)']:.1f} s on a cold inductor cache; the timed runs below reuse them")
        compile_s.update(step_compile_cost(job))
        print(f"compile cost of a fresh process (first step of full+{','.join(job.components)}, dynamo/inductor imports "
              f"included): cold cache {compile_s['cold']:.1f} s, warm cache {compile_s['warm']:.1f} s (load {load_average()})")

    timings_d, timings_s = [], []
    with (contextlib.nullcontext(str(args.workdir)) if args.workdir else tempfile.TemporaryDirectory()) as tmp:
        for rep in range(args.repeats):
            work = Path(tmp) / f"rep{rep}"
            work.mkdir(parents=True, exist_ok=True)
            print(f"\n[devinterp] run {rep + 1}/{args.repeats}, load {load_average()}", flush=True)
            chi_d_native, ph_d, paths = run_devinterp(setup, job, work)
            print("  " + ", ".join(f"{k} {v:.1f}s" for k, v in ph_d.items()))
            timings_d.append(ph_d)
            if rep == 0:
                chi_d, se_d, ref, dof_d = devinterp_with_errors(paths, job.components, job.n_batches)
                same = float(np.abs(chi_d - chi_d_native).max() / np.abs(chi_d_native).max())
                print(f"  devinterp's draws through spectro's estimator reproduce its sus: max |diff| / max |sus| = {same:.1e}")
            rates.append(matmul_rate())
            gc.collect()
            forget_cached_init_loss()
            print(f"[spectro] run {rep + 1}/{args.repeats}, load {load_average()}", flush=True)
            chi_s_r, se_s_r, ph_s, out_r = run_spectro(setup, job, ref)
            print("  " + ", ".join(f"{k} {v:.1f}s" for k, v in ph_s.items()))
            timings_s.append(ph_s)
            if rep == 0:
                chi_s, se_s, out = chi_s_r, se_s_r, out_r
            rates.append(matmul_rate())
            gc.collect()
    ph_d = min(timings_d, key=lambda t: t["total"])
    ph_s = min(timings_s, key=lambda t: t["total"])
    peak = max(rates)
    ex = out[job.components[-1]].meta["sampling"]["execution"]
    print(f"spectro execution: chain_mode {ex['chain_mode']}, {ex['workers']} worker threads, shared minibatches, "
          f"frozen-module memo hits/misses in {job.components[-1]}: {ex['memo_hits']}/{ex['memo_misses']}")
    print(f"matmul fp32 2048^2 over the run: {' / '.join(f'{r:.0f}' for r in rates)} GFLOP/s; peak {peak:.0f} (load {load_average()})")

    if args.save:
        np.savez(args.save, chi_s=chi_s, se_s=se_s, chi_d=chi_d, se_d=se_d, chi_d_native=chi_d_native,
                 se_chains_s=np.stack([out[c].stderr_chains[0] for c in job.components]),
                 ess_s=np.stack([out[c].ess[0] for c in job.components]), rhat_s=np.stack([out[c].rhat[0] for c in job.components]))
    dof_s = np.stack([out[c].dof[0] for c in job.components])
    nu = welch_dof(se_s, dof_s, se_d, dof_d)
    ok, rows = agreement(chi_s, se_s, chi_d, se_d, nu)
    print(f"\nagreement per component, over the probe tokens xy (z = Δχ / sqrt(se_s² + se_d²), Monte Carlo errors of "
          f"each run, median Welch dof {nu:.0f}):")
    for c, r in zip(job.components, rows):
        print(f"  {c}: mean z² {r['mean_z2']:.2f} (≤ {r['mean_z2_max']:.2f}), |z|>4 {100 * r['frac_abs_z_gt_4']:.1f}% (≤ 0.5%), max|z| {r['max_abs_z']:.1f}, "
              f"r {r['pearson_r']:.3f} (≥ r_exp − 0.05, r_exp {r['r_expected']:.3f} ≥ 0.5), "
              f"median |χ|/se {r['median_snr_spectro']:.1f}/{r['median_snr_devinterp']:.1f}, se ratio s/d {r['se_ratio']:.2f} "
              f"-> {'ok' if r['ok'] else 'FAIL'}")

    result = {"job": job.__dict__, "model_rates": mr, "devinterp": timings_d, "spectro": timings_s, "matmul_gflops": rates, "agreement": rows,
              "load_average": load_average()}

    if not args.skip_flops:
        d1, d2 = 2, 4
        one = {"workers": 1}  # FlopCounterMode is thread-local: count spectro's FLOPs on one thread
        with tempfile.TemporaryDirectory() as tmp:
            fd = [count_flops(lambda d=d: run_devinterp(setup, job, Path(tmp) / f"f{d}", draws=d)) for d in (d1, d2)]
        fs = []
        for d in (d1, d2):
            forget_cached_init_loss()
            fs.append(count_flops(lambda d=d: run_spectro(setup, job, ref, draws=d, posterior_options=one)))
        extrap = lambda f: f[0] + (f[1] - f[0]) / (d2 - d1) * (job.draws - d1)  # noqa: E731
        F_d, F_s = extrap(fd), extrap(fs)
        per_draw_d = (fd[1] - fd[0]) / (d2 - d1) / (job.chains * (1 + len(job.components)))
        tok_fwd = analytic_flops_per_token_forward()
        print(f"\nFLOPs (torch.utils.flop_counter over runs of {d1} and {d2} draws, extrapolated to {job.draws}): "
              f"devinterp {F_d / 1e12:.2f} TFLOP, spectro {F_s / 1e12:.2f} TFLOP ({100 * F_s / F_d:.0f}% of devinterp's)")
        print(f"  devinterp per chain-draw {per_draw_d / 1e9:.2f} GFLOP on average; analytic forward {tok_fwd / 1e6:.3f} MFLOP/token "
              f"= {tok_fwd * SEQ * job.batch_size / 1e9:.2f} GFLOP per {job.batch_size}-sequence forward")
        print(f"FLOP rate: spectro {F_s / ph_s['total'] / 1e9:.0f} GFLOP/s = {100 * F_s / ph_s['total'] / 1e9 / peak:.0f}% of the "
              f"{peak:.0f} GFLOP/s matmul rate; devinterp {F_d / ph_d['total'] / 1e9:.0f} GFLOP/s = "
              f"{100 * F_d / ph_d['total'] / 1e9 / peak:.0f}%")
        result["flops"] = {"devinterp": F_d, "spectro": F_s}

    if not args.skip_memory:
        result["memory"] = memory_check(setup, job, ref)

    if job.precision != "fp32":
        lines, result["precision"] = precision_report(job.precision)
        if "flops" in result:  # the target: >= 40 % of the low-precision matmul rate
            low_rate = result["precision"][f"matmul_gflops_{job.precision}"]
            rate = result["flops"]["spectro"] / ph_s["total"] / 1e9
            lines.append(f"FLOP rate vs the {job.precision} matmul rate: spectro {rate:.0f} GFLOP/s = {100 * rate / low_rate:.0f}% "
                         f"of {low_rate:.0f} GFLOP/s")
            result["precision"]["flop_rate_fraction_of_low_matmul"] = rate / low_rate
        print("\n" + "\n".join(lines))
        if not args.no_paired:
            lines, result["paired_vs_fp32"] = paired_precision_check(setup, job, ref, chi_s, se_s)
            print("\n".join(lines))
    ratio = ph_d["total"] / ph_s["total"]
    if compile_s:
        result["compile_s"] = compile_s
        print(f"\nspectro with step compiled: {ph_s['total']:.1f} s compiled graphs in memory (ratio {ratio:.2f}); "
              f"+ {compile_s['warm']:.1f} s compile on a warm cache = {ph_s['total'] + compile_s['warm']:.1f} s (ratio "
              f"{ph_d['total'] / (ph_s['total'] + compile_s['warm']):.2f}); + {compile_s['cold']:.1f} s on a cold cache = "
              f"{ph_s['total'] + compile_s['cold']:.1f} s (the ratio below)")
        ratio = ph_d["total"] / (ph_s["total"] + compile_s["cold"])
        compile_cache.cleanup()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    t_s = ph_s["total"] + compile_s.get("cold", 0.0)
    print(f"\nwall time (fastest of {args.repeats}): devinterp {ph_d['total']:.1f} s (fp32), spectro {t_s:.1f} s "
          f"({job.precision}, step {job.step}{', incl. cold-cache compile' if compile_s else ''})")
    print(f"agree: {'yes' if ok else 'no'}")
    print(f"ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
