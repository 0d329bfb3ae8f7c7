"""What spectro may delete or replace: only what it wrote and can still recognise as its own.

The rule, shared by every command that writes (``ising chi --checkpoint``, ``ising map``,
``ising demo``, ``nn run``, ``nn demo``, ``run``) and by the job and snapshot code underneath
(README, "Your files are safe"):

* **Results folders** (kinds ``"ising-map"``, ``"nn-run"``) hold a marker :data:`MARKER`
  (``.spectro-run.json``, format ``spectro.run/2``): kind, creation time, command line, whether
  spectro made the folder, ``results`` (the id of the run whose finished results it holds) and
  ``files``: every file spectro put there (path relative to the folder → size and sha256).
  Ownership is by content: a file is spectro's only while it is listed *and* still has that
  size and hash (:func:`owned_files`); anything else — the user's files, files spectro wrote
  that the user has since edited, a user's note inside spectro's ``devinterp/`` — is kept, and
  named in one warning line. A marker of format ``/1`` (names only) verifies nothing.
* **Work folders** (kinds ``"nn-checkpoint"``, ``"nn-stage"``: snapshots and the stage a job
  assembles its results in) list the names spectro writes there; spectro removes those names.
* **Single-file snapshots** (``ising chi --checkpoint FILE``, ``OUT/checkpoint.pt``, a job's
  ``snapshot.<component>``) are ``torch.save`` archives of a dict with a ``format`` header, loaded with
  ``weights_only=True``: reading one never runs code from the file (:mod:`spectro.engine.snapshots`).
* A path given as ``--out`` / ``--checkpoint`` is resolved first (symbolic links, ``..``): the
  folder it names is what is checked, locked and written (a symlink stays a symlink). One that
  exists and is not spectro's (a file, a folder without the marker that is not empty, a marker
  of another kind, a file without the snapshot header) is refused with :class:`OutputError`
  (a ``ValueError``: one line, exit 2), before any sampling.
* Finished results are **committed in one step** (:func:`commit_results`): assembled in a stage
  on the same file system, then a journal ``.spectro-commit.json`` is written (the commit
  point), spectro's old files are moved aside, the new ones moved in and the marker rewritten.
  A run killed before the journal exists leaves the old results; one killed after it is
  completed by the next run on that folder (:func:`recover`), so a folder never ends up
  mixing two runs.
* A run locks each folder or file it writes with a sibling lock file ``.NAME.lock`` beside the
  resolved path, created with ``O_EXCL`` and held with ``flock`` (:class:`Lock`): a second run
  is refused while the first holds it, whatever path spelling it uses.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .io import OutputError
from .io import one_line as _short

__all__ = [
    "MARKER", "JOURNAL", "KINDS", "RESULT_KINDS", "OutputError", "CommitRefused", "KeptFilesWarning",
    "Lock", "locked", "RunFolder", "resolve_target", "read_marker", "write_marker", "check_folder", "claim_folder",
    "owned_files", "owned_entries", "foreign_entries", "blocked_names", "remove_owned", "remove_entry", "make_parents", "remove_empty",
    "release_folder", "new_stage", "commit_results", "recover", "file_record", "read_json_file", "nested",
    "run_id", "set_command",
]

MARKER = ".spectro-run.json"
JOURNAL = ".spectro-commit.json"
_MARKER_FORMAT = "spectro.run/2"
_OLD_MARKER_FORMATS = ("spectro.run/1",)
_JOURNAL_FORMAT = "spectro.commit/1"
_LOCK_FORMAT = "spectro.lock/2"
_TMP_PATTERN = ".*.tmp*"  # atomic_path's temporary files (removed only from work folders)
_STAGE_PREFIX = ".spectro-stage-"
_TRASH_PREFIX = ".spectro-old-"

#: What each kind of folder may hold of spectro's (top-level names or glob patterns). A marker's
#: file list is honoured only where these patterns cover it, so no marker can make spectro
#: delete more.
KINDS: dict[str, tuple[str, ...]] = {
    "ising-map": ("config.json", "summary.json", "chi_map.npz", "chi_map.json", "chi_map.png", "exact_check.json", "checkpoint.pt", "checkpoint.pt.rank*", "report.html"),
    "nn-run": ("config.json", "chi_*.npz", "summary.json", "traces.png", "devinterp", "report.html"),
    "nn-stage": ("config.json", "chi_*.npz", "summary.json", "traces.png", "devinterp", "report.html"),
    "nn-checkpoint": ("job.json", "snapshot.*", "done.json", "full_acc.pt", "rank*.pt"),  # the last three: before 2026-12
    "stage": ("*",),  # a stage inside a results folder, made by one run (RunFolder.stage)
}
#: Kinds whose markers record each file's size and hash (ownership by content).
RESULT_KINDS = ("ising-map", "nn-run")
_command = "spectro"


class CommitRefused(OutputError):
    """Finished results could not be moved into place; they are still in the stage (named in the message)."""


class KeptFilesWarning(UserWarning):
    """Entries of a spectro folder that spectro did not write (or that changed since) were kept."""


def set_command(argv: Iterable[str]) -> None:
    """Record the command line written into markers and lock files (called by ``spectro.jobs.cli.main``)."""
    global _command
    _command = " ".join(["spectro", *map(str, argv)])


def run_id(settings: Any) -> str:
    """A short stable id of the settings that determine a run's results (sha256 of canonical JSON)."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def nested(a: Path, b: Path) -> bool:
    """True when one of the paths is the other or lies inside it."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a in b.parents or b in a.parents


def resolve_target(path: Path, what: str = "output folder") -> Path:
    """The real path a user's ``--out``/``--checkpoint`` names (symbolic links and ``..`` resolved),
    so that every spelling of one folder is checked, locked and written as that one folder. A
    dangling symbolic link is refused."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{what} {path} is a dangling symbolic link")
    return Path(os.path.realpath(path))


