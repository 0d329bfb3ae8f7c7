"""GPU benchmark and GPU correctness checks, ready for a machine with CUDA.

Run on a GPU machine (writes a JSON record with ``--json``)::

    python benchmarks/bench_gpu.py                       # device cuda, every section (~5-10 min on one H100)
    python benchmarks/bench_gpu.py --device cpu --quick  # dry run of the same code paths (the test suite runs it)

Sections (each prints its numbers and goes into the JSON record):

1. ``matmul``: the device's dense matmul rate (fp32, TF32, bf16 and fp16 4096² matmuls; CPU: fp32, bf16), the
   yardstick for the achieved FLOP rates below.
2. ``nn_throughput``: SGLD steps of spectro's vmapped chains on the 2-layer attention-only
   transformer of ``experiments/train_transformer.py`` (2.66M parameters, context 128,
   minibatch 32), for chains ∈ {4, 16, 64} × {full model, one layer-1 head} × {fp32, bf16 and
   (CUDA) fp16 model with fp32 master weights}: steps/s, chain-tokens/s and the achieved FLOP rate (FLOPs
   of one step from ``torch.utils.flop_counter``, × chains) as a fraction of the matmul rate.
3. ``vs_devinterp``: the job of ``benchmarks/bench_vs_devinterp.py`` (4 head restrictions +
   full, 4 chains × 100 draws, per-token susceptibilities of 1008 probe tokens) with both
   devinterp 2.0.1 and spectro sampling on the device: wall times, ``ratio`` = devinterp /
   spectro, and the statistical agreement verdict of that script (same criterion), for spectro
   in fp32 (the record's top-level figures), bf16 and (CUDA) fp16 against one devinterp run.
4. ``ising``: the torch checkerboard Metropolis backend on the device against the numba
   backend on the host CPU, 128×128 walled lattice: spin updates per second and the ratio.
5. ``device_vs_cpu``: a small ``spectro nn run`` job (builtin:tiny) sampled on the device and
   on the CPU. The random streams differ between devices, so the check is statistical:
   z = (χ_dev − χ_cpu)/√(se_dev² + se_cpu²) per entry; ``agree`` iff mean z² ≤ 1.5·ν/(ν−2)
   and no |z| > 5 (ν from the batch means, as in bench_vs_devinterp). Also the bf16 model (and
   on CUDA the fp16 model, with loss scaling).

Without CUDA, ``--device cuda`` stops with a one-line message and exit status 2.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import dataclasses
import importlib.util
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from spectro.devices import cpu_bf16_fast

HERE = Path(__file__).resolve().parent


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, min_seconds: float = 0.5, max_reps: int = 50) -> float:
    """Seconds per call of ``fn`` (after one warm-up call), averaged over ≥ min_seconds."""
    fn()
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        sync(device)
        dt = time.perf_counter() - t0
        if dt >= min_seconds or reps >= max_reps:
            return dt / reps


# ---------------------------------------------------------------------- 1. matmul
def matmul_rates(device: torch.device, quick: bool) -> dict[str, float]:
    n = 1024 if quick else 4096
    out = {}
    for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False),
                              ("fp16", torch.float16, False)):
        if device.type == "cpu" and name in ("tf32", "fp16"):  # no TF32 on a CPU; fp16 there is a slow fallback
            continue
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        sec = timed(lambda: a @ b, device, 0.2 if quick else 1.0)
        out[name] = 2 * n**3 / sec / 1e9
    torch.backends.cuda.matmul.allow_tf32 = False
    return out  # GFLOP/s


# ---------------------------------------------------------------------- 2. nn throughput
def nn_throughput(device: torch.device, quick: bool, peak: dict[str, float]) -> list[dict]:
    from torch.utils.flop_counter import FlopCounterMode

    from spectro.models import AttentionOnlyConfig, AttentionOnlyTransformer, head_restriction, next_token_loss
    from spectro.nn import LocalizedPosterior, SamplerConfig

    mcfg = AttentionOnlyConfig(vocab_size=512, n_ctx=32, d_model=64, n_heads=4) if quick else AttentionOnlyConfig()
    torch.manual_seed(0)
    model = AttentionOnlyTransformer(mcfg)
    n, batch = 1024, (8 if quick else 32)
    data = torch.randint(1, mcfg.vocab_size, (n, mcfg.n_ctx))
    rows = []
    low = {"bfloat16": torch.bfloat16, "float16": torch.float16}
    for dtype_name in ("float32", "bfloat16") + (("float16",) if device.type == "cuda" else ()):
        m = model if dtype_name == "float32" else AttentionOnlyTransformer(mcfg).to(low[dtype_name])
        if dtype_name != "float32":
            m.load_state_dict({k: v.to(low[dtype_name]) for k, v in model.state_dict().items()})
        for comp in ("full", "l1h0"):
            restriction = None if comp == "full" else head_restriction(m, 1, 0)
            for chains in ((2, 4) if quick else (4, 16, 64)):
                steps = 3 if quick else 20
                prec = {"bfloat16": "bf16", "float16": "fp16"}.get(dtype_name, "fp32")  # stored low needs that compute
                cfg = SamplerConfig(epsilon=1e-4, gamma=1000.0, nbeta=100.0, chains=chains, draws=steps, batch_size=batch,
                                    device=str(device), health_every=steps, precision=prec)
                post = LocalizedPosterior(m, next_token_loss, data, cfg, restriction, chain_mode="vmap")
                try:
                    sec = timed(lambda: post.sample(), device, 0.3 if quick else 2.0, max_reps=5) / steps
                except torch.OutOfMemoryError:
                    rows.append({"dtype": dtype_name, "component": comp, "chains": chains, "error": "out of memory"})
                    continue
                one = SamplerConfig(epsilon=1e-4, gamma=1000.0, nbeta=100.0, chains=1, draws=1, batch_size=batch,
                                    device=str(device), precision=prec)
                with FlopCounterMode(display=False) as fc:
                    LocalizedPosterior(m, next_token_loss, data, one, restriction, chain_mode="vmap").sample()
                flops = fc.get_total_flops() * chains
                ref = peak.get({"bfloat16": "bf16", "float16": "fp16"}.get(dtype_name, "tf32"), peak["fp32"])
                rows.append({
                    "dtype": dtype_name, "component": comp, "chains": chains, "steps_per_s": 1.0 / sec,
                    "chain_tokens_per_s": chains * batch * mcfg.n_ctx / sec,
                    "gflop_per_s": flops / sec / 1e9, "fraction_of_matmul": flops / sec / 1e9 / ref,
                })
                r = rows[-1]
                print(f"  {dtype_name:>8} {comp:>4} C={chains:<3} {r['steps_per_s']:8.1f} steps/s "
                      f"{r['chain_tokens_per_s']:12.0f} chain-tokens/s {r['gflop_per_s']:9.1f} GFLOP/s "
                      f"({100 * r['fraction_of_matmul']:.0f}% of matmul)", flush=True)
    return rows


# ---------------------------------------------------------------------- 3. vs devinterp
def vs_devinterp(device: torch.device, quick: bool) -> dict:
    spec = importlib.util.spec_from_file_location("bench_vs_devinterp", HERE / "bench_vs_devinterp.py")
    b = importlib.util.module_from_spec(spec)
    sys.modules["bench_vs_devinterp"] = b
    spec.loader.exec_module(b)
    job = b.Job(device=str(device), threads=torch.get_num_threads())
    if quick:
        job = b.Job(components=["l0h1", "l1h0"], draws=20, n_train=512, train_steps=25, device=str(device))
    setup = b.Setup(job)
    with tempfile.TemporaryDirectory() as tmp:
        b.run_devinterp(setup, job, Path(tmp) / "warm", draws=2, components=job.components[:1])
        b.run_spectro(setup, job, None, draws=2, components=job.components[:1])
        sync(device)
        t0 = time.perf_counter()
        chi_d, ph_d, paths = b.run_devinterp(setup, job, Path(tmp) / "run")
        sync(device)
        t_d = time.perf_counter() - t0
        chi_dd, se_d, ref, dof_d = b.devinterp_with_errors(paths, job.components, job.n_batches)
        out: dict = {"devinterp_s": t_d}
        for precision in ("fp32", "bf16") + (("fp16",) if device.type == "cuda" else ()):
            if precision == "bf16" and device.type == "cpu" and cpu_bf16_fast() is False:
                out[precision] = {"skipped": "this CPU has no bf16 matmul instructions (no amx_bf16 or avx512_bf16): "
                                             "bf16 runs through a fallback far slower than fp32 and times nothing useful"}
                print(f"  spectro bf16: skipped ({out[precision]['skipped']})", flush=True)
                continue
            b.forget_cached_init_loss()
            pjob = dataclasses.replace(job, precision=precision)
            t0 = time.perf_counter()
            chi_s, se_s, ph_s, res_s = b.run_spectro(setup, pjob, ref)
            sync(device)
            t_s = time.perf_counter() - t0
            dof_s = np.stack([res_s[c].dof[0] for c in job.components])
            ok, rows = b.agreement(chi_s, se_s, chi_dd, se_d, b.welch_dof(se_s, dof_s, se_d, dof_d))
            res = {"spectro_s": t_s, "ratio": t_d / t_s, "agree": ok, "per_component": rows}
            if precision == "fp32":  # the record's top-level figures stay fp32's
                out.update(res)
            out[precision] = res
            print(f"  devinterp {t_d:.1f} s (fp32), spectro {precision} {t_s:.1f} s -> ratio {t_d / t_s:.2f}; "
                  f"agree: {'yes' if ok else 'no'}", flush=True)
    return out


# ---------------------------------------------------------------------- 4. ising
def ising(device: torch.device, quick: bool) -> dict:
    from spectro.ising import walled_lattice
    from spectro.ising.samplers import IsingSampler, SamplerConfig

    size = 32 if quick else 128
    lat = walled_lattice(size, size)
    out = {}
    for name, cfg, chains in (("numba_cpu", SamplerConfig(chains=2, backend="numba", device="cpu"), 2),
                              (f"torch_{device.type}", SamplerConfig(chains=8 if quick else 1024, backend="torch",
                                                                     device=str(device)), 8 if quick else 1024)):
        s = IsingSampler(lat, 0.4, cfg)
        sweeps = 5 if quick else 50
        sec = timed(lambda s=s, sweeps=sweeps: s.sweep(sweeps), device if name != "numba_cpu" else torch.device("cpu"),
                    0.2 if quick else 2.0, max_reps=10)
        out[name] = chains * sweeps * lat.n_sites / sec
        print(f"  {name:>12}: {chains} chains, {out[name] / 1e9:.3f} G spin updates/s", flush=True)
    out["ratio"] = out[f"torch_{device.type}"] / out["numba_cpu"]
    return out


# ---------------------------------------------------------------------- 5. device vs cpu
def device_vs_cpu(device: torch.device, quick: bool, workdir: Path) -> dict:
    from spectro.engine import Susceptibility
    from spectro.jobs.nn_job import run_job

    base = {
        "model": {"checkpoint": "builtin:tiny", "cache_dir": str(workdir / "cache")},
        "data": {"corpus": "fixture", "domains": ["code", "prose"], "context": 16, "train_sequences": 64},
        "probes": {"base": 8, "per_domain": 4},
        "observables": ["component_loss"],
        "fields": ["tokens"],
        "components": ["l1h0", "full"],
        "sampler": {"chains": 4, "draws": 40 if quick else 400, "batch_size": 16, "nbeta": 30.0, "gamma": 300.0,
                    "epsilon": 1e-4, "seed": 1},
        "export": {"devinterp": False},
    }
    runs = {}
    variants = [("cpu", "cpu", None), ("device", str(device), None), ("device_bf16", str(device), "bfloat16")]
    if device.type == "cuda":
        variants.append(("device_fp16", str(device), "float16"))
    for name, dev, dtype in variants:
        cfg = json.loads(json.dumps(base))
        cfg["sampler"]["device"] = dev
        if dtype:
            cfg["model"]["dtype"] = dtype
            cfg["sampler"]["precision"] = {"bfloat16": "bf16", "float16": "fp16"}[dtype]
        t0 = time.perf_counter()
        out = run_job(cfg, workdir / name, overwrite=True, progress=False, log=lambda m: None)
        runs[name] = (Susceptibility.load(out / "chi_l1h0.npz"), time.perf_counter() - t0)
    res = {}
    cpu = runs["cpu"][0]
    for name in [v[0] for v in variants[1:]]:
        r = runs[name][0]
        z = (r.chi - cpu.chi) / np.sqrt(r.stderr**2 + cpu.stderr**2)
        nu = max(float(np.median((r.stderr**2 + cpu.stderr**2) ** 2 / (r.stderr**4 / r.dof + cpu.stderr**4 / cpu.dof))), 3.0)
        mz2 = float(np.mean(z**2))
        res[name] = {"mean_z2": mz2, "mean_z2_max": 1.5 * nu / (nu - 2), "max_abs_z": float(np.abs(z).max()),
                     "seconds": runs[name][1], "cpu_seconds": runs["cpu"][1],
                     "agree": bool(mz2 <= 1.5 * nu / (nu - 2) and np.abs(z).max() <= 5)}
        print(f"  {name:>11} vs cpu: mean z² {mz2:.2f} (≤ {1.5 * nu / (nu - 2):.2f}), max |z| {np.abs(z).max():.2f}; "
              f"agree: {'yes' if res[name]['agree'] else 'no'}; {runs[name][1]:.1f} s vs cpu {runs['cpu'][1]:.1f} s", flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes (a dry run of every code path, ~1 min on CPU)")
    ap.add_argument("--sections", nargs="+", default=["matmul", "nn_throughput", "vs_devinterp", "ising", "device_vs_cpu"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: error: no CUDA device here (torch.cuda.is_available() is False); "
              "use --device cpu --quick for a dry run", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    import spectro

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}); torch {torch.__version__}; spectro {spectro.__version__}; {os.cpu_count()} CPUs")
    record: dict = {"device": str(device), "device_name": name, "torch": torch.__version__, "quick": args.quick,
                    "command": " ".join(["python benchmarks/bench_gpu.py", *(argv if argv is not None else sys.argv[1:])])}
    peak = matmul_rates(device, args.quick)
    record["matmul_gflops"] = peak
    print("matmul: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    with tempfile.TemporaryDirectory() as tmp:
        for section in args.sections:
            if section == "matmul":
                continue
            print(f"{section}:", flush=True)
            t0 = time.perf_counter()
            if section == "nn_throughput":
                record[section] = nn_throughput(device, args.quick, peak)
            elif section == "vs_devinterp":
                record[section] = vs_devinterp(device, args.quick)
            elif section == "ising":
                record[section] = ising(device, args.quick)
            elif section == "device_vs_cpu":
                record[section] = device_vs_cpu(device, args.quick, Path(tmp))
            else:
                print(f"bench_gpu: error: unknown section {section!r}", file=sys.stderr)
                return 2
            print(f"  ({time.perf_counter() - t0:.0f} s)")
    if args.json:
        from spectro.io import write_json

        write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
