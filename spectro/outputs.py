"""What spectro may delete or replace: only what it created and can recognise as its own.

The rule, shared by every command that writes (``ising chi --checkpoint``, ``ising map``,
``ising demo``, ``nn run``, ``nn demo``) and by the job and snapshot code underneath:

* **Folders** spectro creates (results folders, the NN job's stage and snapshot folders) hold a
  marker file :data:`MARKER` (``.spectro-run.json``): format, ``kind`` (``"ising-map"``,
  ``"nn-run"``, ``"nn-checkpoint"``), creation time, command line, the names (or glob patterns)
  of the files spectro writes there, and ``results``: the id of the run whose finished results
  the folder holds (None while there are none).
* **Single-file snapshots** (``ising chi --checkpoint FILE``, ``OUT/checkpoint.pt``) are
  ``torch.save`` archives of a dict with a ``format`` header (:data:`SNAPSHOT_FORMAT`), loaded
  with ``weights_only=True``: reading one never runs code from the file.
* A path given as ``--out`` / ``--checkpoint`` that exists and is not spectro's (a file, a
  folder without the marker that is not empty, a marker of another kind, a file without the
  snapshot header) is refused with :class:`OutputError` (a ``ValueError``: one line, exit 2).
* ``--overwrite`` replaces only the files the marker lists (and only names :data:`KINDS` allows
  for its kind); anything else in the folder is the user's and stays (:func:`remove_owned`,
  :func:`install_folder`). A failed run removes what it created (:class:`RunFolder`).
* A run locks each folder or file it writes with a sibling lock file ``.NAME.lock`` holding
  the PID, host and command (created with ``O_EXCL``, :class:`Lock`); a second run is refused
  while the first holds it, and a lock left by a dead process is reported with how to remove it
  (``--resume``, which continues exactly such a killed run, takes a stale lock over).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = [
    "MARKER", "KINDS", "SNAPSHOT_FORMAT", "OutputError", "Lock", "locked", "RunFolder",
    "read_marker", "write_marker", "check_folder", "claim_folder", "owned_entries", "foreign_entries",
    "remove_owned", "remove_entry", "make_parents", "remove_empty", "install_folder",
    "check_snapshot_target", "save_snapshot", "load_snapshot", "load_result", "read_json_file", "nested", "run_id", "set_command",
]

MARKER = ".spectro-run.json"
_MARKER_FORMAT = "spectro.run/1"
SNAPSHOT_FORMAT = "spectro.snapshot/1"
_LOCK_FORMAT = "spectro.lock/1"
_TMP_PATTERN = ".*.tmp*"  # atomic_path's temporary files, left behind only by a killed process

#: What each kind of folder may hold of spectro's (names or glob patterns). A marker's file list
#: is honoured only where these patterns cover it, so no marker can make spectro delete more.
KINDS: dict[str, tuple[str, ...]] = {
    "ising-map": ("config.json", "summary.json", "chi_map.npz", "chi_map.json", "chi_map.png", "exact_check.json", "checkpoint.pt", "checkpoint.pt.rank*", "report.html"),
    "nn-run": ("config.json", "chi_*.npz", "summary.json", "traces.png", "devinterp", "report.html"),
    "nn-checkpoint": ("job.json", "done.json", "full_acc.pt", "rank*.pt"),
}
_command = "spectro"


class OutputError(ValueError):
    """An output or snapshot path spectro must not write, replace or delete (one-line message)."""


def set_command(argv: Iterable[str]) -> None:
    """Record the command line written into markers and lock files (called by ``spectro.jobs.cli.main``)."""
    global _command
    _command = " ".join(["spectro", *map(str, argv)])


def run_id(settings: Any) -> str:
    """A short stable id of the settings that determine a run's results (sha256 of canonical JSON)."""
    import hashlib

    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def nested(a: Path, b: Path) -> bool:
    """True when one of the paths is the other or lies inside it."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a in b.parents or b in a.parents


def read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file spectro wrote; a missing, unreadable or corrupt file is an OutputError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OutputError(f"{what} {path} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise OutputError(f"{what} {path} is corrupt or unreadable ({_short(e)})") from None


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:200] + "…") if len(text) > 200 else (text or type(e).__name__)


# ============================================================================ markers
def read_marker(folder: Path) -> dict | None:
    """The marker of ``folder``, or None when it has none (a corrupt marker is an OutputError)."""
    f = Path(folder) / MARKER
    if not f.is_file():
        return None
    marker = read_json_file(f, "spectro marker")
    if not isinstance(marker, dict) or marker.get("format") != _MARKER_FORMAT:
        raise OutputError(f"spectro marker {f} is not a spectro marker (format {_get(marker, 'format')!r})")
    return marker


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def write_marker(folder: Path, kind: str, files: Iterable[str], *, results: str | None = None,
                 previous: dict | None = None) -> dict:
    """Write ``folder``'s marker atomically; ``previous`` keeps the creation time and the file list."""
    from .io import write_json

    names = sorted(set(files) | set(_get(previous, "files") or []))
    marker = {
        "format": _MARKER_FORMAT,
        "kind": kind,
        "created": _get(previous, "created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": _command,
        "files": names,
        "results": results,
    }
    write_json(Path(folder) / MARKER, marker)
    return marker


def owned_entries(folder: Path, marker: dict | None = None) -> list[Path]:
    """Entries of ``folder`` that spectro wrote: matching the marker's names/patterns (as far as
    :data:`KINDS` allows them for the marker's kind), or spectro's temporary files."""
    folder = Path(folder)
    marker = marker if marker is not None else read_marker(folder)
    allowed = KINDS.get(_get(marker, "kind"), ())
    listed = [n for n in _get(marker, "files") or [] if isinstance(n, str) and any(fnmatch.fnmatchcase(n, a) for a in allowed)]
    patterns = listed + [_TMP_PATTERN]
    return sorted(p for p in folder.iterdir() if p.name != MARKER and any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns))