def read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file spectro wrote; a missing, unreadable or corrupt file is an OutputError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OutputError(f"{what} {path} is missing") from None
    except RecursionError:
        raise OutputError(f"{what} {path} is corrupt (nested too deeply)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise OutputError(f"{what} {path} is corrupt or unreadable ({_short(e)})") from None


# ============================================================================ markers and ownership
def file_record(path: Path) -> dict:
    """``{"size", "sha256"}`` of a file (what a results marker records per file)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"size": size, "sha256": h.hexdigest()}


def _tree(folder: Path) -> tuple[dict[str, dict], list[str]]:
    """Every file under ``folder`` (relative path → record) and every folder (relative paths),
    the marker and journal excluded; symbolic links are not followed (a link is recorded as a file)."""
    files: dict[str, dict] = {}
    dirs: list[str] = []
    for root, subdirs, names in os.walk(folder):
        rel = os.path.relpath(root, folder)
        for d in list(subdirs):
            if os.path.islink(os.path.join(root, d)):
                subdirs.remove(d)
                names.append(d)
            else:
                dirs.append(os.path.normpath(os.path.join(rel, d)))
        for n in names:
            r = os.path.normpath(os.path.join(rel, n))
            if r in (MARKER, JOURNAL):
                continue
            full = Path(root) / n
            files[r] = {"size": full.lstat().st_size, "link": os.readlink(full)} if full.is_symlink() else file_record(full)
    return files, sorted(dirs)


def read_marker(folder: Path) -> dict | None:
    """The marker of ``folder``, or None when it has none (a corrupt marker is an OutputError).
    A marker of format ``/1`` is read with an empty file list: its files cannot be verified."""
    f = Path(folder) / MARKER
    if not f.is_file():
        return None
    marker = read_json_file(f, "spectro marker")
    fmt = _get(marker, "format")
    if fmt in _OLD_MARKER_FORMATS and isinstance(marker, dict):
        names = marker.get("files") if isinstance(marker.get("files"), list) else []
        legacy = marker.get("kind") in RESULT_KINDS
        return {**marker, "format": _MARKER_FORMAT, "files": {} if legacy else names, "dirs": [], "made": False,
                "legacy": legacy}
    if not isinstance(marker, dict) or fmt != _MARKER_FORMAT:
        raise OutputError(f"spectro marker {f} is not a spectro marker (format {fmt!r})")
    return marker


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def write_marker(folder: Path, kind: str, files: Any = (), *, results: str | None = None,
                 previous: dict | None = None, made: bool | None = None, dirs: Iterable[str] = ()) -> dict:
    """Write ``folder``'s marker atomically; ``previous`` keeps the creation time, ``made`` and (work
    folders) the name list. ``files``: for a results kind, relative path → record
    (:func:`file_record`); for a work kind, names or patterns."""
    from .io import write_json

    if kind in RESULT_KINDS:
        listed = dict(files) if isinstance(files, dict) else {}
    else:
        listed = sorted(set(files) | set(_get(previous, "files") if isinstance(_get(previous, "files"), list) else []))
    marker = {
        "format": _MARKER_FORMAT,
        "kind": kind,
        "created": _get(previous, "created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": _command,
        "made": bool(_get(previous, "made")) if made is None else bool(made),
        "files": listed,
        "dirs": sorted(set(dirs)),
        "results": results,
    }
    write_json(Path(folder) / MARKER, marker)
    return marker


def _allowed(kind: Any, rel: str) -> bool:
    top = rel.split(os.sep, 1)[0]
    return any(fnmatch.fnmatchcase(top, a) for a in KINDS.get(kind, ()))


def owned_files(folder: Path, marker: dict | None = None) -> dict[str, dict]:
    """Files of a results folder that are spectro's: listed in the marker (where :data:`KINDS`
    allows the name) and still of the recorded size and sha256. Relative path → record."""
    folder = Path(folder)
    marker = marker if marker is not None else read_marker(folder)
    listed = _get(marker, "files")
    if not isinstance(listed, dict):
        return {}
    owned = {}
    for rel, rec in listed.items():
        if not (isinstance(rel, str) and isinstance(rec, dict) and _allowed(marker.get("kind"), rel)):
            continue
        if os.path.isabs(rel) or ".." in Path(rel).parts:
            continue
        p = folder / rel
        try:
            if "link" in rec:
                same = p.is_symlink() and os.readlink(p) == rec["link"]
            else:
                same = p.is_file() and not p.is_symlink() and p.stat().st_size == rec.get("size") \
                    and file_record(p)["sha256"] == rec.get("sha256")
        except OSError:
            same = False
        if same:
            owned[rel] = rec
    return owned


def owned_entries(folder: Path, marker: dict | None = None) -> list[Path]:
    """Top-level entries of ``folder`` that spectro may remove: for a work folder, those matching
    the marker's names (as far as :data:`KINDS` allows) and spectro's temporary files; for a
    results folder, the verified files of :func:`owned_files` (top level only)."""
    folder = Path(folder)
    marker = marker if marker is not None else read_marker(folder)
    if _get(marker, "kind") in RESULT_KINDS:
        return sorted(folder / rel for rel in owned_files(folder, marker) if os.sep not in rel)
    allowed = KINDS.get(_get(marker, "kind"), ())
    names = _get(marker, "files") if isinstance(_get(marker, "files"), list) else []
    listed = [n for n in names if isinstance(n, str) and any(fnmatch.fnmatchcase(n, a) for a in allowed)]
    patterns = listed + [_TMP_PATTERN]
    return sorted(p for p in folder.iterdir() if p.name != MARKER and any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns))


def foreign_entries(folder: Path, marker: dict | None = None) -> list[str]:
    """Files (relative paths) of a folder that spectro may not remove: neither its marker nor owned."""
    folder = Path(folder)
    marker = marker if marker is not None else read_marker(folder)
    if _get(marker, "kind") in RESULT_KINDS:
        owned = owned_files(folder, marker)
        files, _ = _tree(folder)
        return sorted(r for r in files if r not in owned)
    owned_top = {p.name for p in owned_entries(folder, marker)}
    return sorted(p.name for p in folder.iterdir() if p.name not in (MARKER, JOURNAL) and p.name not in owned_top)


def _report_kept(folder: Path, kept: list[str]) -> None:
    if kept:
        shown = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
        warnings.warn(f"kept {len(kept)} file(s) in {folder} that spectro did not write or that changed since it "
                      f"wrote them: {shown}", KeptFilesWarning, stacklevel=3)


def claim_folder(folder: Path, kind: str, what: str, patterns: Iterable[str]) -> tuple[dict | None, bool]:
    """Make sure ``folder`` is new, empty or spectro's ``kind``; create it and its marker if needed.

    Returns ``(previous marker or None, created)``: ``created`` is True when this call made the
    folder (recorded in the marker: only then may spectro remove the folder itself). Raises
    OutputError for a file, a non-empty folder without a marker, or a marker of another kind.
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
        write_marker(folder, kind, {} if kind in RESULT_KINDS else patterns, made=created)
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


