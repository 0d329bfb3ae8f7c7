"""Typed coordinates of a susceptibility's axes, and the record of how it was estimated.

An *axis* is one side of χ[i, a] — ``"observable"`` (the rows i) or ``"field"`` (the columns a)
— described as a table: ``labels``, one unique string per entry (the names results have always
carried, kept as the index), and named ``columns``, each a 1-d NumPy array of ints, floats,
bools or strings with one value per entry (e.g. a token field's ``group``, ``sample`` and
``position``; an Ising probe's ``row0``, ``row1``, ``col0``, ``col1``). Structure lives in the
columns, so nobody parses it back out of the labels.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Axis", "EstimatorInfo", "AXIS_NAMES", "ESTIMATOR_KINDS"]

AXIS_NAMES = ("observable", "field")
ESTIMATOR_KINDS = ("cov", "baker2025")
_KINDS = {"b": "bool", "i": "int", "u": "int", "f": "float", "U": "str"}  # supported dtype kinds
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}  # floats in strict JSON


def _kind(x) -> str:
    """Type of one Python/NumPy scalar: bool, int, float, str, or its type name (unsupported)."""
    if isinstance(x, (bool, np.bool_)):
        return "bool"
    if isinstance(x, numbers.Integral):
        return "int"
    if isinstance(x, numbers.Real):
        return "float"
    if isinstance(x, str):
        return "str"
    return type(x).__name__


def _as_column(axis: str, key, values, n: int) -> np.ndarray:
    """``values`` as a read-only 1-d array of a supported dtype with ``n`` entries, or ValueError."""
    where = f"column {key!r} of axis {axis!r}"
    if not isinstance(key, str) or not key:
        raise ValueError(f"axis {axis!r}: column names must be non-empty strings, got {key!r}")
    if key in AXIS_NAMES:
        raise ValueError(f"{where}: {key!r} is reserved for the dimension names (rename the column)")
    if isinstance(values, np.ndarray) and values.dtype != object:
        arr = values
    else:  # a list, or an object array: every element must have the same type (ints and floats mix to float)
        items = list(values.ravel()) if isinstance(values, np.ndarray) else list(values)
        kinds = {_kind(x) for x in items}
        if kinds == {"int", "float"}:
            kinds = {"float"}
        if len(kinds) > 1:
            raise ValueError(f"{where} mixes types ({', '.join(sorted(kinds))}): one type per column")
        if kinds - {"bool", "int", "float", "str"}:
            raise ValueError(f"{where} holds {kinds.pop()} values: only int, float, bool or str are supported")
        kind = kinds.pop() if kinds else "float"
        arr = np.asarray(items, dtype={"bool": bool, "int": np.int64, "float": np.float64, "str": str}[kind])
    if arr.dtype.kind not in _KINDS:
        raise ValueError(f"{where} has unsupported dtype {arr.dtype}: only int, float, bool or str are supported")
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{where} has shape {arr.shape}, expected ({n},): one value per label")
    arr = np.array(arr, copy=True)
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class Axis:
    """One axis of χ: unique ``labels`` plus aligned ``columns`` (module docstring)."""

    name: str
    labels: tuple[str, ...]
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in AXIS_NAMES:
            raise ValueError(f"axis name must be one of {AXIS_NAMES}, got {self.name!r}")
        labels = tuple(self.labels) if not isinstance(self.labels, str) else None
        if labels is None or any(not isinstance(x, str) for x in labels):
            raise ValueError(f"axis {self.name!r}: labels must be a sequence of strings, got {self.labels!r}")
        seen: dict[str, int] = {}
        for j, x in enumerate(labels):
            if x in seen:
                raise ValueError(f"axis {self.name!r} has duplicate label {x!r} (entries {seen[x]} and {j})")
            seen[x] = j
        if not isinstance(self.columns, Mapping):
            raise ValueError(f"axis {self.name!r}: columns must be a mapping name → array, got {type(self.columns).__name__}")
        cols = {key: _as_column(self.name, key, v, len(labels)) for key, v in self.columns.items()}
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "columns", cols)  # arrays read-only; a plain dict pickles

    @classmethod
    def from_labels(cls, name: str, labels: Iterable[str]) -> "Axis":
        """An axis with labels only (what every result had before columns existed)."""
        return cls(name, tuple(labels))

    @classmethod
    def from_records(cls, name: str, labels: Sequence[str], records: Sequence[Mapping]) -> "Axis":
        """An axis from one record (column → value) per label; every record has the same keys."""
        labels = tuple(labels)
        if len(records) != len(labels):
            raise ValueError(f"axis {name!r}: {len(records)} records for {len(labels)} labels (one per label)")
        keys = list(records[0]) if records else []
        for label, rec in zip(labels, records):
            if set(rec) != set(keys):
                diff = sorted(set(keys) ^ set(rec))
                raise ValueError(f"axis {name!r}: the record of {label!r} has keys {sorted(rec)}, "
                                 f"expected {sorted(keys)} (differ in {diff})")
        return cls(name, labels, {key: [rec[key] for rec in records] for key in keys})

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Axis):
            return NotImplemented
        return (self.name == other.name and self.labels == other.labels
                and list(self.columns) == list(other.columns)
                and all(self.columns[c].dtype == other.columns[c].dtype
                        and np.array_equal(self.columns[c], other.columns[c], equal_nan=self.columns[c].dtype.kind == "f")
                        for c in self.columns))

    def column(self, key: str) -> np.ndarray:
        """The column ``key`` (read-only array, one value per label)."""
        try:
            return self.columns[key]
        except KeyError:
            raise KeyError(f"axis {self.name!r} has no column {key!r} (columns: {list(self.columns)})") from None

    def index(self, label: str) -> int:
        """Position of ``label``."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise KeyError(f"axis {self.name!r} has no label {label!r}") from None

    def select(self, which) -> "Axis":
        """The entries picked by a boolean mask (one per label) or by integer indices, columns aligned."""
        sel = np.asarray(which)
        if sel.dtype == bool:
            if sel.shape != (len(self),):
                raise ValueError(f"axis {self.name!r}: mask has shape {sel.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(sel)
        elif sel.dtype.kind in "iu" or sel.size == 0:
            idx = sel.astype(np.int64).ravel()
            if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
                raise ValueError(f"axis {self.name!r}: index out of range for {len(self)} entries")
        else:
            raise ValueError(f"axis {self.name!r}: select takes a boolean mask or integer indices, got dtype {sel.dtype}")
        return Axis(self.name, tuple(self.labels[i] for i in idx), {k: v[idx] for k, v in self.columns.items()})

    def to_dict(self) -> dict:
        """JSON-safe dict (strict JSON: non-finite floats as "NaN"/"Infinity"/"-Infinity"); exact with :meth:`from_dict`."""

        def encode(v: np.ndarray) -> list:
            if v.dtype.kind == "f":
                return [x if math.isfinite(x) else ("NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity"))
                        for x in v.tolist()]
            return v.tolist()

        return {"name": self.name, "labels": list(self.labels),
                "columns": {k: {"dtype": v.dtype.str, "values": encode(v)} for k, v in self.columns.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Axis":
        """Inverse of :meth:`to_dict`."""
        cols = {}
        for key, spec in d.get("columns", {}).items():
            dtype = np.dtype(spec["dtype"])
            values = spec["values"]
            if dtype.kind == "f":
                values = [_NONFINITE.get(x, x) if isinstance(x, str) else x for x in values]
            cols[key] = np.asarray(values, dtype=dtype) if values else np.zeros(0, dtype=dtype)
        return cls(d["name"], tuple(d["labels"]), cols)


@dataclass(frozen=True)
class EstimatorInfo:
    """How χ was estimated: saved with the result.

    ``kind``: ``"cov"`` (χ = scale·Cov(φ, ψ)) or ``"baker2025"`` (Baker et al. 2025's component
    susceptibility); ``scale``: the factor in front of the covariance; ``convention``: the sign
    and meaning of χ in words (e.g. ``"chi[A,B] = d<M_A>/dh_B = beta*Cov(M_A, M_B)"``);
    ``system``: what was sampled (``"ising"``, ``"nn"``, ...); ``sampler`` and ``run``: their
    settings as JSON-safe dicts (normalised through JSON, so tuples become lists). The estimate
    functions fill ``kind``, ``scale`` and an empty ``convention`` themselves.
    """

    kind: str = "cov"
    scale: float = 1.0
    convention: str = ""
    system: str = ""
    sampler: Mapping = field(default_factory=dict)
    run: Mapping = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ESTIMATOR_KINDS:
            raise ValueError(f"estimator kind must be one of {ESTIMATOR_KINDS}, got {self.kind!r}")
        for key in ("convention", "system"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"estimator {key} must be a string, got {getattr(self, key)!r}")
        object.__setattr__(self, "scale", float(self.scale))
        for key in ("sampler", "run"):
            value = getattr(self, key)
            try:
                if not isinstance(value, Mapping):
                    raise TypeError(f"a {type(value).__name__}, not a mapping")
                value = json.loads(json.dumps(dict(value), allow_nan=False))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"estimator {key} must be a JSON-safe dict ({exc})") from None
            object.__setattr__(self, key, value)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "scale": self.scale, "convention": self.convention, "system": self.system,
                "sampler": dict(self.sampler), "run": dict(self.run)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "EstimatorInfo":
        return cls(**{k: d[k] for k in ("kind", "scale", "convention", "system", "sampler", "run") if k in d})
