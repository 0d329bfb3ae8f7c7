"""Cost of the error estimate: the engine's estimate step on the shape of the devinterp benchmark job.

One component of ``benchmarks/bench_vs_devinterp.py`` streams φ [1] and ψ [1,008 tokens] for
4 chains × 100 draws into a MomentAccumulator; this script times (best of 5) the update of all
draws, Baker's estimate (Geyer MCSE, dof, rank R-hat, split-chain noise) and the plain FDT estimate,
and prints the accumulator's memory, with the CPU model. Usage: ``python benchmarks/bench_estimate.py``.
"""

from __future__ import annotations

import subprocess
import time

import torch

from spectro.engine import MomentAccumulator, component_susceptibility_estimate, estimate_susceptibility


def best(fn, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | head -1"], capture_output=True, text=True).stdout
    torch.set_num_threads(2)
    C, m, k, T = 4, 1, 1008, 100
    g = torch.Generator().manual_seed(0)
    phi, psi = torch.randn(T, C, m, generator=g, dtype=torch.float64), torch.randn(T, C, k, generator=g, dtype=torch.float64)

    def fill():
        acc = MomentAccumulator(C, m, k, T)
        for t in range(T):
            acc.update(phi[t], psi[t])
        return acc

    comp, full = fill(), fill()
    mem = sum(v.numel() * v.element_size() for v in comp.chain_tensors().values())
    print(f"# {cpu.split(':')[-1].strip()}, torch threads 2; job shape: {C} chains x {T} draws, m={m}, k={k}")
    print(f"update, all {T} draws one at a time : {best(fill):.3f} s")
    print(f"estimate_susceptibility (FDT)       : {best(lambda: estimate_susceptibility(full, -1.0)):.3f} s")
    print(f"component estimate (Baker)          : {best(lambda: component_susceptibility_estimate(comp, full)):.3f} s")
    print(f"accumulator memory                  : {mem / 2**20:.1f} MiB (series points per chain {comp.n_batches})")


if __name__ == "__main__":
    main()