def blocked_names(folder: Path, names: Iterable[str], marker: dict | None = None) -> list[str]:
    """Of the (relative) ``names`` a run will write, those that exist in ``folder`` but are not
    spectro's verified files: a commit would have to replace the user's data there."""
    folder = Path(folder)
    owned = owned_files(folder, marker)
    out = []
    for n in names:
        p = folder / n
        if (p.exists() or p.is_symlink()) and not p.is_dir() and n not in owned:
            out.append(n)
    return out


def remove_owned(folder: Path, marker: dict | None = None, *, keep_folder: bool = False) -> list[str]:
    """Delete what spectro wrote in ``folder`` (verified or listed entries, and the marker); remove
    the folder itself only when spectro made it (or for a work folder) and nothing else is left.
    Returns the entries kept (the user's)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    marker = marker if marker is not None else read_marker(folder)
    if marker is None:
        return []
    if marker.get("kind") in RESULT_KINDS:
        for rel in owned_files(folder, marker):
            (folder / rel).unlink(missing_ok=True)
        for rel in sorted(marker.get("dirs") or [], key=lambda r: -len(Path(r).parts)):
            if _allowed(marker.get("kind"), rel) and ".." not in Path(rel).parts:
                _rmdir(folder / rel)
    else:
        for p in owned_entries(folder, marker):
            remove_entry(p)
    kept = foreign_entries(folder, marker)
    if marker.get("kind") in RESULT_KINDS:
        _report_kept(folder, kept)
    (folder / MARKER).unlink(missing_ok=True)
    made = marker.get("made", True) if marker.get("kind") not in RESULT_KINDS else marker.get("made", False)
    if not keep_folder and made:
        _rmdir(folder)
    return kept


def _rmdir(p: Path) -> None:
    try:
        os.rmdir(p)
    except OSError:
        pass  # not empty (the user's files remain) or gone


def remove_entry(p: Path) -> None:
    """Delete a file or a folder tree (no error when it is gone)."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


