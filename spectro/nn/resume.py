"""Checkpoints of a running NN job, so that a killed job resumes with bit-identical results.

A job (:func:`spectro.nn.job.run_job`) samples its components one after the other. With
checkpointing on, it keeps two folders beside the results folder ``OUT``:

* the *stage* ``.OUT.partial/`` — the results folder being assembled (completed components'
  ``chi_*.npz`` and devinterp exports); renamed to ``OUT`` when the job ends;
* the *checkpoint folder* (default ``OUT.checkpoint/``)::

      job.json         fingerprint of the job (resolved config, process count) and the stage path
      done.json        completed components with their summaries (written atomically)
      full_acc.pt      the full-model run's merged moment accumulator (Baker's estimator needs it)
      rank<r>.pt       process r's snapshot of the component in progress: sampler state
                       (weights, RMSProp state, RNG states, minibatch position, loss trace),
                       its moment accumulator and its devinterp record so far

A snapshot is taken after a draw once ``every_seconds`` have passed since the last one. Its
timing does not touch the arithmetic: the resumed chains continue from the exact state of that
draw, so ``--resume`` gives the numbers of an uninterrupted run bit for bit (tested by SIGKILLing
a real subprocess). A snapshot, ``done.json`` and ``full_acc.pt`` are each written to a
temporary file and renamed, so a kill at any moment leaves either the old or the new file.
Under torchrun every process writes its own ``rank<r>.pt``; process 0 writes the rest. The
folder must then be on a file system all processes see (as the results folder must).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..engine.distributed import World
from ..io import atomic_path, write_json

__all__ = ["JobCheckpointing", "JobState"]

_FORMAT = "spectro.nn_job_checkpoint/1"


@dataclass(frozen=True)
class JobCheckpointing:
    """Where and how often a job snapshots itself.

    Attributes:
        folder: the checkpoint folder (see the module docstring).
        every_seconds: minimum time between snapshots of the component in progress.
        resume: continue from the folder's snapshots if they exist (else start afresh; the
            folder is then cleared first).
    """

    folder: Path
    every_seconds: float = 60.0
    resume: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.every_seconds, bool) or not isinstance(self.every_seconds, (int, float)) \
                or not math.isfinite(self.every_seconds) or self.every_seconds <= 0:
            raise ValueError(f"checkpoint every_seconds must be a finite number > 0, got {self.every_seconds!r}")


def _barrier(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier()


def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class JobState:
    """The checkpoint folder of one job (all processes construct one; process 0 owns the shared files).

    ``fingerprint``: what a resumed job must agree on (the resolved config and the process
    count); a mismatch is a :class:`ValueError` naming the folder.
    """

    def __init__(self, checkpointing: JobCheckpointing, fingerprint: dict, stage: Path, world: World):
        self.ck = checkpointing
        self.folder = Path(checkpointing.folder)
        self.fingerprint = _canonical(fingerprint)
        self.stage = Path(stage)
        self.world = world
        self._last_save = time.monotonic()

    # ------------------------------------------------------------------ files
    @property
    def _job_file(self) -> Path:
        return self.folder / "job.json"

    @property
    def _done_file(self) -> Path:
        return self.folder / "done.json"

    @property
    def _full_acc_file(self) -> Path:
        return self.folder / "full_acc.pt"

    def _rank_file(self, rank: int | None = None) -> Path:
        return self.folder / f"rank{self.world.rank if rank is None else rank}.pt"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> dict[str, dict]:
        """Open the folder; return the completed components (name → summary), empty for a fresh start.

        Process 0 checks the fingerprint of an existing folder (``resume``) or clears it and the
        stage (fresh start), then all processes meet at a barrier.
        """
        resumable = False
        if self.world.is_main:
            if self.ck.resume and self._job_file.is_file():
                saved = json.loads(self._job_file.read_text())
                if saved.get("format") != _FORMAT or saved.get("fingerprint") != self.fingerprint:
                    raise ValueError(f"checkpoint folder {self.folder} belongs to a different job (its config or "
                                     "process count differs); remove it, or run without --resume to start afresh")
                resumable = self.stage.is_dir()
            if not resumable:
                shutil.rmtree(self.folder, ignore_errors=True)
                shutil.rmtree(self.stage, ignore_errors=True)
                try:
                    self.folder.mkdir(parents=True)
                    self.stage.mkdir(parents=True)
                except OSError as e:
                    raise ValueError(f"cannot create the checkpoint folder {self.folder}: {e.strerror}") from None
                write_json(self._job_file, {"format": _FORMAT, "fingerprint": self.fingerprint, "stage": str(self.stage)})
                write_json(self._done_file, {})
        _barrier(self.world)
        return json.loads(self._done_file.read_text())

    def finish(self) -> None:
        """Remove the checkpoint folder (process 0, after the results folder is in place)."""
        _barrier(self.world)
        if self.world.is_main:
            shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------ completed components
    def record_done(self, done: dict[str, dict], full_acc_state: dict | None = None) -> None:
        """Process 0: persist the completed components (after their files are in the stage)."""
        if not self.world.is_main:
            return
        if full_acc_state is not None:
            with atomic_path(self._full_acc_file, suffix=".pt") as tmp:
                torch.save(full_acc_state, tmp)
        write_json(self._done_file, done)

    def load_full_acc(self) -> dict | None:
        return torch.load(self._full_acc_file, weights_only=False) if self._full_acc_file.is_file() else None

    # ------------------------------------------------------------------ the component in progress
    def load_partial(self, component: str) -> dict | None:
        """This process's snapshot of ``component``, or None (no snapshot, or one of an earlier component)."""
        f = self._rank_file()
        if not (self.ck.resume and f.is_file()):
            return None
        snap = torch.load(f, weights_only=False)
        if snap.get("fingerprint") != self.fingerprint:
            raise ValueError(f"snapshot {f} belongs to a different job; remove {self.folder} or run without --resume")
        return snap if snap.get("component") == component else None

    def due(self) -> bool:
        return time.monotonic() - self._last_save >= self.ck.every_seconds

    def save_partial(self, component: str, sampler: dict, accumulator: dict, record: Any) -> None:
        """Write this process's snapshot atomically."""
        state = {"fingerprint": self.fingerprint, "component": component, "sampler": sampler,
                 "accumulator": accumulator, "record": record}
        with atomic_path(self._rank_file(), suffix=".pt") as tmp:
            torch.save(state, tmp)
        self._last_save = time.monotonic()