def foreign_entries(folder: Path, marker: dict | None = None) -> list[Path]:
    """Entries of ``folder`` that are neither the marker nor listed in it (the user's)."""
    owned = set(owned_entries(folder, marker))
    return sorted(p for p in Path(folder).iterdir() if p.name != MARKER and p not in owned)


def claim_folder(folder: Path, kind: str, what: str, patterns: Iterable[str]) -> tuple[dict | None, bool]:
    """Make sure ``folder`` is new, empty or spectro's ``kind``; create it and its marker if needed.

    Returns ``(previous marker or None, created)``: ``created`` is True when this call made the
    folder (so a failed run may remove it again). Raises OutputError for a file, a non-empty
    folder without a marker, or a marker of another kind.
    """
    folder = Path(folder)
    previous = check_folder(folder, kind, what)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {what} {folder}: {e.strerror or _short(e)}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {folder} is not writable")
    if previous is None:
        write_marker(folder, kind, patterns)
    return previous, created


def check_folder(folder: Path, kind: str, what: str) -> dict | None:
    """Refuse a path spectro may not write into; return its marker (None: absent or empty folder)."""
    folder = Path(folder)
    if not folder.exists():
        if folder.is_symlink():
            raise OutputError(f"{what} {folder} is a dangling symbolic link")
        return None
    if not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder; choose another path")
    marker = read_marker(folder)
    if marker is None:
        if any(folder.iterdir()):
            raise OutputError(f"{what} {folder} is not empty and was not created by spectro (no {MARKER}); spectro "
                              "will not write into it, even with --overwrite: choose a new or empty folder")
        return None
    if marker.get("kind") != kind:
        raise OutputError(f"{what} {folder} belongs to another kind of spectro output ({marker.get('kind')!r}, "
                          f"not {kind!r}); choose another path")
    return marker