# ============================================================================ the one-step commit
def new_stage(parent: Path, prefix: str, kind: str = "stage") -> Path:
    """A fresh hidden folder in ``parent`` (ordinary permissions) with a work marker of ``kind``."""
    stage = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes it private; results folders are ordinary ones
    write_marker(stage, kind, KINDS[kind], made=True)
    return stage


def _step(name: str) -> None:
    """A point between two file-system operations of a commit (tests kill the process here)."""


def commit_results(out: Path, stage: Path, kind: str, results: str | None, quiet: Iterable[str] = ()) -> list[str]:
    """Move the finished files of ``stage`` into the results folder ``out`` in one step.

    ``out`` exists, is locked and is spectro's ``kind``; ``stage`` is on the same file system.
    Spectro's verified files of an earlier run are replaced (all of them, so the folder holds one
    run's results); a path the new results need that holds a file spectro cannot verify as its
    own stops the commit before anything moves (:class:`CommitRefused`, the results stay in the
    stage). The journal written before the first move is the commit point: a process killed
    after it is completed by :func:`recover`. Returns the files kept (the user's); they are
    also reported in one :class:`KeptFilesWarning` (except those named in ``quiet``, e.g. the
    run's own snapshot, which the caller removes next).
    """
    out, stage = Path(out), Path(stage)
    marker = read_marker(out)
    if marker is None or marker.get("kind") != kind:
        raise CommitRefused(f"output folder {out} is no longer spectro's {kind} folder; the results are in {stage}")
    if os.stat(stage).st_dev != os.stat(out).st_dev:
        raise CommitRefused(f"cannot move the results into {out}: the stage {stage} is on another file system")
    new_files, new_dirs = _tree(stage)
    old = owned_files(out, marker)
    blocked = [r for r in blocked_names(out, new_files, marker)]
    blocked += [d for d in new_dirs if (out / d).exists() and not (out / d).is_dir()]
    if blocked:
        raise CommitRefused(f"{out / blocked[0]} was not written by spectro (or was changed since); spectro will not "
                            f"replace it: move it away and run again, or choose another --out (the results are in {stage})")
    from .io import write_json

    trash = out / f"{_TRASH_PREFIX}{os.getpid()}-{time.time_ns()}"
    journal = {"format": _JOURNAL_FORMAT, "kind": kind, "results": results, "stage": str(stage), "trash": str(trash),
               "old": old, "new": new_files, "new_dirs": new_dirs, "old_dirs": marker.get("dirs") or [],
               "quiet": sorted(quiet), "command": _command}
    _step("journal")
    write_json(out / JOURNAL, journal)  # the commit point
    return _roll_forward(out, journal)


