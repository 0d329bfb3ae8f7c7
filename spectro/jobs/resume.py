"""Checkpoints of a running NN job, so that a killed job resumes with bit-identical results.

A job (:func:`spectro.jobs.nn_job.run_job`) samples its components one after the other. With
checkpointing on, it keeps two folders beside the results folder ``OUT``:

* the *stage* ``.OUT.partial/`` — the results folder being assembled (completed components'
  ``chi_*.npz`` and devinterp exports); renamed to ``OUT`` when the job ends;
* the *checkpoint folder* (default ``OUT.checkpoint/``)::

      .spectro-run.json  the marker that makes it spectro's (spectro.outputs)
      job.json           fingerprint of the job (resolved config, process count) and the stage path
      snapshot.<name>    the measurement driver's file of component ``name``
                         (:func:`spectro.engine.driver.measure_components`; ``.rank<r>`` for
                         process r > 0): while it runs, a snapshot (sampler state: weights,
                         RMSProp state, RNG states, minibatch position, loss trace, devinterp
                         record so far; its moment accumulator and position); once it is done,
                         a small finished record (its χ; for the full run its accumulator, which
                         Baker's estimator needs)

A snapshot is taken after a draw once ``every_seconds`` have passed since the last one. Its
timing does not touch the arithmetic: the resumed chains continue from the exact state of that
draw, so ``--resume`` gives the numbers of an uninterrupted run bit for bit (tested by SIGKILLing
a real subprocess). Every file is written to a temporary file and renamed, so a kill at any
moment leaves either the old or the new file. Snapshots are read with
``torch.load(weights_only=True)`` (:func:`spectro.engine.snapshots.load_snapshot`): a snapshot
folder cannot make spectro run code. Only spectro's own files are ever removed from it, and a
folder that is not spectro's is refused. The folder must be on a file system all processes of a
torchrun launch see (as the results folder must).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.distributed import World
from ..engine.driver import Checkpointing
from ..io import write_json
from ..outputs import KINDS, OutputError, claim_folder, owned_entries, read_json_file, read_marker, remove_entry, remove_owned

__all__ = ["JobCheckpointing", "JobState", "CHECKPOINT_KIND", "RESULTS_KIND", "RESULTS_FILES", "STAGE_KIND"]

_FORMAT = "spectro.nn_job_checkpoint/1"
CHECKPOINT_KIND = "nn-checkpoint"
_CHECKPOINT_FILES = KINDS[CHECKPOINT_KIND]
RESULTS_KIND = "nn-run"  # a results folder: see spectro.jobs.nn_job
RESULTS_FILES = KINDS[RESULTS_KIND]
STAGE_KIND = "nn-stage"  # the stage a job assembles its results folder in


@dataclass(frozen=True)
class JobCheckpointing:
    """Where and how often a job snapshots itself.

    Attributes:
        folder: the checkpoint folder (see the module docstring).
        every_seconds: minimum time between snapshots of the component in progress.
        resume: continue from the folder's snapshots if they exist (else start afresh; the
            files spectro wrote there are then removed first). The folder must be new, empty
            or a spectro snapshot folder (see :mod:`spectro.outputs`); anything else is refused.
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

    @property
    def _job_file(self) -> Path:
        return self.folder / "job.json"

    def start(self) -> None:
        """Open the folder (the driver resumes from the snapshots there, if any).

        Process 0 checks the fingerprint of an existing folder (``resume``) or clears spectro's
        files from it and from the stage (fresh start), then all processes meet at a barrier.
        A folder that is not spectro's, or whose ``job.json`` is corrupt, is an
        :class:`~spectro.outputs.OutputError` naming it.
        """
        if self.world.is_main and not self._resumable():
            self._fresh_start()
        _barrier(self.world)

    def _resumable(self) -> bool:
        """Process 0, ``resume``: whether the folder holds snapshots of this very job (else a mismatch raises)."""
        if not (self.ck.resume and self._job_file.is_file()):
            return False
        if read_marker(self.folder) is None:
            raise OutputError(f"checkpoint folder {self.folder} was not created by spectro (no marker); spectro will "
                              "not use or delete it: choose another --checkpoint")
        saved = read_json_file(self._job_file, "snapshot file")
        if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
            raise OutputError(f"snapshot file {self._job_file} is not a spectro job snapshot; remove {self.folder} "
                              "or run without --resume")
        if saved.get("fingerprint") != self.fingerprint:
            raise ValueError(f"checkpoint folder {self.folder} belongs to a different job (its config or "
                             "process count differs); remove it, or run without --resume to start afresh")
        return self.stage.is_dir() and read_marker(self.stage) is not None

    def _fresh_start(self) -> None:
        """Process 0: claim the snapshot folder and the stage (refusing foreign ones) and empty them of spectro's files."""
        for folder, kind, files, what in ((self.folder, CHECKPOINT_KIND, _CHECKPOINT_FILES, "checkpoint folder"),
                                          (self.stage, STAGE_KIND, RESULTS_FILES, "stage folder")):
            previous, _ = claim_folder(folder, kind, what, files)
            for p in owned_entries(folder, previous):
                remove_entry(p)
        write_json(self._job_file, {"format": _FORMAT, "fingerprint": self.fingerprint, "stage": str(self.stage)})

    def finish(self) -> None:
        """Remove spectro's files from the checkpoint folder, and the folder itself if spectro made
        it (process 0, after the results folder is in place)."""
        _barrier(self.world)
        if self.world.is_main:
            remove_owned(self.folder)

    def checkpointing(self) -> Checkpointing:
        """The driver's snapshots of the job's runs: ``snapshot.<component>`` (see the module docstring)."""
        return Checkpointing(self.folder / "snapshot", self.ck.every_seconds, self.ck.resume)
