"""Weight components by name: the ``components`` list of a job, resolved against a model.

A component is a set of weight coordinates the sampler may move (a
:class:`spectro.nn.Restriction`; docs/design.md §2: the restricted posterior of component C).
Names, for spectro's attention-only models, every Hugging Face family of
:func:`spectro.models.hf.supported_model_types` and TransformerLens ``HookedTransformer`` models
(:mod:`spectro.models.tl`) alike:

==================  ==========================================================================
``full`` / ``all``  every parameter (the unrestricted posterior)
``heads``           one component per attention head of every layer: ``l0h0``, ``l0h1``, …
``layers``          one component per layer: ``l0``, ``l1``, …
``attn`` / ``mlp``  one component per layer's attention / MLP: ``l0.attn``, … / ``l0.mlp``, …
``embed``           the token embedding; ``unembed``: the unembedding (output head)
``lLhH``            head H of layer L: its slices of Q, K, V (fused or separate; under GQA the
                    shared K/V head too) and of the output projection
``lLgG``            GQA group G of layer L (the query heads sharing key/value head G)
``lL``              all of layer L (attention-only models: its attention)
``lL.attn``         layer L's attention (``lL attn`` too); ``lL.mlp`` its MLP
``A+B``             the union of devinterp specs (``l0h1+l1h3``)
a glob              parameter-name ``fnmatch`` glob(s), ``+``-joined: ``transformer.h.0.attn.*``
``NAME=SPEC``       any of the above but the groups, under the result name NAME
==================  ==========================================================================

Everything but the globs goes through devinterp's ``create_param_masks`` and its per-family
structure table (``HEAD_STRUCTURES``; spectro's attention-only model is read as a TransformerLens
``HookedTransformer`` there) — spectro keeps no table of its own; it corrects one entry, the head
masks of ``gpt_bigcode`` without ``multi_query`` (:func:`_devinterp_restriction`). For spectro's attention-only
models ``lLhH``, ``heads`` and ``lL`` keep their historical definitions
(:func:`spectro.models.head_restriction`: W_Q, W_K, W_V, b_Q, b_K, b_V, W_O of the head;
``blocks.L.attn.*``) so earlier results stay reproducible.

Every problem (unknown name, a layer or head the model does not have, a glob or spec that
selects nothing) is a :class:`ComponentError` with a one-line message listing the choices.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

__all__ = ["ComponentError", "GROUPS", "component_syntax_error", "resolve_components"]

GROUPS = ("heads", "layers", "attn", "mlp")
_WORDS = ("full", "all", "embed", "unembed")
_ATOM = re.compile(r"l(\d+)(?:h(\d+)|g(\d+)|[ .](attn|mlp))?")
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_GLOB_CHARS = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+")
CHOICES = ("'full', 'heads', 'layers', 'attn', 'mlp', 'embed', 'unembed', 'lLhH', 'lLgG', 'lL', 'lL.attn', 'lL.mlp', "
           "'A+B' unions, parameter-name globs, 'NAME=SPEC'")
ESCAPE = "or use the Python API with an explicit spectro.nn.Restriction"


class ComponentError(ValueError):
    """A component name that does not fit this model (one-line message)."""


def _split_name(entry: str) -> tuple[str | None, str]:
    if "=" in entry:
        name, spec = entry.split("=", 1)
        return name.strip(), spec.strip()
    return None, entry.strip()


def component_syntax_error(entry: str) -> str | None:
    """Why ``entry`` cannot be a component, judged without a model (None: it may be one)."""
    name, spec = _split_name(entry)
    if name is not None:
        if not _NAME.fullmatch(name) or name in _WORDS + GROUPS:
            return f"{name!r} is not a usable result name (letters, digits, '_', '.', ':', '-'; not a reserved word)"
        if spec in GROUPS or spec in _WORDS:
            return f"{spec!r} cannot be renamed ('{name}=' applies to a single component)"
    if not spec:
        return "empty component"
    if spec in GROUPS or spec in _WORDS:
        return None
    for part in spec.split("+"):
        part = part.strip()
        if not part or not (_ATOM.fullmatch(part) or part in ("embed", "unembed") or _GLOB_CHARS.fullmatch(part)):
            return f"{part!r} is not a component; use {CHOICES}"
    return None


def _canon_atom(part: str) -> str:
    m = _ATOM.fullmatch(part)
    if m is None:
        return part
    layer, head, group, sub = m.groups()
    return f"l{layer}" + (f"h{head}" if head else f"g{group}" if group else f".{sub}" if sub else "")


def _devinterp_spec(canon: str) -> str:
    return canon.replace(".", " ")  # l0.attn -> devinterp's "l0 attn"


def _is_attention_only(model) -> bool:
    from .attention_only import AttentionOnlyConfig

    return isinstance(getattr(model, "cfg", None), AttentionOnlyConfig)


def _shape(model) -> tuple[int, int, int]:
    """(n_layers, n_heads, n_kv_heads) from the model's config."""
    if _is_attention_only(model):
        return model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_heads
    if not hasattr(model, "config"):  # a TransformerLens HookedTransformer (spectro.models.tl)
        cfg = model.cfg
        return cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads or cfg.n_heads
    from .hf import layer_count

    cfg = model.config  # heads as devinterp reads them (its masks are built from the same numbers)
    n_heads = int(cfg.num_attention_heads)
    return layer_count(model), n_heads, int(getattr(cfg, "num_key_value_heads", None) or n_heads)


