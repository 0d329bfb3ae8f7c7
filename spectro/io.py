"""Atomic file writes and strict JSON.

A result file is either the old one or the complete new one, never half; it gets the ordinary
permissions of a new file (0666 minus the umask), not the private ones of a temporary file.
A write that fails for lack of space (or another file-system error) is a one-line
:class:`DiskError` naming the file (``no space left on the device``), the old file intact.
JSON is strict (RFC 8259): NaN and ±Infinity become ``null``, and an object that held one gets
a reason ``"why": "non-finite"`` (unless it already has a ``why``), see :func:`strict_json`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "write_json", "write_text", "strict_json", "dumps", "DiskError", "OutputError", "disk_errors",
           "one_line"]

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskError(ValueError):
    """Writing a file failed in the file system (no space left, read-only, I/O error): a
    one-line user error naming the file (a ``ValueError``: exit 2 from the CLI)."""


class OutputError(ValueError):
    """An output or snapshot path spectro must not write, replace or delete (one-line message)."""


def one_line(e: BaseException | str) -> str:
    """An error's message on one line, at most 200 characters (its type's name when it has none)."""
    text = " ".join(str(e).split())
    return (text[:200] + "…") if len(text) > 200 else (text or type(e).__name__)


def _out_of_space(e: BaseException, folder: Path) -> bool:
    """Whether ``e`` (raised while writing into ``folder``) comes from a full disk or quota:
    its errno (or its cause's) says so, or a library's own error (torch's "file write failed")
    met a file system with no free blocks left."""
    for x in (e, e.__cause__, e.__context__):
        if isinstance(x, OSError) and x.errno in _FULL:
            return True
    if "No space left" in str(e) or "write failed" in str(e):
        try:
            st = os.statvfs(folder)
            return st.f_bavail * st.f_frsize < 1 << 20
        except OSError:
            return False
    return False


def _disk_error(e: BaseException, path: Path) -> DiskError | None:
    """The DiskError for a failure to write ``path``, or None when ``e`` is not a file-system error."""
    if _out_of_space(e, path.parent):
        return DiskError(f"cannot write {path}: no space left on the device (free some space, or write elsewhere)")
    if isinstance(e, OSError) and not isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError)) \
            and e.errno is not None:
        return DiskError(f"cannot write {path}: {e.strerror or e}")
    return None


@contextmanager
def disk_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a file-system failure while writing ``path`` (e.g. a zarr store) into a :class:`DiskError`."""
    try:
        yield
    except DiskError:
        raise
    except Exception as e:  # noqa: BLE001 - libraries wrap OS errors in their own types
        err = _disk_error(e, Path(path))
        if err is None:
            raise
        raise err from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    ``suffix`` lets writers that insist on an extension (``np.savez``, matplotlib) see it.
    The file gets mode ``0o666 & ~umask`` (``mkstemp`` would leave it 0600).
    """
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    with disk_errors(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with disk_errors(path):
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Atomically write strict JSON (indented; non-finite numbers become null, see :func:`strict_json`)."""
    write_text(path, dumps(obj, indent=2) + "\n")


def dumps(obj: object, **kwargs) -> str:
    """``json.dumps`` of :func:`strict_json` ``(obj)`` with ``allow_nan=False`` (it can never emit NaN)."""
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)


def strict_json(obj: object) -> object:
    """A copy of ``obj`` that strict JSON can hold.

    NumPy arrays and scalars become lists and Python numbers, paths strings; a non-finite float
    becomes None, and a dict with such a value (directly, or inside a list value) gets
    ``"why": "non-finite"`` unless it already explains itself with a ``why``.
    """
    return _clean(obj)[0]


def _clean(x: object) -> tuple[object, bool]:
    """(cleaned value, whether a non-finite number was replaced at this level or in a list below)."""
    import numpy as np

    if isinstance(x, np.ndarray):
        x = x.tolist()
    elif isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x, False
    if isinstance(x, float):
        return (x, False) if math.isfinite(x) else (None, True)
    if isinstance(x, dict):
        out, bad = {}, False
        for k, v in x.items():
            out[k if isinstance(k, str) else str(k)], b = _clean(v)
            bad |= b
        if bad and out.get("why") is None:
            out["why"] = "non-finite"
        return out, False
    if isinstance(x, (list, tuple)):
        items = [_clean(v) for v in x]
        return [v for v, _ in items], any(b for _, b in items)
    if isinstance(x, Path):
        return str(x), False
    raise TypeError(f"cannot write {type(x).__name__} to JSON")
