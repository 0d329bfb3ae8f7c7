"""The one measurement driver: sample a :class:`~spectro.engine.system.System`, stream its draws
into the engine, return χ with error bars (docs/design.md §3–4).

:func:`measure` gives χ = scale·Cov(φ, ψ); :func:`measure_components` gives Baker et al.'s
weight-restricted estimator from one unrestricted run and one run per component (the one loop
over components: the NN job runs through it with a per-component hook). The driver owns what
every system would otherwise re-implement:

* run length (:class:`RunConfig`: burn-in, draws, thinning, error-series resolution);
* the accumulator (sized once for all chains, so every process builds the same series);
* a progress bar (process 0 only);
* checkpoints (:class:`Checkpointing`): system state + accumulator + position, written
  atomically after a block once ``every_seconds`` have passed and at the end; a resumed run
  follows the same block grid, so its result equals the uninterrupted run's bit for bit; a
  finished run of :func:`measure_components` leaves a small record (its result) instead;
* torchrun: each process samples its contiguous block of the chains (``system.chain_block``)
  and the accumulators are all-reduced (:mod:`spectro.engine.distributed`); a failure on one
  process is reported to every process instead of leaving them waiting;
* timing (``meta["timing"]``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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

    def file(self, rank: int) -> Path:
        if "{rank}" in str(self.path):
            return Path(str(self.path).replace("{rank}", str(rank)))
        return Path(self.path) if rank == 0 else Path(f"{self.path}.rank{rank}")

    def for_run(self, name: str) -> "Checkpointing":
        """The checkpoint of one of several runs (``measure_components``): ``path.<name>``."""
        return replace(self, path=Path(f"{self.path}.{name}"))


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
    full: System | Callable[[], System] | None,
    components: Mapping[str, System | Callable[[], System]],
    run: RunConfig,
    *,
    rows: Sequence[int] | None = None,
    full_name: str | None = None,
    full_run: RunConfig | None = None,
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
    progress: bool = True,
    meta: Mapping[str, Any] | None = None,
    on_result: Callable[[str, Susceptibility, Sampled], None] | None = None,
) -> dict[str, Susceptibility]:
    """Baker et al.'s χ^C = −(E_C[φ·ψ] − E_C[φ]·E_full[ψ]) for each component system
    (:func:`~spectro.engine.component_susceptibility_estimate`) on the observable ``rows``
    (default all); the other rows get the component run's χ = scale·Cov(φ, ψ). ``full`` is
    sampled first (``full_run``, default ``run``: give it more draws to shrink its share of the
    error); components must have its fields. With ``rows=[]`` no row needs it (``full`` may be
    None). ``full_name``: also return the full run's own χ = scale·Cov(φ, ψ) under that name.

    A system may be given as a zero-argument callable that builds it: it is built just before
    its run and dropped after it (one model copy at a time). ``on_result(name, result, sampled)``
    runs on every process after each run's estimate, while the run's system is still there (e.g.
    to write per-run outputs; changes to ``result.meta`` are kept).

    Checkpoints: run ``name`` snapshots to ``checkpoint.for_run(name)``; when it ends, that file
    is replaced by a small finished record (its result; for the full run its block of the
    accumulator, when rows need it), and a resumed call reads finished runs back (without
    ``on_result``) instead of sampling them."""
    baker = rows is None or len(rows) > 0
    if baker and full is None:
        raise ValueError("Baker's estimator needs the full system (or rows=[]: no row takes it)")
    if not components and full_name is None:
        raise ValueError("need at least one component system")
    runs = [(full_name, full, full_run or run, True)] if full is not None else []
    runs += [(name, comp, run, False) for name, comp in components.items()]
    out: dict[str, Susceptibility] = {}
    timing: dict[str, float] = {}
    full_acc = full_meta = full_fields = None
    for name, spec, run_i, is_full in runs:
        system = spec() if callable(spec) else spec
        key = name or "full"
        if full_fields is not None and list(system.fields) != full_fields:
            raise ValueError(f"component {name!r} has fields different from the full system's")

        def estimate(acc: MomentAccumulator, run_meta: dict) -> Susceptibility:
            names, (obs_axis, field_axis) = (list(system.observables), list(system.fields)), system.axes()
            if is_full or not baker:
                return estimate_susceptibility(
                    acc, system.scale, *names, meta={**run_meta, "component": key, **dict(meta or {})},
                    observable_axis=obs_axis, field_axis=field_axis, estimator=estimator_record(system, run_i, component=key))
            return component_susceptibility_estimate(
                acc, full_acc, *names, rows=rows, meta={**run_meta, "component": key, "full_run": full_meta, **dict(meta or {})},
                observable_axis=obs_axis, field_axis=field_axis,
                estimator=estimator_record(system, run_i, component=key, full_run=asdict(full_run or run)))

        acc, run_meta, result, timing[f"{key}_s"] = _one_run(
            system, run_i, key, None if name is None else estimate, on_result, keep_acc=is_full and baker,
            checkpoint=checkpoint and checkpoint.for_run(key), world=world, progress=progress)
        if is_full:
            full_acc, full_meta, full_fields = acc, run_meta, list(system.fields)
        if result is not None:
            out[key] = result
        del system  # one system at a time
    for s in out.values():  # every run's wall seconds (full_s, <component>_s) in every result
        s.meta["timing"] = timing.copy()
    return out


def _one_run(system: System, run: RunConfig, name: str, estimate, on_result, *, keep_acc: bool,
             checkpoint: Checkpointing | None, world: World | None, progress: bool):
    """One run of :func:`measure_components`: (the all-chain accumulator when ``keep_acc``, the
    run's meta, its result or None, wall seconds), sampled or read back from its finished record."""
    t0 = time.perf_counter()
    world = world or current_world(system.device)
    start, stop = chain_block(system.n_chains, world)
    fingerprint = {"system": system.fingerprint(), "run": asdict(run), "process": [world.rank, world.size]}
    own = None if checkpoint is None else checkpoint.file(world.rank)
    record = _finished(own, fingerprint) if own is not None and checkpoint.resume and own.exists() else None
    if world.size > 1 and any_rank(record is None, world, system.device):
        if record is not None:  # another process lacks its record: every process samples the run again
            checkpoint, record = replace(checkpoint, resume=False), None
    if record is not None:
        try:
            run_meta = json.loads(record["meta"])
            result = None if record["result"] is None else Susceptibility.from_arrays(record["result"])
            acc = None
            if keep_acc:
                acc = _accumulator(system, run, world, stop - start)
                acc.load_state_dict(record["accumulator"])
                acc = all_reduce_accumulator(acc, start, system.n_chains, world)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise OutputError(f"checkpoint {own} is damaged ({' '.join(str(e).split())}); "
                              "remove it or run without --resume") from None
        return acc, run_meta, result, float(record["seconds"])
    done = sample_moments(system, run, checkpoint=checkpoint, world=world, progress=progress, desc=f"{name:>6}")
    result = None if estimate is None else estimate(done.accumulator, done.meta)
    if on_result is not None and result is not None:
        on_result(name, result, done)
    seconds = time.perf_counter() - t0
    if own is not None:
        block = done.accumulator.select_chains(slice(start, stop)).state_dict() if keep_acc else None
        save_snapshot(own, SNAPSHOT_KIND, {"fingerprint": fingerprint, "finished": True, "seconds": seconds,
                                           "meta": json.dumps(done.meta, default=str), "accumulator": block,
                                           "result": None if result is None else result.to_arrays()})
    return (done.accumulator if keep_acc else None), done.meta, result, seconds


def _finished(path: Path, fingerprint: dict) -> dict | None:
    """The finished record at ``path`` (None: a snapshot of a run in progress)."""
    record = load_snapshot(path, SNAPSHOT_KIND, what="checkpoint")
    return _of_this_run(record, fingerprint, path) if "finished" in record else None


def _of_this_run(state: dict, fingerprint: dict, path: Path) -> dict:
    if _canonical(state.get("fingerprint")) != _canonical(fingerprint):
        raise OutputError(f"checkpoint {path} belongs to a different run (system, chains or run settings differ); "
                          "remove it or run without --resume")
    return state


def _accumulator(system: System, run: RunConfig, world: World, chains: int) -> MomentAccumulator:
    """This process's accumulator of a run over ``chains`` of the system's chains (same series for every process)."""
    m, k = len(system.observables), len(system.fields)
    points = MomentAccumulator.series_points(system.n_chains, m, k, run.draws, run.batches, DEFAULT_SERIES_BUDGET_MB)
    return MomentAccumulator(chains, m, k, run.draws, n_batches=points, device=system.device)


def estimator_record(system: System, run: RunConfig, **extra: Any) -> EstimatorInfo:
    """The typed record saved with a result: the system's estimator info plus the run's length
    (``extra``: e.g. the component name)."""
    info = system.estimator()
    return replace(info, run={**info.run, **asdict(run), "burn_in": run.burn_in_steps, **extra})


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
    acc = _accumulator(system, run, world, local.n_chains)
    position = {"burned": 0, "drawn": 0}
    fingerprint = {"system": local.fingerprint(), "run": asdict(run), "chains": [start, stop, C]}
    own = None
    if checkpoint is not None:
        own = checkpoint.file(world.rank)
        check_snapshot_target(own, SNAPSHOT_KIND)
        if checkpoint.resume and own.exists():
            position = _load(own, fingerprint, local, acc)

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


def _load(path: Path, fingerprint: dict, system: System, acc: MomentAccumulator) -> dict[str, int]:
    state = _of_this_run(load_snapshot(path, SNAPSHOT_KIND, what="checkpoint"), fingerprint, path)
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