def _atom_restriction(model, part: str, name: str):
    """One devinterp spec or glob → Restriction (ComponentError when it selects nothing)."""
    from ..nn.restrictions import Restriction

    n_layers, n_heads, n_kv = _shape(model)
    m = _ATOM.fullmatch(part)
    if m is not None:
        layer = int(m.group(1))
        if layer >= n_layers:
            raise ComponentError(f"component {name!r}: layer {layer} does not exist; the model has layers 0..{n_layers - 1}")
        if m.group(2) is not None and int(m.group(2)) >= n_heads:
            raise ComponentError(f"component {name!r}: head {m.group(2)} does not exist; the model has heads 0..{n_heads - 1} per layer")
        if m.group(3) is not None and int(m.group(3)) >= n_kv:
            raise ComponentError(f"component {name!r}: group {m.group(3)} does not exist; the model has "
                                 f"{n_kv} key/value groups per layer")
        if _is_attention_only(model) and m.group(4) is None and m.group(3) is None:
            from .attention_only import head_restriction

            if m.group(2) is not None:  # the historical per-head restriction of spectro's own model
                r = head_restriction(model, layer, int(m.group(2)))
                return Restriction(dict(r.masks), name=name)
            return Restriction.from_globs(model, f"blocks.{layer}.attn.*", name=name)
    if m is not None or part in ("embed", "unembed"):
        try:
            r = _devinterp_restriction(model, _devinterp_spec(_canon_atom(part)))
        except ValueError as e:
            raise ComponentError(f"component {name!r}: {' '.join(str(e).split())}") from None
        masks = {k: v for k, v in r.masks.items() if v is None or bool(v.any())}
        if not masks:
            raise ComponentError(f"component {name!r} selects no parameter of this model (devinterp's table has no such "
                                 f"part for {_family(model)}); {ESCAPE}")
        return Restriction(masks, name=name)
    names = [n for n, _ in model.named_parameters()]
    if not any(fnmatch.fnmatchcase(n, part) for n in names):
        examples = ", ".join(names[:3] + (["…"] if len(names) > 3 else []))
        raise ComponentError(f"component {name!r}: {part!r} is not a component name and matches no parameter "
                             f"(parameters look like {examples}); use {CHOICES}; {ESCAPE}")
    return Restriction.from_globs(model, part, name=name)


def _devinterp_restriction(model, spec: str):
    """devinterp's ``create_param_masks(model, spec)``, with the one head layout its table gets
    wrong corrected: ``gpt_bigcode`` without ``multi_query`` fuses ``c_attn`` per head — output rows
    ``(head, q/k/v, head_dim)``, GPT-NeoX's interleaved layout (transformers' ``GPTBigCodeAttention``
    views the output as ``[n_heads, 3·head_dim]``) — while the table gives every gpt_bigcode model
    the ``[Q | K | V]`` layout of multi-query checkpoints (StarCoder), right only with
    ``multi_query=True``. Without multi_query each head has its own key/value head, so group G is
    head G. (tests/test_hf_models.py checks both layouts against hand-written slices, attention
    patterns and the sampler.)"""
    import torch

    from ..nn.restrictions import Restriction

    r = Restriction.from_devinterp(model, spec)
    cfg = getattr(model, "config", None)
    m = re.fullmatch(r"l(\d+)[hg](\d+)", spec)
    if m is None or getattr(cfg, "model_type", None) != "gpt_bigcode" or cfg.multi_query:
        return r
    n_heads = int(cfg.num_attention_heads)
    rows = torch.zeros(n_heads, 3, int(cfg.hidden_size) // n_heads, dtype=torch.bool)
    rows[int(m.group(2))] = True
    rows = rows.reshape(-1)
    masks = dict(r.masks)
    for name in (f"transformer.h.{m.group(1)}.attn.c_attn.weight", f"transformer.h.{m.group(1)}.attn.c_attn.bias"):
        if name in masks:  # nn.Linear: output rows along dim 0
            shape = dict(model.named_parameters())[name].shape
            masks[name] = rows.view(-1, *([1] * (len(shape) - 1))).expand(shape)
    return Restriction(masks, name=r.name)


def _family(model) -> str:
    if _is_attention_only(model):
        return "spectro's attention-only model"
    return f"model_type {model.config.model_type!r}" if hasattr(model, "config") else "TransformerLens HookedTransformer"


def resolve_components(model, entries) -> dict[str, Any]:
    """Ordered ``{name: Restriction | None}`` (None = full) for a job's ``components`` list.

    Raises :class:`ComponentError` for a name that does not fit the model and for a component
    listed twice (directly or through a group).
    """
    n_layers, n_heads, _ = _shape(model)
    out: dict[str, Any] = {}

    def add(name: str, value: Any, entry: str) -> None:
        if name in out:
            raise ComponentError(f"component {entry!r} repeats component {name!r}")
        out[name] = value

    for entry in entries:
        err = component_syntax_error(entry)
        if err:
            raise ComponentError(f"component {entry!r}: {err}")
        label, spec = _split_name(entry)
        if spec in ("full", "all"):
            add("full", None, entry)
        elif spec in GROUPS:
            atoms = {"heads": [f"l{l}h{h}" for l in range(n_layers) for h in range(n_heads)],
                     "layers": [f"l{l}" for l in range(n_layers)],
                     "attn": [f"l{l}.attn" for l in range(n_layers)],
                     "mlp": [f"l{l}.mlp" for l in range(n_layers)]}[spec]
            for a in atoms:
                add(a, _atom_restriction(model, a, a), entry)
        else:
            parts = [_canon_atom(p.strip()) for p in spec.split("+")]
            name = label or "+".join(re.sub(r"[^A-Za-z0-9_.:-]", "_", p) for p in parts)
            r = None
            for p in parts:
                piece = _atom_restriction(model, p, name)
                r = piece if r is None else r.union(piece, name=name)
            add(name, r, entry)
    return out