def recover(out: Path) -> None:
    """Complete a commit of ``out`` that a killed process left half-done (its journal exists),
    and remove the stages and aside-folders such a process left inside ``out``. Called under
    the folder's lock before a run uses it."""
    out = Path(out)
    j = out / JOURNAL
    if j.is_file():
        journal = read_json_file(j, "commit journal")
        if not isinstance(journal, dict) or journal.get("format") != _JOURNAL_FORMAT:
            raise OutputError(f"commit journal {j} is not spectro's; remove it if no spectro run is using {out}")
        _roll_forward(out, journal)
    if not out.is_dir():
        return
    for p in out.iterdir():  # a stage of a run killed before its commit point: spectro's by its marker
        if p.name.startswith(_STAGE_PREFIX) and p.is_dir() and _get(_try_marker(p), "kind") == "stage":
            shutil.rmtree(p, ignore_errors=True)


def _try_marker(folder: Path) -> dict | None:
    try:
        return read_marker(folder)
    except OutputError:
        return None


def _roll_forward(out: Path, journal: dict) -> list[str]:
    """Apply a commit journal; every step can be repeated (a kill anywhere is completed by a rerun)."""
    stage, trash = Path(journal["stage"]), Path(journal["trash"])
    old: dict = journal["old"]
    new: dict = journal["new"]
    for rel, rec in sorted(old.items()):  # spectro's old files aside (only those still unchanged)
        p = out / rel
        if p.is_file() or p.is_symlink():
            if owned_files(out, {"kind": journal["kind"], "files": {rel: rec}}):
                (trash / rel).parent.mkdir(parents=True, exist_ok=True)
                _step(f"aside {rel}")
                os.replace(p, trash / rel)
    for rel in sorted(new):  # the new files in
        src = stage / rel
        if src.is_file() or src.is_symlink():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            _step(f"move {rel}")
            os.replace(src, out / rel)
    dirs = set(journal["new_dirs"]) | {d for d in journal["old_dirs"] if (out / d).is_dir()}
    previous = read_marker(out)
    _step("marker")
    write_marker(out, journal["kind"], new, results=journal["results"], previous=previous, dirs=dirs)
    _step("clean")
    for rel in old:  # the old files, then the folders left empty
        (trash / rel).unlink(missing_ok=True)
    for rel in sorted(journal["old_dirs"], key=lambda r: -len(Path(r).parts)):
        if rel not in journal["new_dirs"]:
            _rmdir(out / rel)
            dirs.discard(rel) if not (out / rel).is_dir() else None
    _remove_tree_if_empty(trash)
    if stage.is_dir():
        (stage / MARKER).unlink(missing_ok=True)
        _remove_tree_if_empty(stage)
    _step("journal done")
    (out / JOURNAL).unlink(missing_ok=True)
    kept = [r for r in _tree(out)[0] if r not in new]
    _report_kept(out, [r for r in kept if r not in journal.get("quiet", ())])
    return kept


