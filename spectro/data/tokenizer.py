"""Byte-level BPE tokenizer (🤗 ``tokenizers``), trained on the corpus, with a vocabulary fingerprint.

The tokenizer is GPT-2-style byte-level BPE: every string is representable (no unknown token),
one special token ``<|endoftext|>`` (id 0) separates documents. Training is deterministic:
same texts in the same order and same settings ⇒ the same ``tokenizer.json`` (tested).

A :class:`TokenizerFingerprint` (vocabulary size + sha256 of the vocabulary and merges) is
recorded beside anything tokenized — checkpoints, probe sets — and :func:`check_tokenizer`
raises :class:`TokenizerMismatchError` when a tokenizer does not match it, so token ids from
one vocabulary are never silently read with another.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "EOS_TOKEN",
    "TokenizerFingerprint",
    "TokenizerMismatchError",
    "train_tokenizer",
    "save_tokenizer",
    "load_tokenizer",
    "fingerprint",
    "check_tokenizer",
    "encode_documents",
]

EOS_TOKEN = "<|endoftext|>"


class TokenizerMismatchError(ValueError):
    """Token ids were produced with a different vocabulary than the tokenizer at hand."""


@dataclass(frozen=True)
class TokenizerFingerprint:
    """Identity of a vocabulary: its size and the sha256 of its canonical vocab + merges."""

    vocab_size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TokenizerFingerprint":
        try:
            return cls(int(d["vocab_size"]), str(d["sha256"]))
        except (KeyError, TypeError, ValueError) as e:
            raise TokenizerMismatchError(f"not a tokenizer fingerprint (need vocab_size and sha256): {d!r}") from e


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    *,
    min_frequency: int = 2,
    length: int | None = None,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer on ``texts`` (iterated once, in order).

    The vocabulary holds the special token ``<|endoftext|>`` (id 0), the 256 byte symbols and
    merges up to ``vocab_size`` (fewer when the texts run out of pairs seen ``min_frequency``
    times; check ``get_vocab_size()``). ``length`` (number of texts) only drives the progress
    display.
    """
    if vocab_size < 257 + 1:
        raise ValueError(f"vocab_size must exceed 257 (256 bytes + {EOS_TOKEN}), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    return tok


def save_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike) -> Path:
    """Write ``tokenizer.json`` atomically."""
    from ..io import write_text

    path = Path(path)
    write_text(path, tokenizer.to_str(pretty=True))
    return path


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a ``tokenizer.json`` (a folder holding one is accepted too).

    Raises FileNotFoundError when there is none and ValueError (naming the file) when it is not
    a tokenizer the ``tokenizers`` library can read.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises a bare Exception
        raise ValueError(f"tokenizer file {path} is not a valid tokenizer.json ({' '.join(str(e).split())})") from None


def fingerprint(tokenizer: Tokenizer) -> TokenizerFingerprint:
    """Vocabulary size and sha256 over (token, id) pairs sorted by id, plus the merges list."""
    model = json.loads(tokenizer.to_str())["model"]
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    canon = {
        "vocab": sorted(((i, t) for t, i in vocab.items())),
        "merges": [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])],
        "type": model.get("type"),
    }
    digest = hashlib.sha256(json.dumps(canon, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()
    return TokenizerFingerprint(tokenizer.get_vocab_size(with_added_tokens=True), digest)


def check_tokenizer(
    tokenizer: Tokenizer,
    expected: TokenizerFingerprint | dict[str, Any],
    *,
    what: str = "probe set",
) -> None:
    """Raise :class:`TokenizerMismatchError` unless ``tokenizer`` has the ``expected`` vocabulary.

    ``what`` names the thing that was tokenized (e.g. ``"probe set 'induction'"``) in the error.
    """
    exp = expected if isinstance(expected, TokenizerFingerprint) else TokenizerFingerprint.from_dict(expected)
    got = fingerprint(tokenizer)
    if got.vocab_size != exp.vocab_size:
        raise TokenizerMismatchError(
            f"{what} was tokenized with a vocabulary of {exp.vocab_size} tokens, but this tokenizer has "
            f"{got.vocab_size}: re-tokenize it with the model's tokenizer.json"
        )
    if got.sha256 != exp.sha256:
        raise TokenizerMismatchError(
            f"{what} was tokenized with a different vocabulary of the same size {got.vocab_size} "
            f"(sha256 {exp.sha256[:12]}… vs this tokenizer's {got.sha256[:12]}…): re-tokenize it with the "
            "model's tokenizer.json"
        )


def encode_documents(tokenizer: Tokenizer, texts: Iterable[str], *, batch_size: int = 256,
                     eos_id: int | None = None) -> Iterator[list[int]]:
    """Token ids of each text followed by the end-of-text id (documents stay separable): ``eos_id``
    (e.g. a Hugging Face model's ``eos_token_id``), by default the ``<|endoftext|>`` token's id."""
    eos = tokenizer.token_to_id(EOS_TOKEN) if eos_id is None else int(eos_id)
    if eos is None:
        raise TokenizerMismatchError(f"tokenizer has no {EOS_TOKEN!r} token; train it with train_tokenizer")
    batch: list[str] = []

    def flush() -> Iterator[list[int]]:
        for enc in tokenizer.encode_batch(batch, add_special_tokens=False):
            yield enc.ids + [eos]

    for t in texts:
        batch.append(t)
        if len(batch) >= batch_size:
            yield from flush()
            batch = []
    if batch:
        yield from flush()