def remove_owned(folder: Path, marker: dict | None = None, *, keep_folder: bool = False) -> None:
    """Delete what spectro wrote in ``folder`` (listed entries, temporary files, the marker);
    remove the folder itself (unless ``keep_folder``) only when nothing else (the user's files)
    is left in it."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    marker = marker if marker is not None else read_marker(folder)
    if marker is None:
        return
    for p in owned_entries(folder, marker):
        remove_entry(p)
    (folder / MARKER).unlink(missing_ok=True)
    if keep_folder:
        return
    try:
        folder.rmdir()
    except OSError:
        pass  # the user's files remain


def remove_entry(p: Path) -> None:
    """Delete a file or a folder tree (no error when it is gone)."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def install_folder(stage: Path, out: Path) -> None:
    """Move the finished folder ``stage`` to ``out``, replacing only spectro's entries of an old ``out``.

    A new (or empty) ``out`` is one rename. An old spectro folder without foreign files is
    swapped (renamed aside, then removed). An old one holding the user's files keeps them: its
    owned entries go, then the stage's entries (the marker last) are moved in one by one.
    """
    stage, out = Path(stage), Path(out)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(stage, out)
        return
    marker = read_marker(out)
    if marker is None:  # checked before the run; a foreign folder appeared meanwhile
        raise OutputError(f"output folder {out} was filled by something else during the run; the results are in {stage}")
    if not foreign_entries(out, marker):
        trash = Path(tempfile.mkdtemp(dir=out.resolve().parent, prefix=f".{out.name}.old-"))
        os.rmdir(trash)
        os.replace(out, trash)
        os.replace(stage, out)
        shutil.rmtree(trash, ignore_errors=True)
        return
    trash = Path(tempfile.mkdtemp(dir=out.resolve().parent, prefix=f".{out.name}.old-"))
    for p in owned_entries(out, marker):
        os.replace(p, trash / p.name)
    for p in sorted(stage.iterdir(), key=lambda p: p.name == MARKER):
        os.replace(p, out / p.name)
    shutil.rmtree(trash, ignore_errors=True)
    stage.rmdir()


# ============================================================================ a results folder for one run
def make_parents(folder: Path, target: Path | None = None, what: str = "folder") -> list[Path]:
    """Create ``folder`` and its missing parents for ``target`` (named in errors as ``what``);
    return the folders created (deepest first)."""
    folder = Path(folder)
    target = folder if target is None else Path(target)
    missing: list[Path] = []
    p = folder
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    if p.exists() and not p.is_dir():
        raise OutputError(f"cannot create {what} {target}: {p} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {what} {target}: {e.strerror or _short(e)}") from None
    return missing


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove the given folders (deepest first) as long as they are empty."""
    for f in folders:
        try:
            Path(f).rmdir()
        except OSError:
            return


class RunFolder:
    """A results folder claimed for one run: checked, created with its marker, and locked.

    ``patterns``: the names spectro writes there (recorded in a new marker). An existing folder
    must be empty or spectro's of the same ``kind``; when it holds finished results
    (``result_files``, marker ``results`` set) it is refused unless ``overwrite``, or unless
    ``resume`` continues the same ``run`` (the id of the settings). :meth:`commit` records the
    new results. Leaving the block with an exception (not Ctrl-C) removes what the run created;
    the locks are released either way. ``active=False`` (processes other than 0 of a
    distributed run) only makes sure the folder exists.
    """

    def __init__(self, path: Path, kind: str, patterns: Iterable[str], *, overwrite: bool = False, resume: bool = False,
                 run: str | None = None, result_files: Iterable[str] = (), extra_locks: Iterable[Path] = (),
                 active: bool = True, what: str = "output folder"):
        self.path, self.kind, self.patterns = Path(path), kind, list(patterns)
        self.overwrite, self.resume, self.run = overwrite, resume, run
        self.result_files, self.extra_locks, self.active, self.what = list(result_files), list(extra_locks), active, what
        self.previous: dict | None = None
        self.created = False
        self._parents: list[Path] = []
        self._locks: Any = None

    def __enter__(self) -> "RunFolder":
        if not self.active:
            self.path.mkdir(parents=True, exist_ok=True)
            return self
        check_folder(self.path, self.kind, self.what)  # before anything is created or locked
        self._parents = make_parents(self.path.parent, self.path, self.what)
        self._locks = locked(self.path, *self.extra_locks, take_over_stale=self.resume)
        try:
            self._locks.__enter__()
            self.previous, self.created = claim_folder(self.path, self.kind, self.what, self.patterns)
            self._check_previous_results()
        except BaseException:
            self._release(failed=True)
            raise
        return self

    def _check_previous_results(self) -> None:
        prev = self.previous
        if prev is None or self.overwrite or prev.get("results") is None:
            return
        if not any((self.path / f).exists() for f in self.result_files):
            return
        if self.resume and prev["results"] == self.run:
            return  # resuming the run that wrote them reproduces them
        if self.resume:
            raise OutputError(f"{self.what} {self.path} holds the finished results of a different run; --resume will not "
                              "replace them: pass --overwrite to replace them, or choose another --out")
        raise OutputError(f"{self.what} {self.path} holds results of an earlier run; pass --overwrite to replace them "
                          "(only the files spectro wrote are replaced)")

    def commit(self, files: Iterable[str]) -> None:
        """Record in the marker that the folder now holds this run's results ``files``."""
        if self.active:
            write_marker(self.path, self.kind, [*self.patterns, *files], results=self.run, previous=read_marker(self.path))

    def __exit__(self, typ, exc, tb) -> None:
        if self.active:
            self._release(failed=isinstance(exc, Exception))

    def _release(self, failed: bool) -> None:
        try:
            if failed:
                self._abort()
        finally:
            if self._locks is not None:
                self._locks.__exit__(None, None, None)
                self._locks = None
            if failed:
                remove_empty(self._parents)

    def _abort(self) -> None:
        """Remove what this run created: a new folder entirely, else its marker in an adopted
        empty folder and the temporary files (finished results of earlier runs stay)."""
        if not self.path.is_dir():
            return
        if self.created:
            remove_owned(self.path)
        elif self.previous is None and read_marker(self.path) is not None:
            remove_owned(self.path, keep_folder=True)
        else:
            for p in self.path.glob(_TMP_PATTERN):
                remove_entry(p)


