"""Single-file snapshots: what the measurement driver checkpoints into, and what it resumes from.

A snapshot is a ``torch.save`` archive of a dict with a header ``format`` (:data:`SNAPSHOT_FORMAT`)
and ``kind`` beside the payload's own keys, written atomically and read with
``torch.load(weights_only=True)``: reading one never runs code from the file. NumPy arrays are
stored as raw bytes (bit-exact). A path that is a folder, or a file that is not a spectro
snapshot of the expected kind, is refused with :class:`~spectro.io.OutputError` (one line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import OutputError, atomic_path, one_line

__all__ = ["SNAPSHOT_FORMAT", "check_snapshot_target", "save_snapshot", "load_snapshot"]

SNAPSHOT_FORMAT = "spectro.snapshot/1"


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


def _load_failure(e: BaseException) -> str:
    """Why ``torch.load`` could not read a file, in a few words."""
    text = str(e)
    if "Weights only load failed" in text:
        return "a foreign or corrupt file, or one holding pickled Python objects, which spectro does not load"
    if "zip archive" in text or "central directory" in text or isinstance(e, EOFError):
        return "not a torch archive, or truncated"
    return f"corrupt: {one_line(text.split(chr(10))[0])}"


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
