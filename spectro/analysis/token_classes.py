"""Token pattern classes of probe tokens: word start, word part, induction, delimiter, spacing, numeric.

Baker et al. (2025) colour their susceptibility PCA by such classes. Here every *predicted* token
of a probe sequence gets one **primary class** (the ``cls`` column) plus the flags it is built
from, so an analysis can also look at the surface class regardless of induction.

Rules (``text`` = the token's decoded text; ``core`` = ``text.strip()``; the *previous* token is
the one before it in the same probe sequence):

1. **induction** — the bigram (previous token id, token id) already occurred earlier in the same
   sequence: there is ``j < i − 1`` with ``ids[j] == ids[i − 1]`` and ``ids[j + 1] == ids[i]``.
   The token is then predictable by copying ("A B … A → B"), the pattern induction heads
   implement. It is a property of the context, so it takes precedence over the surface classes.
2. **spacing** — the text is non-empty and only whitespace (``" "``, ``"\\n"``, an indent
   ``"\\n        "``, tabs).
3. **numeric** — ``core`` holds at least one digit and nothing but digits and the separators
   ``. , _`` (``"4"``, ``" 2024"``, ``"3.14"``; not ``"x2"``).
4. **delimiter** — ``core`` is non-empty and every character is punctuation or a symbol (Unicode
   categories P* and S*): brackets, quotes, ``. , ; :``, ``=``, ``+``, ``$``, ``--``, ``._``.
5. **word start** — ``core`` begins a word (its first character is a letter, or ``_`` followed by
   a letter somewhere) and either the text itself begins with whitespace (GPT-2's ``Ġword``) or
   the previous token does not end inside a word: it ends with whitespace or with punctuation
   other than ``_`` (``(`` → ``self``), or there is no previous token.
6. **word part** — ``core`` begins a word (as in 5) and the previous token ends with a letter,
   digit or ``_`` with no whitespace in between (``"ation"`` after ``"educ"``, ``"ext"`` after
   ``"_"`` in an identifier).
7. **other** — anything else: special tokens such as ``<|endoftext|>``, a lone byte of a split
   UTF-8 character (``"�"``), mixed tokens that start with a digit or a symbol followed by
   letters (``"2x"``, ``".a"``).

A token gets exactly one class, the first rule that applies, in the order above
(:data:`TOKEN_CLASSES`). The *surface* class is the same cascade without rule 1.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "TOKEN_CLASSES",
    "SURFACE_CLASSES",
    "TokenClass",
    "surface_class",
    "induction_flags",
    "classify_sequence",
    "classify_ids",
    "token_texts",
]

TOKEN_CLASSES = ("induction", "spacing", "numeric", "delimiter", "word_start", "word_part", "other")
SURFACE_CLASSES = TOKEN_CLASSES[1:]
_NUM_SEPARATORS = frozenset(".,_")


@dataclass(frozen=True)
class TokenClass:
    """Class of one token: ``cls`` (primary, see the module rules), ``surface`` (without rule 1),
    ``induction`` (rule 1's flag) and the decoded ``text``."""

    cls: str
    surface: str
    induction: bool
    text: str


def _is_punct_or_symbol(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def _starts_word(core: str) -> bool:
    if not core:
        return False
    if core[0].isalpha():
        return True
    return core[0] == "_" and any(c.isalpha() for c in core)


def _ends_inside_word(prev: str | None) -> bool:
    return bool(prev) and (prev[-1].isalnum() or prev[-1] == "_")


def surface_class(text: str, prev_text: str | None = None, *, special: bool = False) -> str:
    """Surface class of a token from its decoded ``text`` and the previous token's (rules 2–7)."""
    if special:
        return "other"
    core = text.strip()
    if text and not core:
        return "spacing"
    if not core or "\ufffd" in core:  # empty (a special token decoded to nothing) or a split UTF-8 character
        return "other"
    if any(c.isdigit() for c in core) and all(c.isdigit() or c in _NUM_SEPARATORS for c in core):
        return "numeric"
    if all(_is_punct_or_symbol(c) for c in core):
        return "delimiter"
    if _starts_word(core):
        if text[0].isspace() or not _ends_inside_word(prev_text):
            return "word_start"
        return "word_part"
    return "other"


def induction_flags(ids: Sequence) -> list[bool]:
    """``flags[i]``: the bigram ``(ids[i−1], ids[i])`` occurred earlier in ``ids`` (rule 1).

    ``ids`` may hold any hashable items (token ids or strings); ``flags[0]`` is False.
    """
    seen: set = set()
    out = [False] * len(ids)
    for i in range(1, len(ids)):
        bigram = (ids[i - 1], ids[i])
        out[i] = bigram in seen
        seen.add(bigram)
    return out


def classify_sequence(texts: Sequence[str], ids: Sequence | None = None, *,
                      special: Sequence[bool] | None = None) -> list[TokenClass]:
    """Classify every token of one sequence given its decoded ``texts``.

    ``ids`` (default: the texts themselves) identify tokens for the induction rule; ``special``
    marks special tokens (class ``other``). Position 0 is classified too (it has no previous
    token, so it is never ``induction``), though a job never predicts it.
    """
    n = len(texts)
    ids = list(texts) if ids is None else list(ids)
    if len(ids) != n:
        raise ValueError(f"got {n} token texts but {len(ids)} ids")
    special = [False] * n if special is None else list(special)
    if len(special) != n:
        raise ValueError(f"got {n} token texts but {len(special)} special flags")
    ind = induction_flags(ids)
    out = []
    for i, text in enumerate(texts):
        surf = surface_class(text, texts[i - 1] if i > 0 else None, special=special[i])
        out.append(TokenClass("induction" if ind[i] else surf, surf, ind[i], text))
    return out


def token_texts(tokenizer, ids: Sequence[int]) -> tuple[list[str], list[bool]]:
    """Decoded text of each token id (one at a time) and whether it is a special token.

    Works with a 🤗 ``tokenizers.Tokenizer`` (byte-level BPE: ``Ġ`` becomes a space, ``Ċ`` a
    newline; a lone byte of a multi-byte character decodes to ``�``, class ``other``).
    """
    texts, special = [], []
    added = {t.content for t in tokenizer.get_added_tokens_decoder().values()} if hasattr(tokenizer, "get_added_tokens_decoder") else set()
    for i in ids:
        raw = tokenizer.id_to_token(int(i))
        is_special = raw in added
        special.append(is_special)
        texts.append(raw if is_special else tokenizer.decode([int(i)], skip_special_tokens=False))
    return texts, special


def classify_ids(tokenizer, ids: Sequence[int]) -> list[TokenClass]:
    """Classify every token of a sequence of token ids (see the module rules)."""
    ids = [int(i) for i in ids]
    texts, special = token_texts(tokenizer, ids)
    return classify_sequence(texts, ids, special=special)