def _remove_tree_if_empty(folder: Path) -> None:
    """Remove ``folder`` and its sub-folders bottom-up, as far as they hold no files."""
    if not folder.is_dir():
        return
    for root, _, _ in sorted(os.walk(folder), key=lambda t: -len(Path(t[0]).parts)):
        _rmdir(Path(root))


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


def release_folder(folder: Path, created: bool) -> None:
    """After a failed run: remove the marker this run put in ``folder`` when the folder holds no
    results and nothing but the marker, and the folder itself when the run ``created`` it.
    A folder holding anything else (results, a snapshot to resume from, the user's files) stays."""
    folder = Path(folder)
    marker = _try_marker(folder)
    if marker is None or marker.get("results") is not None:
        return
    try:
        rest = [p for p in folder.iterdir() if p.name != MARKER]
    except OSError:
        return
    if rest:
        return
    (folder / MARKER).unlink(missing_ok=True)
    if created:
        _rmdir(folder)


class RunFolder:
    """A results folder claimed for one run: resolved, checked, locked, created with its marker.

    ``patterns``: the names spectro writes there. An existing folder must be empty or spectro's
    of the same ``kind``; when it holds finished results (marker ``results`` set) it is refused
    unless ``overwrite``, or unless ``resume`` continues the same ``run`` (the id of the
    settings); with ``overwrite``, a result name held by a file spectro cannot verify is refused
    too — all before sampling. Files are written into :meth:`stage` and moved in by
    :meth:`commit` in one step. Leaving the block with any exception (Ctrl-C and SIGTERM
    included) removes the stage, and the marker and folder this run created as long as nothing
    else (e.g. a snapshot to resume from) is in it; the locks are released either way.
    ``active=False`` (processes other than 0 of a distributed run) only makes sure the folder exists.
    """

    def __init__(self, path: Path, kind: str, patterns: Iterable[str], *, overwrite: bool = False, resume: bool = False,
                 run: str | None = None, result_files: Iterable[str] = (), extra_locks: Iterable[Path] = (),
                 active: bool = True, what: str = "output folder"):
        self.path = resolve_target(path, what) if active else Path(path)
        self.kind, self.patterns = kind, list(patterns)
        self.overwrite, self.resume, self.run = overwrite, resume, run
        self.result_files, self.extra_locks, self.active, self.what = list(result_files), list(extra_locks), active, what
        self.previous: dict | None = None
        self.created = False
        self._stage: Path | None = None
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
            recover(self.path)
            self.previous, self.created = claim_folder(self.path, self.kind, self.what, self.patterns)
            self._check_previous_results()
        except BaseException:
            self._release(failed=True)
            raise
        return self

    def _check_previous_results(self) -> None:
        prev = self.previous
        if prev is None:
            return
        blocked = blocked_names(self.path, self.result_files, prev)
        if prev.get("results") is not None and not self.overwrite and (owned_files(self.path, prev) or blocked):
            if self.resume and prev["results"] == self.run:
                return  # resuming the run that wrote them reproduces them
            if self.resume:
                raise OutputError(f"{self.what} {self.path} holds the finished results of a different run; --resume "
                                  "will not replace them: pass --overwrite to replace them, or choose another --out")
            raise OutputError(f"{self.what} {self.path} holds results of an earlier run; pass --overwrite to replace "
                              "them (only the files spectro wrote are replaced)")
        if blocked:
            raise OutputError(f"{self.path / blocked[0]} was not written by spectro (or was changed since); spectro "
                              "will not replace it: move it away, or choose another --out")

    def stage(self) -> Path:
        """The hidden folder inside the results folder that this run's files are written into."""
        if self._stage is None:
            self._stage = new_stage(self.path, _STAGE_PREFIX) if self.active else self.path
        return self._stage

    def commit(self, quiet: Iterable[str] = ()) -> None:
        """Move the stage's files into the folder in one step (:func:`commit_results`)."""
        if self.active:
            commit_results(self.path, self.stage(), self.kind, self.run, quiet)
            self._stage = None

    def __exit__(self, typ, exc, tb) -> None:
        if self.active:
            self._release(failed=exc is not None)

    def _release(self, failed: bool) -> None:
        try:
            if self._stage is not None and self._stage.is_dir():
                shutil.rmtree(self._stage, ignore_errors=True)  # this run's own stage, made this run
            self._stage = None
            if failed and self.path.is_dir():
                release_folder(self.path, self.created)
        finally:
            if self._locks is not None:
                self._locks.__exit__(None, None, None)
                self._locks = None
            if failed:
                remove_empty(self._parents)


