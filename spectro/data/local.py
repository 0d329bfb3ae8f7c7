"""Any local text as a job corpus: ``.txt``, ``.jsonl`` / ``.json`` and ``.parquet`` files per domain,
read offline with 🤗 ``datasets`` into the same ``DatasetDict`` {train, validation} with columns
``text`` and ``domain`` that :func:`spectro.data.load_corpus` returns.

``files`` maps a domain to a file (or list of files), or to ``{"train": …, "validation": …}``.
Documents: one row of a JSON-lines / JSON / parquet file (its ``text_field`` column), one
blank-line-separated paragraph of a ``.txt`` file. A domain given without splits is split
deterministically: its documents are ordered by ``sha256(f"split:{seed}:{index}")`` and the first
``validation_fraction`` of them (at least one) are validation, the rest train, each kept in file
order.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

from .corpus import CorpusError, _quiet_datasets_log

__all__ = ["FORMATS", "load_text_files"]

FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def _paths(value: Any, where: str) -> list[Path]:
    items = [value] if isinstance(value, (str, os.PathLike)) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(p, (str, os.PathLike)) for p in items):
        raise CorpusError(f"{where}: expected a file path or a list of paths, got {value!r}")
    paths = [Path(p) for p in items]
    for p in paths:
        if not p.is_file():
            raise CorpusError(f"{where}: file {p} does not exist")
        if p.suffix.lower() not in FORMATS:
            raise CorpusError(f"{where}: {p} has an unknown extension; supported: {', '.join(sorted(FORMATS))}")
    kinds = {FORMATS[p.suffix.lower()] for p in paths}
    if len(kinds) > 1:
        raise CorpusError(f"{where}: mixes file kinds {sorted(kinds)}; give one kind per domain and split")
    return paths


def _read(paths: list[Path], text_field: str, where: str) -> list[str]:
    from datasets import load_dataset

    kind = FORMATS[paths[0].suffix.lower()]
    kwargs: dict[str, Any] = {"data_files": [str(p) for p in paths], "split": "train"}
    if kind == "text":
        kwargs["sample_by"] = "paragraph"
    try:
        with _quiet_datasets_log():
            ds = load_dataset(kind, **kwargs)
    except Exception as e:  # noqa: BLE001 - datasets/pyarrow raise their own types for a bad file
        raise CorpusError(f"{where}: cannot read {', '.join(map(str, paths))} ({' '.join(str(e).split())[:300]})") from None
    field = "text" if kind == "text" else text_field
    if field not in ds.column_names:
        raise CorpusError(f"{where}: no column {field!r} in {', '.join(map(str, paths))}; it has {ds.column_names} "
                          "(set data.text_field)")
    texts = [t for t in ds[field] if isinstance(t, str) and t.strip()]
    if not texts:
        raise CorpusError(f"{where}: no non-empty text in {', '.join(map(str, paths))}")
    return texts


def load_text_files(files: dict[str, Any], *, text_field: str = "text", validation_fraction: float = 0.1, seed: int = 0):
    """A ``DatasetDict`` {train, validation} (columns ``text``, ``domain``) from local files per domain."""
    from datasets import Dataset, DatasetDict

    if not isinstance(files, dict) or not files:
        raise CorpusError("data.files: expected a table {domain: file | [files] | {train: …, validation: …}}")
    if not 0 < validation_fraction < 1:
        raise CorpusError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    rows: dict[str, dict[str, list[str]]] = {"train": {"text": [], "domain": []}, "validation": {"text": [], "domain": []}}
    for domain, value in files.items():
        where = f"data.files.{domain}"
        if isinstance(value, dict):
            if set(value) != {"train", "validation"}:
                raise CorpusError(f"{where}: a split table needs exactly the keys 'train' and 'validation', got {sorted(value)}")
            split = {s: _read(_paths(value[s], f"{where}.{s}"), text_field, f"{where}.{s}") for s in ("train", "validation")}
        else:
            docs = _read(_paths(value, where), text_field, where)
            if len(docs) < 2:
                raise CorpusError(f"{where}: one document cannot be split into train and validation; give more "
                                  "documents or a {train: …, validation: …} table")
            order = sorted(range(len(docs)), key=lambda i: hashlib.sha256(f"split:{seed}:{i}".encode()).hexdigest())
            val = set(order[: max(1, math.floor(validation_fraction * len(docs)))])
            split = {"train": [d for i, d in enumerate(docs) if i not in val],
                     "validation": [d for i, d in enumerate(docs) if i in val]}
        for s, texts in split.items():
            rows[s]["text"] += texts
            rows[s]["domain"] += [domain] * len(texts)
    return DatasetDict({s: Dataset.from_dict(r) for s, r in rows.items()})
