"""Chamber susceptibilities of the Ising model through the shared engine.

Observables φ are region magnetizations M_A (the chambers), fields are probe regions B with
``H_h = H − h·M_B``; the generator of the field is ψ_B = M_B and

    χ_{A,B} = ∂⟨M_A⟩/∂h_B |_{h=0} = β·Cov(M_A, M_B)      (engine scale = β).

The exact counterpart (transfer matrix / enumeration) is :func:`exact_chamber_susceptibility`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..engine import MomentAccumulator, Susceptibility, estimate_susceptibility
from .lattice import CHAMBERS, Lattice, LatticeError, Rect
from .samplers import IsingSampler, SamplerConfig

__all__ = [
    "RunConfig", "chamber_susceptibility", "exact_chamber_susceptibility", "probe_grid",
    "TRANSFER_MATRIX_MAX_WIDTH", "ENUMERATION_MAX_SITES",
]

TRANSFER_MATRIX_MAX_WIDTH = 14
ENUMERATION_MAX_SITES = 20


@dataclass(frozen=True)
class RunConfig:
    """How long to sample. ``draws`` per chain, each after ``thin`` sweeps; ``burn_in`` sweeps first
    (default: a tenth of draws·thin). ``batches`` sets the batch-means standard errors."""

    draws: int = 10_000
    thin: int = 1
    burn_in: int | None = None
    batches: int = 20
    block: int = 1000  # draws handed to the engine at once (memory ~ block·chains·regions)

    def __post_init__(self) -> None:
        for name in ("draws", "thin", "batches", "block"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.draws < 4:
            raise ValueError(f"need at least 4 draws for error bars, got {self.draws}")
        if self.burn_in is not None and (not isinstance(self.burn_in, int) or self.burn_in < 0):
            raise ValueError(f"burn_in must be a non-negative integer, got {self.burn_in!r}")

    @property
    def burn_in_sweeps(self) -> int:
        return self.burn_in if self.burn_in is not None else (self.draws * self.thin) // 10


def chamber_susceptibility(
    lattice: Lattice,
    beta: float,
    probes: dict[str, np.ndarray],
    sampler: SamplerConfig = SamplerConfig(),
    run: RunConfig = RunConfig(),
    observables: tuple[str, ...] = CHAMBERS,
    progress: bool = True,
) -> Susceptibility:
    """χ[A, B] = β·Cov(M_A, M_B) for observables A (lattice regions) and probe masks B, sampled.

    Returns the engine's :class:`~spectro.engine.Susceptibility` (rows: ``observables``,
    columns: probe names) with batch-means standard errors, ESS and split R-hat.
    """
    _check_beta(beta)
    if not probes:
        raise LatticeError("no probe regions given")
    missing = [name for name in observables if name not in lattice.regions]
    if missing:
        raise LatticeError(f"lattice has no region(s) {missing}; it has {sorted(lattice.regions)}")
    obs_masks = [lattice.regions[name] for name in observables]
    probe_masks = []
    for name, m in probes.items():
        m = np.asarray(m)
        if m.shape != (lattice.height, lattice.width):
            raise LatticeError(f"probe {name!r} has shape {m.shape}, lattice is {lattice.height}x{lattice.width}")
        if not np.any(m):
            raise LatticeError(f"probe {name!r} is empty")
        probe_masks.append(m)
    masks = np.stack(obs_masks + probe_masks).astype(np.float64)
    m, k = len(obs_masks), len(probe_masks)

    chain_sampler = IsingSampler(lattice, beta, sampler)
    acc = MomentAccumulator(sampler.chains, m, k, run.draws, n_batches=run.batches)
    bar = tqdm(total=run.burn_in_sweeps + run.draws * run.thin, unit="sweep", disable=not progress,
               desc=f"ising β={beta:g} {lattice.height}x{lattice.width} {sampler.sampler}")
    remaining = run.burn_in_sweeps
    while remaining > 0:  # burn-in in chunks so the bar moves
        n = min(remaining, run.block * run.thin)
        chain_sampler.sweep(n)
        bar.update(n)
        remaining -= n
    done = 0
    while done < run.draws:
        n = min(run.block, run.draws - done)
        mags = torch.from_numpy(chain_sampler.sample_regions(masks, n, run.thin))  # [n, C, m + k]
        acc.update(mags[..., :m], mags[..., m:])
        done += n
        bar.update(n * run.thin)
    bar.close()
    meta = {
        "system": "ising",
        "beta": beta,
        "height": lattice.height,
        "width": lattice.width,
        "periodic": lattice.periodic,
        "sampler": asdict(sampler),
        "run": {**asdict(run), "burn_in": run.burn_in_sweeps},
        "convention": "chi[A,B] = d<M_A>/dh_B = beta*Cov(M_A, M_B), H_h = H - h*M_B",
    }
    return estimate_susceptibility(acc, scale=beta, observables=list(observables), fields=list(probes), meta=meta)


def exact_chamber_susceptibility(
    lattice: Lattice,
    beta: float,
    probes: dict[str, np.ndarray],
    observables: tuple[str, ...] = CHAMBERS,
) -> np.ndarray | None:
    """Exact β·Cov(M_A, M_B) [len(observables), len(probes)], or None if the lattice is too large.

    Uses the transfer matrix for open lattices of width ≤ ``TRANSFER_MATRIX_MAX_WIDTH`` and
    exhaustive enumeration for any lattice of at most ``ENUMERATION_MAX_SITES`` spins.
    """
    from .exact import enumerate_moments, transfer_matrix_moments

    _check_beta(beta)
    regions = [lattice.regions[name] for name in observables] + [np.asarray(p) for p in probes.values()]
    if lattice.n_sites <= ENUMERATION_MAX_SITES:
        moments = enumerate_moments(lattice, beta, regions)
    elif not lattice.periodic and lattice.width <= TRANSFER_MATRIX_MAX_WIDTH:
        moments = transfer_matrix_moments(lattice, beta, regions)
    else:
        return None
    m = len(observables)
    return beta * np.asarray(moments.cov)[:m, m:]


def probe_grid(lattice: Lattice, size: int | tuple[int, int], stride: int | tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Probe rectangles of ``size`` (rows, cols) tiled over the lattice with ``stride`` (default: size).

    Names are the rectangles in ``R0:R1,C0:C1`` form, in row-major order of their corners.
    """
    sh, sw = (size, size) if isinstance(size, int) else size
    stride = stride if stride is not None else (sh, sw)
    th, tw = (stride, stride) if isinstance(stride, int) else stride
    if min(sh, sw, th, tw) < 1:
        raise LatticeError(f"probe size {size} and stride {stride} must be positive")
    if sh > lattice.height or sw > lattice.width:
        raise LatticeError(f"probe size {sh}x{sw} does not fit the {lattice.height}x{lattice.width} lattice")
    probes = {}
    for r0 in range(0, lattice.height - sh + 1, th):
        for c0 in range(0, lattice.width - sw + 1, tw):
            rect = Rect(r0, r0 + sh, c0, c0 + sw)
            probes[str(rect)] = lattice.rect(rect)
    return probes


def _check_beta(beta: float) -> None:
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise LatticeError(f"beta must be a finite number >= 0, got {beta!r}")