# ============================================================================ locks
class Lock:
    """An exclusive lock on ``target`` (a folder or file): the file ``.NAME.lock`` beside the
    *resolved* target (so a symlink or ``a/b/..`` spelling meets the same lock).

    Created with ``O_CREAT | O_EXCL``, holding JSON {pid, host, command, created}, and held with
    ``flock`` while the run lives. A lock that exists is reported: held by a live process (wait,
    or choose another path), or stale (no process holds its ``flock`` and its process on this
    host is gone, e.g. SIGKILLed), with how to remove it; a lock made on another host says how
    to remove it if no run there uses the folder. ``take_over_stale`` (``--resume``, which
    continues exactly such a killed run) replaces a stale lock of this host instead. Released
    by the process that made it.
    """

    def __init__(self, target: Path, take_over_stale: bool = False):
        self.target = Path(os.path.realpath(target))
        self.path = self.target.parent / f".{self.target.name}.lock"
        self.take_over_stale = take_over_stale
        self.held = False
        self._fd: int | None = None

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
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileNotFoundError:
            raise OutputError(f"cannot lock {self.target}: folder {self.path.parent} does not exist") from None
        except FileExistsError:
            raise
        except OSError as e:
            raise OutputError(f"cannot lock {self.target}: cannot create {self.path}: {e.strerror or _short(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # a file system without flock: the O_EXCL file alone is the lock
        os.write(fd, (json.dumps(info) + "\n").encode())
        self._fd = fd

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _holder(self, path: Path | None = None) -> tuple[int, str, bool] | None:
        """(pid, host, whether a process holds its flock) of the lock file, or None when it cannot be read."""
        try:
            info = json.loads((path or self.path).read_text())
            return int(info["pid"]), str(info["host"]), _flocked(path or self.path)
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None

    @staticmethod
    def _stale(holder: tuple[int, str, bool]) -> bool:
        pid, host, flocked = holder
        return host == socket.gethostname() and not flocked and not _alive(pid)

    def _remove_stale(self, holder: tuple[int, str, bool]) -> bool:
        """Move the stale lock aside and delete it; False if it changed hands meanwhile (then it is put back)."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return True  # already gone
        again = self._holder(aside)
        if again is None or again[:2] != holder[:2] or again[2]:  # a live run locked it between our read and the move
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def _describe(self, holder: tuple[int, str, bool] | None) -> str:
        if holder is None:
            return (f"{self.target} is locked by {self.path}, which is unreadable; if no spectro run is using "
                    f"{self.target}, remove the lock: rm {self.path}")
        pid, host, _ = holder
        if self._stale(holder):
            return (f"{self.target} is locked by a stale lock {self.path} (process {pid} on {host} is no longer "
                    f"running); if no spectro run is using {self.target}, remove it (rm {self.path}) or pass "
                    "--resume to continue the interrupted run")
        if host != socket.gethostname():
            return (f"{self.target} is locked by a spectro run on another host (process {pid} on {host}, lock "
                    f"{self.path}); wait for it to finish, or, if no spectro run on {host} is using it, remove the "
                    f"lock: rm {self.path}")
        return (f"{self.target} is in use by another spectro run (process {pid} on {host}, lock {self.path}); "
                "wait for it to finish or choose another path")


def _flocked(path: Path) -> bool:
    """Whether some process holds an flock on ``path`` (False where the file system has none)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


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
    """Hold locks on every target (distinct resolved paths, in order) for the duration of the block."""
    locks: list[Lock] = []
    seen: set[str] = set()
    try:
        for t in targets:
            key = os.path.realpath(t)
            if key in seen:
                continue
            seen.add(key)
            locks.append(Lock(t, take_over_stale).acquire())
        yield locks
    finally:
        for lock in reversed(locks):
            lock.release()

