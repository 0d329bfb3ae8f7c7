"""Chamber susceptibilities of the Ising model through the shared engine.

Observables φ are region magnetizations M_A (the chambers), fields are probe regions B with
``H_h = H − h·M_B``; the generator of the field is ψ_B = M_B and

    χ_{A,B} = ∂⟨M_A⟩/∂h_B |_{h=0} = β·Cov(M_A, M_B)      (engine scale = β).

The exact counterpart (transfer matrix / enumeration) is :func:`exact_chamber_susceptibility`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..engine import MomentAccumulator, Susceptibility, estimate_susceptibility
from ..engine.moments import DEFAULT_SERIES_BUDGET_MB
from ..engine.distributed import World, all_reduce_accumulator, chain_block, current_world
from ..outputs import OutputError, check_snapshot_target, load_snapshot, save_snapshot
from .lattice import CHAMBERS, Lattice, LatticeError, Rect
from .samplers import IsingSampler, SamplerConfig

__all__ = [
    "Checkpointing", "RunConfig", "chamber_susceptibility", "exact_chamber_susceptibility", "probe_grid",
    "TRANSFER_MATRIX_MAX_WIDTH", "ENUMERATION_MAX_SITES",
]

SNAPSHOT_KIND = "ising-chains"
TRANSFER_MATRIX_MAX_WIDTH = 14
ENUMERATION_MAX_SITES = 20


@dataclass(frozen=True)
class RunConfig:
    """How long to sample. ``draws`` per chain, each after ``thin`` sweeps; ``burn_in`` sweeps first
    (default: a tenth of draws·thin). ``batches``: points per chain of the error-estimate series
    (None: one per draw within the engine's memory budget, docs/design.md §4)."""

    draws: int = 10_000
    thin: int = 1
    burn_in: int | None = None
    batches: int | None = None
    block: int = 1000  # draws handed to the engine at once (memory ~ block·chains·regions)

    def __post_init__(self) -> None:
        for name in ("draws", "thin", "batches", "block"):
            v = getattr(self, name)
            if name == "batches" and v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.draws < 4:
            raise ValueError(f"need at least 4 draws for error bars, got {self.draws}")
        if self.batches is not None and self.batches > self.draws:
            raise ValueError(f"batches ({self.batches}) exceeds draws ({self.draws}): a batch must hold a draw")
        if self.burn_in is not None and (not isinstance(self.burn_in, int) or self.burn_in < 0):
            raise ValueError(f"burn_in must be a non-negative integer, got {self.burn_in!r}")

    @property
    def burn_in_sweeps(self) -> int:
        return self.burn_in if self.burn_in is not None else (self.draws * self.thin) // 10


@dataclass(frozen=True)
class Checkpointing:
    """Periodic sampler + accumulator snapshots so a killed run can resume bit-identically.

    A snapshot is written atomically to ``path`` (``path.rank<r>`` for rank r > 0 of a
    distributed run) after a completed block once ``every_seconds`` have passed. With
    ``resume=True`` an existing snapshot is loaded and the run continues from it; the block grid
    is the same as in an uninterrupted run, so the result is identical bit for bit.
    """

    path: Path
    every_seconds: float = 60.0
    resume: bool = False

    def file(self, rank: int) -> Path:
        return Path(self.path) if rank == 0 else Path(f"{self.path}.rank{rank}")


def chamber_susceptibility(
    lattice: Lattice,
    beta: float,
    probes: dict[str, np.ndarray],
    sampler: SamplerConfig = SamplerConfig(),
    run: RunConfig = RunConfig(),
    observables: tuple[str, ...] = CHAMBERS,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
) -> Susceptibility:
    """χ[A, B] = β·Cov(M_A, M_B) for observables A (lattice regions) and probe masks B, sampled.

    Returns the engine's :class:`~spectro.engine.Susceptibility` (rows: ``observables``,
    columns: probe names) with batch-means standard errors, ESS and split R-hat. Under
    ``torchrun`` (or with an explicit ``world``) each process samples its block of the
    ``sampler.chains`` global chains and the moments are all-reduced: every rank returns the
    same result as one process would.
    """
    _check_beta(beta)
    if not probes:
        raise LatticeError("no probe regions given")
    missing = [name for name in observables if name not in lattice.regions]
    if missing:
        raise LatticeError(f"lattice has no region(s) {missing}; it has {sorted(lattice.regions)}")
    probe_masks = []
    for name, m in probes.items():
        m = np.asarray(m)
        if m.shape != (lattice.height, lattice.width):
            raise LatticeError(f"probe {name!r} has shape {m.shape}, lattice is {lattice.height}x{lattice.width}")
        if not np.any(m):
            raise LatticeError(f"probe {name!r} is empty")
        probe_masks.append(m)
    masks = np.stack([lattice.regions[name] for name in observables] + probe_masks).astype(np.float64)
    m, k = len(observables), len(probe_masks)

    world = world or current_world(sampler.device)
    start, stop = chain_block(sampler.chains, world)
    local = replace(sampler, chains=stop - start, chain_offset=sampler.chain_offset + start)
    chain_sampler = IsingSampler(lattice, beta, local)
    points = MomentAccumulator.series_points(sampler.chains, m, k, run.draws, run.batches, DEFAULT_SERIES_BUDGET_MB)
    acc = MomentAccumulator(local.chains, m, k, run.draws, n_batches=points)  # same series on every rank
    position = {"burned": 0, "drawn": 0}
    fingerprint = {"beta": beta, "lattice": lattice.height * 1000 + lattice.width, "probes": list(probes),
                   "sampler": asdict(local), "run": asdict(run)}
    if checkpoint is not None:
        own = checkpoint.file(world.rank)
        check_snapshot_target(own, SNAPSHOT_KIND)  # never replaces a file that is not a spectro snapshot
        if checkpoint.resume and own.exists():
            position = _load_snapshot(own, fingerprint, chain_sampler, acc)

    total = run.burn_in_sweeps + run.draws * run.thin
    bar = tqdm(total=total, unit="sweep", disable=not (progress and world.is_main),
               desc=f"ising β={beta:g} {lattice.height}x{lattice.width} {sampler.sampler}")
    bar.update(position["burned"] + position["drawn"] * run.thin)
    last_save = time.monotonic()

    def maybe_save() -> None:
        nonlocal last_save
        if checkpoint is not None and time.monotonic() - last_save >= checkpoint.every_seconds:
            _save_snapshot(checkpoint.file(world.rank), fingerprint, chain_sampler, acc, position)
            last_save = time.monotonic()

    while position["burned"] < run.burn_in_sweeps:  # burn-in in blocks so the bar moves
        n = min(run.burn_in_sweeps - position["burned"], run.block * run.thin)
        chain_sampler.sweep(n)
        position["burned"] += n
        bar.update(n)
        maybe_save()
    while position["drawn"] < run.draws:
        n = min(run.block, run.draws - position["drawn"])
        mags = torch.from_numpy(chain_sampler.sample_regions(masks, n, run.thin))  # [n, C, m + k]
        acc.update(mags[..., :m], mags[..., m:])
        position["drawn"] += n
        bar.update(n * run.thin)
        maybe_save()
    bar.close()
    acc = all_reduce_accumulator(acc, start, sampler.chains, world)
    meta = {
        "system": "ising",
        "beta": beta,
        "height": lattice.height,
        "width": lattice.width,
        "periodic": lattice.periodic,
        "sampler": asdict(sampler),
        "run": {**asdict(run), "burn_in": run.burn_in_sweeps},
        "processes": world.size,
        "convention": "chi[A,B] = d<M_A>/dh_B = beta*Cov(M_A, M_B), H_h = H - h*M_B",
    }
    return estimate_susceptibility(acc, scale=beta, observables=list(observables), fields=list(probes), meta=meta)


def _save_snapshot(path: Path, fingerprint: dict, sampler: IsingSampler, acc: MomentAccumulator, position: dict) -> None:
    state = {"fingerprint": fingerprint, "sampler": sampler.state_dict(), "accumulator": acc.state_dict(), "position": dict(position)}
    save_snapshot(path, SNAPSHOT_KIND, state)


def _load_snapshot(path: Path, fingerprint: dict, sampler: IsingSampler, acc: MomentAccumulator) -> dict:
    state = load_snapshot(path, SNAPSHOT_KIND, what="checkpoint")
    if _canonical(state.get("fingerprint")) != _canonical(fingerprint):
        raise ValueError(f"checkpoint {path} belongs to a different run (lattice, β, probes or settings differ); "
                         "remove it or run without --resume")
    try:
        sampler.load_state_dict(state["sampler"])
        acc.load_state_dict(state["accumulator"])
        return {"burned": int(state["position"]["burned"]), "drawn": int(state["position"]["drawn"])}
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise OutputError(f"checkpoint {path} is damaged ({' '.join(str(e).split())}); remove it or run without --resume") from None


def _canonical(obj):
    """Tuples and lists compare equal (a snapshot stores what it was given)."""
    if isinstance(obj, dict):
        return {k: _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


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
