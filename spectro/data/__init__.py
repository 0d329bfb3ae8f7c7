"""Corpus building and loading (:mod:`.corpus`, :mod:`.sources`) and the BPE tokenizer (:mod:`.tokenizer`)."""

from .corpus import CorpusConfig, CorpusError, build_corpus, build_corpus_from_hub, load_corpus, read_manifest
from .tokenizer import (
    TokenizerFingerprint,
    TokenizerMismatchError,
    check_tokenizer,
    encode_documents,
    fingerprint,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

__all__ = [
    "CorpusConfig",
    "CorpusError",
    "build_corpus",
    "build_corpus_from_hub",
    "load_corpus",
    "read_manifest",
    "TokenizerFingerprint",
    "TokenizerMismatchError",
    "check_tokenizer",
    "encode_documents",
    "fingerprint",
    "load_tokenizer",
    "save_tokenizer",
    "train_tokenizer",
]
