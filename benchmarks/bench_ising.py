"""Throughput of the batched Ising samplers against a plain NumPy checkerboard reference.

Measures spin-flip attempts per second (one sweep = H*W attempts per chain):

* ``numpy-reference``: a single 80x80 walled lattice, float64 spins, checkerboard Metropolis
  with ``np.roll`` neighbour sums times coupling arrays, ``exp`` acceptance and
  ``Generator.random`` uniforms (the natural vectorised NumPy implementation).
* the project's default sampler (metropolis, numba backend) on the same lattice with 16
  chains, plus heat bath, Swendsen–Wang, ``sample_regions`` with ~400 probe rectangles, the
  torch backend on the CPU (default threads and one thread) and, when CUDA is available, the
  torch backend on the GPU (1024 chains; also printed as flips/ns).

numba's threading layer is ``workqueue`` unless ``--threading-layer`` or
``$NUMBA_THREADING_LAYER`` says otherwise: the ``omp`` layer spin-waits and loses ~3x when the
two cores are shared with other processes (measured here under the same background load:
ratio 8 with omp vs 25 with workqueue); on an idle machine both reached ~1.2e9 flips/s.

All measured in one run; every rate is the best of several repeats (each lasting at least
``--min-time`` seconds), measurements interleaved to share any background load fairly. JIT
compilation is excluded (every kernel is warmed up first). The last line is
``ratio_vs_numpy: X`` = default sampler rate / NumPy reference rate.

Usage::

    python benchmarks/bench_ising.py            # full (a few minutes)
    python benchmarks/bench_ising.py --quick    # < 1 minute
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import numba
import numpy as np
import torch

from spectro.ising.lattice import CHAMBERS, Lattice, walled_lattice
from spectro.ising.samplers import IsingSampler, SamplerConfig

BETA = 0.44
SIZE = 80


class NumpyCheckerboard:
    """Reference: vectorised NumPy checkerboard Metropolis on one lattice (float64)."""

    def __init__(self, lattice: Lattice, beta: float, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.beta = beta
        self.jr = lattice.j_right
        self.jd = lattice.j_down
        self.jl = np.roll(lattice.j_right, 1, axis=1)
        self.ju = np.roll(lattice.j_down, 1, axis=0)
        self.h = lattice.field
        rows, cols = np.indices(lattice.j_right.shape)
        self.colours = [(rows + cols) % 2 == k for k in (0, 1)]
        self.s = self.rng.choice([-1.0, 1.0], size=lattice.j_right.shape)

    def sweep(self) -> None:
        s = self.s
        for colour in self.colours:
            hloc = (
                self.jr * np.roll(s, -1, axis=1)
                + self.jl * np.roll(s, 1, axis=1)
                + self.jd * np.roll(s, -1, axis=0)
                + self.ju * np.roll(s, 1, axis=0)
                + self.h
            )
            accept = self.rng.random(s.shape) < np.exp(-2.0 * self.beta * s * hloc)
            s = np.where(colour & accept, -s, s)
        self.s = s


def measure(fn: Callable[[], None], flips_per_call: float, min_time: float, sync: Callable[[], None] = lambda: None) -> float:
    """Flips per second of ``fn`` over at least ``min_time`` seconds."""
    calls = 0
    sync()
    t0 = time.perf_counter()
    while True:
        fn()
        calls += 1
        if time.perf_counter() - t0 >= min_time:
            break
    sync()
    return calls * flips_per_call / (time.perf_counter() - t0)


def probe_masks(lattice: Lattice, n_probes: int, seed: int = 0) -> np.ndarray:
    """``n_probes`` random rectangles plus the three chambers, as [R, H, W] bool."""
    g = np.random.default_rng(seed)
    H, W = lattice.height, lattice.width
    masks = [lattice.regions[k] for k in CHAMBERS]
    for _ in range(n_probes):
        r0, c0 = g.integers(0, H - 4), g.integers(0, W - 4)
        masks.append(lattice.rect(f"{r0}:{r0 + g.integers(2, 5)},{c0}:{c0 + g.integers(2, 5)}"))
    return np.stack(masks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--threading-layer",
        default=os.environ.get("NUMBA_THREADING_LAYER", "workqueue"),
        help="numba threading layer (default: $NUMBA_THREADING_LAYER, else workqueue; 'omp' spin-waits and "
        "collapses when the cores are shared with other processes)",
    )
    ap.add_argument("--quick", action="store_true", help="short measurements (< 1 minute in total)")
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--min-time", type=float, default=None, help="seconds per measurement (default 0.25 quick, 1.0 full)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per measurement (default 3 quick, 7 full)")
    args = ap.parse_args()
    min_time = args.min_time or (0.25 if args.quick else 1.0)
    repeats = args.repeats or (3 if args.quick else 7)

    numba.config.THREADING_LAYER = args.threading_layer  # takes effect at the first parallel launch

    lat = walled_lattice(SIZE, SIZE)
    n = lat.n_sites
    C = args.chains

    ref = NumpyCheckerboard(lat, BETA)
    samplers = {
        name: IsingSampler(lat, BETA, SamplerConfig(sampler=s, chains=C, seed=1, backend=b))
        for name, s, b in [
            ("numba metropolis (default)", "metropolis", "numba"),
            ("numba heatbath", "heatbath", "numba"),
            ("numba swendsen-wang", "swendsen-wang", "numba"),
            ("torch metropolis (cpu)", "metropolis", "torch"),
        ]
    }
    masks = probe_masks(lat, 400)
    sweeps = {"numba metropolis (default)": 20, "numba heatbath": 20, "numba swendsen-wang": 2, "torch metropolis (cpu)": 1}
    draws = 100

    # warm-up: JIT compilation (or loading from cache) is excluded from all timings
    for smp in samplers.values():
        smp.sweep(2)
        smp.sample_regions(masks[:3], 1)
    samplers["numba metropolis (default)"].sample_regions(masks, 1)
    ref.sweep()

    tasks: dict[str, tuple[Callable[[], None], float, Callable[[], None]]] = {
        "numpy-reference": (ref.sweep, n, lambda: None),
    }
    for name, smp in samplers.items():
        k = sweeps[name]
        tasks[name] = (lambda smp=smp, k=k: smp.sweep(k), k * n * C, lambda: None)
    torch_cpu = samplers["torch metropolis (cpu)"]

    def torch_one_thread() -> None:
        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            torch_cpu.sweep(1)
        finally:
            torch.set_num_threads(n_threads)

    tasks["torch metropolis (cpu, 1 thread)"] = (torch_one_thread, n * C, lambda: None)
    default = samplers["numba metropolis (default)"]
    tasks[f"numba metropolis + sample_regions R={len(masks)}, thin=1"] = (
        lambda: default.sample_regions(masks, draws, thin=1),
        draws * n * C,
        lambda: None,
    )
    if torch.cuda.is_available():
        cuda_chains = 1024
        gpu = IsingSampler(lat, BETA, SamplerConfig(chains=cuda_chains, seed=1, device="cuda"))
        gpu.sweep(3)
        sync = torch.cuda.synchronize
        tasks[f"torch metropolis (cuda, {cuda_chains} chains)"] = (lambda: gpu.sweep(5), 5 * n * cuda_chains, sync)

    rates: dict[str, list[float]] = {k: [] for k in tasks}
    for _ in range(repeats):  # interleaved repeats
        for name, (fn, flips, sync) in tasks.items():
            rates[name].append(measure(fn, flips, min_time, sync))

    best = {k: max(v) for k, v in rates.items()}
    base = best["numpy-reference"]
    print(f"Ising throughput: {SIZE}x{SIZE} walled lattice, beta = {BETA}, {C} chains (numpy reference: 1 lattice)")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numba {numba.__version__} "
        f"({numba.get_num_threads()} threads, {numba.threading_layer()} layer), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}"
    )
    print(f"best of {repeats} interleaved repeats, each >= {min_time:.2f} s; rates in spin-flip attempts per second")
    print()
    print(f"{'sampler':<48} {'best Mflip/s':>13} {'median':>10} {'ns/flip':>9} {'x numpy':>9}")
    print("-" * 93)
    for name, v in rates.items():
        b = best[name]
        print(f"{name:<48} {b / 1e6:>13.1f} {np.median(v) / 1e6:>10.1f} {1e9 / b:>9.3f} {b / base:>9.1f}")
    if torch.cuda.is_available():
        name = next(k for k in rates if "cuda" in k)
        print(f"\ncuda ({torch.cuda.get_device_name()}): {best[name] / 1e9:.3f} flips/ns")
    else:
        print("\ncuda: not available (torch.cuda.is_available() is False)")
    print(f"ratio_vs_numpy: {best['numba metropolis (default)'] / base:.1f}")


if __name__ == "__main__":
    main()
