"""The one measurement driver: sample a :class:`~spectro.engine.system.System`, stream its draws
into the engine, return χ with error bars (docs/design.md §3–4).

:func:`measure` gives χ = scale·Cov(φ, ψ); :func:`measure_components` gives Baker et al.'s
weight-restricted estimator from one unrestricted run and one run per component. The driver
owns what every system would otherwise re-implement:

* run length (:class:`RunConfig`: burn-in, draws, thinning, error-series resolution);
* the accumulator (sized once for all chains, so every process builds the same series);
* a progress bar (process 0 only);
* checkpoints (:class:`Checkpointing`): system state + accumulator + position, written
  atomically after a block once ``every_seconds`` have passed and at the end; a resumed run
  follows the same block grid, so its result equals the uninterrupted run's bit for bit;
* torchrun: each process samples its contiguous block of the chains (``system.chain_block``)
  and the accumulators are all-reduced (:mod:`spectro.engine.distributed`); a failure on one
  process is reported to every process instead of leaving them waiting;
* timing (``meta["timing"]``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..io import OutputError
from .coords import EstimatorInfo
from .distributed import World, all_reduce_accumulator, any_rank, chain_block, current_world, gather_chain_rows
from .moments import DEFAULT_SERIES_BUDGET_MB, MomentAccumulator
from .snapshots import check_snapshot_target, load_snapshot, save_snapshot
from .susceptibility import Susceptibility, component_susceptibility_estimate, estimate_susceptibility
from .system import System

__all__ = ["RunConfig", "Checkpointing", "SamplingStopped", "Sampled", "measure", "measure_components",
           "sample_moments", "estimator_record", "SNAPSHOT_KIND"]

SNAPSHOT_KIND = "chains"


class SamplingStopped(RuntimeError):
    """Sampling failed on another process of a distributed run (its own error is printed there)."""


@dataclass(frozen=True)
class RunConfig:
    """How long to sample. ``draws`` per chain, each after ``thin`` steps; ``burn_in`` steps first
    (default: a tenth of draws·thin). ``batches``: points per chain of the error-estimate series
    (None: one per draw within the engine's memory budget, docs/design.md §4). ``block``: draws
    handed to the engine at once (memory ~ block·chains·(observables + fields))."""

    draws: int = 10_000
    thin: int = 1
    burn_in: int | None = None
    batches: int | None = None
    block: int = 1000

    def __post_init__(self) -> None:
        for name in ("draws", "thin", "batches", "block"):
            v = getattr(self, name)
            if name == "batches" and v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.draws < 2:
            raise ValueError(f"need at least 2 draws per chain for a covariance, got {self.draws}")
        if self.batches is not None and self.batches > self.draws:
            raise ValueError(f"batches ({self.batches}) exceeds draws ({self.draws}): a batch must hold a draw")
        if self.burn_in is not None and (not isinstance(self.burn_in, int) or isinstance(self.burn_in, bool)
                                         or self.burn_in < 0):
            raise ValueError(f"burn_in must be a non-negative integer, got {self.burn_in!r}")

    @property
    def burn_in_steps(self) -> int:
        return self.burn_in if self.burn_in is not None else (self.draws * self.thin) // 10

    @property
    def total_steps(self) -> int:
        return self.burn_in_steps + self.draws * self.thin


@dataclass(frozen=True)
class Checkpointing:
    """Periodic snapshots so a killed run resumes bit-identically.

    A snapshot goes to ``path`` (``path.rank<r>`` for rank r > 0 of a distributed run, or
    ``path`` with ``{rank}`` replaced by r when it contains ``{rank}``) after a completed block
    once ``every_seconds`` have passed, and when the run ends. ``resume=True`` continues from an
    existing snapshot. Never replaces a file that is not a spectro snapshot.
    """

    path: Path
    every_seconds: float = 60.0
    resume: bool = False
    restart_other_runs: bool = False  # a snapshot of a different run: start afresh (and replace it) instead of an error

    def file(self, rank: int) -> Path:
        if "{rank}" in str(self.path):
            return Path(str(self.path).replace("{rank}", str(rank)))
        return Path(self.path) if rank == 0 else Path(f"{self.path}.rank{rank}")

    def for_run(self, name: str) -> "Checkpointing":
        """The checkpoint of one of several runs (``measure_components``): ``path.<name>``."""
        return Checkpointing(Path(f"{self.path}.{name}"), self.every_seconds, self.resume, self.restart_other_runs)


@dataclass
class Sampled:
    """What :func:`sample_moments` leaves: the accumulator over all chains, the run's ``meta``,
    this process's system (its chains' final state, for anything a caller wants to read off it)
    and ``gather`` (this process's per-chain rows → all chains' rows)."""

    accumulator: MomentAccumulator
    meta: dict[str, Any]
    system: System
    gather: Callable[[torch.Tensor], torch.Tensor]


def measure(
    system: System,
    run: RunConfig,
    *,
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
    progress: bool = True,
    desc: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Susceptibility:
    """χ[i, a] = scale·Cov(φ_i, ψ_a) over all chains of ``system``, with the engine's error bars.

    Every process of a torchrun launch returns the same result. ``meta`` of the result: the
    system's summary, ``run``, ``processes``, ``timing`` and ``meta``.
    """
    done = sample_moments(system, run, checkpoint=checkpoint, world=world, progress=progress, desc=desc)
    obs_axis, field_axis = system.axes()
    return estimate_susceptibility(done.accumulator, system.scale, list(system.observables), list(system.fields),
                                   meta={**done.meta, **dict(meta or {})}, observable_axis=obs_axis,
                                   field_axis=field_axis, estimator=estimator_record(system, run))


def measure_components(
    full: System,
    components: Mapping[str, System],
    run: RunConfig,
    *,
    full_run: RunConfig | None = None,
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
    progress: bool = True,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Susceptibility]:
    """Baker et al.'s χ^C = −(E_C[φ·ψ] − E_C[φ]·E_full[ψ]) for each component system
    (:func:`~spectro.engine.component_susceptibility_estimate`). ``full`` is sampled once
    (``full_run``, default ``run``: give it more draws to shrink its share of the error);
    components must have the full system's fields. Checkpoints: one file per run (``.full``,
    ``.<component>``); on resume, finished runs are read back instead of sampled."""
    if not components:
        raise ValueError("need at least one component system")
    for name, comp in components.items():
        if list(comp.fields) != list(full.fields):
            raise ValueError(f"component {name!r} has fields different from the full system's")
    t0 = time.perf_counter()
    full_done = sample_moments(full, full_run or run, checkpoint=_sub(checkpoint, "full"), world=world,
                               progress=progress, desc="full")
    timing = {"full_s": time.perf_counter() - t0}
    out: dict[str, Susceptibility] = {}
    for name, comp in components.items():
        tc = time.perf_counter()
        done = sample_moments(comp, run, checkpoint=_sub(checkpoint, name), world=world, progress=progress,
                              desc=name)
        obs_axis, field_axis = comp.axes()
        out[name] = component_susceptibility_estimate(
            done.accumulator, full_done.accumulator, list(comp.observables), list(comp.fields),
            meta={**done.meta, "component": name, "full_run": full_done.meta, **dict(meta or {})},
            observable_axis=obs_axis, field_axis=field_axis,
            estimator=estimator_record(comp, run, component=name, full_run=asdict(full_run or run)))
        timing[f"{name}_s"] = time.perf_counter() - tc
    for s in out.values():  # every run's wall seconds (full_s, <component>_s) in every result
        s.meta["timing"] = timing.copy()
    return out


def estimator_record(system: System, run: RunConfig, **extra: Any) -> EstimatorInfo:
    """The typed record saved with a result: the system's estimator info plus the run's length
    (``extra``: e.g. the component name)."""
    info = system.estimator()
    return replace(info, run={**info.run, **asdict(run), "burn_in": run.burn_in_steps, **extra})


def _sub(checkpoint: Checkpointing | None, name: str) -> Checkpointing | None:
    return None if checkpoint is None else checkpoint.for_run(name)


def sample_moments(
    system: System,
    run: RunConfig,
    *,
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> Sampled:
    """Sample ``system`` for ``run``: the all-chain accumulator, the run's meta, this process's system.

    In a distributed run a failure on one process is reported to all after their sampling loop
    (one collective per run, so processes resumed from snapshots taken at different draws never
    wait on each other), and the others raise :class:`SamplingStopped`."""
    t0 = time.perf_counter()
    world = world or current_world(system.device)
    C = system.n_chains
    start, stop = chain_block(C, world)
    local = system if (start, stop) == (0, C) else system.chain_block(start, stop)
    m, k = len(system.observables), len(system.fields)
    points = MomentAccumulator.series_points(C, m, k, run.draws, run.batches, DEFAULT_SERIES_BUDGET_MB)
    acc = MomentAccumulator(local.n_chains, m, k, run.draws, n_batches=points, device=system.device)
    position = {"burned": 0, "drawn": 0}
    fingerprint = {"system": local.fingerprint(), "run": asdict(run), "chains": [start, stop, C]}
    own = None
    if checkpoint is not None:
        own = checkpoint.file(world.rank)
        check_snapshot_target(own, SNAPSHOT_KIND)
        if checkpoint.resume and own.exists():
            position = _load(own, fingerprint, local, acc, checkpoint.restart_other_runs)

    bar = tqdm(total=run.total_steps, unit=getattr(system, "unit", "step"), dynamic_ncols=True, file=sys.stderr,
               disable=not (progress and world.is_main), desc=desc or getattr(system, "name", None))
    bar.update(position["burned"] + position["drawn"] * run.thin)
    last_save = time.monotonic()

    def after_block(steps: int, final: bool = False) -> None:
        nonlocal last_save
        bar.update(steps)
        if own is not None and (final or time.monotonic() - last_save >= checkpoint.every_seconds):
            save_snapshot(own, SNAPSHOT_KIND, {"fingerprint": fingerprint, "system": local.state_dict(),
                                               "accumulator": acc.state_dict(), "position": dict(position)})
            last_save = time.monotonic()

    failure: Exception | None = None
    try:
        with local.running():
            while position["burned"] < run.burn_in_steps:
                n = min(run.burn_in_steps - position["burned"], run.block * run.thin)
                local.advance(n)
                position["burned"] += n
                after_block(n)
            while position["drawn"] < run.draws:
                n = min(run.block, run.draws - position["drawn"])
                phi, psi = local.draw(n, run.thin)
                acc.update(phi, psi)
                position["drawn"] += n
                after_block(n * run.thin, final=position["drawn"] == run.draws)
            local.finish()
    except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other processes
        if world.size == 1:
            raise
        failure = e
    finally:
        bar.close()
    if world.size > 1 and any_rank(failure is not None, world, acc.n.device):
        raise failure if failure is not None else SamplingStopped(
            "sampling failed on another process of this run; its error is printed there")
    acc = all_reduce_accumulator(acc, start, C, world)
    dev = acc.n.device

    def gather(rows: torch.Tensor) -> torch.Tensor:
        return rows if world.size == 1 else gather_chain_rows(rows.to(dev), start, C, world)

    info = {**local.summary(gather), "run": {**asdict(run), "burn_in": run.burn_in_steps}, "processes": world.size,
            "timing": {"sample_s": time.perf_counter() - t0}}
    return Sampled(acc, info, local, gather)


def _load(path: Path, fingerprint: dict, system: System, acc: MomentAccumulator, restart: bool) -> dict[str, int]:
    state = load_snapshot(path, SNAPSHOT_KIND, what="checkpoint")
    if _canonical(state.get("fingerprint")) != _canonical(fingerprint):
        if restart:
            return {"burned": 0, "drawn": 0}
        raise OutputError(f"checkpoint {path} belongs to a different run (system, chains or run settings differ); "
                          "remove it or run without --resume")
    try:
        system.load_state_dict(state["system"])
        acc.load_state_dict(state["accumulator"])
        return {"burned": int(state["position"]["burned"]), "drawn": int(state["position"]["drawn"])}
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise OutputError(f"checkpoint {path} is damaged ({' '.join(str(e).split())}); "
                          "remove it or run without --resume") from None


def _canonical(obj: Any) -> Any:
    """Tuples and lists compare equal (a snapshot stores what it was given)."""
    if isinstance(obj, dict):
        return {k: _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj
