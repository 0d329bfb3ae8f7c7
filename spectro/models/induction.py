"""Induction-head detection from attention patterns on repeated random token sequences.

Probe (Olsson et al. 2022): a random token sequence of length T, repeated once, ``[r_0 … r_{T−1},
r_0 … r_{T−1}]`` (optionally after a fixed first token). An induction head at query position i in
the second copy attends to the token *after* the previous occurrence of the current token:
key position ``i − T + 1``. The **induction score** of a head is the mean attention weight on that
key over all second-copy queries and all sequences, in [0, 1]; 1 for a perfect induction head,
about ``1/(i+1)`` averaged for uniform causal attention.

The **previous-token score** (mean attention from i to i − 1 over the same queries) finds the
layer-0 partner of the induction circuit.

Nothing here knows about susceptibilities or sampling: the detector only needs a function
``tokens [B, S] -> patterns [n_layers, B, n_heads, S, S]``; :func:`patterns_fn` builds one for
:class:`~spectro.models.attention_only.AttentionOnlyTransformer` and for Hugging Face models
(``output_attentions=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import reduce
from torch import nn

__all__ = [
    "InductionReport",
    "repeated_random_tokens",
    "induction_scores_from_patterns",
    "previous_token_scores_from_patterns",
    "patterns_fn",
    "induction_report",
]

PatternsFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class InductionReport:
    """Per-head scores, each [n_layers, n_heads], plus the probe's settings."""

    induction: torch.Tensor
    previous_token: torch.Tensor
    seq_len: int
    n_seqs: int
    prefix: int

    @property
    def uniform_baseline(self) -> float:
        """Score of a head attending uniformly to the causal past: mean over the second-copy
        queries i (positions prefix+T … prefix+2T−1) of 1/(i+1)."""
        q = torch.arange(self.prefix + self.seq_len, self.prefix + 2 * self.seq_len, dtype=torch.float64)
        return float((1.0 / (q + 1)).mean())

    def top_heads(self, k: int = 3) -> list[tuple[int, int, float]]:
        """The ``k`` highest induction scores as (layer, head, score)."""
        flat = self.induction.flatten()
        idx = torch.argsort(flat, descending=True)[:k]
        H = self.induction.shape[1]
        return [(int(i) // H, int(i) % H, float(flat[i])) for i in idx]

    def to_dict(self) -> dict:
        return {
            "induction": self.induction.tolist(),
            "previous_token": self.previous_token.tolist(),
            "seq_len": self.seq_len,
            "n_seqs": self.n_seqs,
            "prefix": self.prefix,
            "uniform_baseline": self.uniform_baseline,
            "top_heads": [{"layer": l, "head": h, "score": s} for l, h, s in self.top_heads()],
        }


def repeated_random_tokens(
    n_seqs: int,
    seq_len: int,
    vocab_size: int,
    *,
    low: int = 0,
    prefix_token: int | None = None,
    distinct: bool = True,
    seed: int = 0,
) -> torch.Tensor:
    """``[n_seqs, (1 if prefix_token is not None) + 2·seq_len]`` int64 tokens: random, repeated twice.

    Tokens are drawn from ``[low, vocab_size)``. With ``distinct`` the tokens of one copy are all
    different (so "the previous occurrence" is unique; needs ``seq_len ≤ vocab_size − low``).
    """
    span = vocab_size - low
    if seq_len < 2 or n_seqs < 1 or span < 1:
        raise ValueError(f"need seq_len ≥ 2, n_seqs ≥ 1 and low < vocab_size; got {seq_len}, {n_seqs}, [{low}, {vocab_size})")
    gen = torch.Generator().manual_seed(seed)
    if distinct:
        if seq_len > span:
            raise ValueError(f"distinct tokens need seq_len ≤ {span} (vocabulary range [{low}, {vocab_size})), got {seq_len}")
        first = torch.stack([torch.randperm(span, generator=gen)[:seq_len] for _ in range(n_seqs)]) + low
    else:
        first = torch.randint(low, vocab_size, (n_seqs, seq_len), generator=gen)
    seqs = torch.cat([first, first], dim=1)
    if prefix_token is not None:
        seqs = torch.cat([torch.full((n_seqs, 1), prefix_token, dtype=seqs.dtype), seqs], dim=1)
    return seqs


def _check_patterns(patterns: torch.Tensor, seq_len: int, prefix: int) -> None:
    if patterns.dim() != 5:
        raise ValueError(f"patterns must be [n_layers, batch, n_heads, S, S], got shape {tuple(patterns.shape)}")
    S = prefix + 2 * seq_len
    if patterns.shape[-1] != S or patterns.shape[-2] != S:
        raise ValueError(f"patterns are over {patterns.shape[-1]} positions; prefix {prefix} + 2·seq_len {seq_len} = {S}")


def induction_scores_from_patterns(patterns: torch.Tensor, seq_len: int, prefix: int = 0) -> torch.Tensor:
    """Mean attention from each second-copy query i to key i − T + 1, shape [n_layers, n_heads]."""
    _check_patterns(patterns, seq_len, prefix)
    q = torch.arange(prefix + seq_len, prefix + 2 * seq_len)
    k = q - seq_len + 1
    return reduce(patterns[..., q, k], "layer batch head query -> layer head", "mean")


def previous_token_scores_from_patterns(patterns: torch.Tensor, seq_len: int, prefix: int = 0) -> torch.Tensor:
    """Mean attention from each second-copy query i to key i − 1, shape [n_layers, n_heads]."""
    _check_patterns(patterns, seq_len, prefix)
    q = torch.arange(prefix + seq_len, prefix + 2 * seq_len)
    return reduce(patterns[..., q, q - 1], "layer batch head query -> layer head", "mean")


def patterns_fn(model: nn.Module) -> PatternsFn:
    """``tokens -> [n_layers, B, n_heads, S, S]`` for an AttentionOnlyTransformer or a HF model."""
    if hasattr(model, "attention_patterns"):
        return model.attention_patterns

    @torch.no_grad()
    def hf(tokens: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=tokens, output_attentions=True)
        if getattr(out, "attentions", None) is None:
            raise TypeError(f"{type(model).__name__} returned no attentions (needs output_attentions support, eager attention)")
        return torch.stack(out.attentions)

    return hf


def induction_report(
    model: nn.Module,
    vocab_size: int,
    *,
    seq_len: int = 50,
    n_seqs: int = 32,
    low: int = 1,
    prefix_token: int | None = None,
    seed: int = 0,
    distinct: bool = True,
    fn: PatternsFn | None = None,
) -> InductionReport:
    """Induction and previous-token scores of every head of ``model`` on repeated random tokens.

    ``low = 1`` keeps the ``<|endoftext|>`` id 0 out of the random tokens. The model must accept
    ``(1 if prefix_token is not None else 0) + 2·seq_len`` positions.
    """
    tokens = repeated_random_tokens(n_seqs, seq_len, vocab_size, low=low, prefix_token=prefix_token, distinct=distinct, seed=seed)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            patterns = (fn or patterns_fn(model))(tokens).float()
    finally:
        model.train(was)
    prefix = 0 if prefix_token is None else 1
    return InductionReport(
        induction=induction_scores_from_patterns(patterns, seq_len, prefix),
        previous_token=previous_token_scores_from_patterns(patterns, seq_len, prefix),
        seq_len=seq_len,
        n_seqs=n_seqs,
        prefix=prefix,
    )
