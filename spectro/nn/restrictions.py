"""Weight restrictions: which coordinates of which parameters a sampler may move.

A :class:`Restriction` maps parameter names to an optional mask of the parameter's shape
(boolean or float; ``None`` = the whole parameter is free). Parameters not named are frozen at
w*: they are constants of the forward pass and no gradient is computed for them. Inside a
named parameter, drift and noise are multiplied by the mask (devinterp's ``MaskPreconditioner``),
so masked-out coordinates stay exactly at w*.

Builders: :meth:`Restriction.full`, :meth:`Restriction.from_globs` (parameter-name globs),
:meth:`Restriction.from_devinterp` (devinterp's ``create_param_masks`` strings such as
``"l0h1"``, for HuggingFace / TransformerLens models it knows), and :func:`attention_head`
(one head of a GPT-2-style block with a fused ``c_attn`` and a ``c_proj``, for models without a
HuggingFace config, in either ``nn.Linear`` or HF ``Conv1D`` layout).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Restriction", "attention_head"]


@dataclass(frozen=True)
class Restriction:
    """Free parameters (by name) with optional per-parameter masks.

    Attributes:
        masks: parameter name → mask of the parameter's shape (bool or float), or ``None``
            when every coordinate of that parameter is free. Order follows insertion.
        name: a label for results (e.g. ``"full"``, ``"l0h1"``).
    """

    masks: Mapping[str, torch.Tensor | None] = field(default_factory=dict)
    name: str = "custom"

    # ------------------------------------------------------------------ builders
    @classmethod
    def full(cls, model: nn.Module) -> "Restriction":
        """Every parameter free (the unrestricted posterior)."""
        return cls({n: None for n, _ in model.named_parameters()}, name="full")

    @classmethod
    def from_globs(cls, model: nn.Module, patterns: str | Sequence[str], name: str | None = None) -> "Restriction":
        """Parameters whose names match any of the ``fnmatch`` globs (e.g. ``"blocks.0.attn.*"``).

        Raises ValueError naming a pattern that matches nothing.
        """
        pats = [patterns] if isinstance(patterns, str) else list(patterns)
        names = [n for n, _ in model.named_parameters()]
        chosen: dict[str, None] = {}
        for pat in pats:
            hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                raise ValueError(f"pattern {pat!r} matches no parameter; parameters are: {names}")
            chosen.update(dict.fromkeys(hits))
        ordered = {n: None for n in names if n in chosen}
        return cls(ordered, name=name or ",".join(pats))

    @classmethod
    def from_devinterp(cls, model: nn.Module, spec: str | list[str]) -> "Restriction":
        """devinterp's ``create_param_masks`` (``"full"``, ``"l0"``, ``"l0h1"``, ``"l0 attn"``, ...).

        Needs a model devinterp recognises (HuggingFace ``config.model_type`` in its structure
        table, or a TransformerLens ``HookedTransformer``).
        """
        from devinterp.slt.weight_restrictions import create_param_masks

        masks = create_param_masks(model, spec)
        label = spec if isinstance(spec, str) else "+".join(spec)
        return cls(dict(masks), name=label)

    def union(self, other: "Restriction", name: str | None = None) -> "Restriction":
        """Coordinates free in either restriction (masks ORed / maxed; ``None`` wins)."""
        merged: dict[str, torch.Tensor | None] = dict(self.masks)
        for n, m in other.masks.items():
            if n not in merged:
                merged[n] = m
            elif merged[n] is None or m is None:
                merged[n] = None
            else:
                a, b = merged[n], m
                merged[n] = torch.logical_or(a, b) if a.dtype == torch.bool and b.dtype == torch.bool else torch.maximum(a.float(), b.float())
        return Restriction(merged, name=name or f"{self.name}|{other.name}")

    # ------------------------------------------------------------------ checks
    def resolve(self, model: nn.Module) -> list[tuple[str, nn.Parameter, torch.Tensor | None]]:
        """(name, parameter, float mask or None) in the model's parameter order, validated.

        Raises ValueError for unknown names, masks of the wrong shape, non-finite or negative
        masks, masks that free nothing, and an empty restriction.
        """
        params = dict(model.named_parameters())
        unknown = [n for n in self.masks if n not in params]
        if unknown:
            raise ValueError(f"restriction {self.name!r} names unknown parameters {unknown}")
        out: list[tuple[str, nn.Parameter, torch.Tensor | None]] = []
        for n, p in params.items():
            if n not in self.masks:
                continue
            m = self.masks[n]
            if m is not None:
                m = torch.as_tensor(m)
                if tuple(m.shape) != tuple(p.shape):
                    raise ValueError(f"mask for {n!r} has shape {tuple(m.shape)}, parameter has {tuple(p.shape)}")
                m = m.to(torch.float64) if m.dtype != torch.bool else m.double()
                if not torch.isfinite(m).all() or (m < 0).any():
                    raise ValueError(f"mask for {n!r} must be finite and non-negative")
                if not (m > 0).any():
                    raise ValueError(f"mask for {n!r} frees no coordinate")
            out.append((n, p, m))
        if not out:
            raise ValueError(f"restriction {self.name!r} frees no parameter")
        return out

    def n_free(self, model: nn.Module) -> int:
        """Number of free coordinates (non-zero mask entries)."""
        return sum(p.numel() if m is None else int((m > 0).sum()) for _, p, m in self.resolve(model))


def attention_head(
    model: nn.Module,
    layer: int,
    head: int,
    n_heads: int,
    *,
    block_prefix: str = "transformer.h",
    qkv: str = "attn.c_attn",
    out: str = "attn.c_proj",
    include_out_bias: bool = False,
) -> Restriction:
    """One attention head of a GPT-2-style block: its Q, K, V slices of the fused ``qkv``
    projection (weight and bias) and its input slice of the ``out`` projection.

    Parameters are ``f"{block_prefix}.{layer}.{qkv}.weight"`` etc. Layout is detected from the
    fused weight: ``nn.Linear`` stores it as [3d, d] (heads along dim 0; ``out`` weight [d, d]
    with heads along dim 1), HF ``Conv1D`` as [d, 3d] (heads along dim 1; ``out`` heads along
    dim 0). Q, K and V are concatenated, each [n_heads · head_dim], head-major — as in GPT-2 and
    devinterp's ``"concat"`` layout. The ``out`` bias is shared by all heads and is left frozen
    unless ``include_out_bias``.
    """
    params = dict(model.named_parameters())
    pre = f"{block_prefix}.{layer}."
    wq = params.get(pre + qkv + ".weight")
    if wq is None:
        raise ValueError(f"no parameter {pre + qkv + '.weight'!r}; set block_prefix/qkv for this model")
    if not 0 <= head < n_heads:
        raise ValueError(f"head {head} out of range for n_heads={n_heads}")
    if wq.dim() != 2:
        raise ValueError(f"{pre + qkv}.weight must be 2-D, has shape {tuple(wq.shape)}")
    if wq.shape[0] == 3 * wq.shape[1]:
        qkv_dim, out_dim = 0, 1  # nn.Linear: weight [out, in]
    elif wq.shape[1] == 3 * wq.shape[0]:
        qkv_dim, out_dim = 1, 0  # HF Conv1D: weight [in, out]
    else:
        raise ValueError(f"{pre + qkv}.weight has shape {tuple(wq.shape)}; expected [3d, d] or [d, 3d]")
    d = wq.shape[1 - qkv_dim]
    if d % n_heads:
        raise ValueError(f"d_model={d} is not divisible by n_heads={n_heads}")
    hd = d // n_heads

    sel3 = torch.zeros(3, n_heads, hd, dtype=torch.bool)
    sel3[:, head] = True
    sel3 = sel3.reshape(-1)  # [3d]
    sel1 = torch.zeros(n_heads, hd, dtype=torch.bool)
    sel1[head] = True
    sel1 = sel1.reshape(-1)  # [d]

    def expand(sel: torch.Tensor, shape: torch.Size, dim: int) -> torch.Tensor:
        view = [1, 1]
        view[dim] = -1
        return sel.view(*view).expand(*shape).clone()

    masks: dict[str, torch.Tensor | None] = {pre + qkv + ".weight": expand(sel3, wq.shape, qkv_dim)}
    bq = params.get(pre + qkv + ".bias")
    if bq is not None:
        masks[pre + qkv + ".bias"] = sel3.clone()
    wo = params.get(pre + out + ".weight")
    if wo is None:
        raise ValueError(f"no parameter {pre + out + '.weight'!r}; set out= for this model")
    masks[pre + out + ".weight"] = expand(sel1, wo.shape, out_dim)
    if include_out_bias and (pre + out + ".bias") in params:
        masks[pre + out + ".bias"] = None
    return Restriction(masks, name=f"l{layer}h{head}")