# ============================================================================ locks
class Lock:
    """An exclusive lock on ``target`` (a folder or file): the sibling file ``.NAME.lock``.

    Created with ``O_CREAT | O_EXCL`` and holding JSON {pid, host, command, created}. A lock
    that exists is reported: held by a live process (wait, or choose another path), or stale
    (its process on this host is gone, e.g. SIGKILLed: remove the file). ``take_over_stale``
    (``--resume``, which continues exactly such a killed run) replaces a stale lock of this host
    instead. Released by the process that made it.
    """

    def __init__(self, target: Path, take_over_stale: bool = False):
        self.target = Path(target)
        self.path = self.target.parent / f".{self.target.name}.lock"
        self.take_over_stale = take_over_stale
        self.held = False

    def acquire(self) -> "Lock":
        try:
            self._create()
        except FileExistsError:
            holder = self._holder()
            if not (self.take_over_stale and holder is not None and self._stale(holder) and self._remove_stale(holder)):
                raise OutputError(self._describe(holder)) from None
            try:
                self._create()
            except FileExistsError:  # another process took it over first
                raise OutputError(self._describe(self._holder())) from None
        self.held = True
        return self

    def _create(self) -> None:
        info = {"format": _LOCK_FORMAT, "pid": os.getpid(), "host": socket.gethostname(), "command": _command,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileNotFoundError:
            raise OutputError(f"cannot lock {self.target}: folder {self.path.parent} does not exist") from None
        except FileExistsError:
            raise
        except OSError as e:
            raise OutputError(f"cannot lock {self.target}: cannot create {self.path}: {e.strerror or _short(e)}") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(info) + "\n")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _holder(self, path: Path | None = None) -> tuple[int, str] | None:
        """(pid, host) recorded in the lock file, or None when it cannot be read."""
        try:
            info = json.loads((path or self.path).read_text())
            return int(info["pid"]), str(info["host"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def _stale(holder: tuple[int, str]) -> bool:
        pid, host = holder
        return host == socket.gethostname() and not _alive(pid)

    def _remove_stale(self, holder: tuple[int, str]) -> bool:
        """Move the stale lock aside and delete it; False if it changed hands meanwhile (then it is put back)."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return True  # already gone
        if self._holder(aside) != holder:  # a live run locked it between our read and the move
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def _describe(self, holder: tuple[int, str] | None) -> str:
        if holder is None:
            return (f"{self.target} is locked by {self.path}, which is unreadable; if no spectro run is using "
                    f"{self.target}, remove the lock: rm {self.path}")
        pid, host = holder
        if self._stale(holder):
            return (f"{self.target} is locked by a stale lock {self.path} (process {pid} on {host} is no longer "
                    f"running); if no spectro run is using {self.target}, remove it (rm {self.path}) or pass "
                    "--resume to continue the interrupted run")
        return (f"{self.target} is in use by another spectro run (process {pid} on {host}, lock {self.path}); "
                "wait for it to finish or choose another path")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def locked(*targets: Path, take_over_stale: bool = False) -> Iterator[list[Lock]]:
    """Hold locks on every target (distinct, in order) for the duration of the block."""
    locks: list[Lock] = []
    seen: set[Path] = set()
    try:
        for t in targets:
            key = Path(t).resolve()
            if key in seen:
                continue
            seen.add(key)
            locks.append(Lock(t, take_over_stale).acquire())
        yield locks
    finally:
        for lock in reversed(locks):
            lock.release()


# ============================================================================ single-file snapshots
def check_snapshot_target(path: Path, kind: str, what: str = "checkpoint") -> None:
    """Refuse a snapshot path spectro may not (over)write: a folder, a missing parent folder, or
    an existing file that is not a spectro snapshot of ``kind``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file path (e.g. {path}/snapshot.pt)")
    if not path.parent.is_dir():
        raise OutputError(f"{what} {path}: folder {path.parent} does not exist")
    if path.exists():
        load_snapshot(path, kind, what=what, foreign_hint=True)


def save_snapshot(path: Path, kind: str, payload: dict) -> None:
    """Write ``payload`` (tensors, numbers, strings, lists, dicts, NumPy arrays) atomically, with the
    header keys ``format`` and ``kind`` beside its own keys."""
    import torch

    from .io import atomic_path

    if "format" in payload or "kind" in payload:
        raise ValueError("a snapshot payload may not use the keys 'format' and 'kind' (the header)")
    state = {"format": SNAPSHOT_FORMAT, "kind": kind, **_encode(payload)}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_snapshot(path: Path, kind: str, *, what: str = "snapshot", foreign_hint: bool = False) -> dict:
    """Read a :func:`save_snapshot` file with ``weights_only=True``; anything else is an OutputError naming it."""
    import torch

    path = Path(path)
    hint = ("; spectro will not replace it: remove it or choose another path" if foreign_hint
            else "; remove it or run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise OutputError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise OutputError(f"{what} {path} is a folder, not a snapshot file") from None
    except Exception as e:  # noqa: BLE001 - torch/pickle/zip raise many types for a bad file
        raise OutputError(f"{what} {path} is not a readable spectro snapshot ({_load_failure(e)}){hint}") from None
    if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise OutputError(f"{what} {path} is not a spectro {kind} snapshot (found {found!r}){hint}")
    return _decode({k: v for k, v in state.items() if k not in ("format", "kind")})


def load_result(path: Path, hint: str = ""):
    """:meth:`spectro.engine.Susceptibility.load`, with any failure (a missing, corrupt, truncated
    or foreign file) an OutputError naming the file."""
    from .engine import Susceptibility

    try:
        return Susceptibility.load(path)
    except FileNotFoundError:
        raise OutputError(f"result file {path} is missing{hint}") from None
    except Exception as e:  # noqa: BLE001 - numpy/zipfile/json raise many types for a bad file
        raise OutputError(f"result file {path} is not a readable spectro result ({_short(e)}){hint}") from None


def _load_failure(e: BaseException) -> str:
    """Why ``torch.load`` could not read a file, in a few words."""
    text = str(e)
    if "Weights only load failed" in text:
        return "a foreign or corrupt file, or one holding pickled Python objects, which spectro does not load"
    if "zip archive" in text or "central directory" in text or isinstance(e, EOFError):
        return "not a torch archive, or truncated"
    return f"corrupt: {_short(text.split(chr(10))[0])}"


def _encode(obj: Any) -> Any:
    """NumPy arrays and scalars → types ``torch.load(weights_only=True)`` accepts (bit-exact)."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("a snapshot cannot hold object arrays")
        return {"__ndarray__": np.ascontiguousarray(obj).tobytes(), "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_encode(v) for v in obj)
    return obj


def _decode(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, dict):
        if "__ndarray__" in obj and set(obj) == {"__ndarray__", "dtype", "shape"}:
            return np.frombuffer(obj["__ndarray__"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_decode(v) for v in obj)
    return obj
