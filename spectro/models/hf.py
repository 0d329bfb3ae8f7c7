"""Hugging Face causal language models as job models: load a local model folder offline.

A *model folder* is what ``model.save_pretrained(DIR)`` and ``tokenizer.save_pretrained(DIR)``
write: ``config.json``, the weights as ``*.safetensors`` (one file or an index of shards) and a
fast tokenizer's ``tokenizer.json``. :func:`load_hf_model` builds the model with
``AutoModelForCausalLM.from_pretrained(DIR, local_files_only=True)`` (never the Hub) and checks
it before anything is sampled:

* its ``model_type`` is one of :func:`supported_model_types` — the causal-LM families of
  devinterp's weight-restriction table (``devinterp.slt._model_structures.HEAD_STRUCTURES``)
  that ``transformers`` can build, so that per-head, per-layer, attention, MLP, embedding and
  unembedding components come from devinterp's table (:mod:`spectro.models.components`);
* the weights match the config exactly (no missing, unexpected or re-shaped tensors: a random
  initialisation where a weight was expected would be measured silently otherwise);
* the model is causal: the logits at position t do not change when a later token changes
  (an encoder checkpoint loaded as a decoder fails here); the loss is the next-token
  cross-entropy of docs/design.md §2, which is meaningless for a model that sees the future.

The model is returned in eval mode with ``use_cache=False``, eager attention (vmappable, see
:class:`spectro.nn.posterior.LocalizedPosterior`) and a forward hook that returns the logits
tensor instead of the ``ModelOutput``, so ``model(ids)`` is ``[..., T, vocab]`` like spectro's own
models and :func:`spectro.models.next_token_loss` applies unchanged. Parameter names are the
checkpoint's own (``transformer.h.0.attn.c_attn.weight``, ``model.layers.0.self_attn.q_proj.weight``),
which is what devinterp's table and parameter-name globs refer to.

``transformers`` is an optional dependency: ``pip install -e '.[hf]'``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["HF_EXTRA", "HFModelError", "HFModelInfo", "is_hf_model_dir", "layer_count", "load_hf_model", "supported_model_types"]

HF_EXTRA = "pip install -e '.[hf]'"
ESCAPE_HATCH = "or use the Python API (spectro.nn.run_susceptibility) with an explicit spectro.nn.Restriction"


class HFModelError(ValueError):
    """A model folder (Hugging Face or TransformerLens) that cannot be used; the message is one line
    naming the problem and the way out."""


@dataclass(frozen=True)
class HFModelInfo:
    """What a job needs to know about a loaded Hugging Face model (written to summary.json)."""

    model_type: str
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    vocab_size: int
    n_ctx: int | None  # max_position_embeddings (None: no limit declared, e.g. relative positions)
    dtype: str
    eos_token_id: int | None
    family: str = "huggingface"  # or "transformer_lens" (spectro.models.tl)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"family": d.pop("family"), **d}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise HFModelError(f"Hugging Face model folders need the optional dependency transformers: {HF_EXTRA}") from None
    return transformers


def supported_model_types() -> list[str]:
    """``model_type`` values a job accepts: devinterp's structure table ∩ transformers' causal LMs."""
    _transformers()
    from devinterp.slt._model_structures import HEAD_STRUCTURES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(set(HEAD_STRUCTURES) & set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES))


def is_hf_model_dir(path: str | os.PathLike) -> bool:
    """A folder with a ``config.json`` that is not a spectro checkpoint's (those carry
    ``"format": "spectro...."``). An unreadable config.json counts: the loader then says why."""
    f = Path(path) / "config.json"
    if not f.is_file():
        return False
    try:
        raw = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return True
    return not (isinstance(raw, dict) and str(raw.get("format", "")).startswith("spectro."))


def layer_count(model) -> int:
    """Layers as devinterp counts them: the blocks under the family's layer prefix in its table
    (``config.num_hidden_layers`` is the *encoder's* count in encoder-decoder configs such as BART's)."""
    from devinterp.slt.weight_restrictions import _count_layers, _get_spec

    return _count_layers(dict(model.named_parameters()), _get_spec(model))


def _logits_only(module, args, output):  # forward hook: ModelOutput -> logits tensor
    return output.logits if hasattr(output, "logits") else output[0]


def load_hf_model(path: str | os.PathLike, dtype: str | None = None):
    """``(model, tokenizer | None, info)`` from a local model folder, offline (see the module docstring).

    ``dtype``: ``"float32"`` / ``"bfloat16"`` / ``"float16"`` to cast the weights on load;
    ``None`` keeps the dtype the weights are stored in. The tokenizer is the folder's
    ``tokenizer.json`` as a ``tokenizers.Tokenizer`` (``None`` when the folder has none).
    Raises :class:`HFModelError` with a one-line message for every problem.
    """
    path = Path(path)
    tf = _transformers()
    import torch

    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise HFModelError(f"{path / 'config.json'} is not a readable JSON config ({' '.join(str(e).split())})") from None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    supported = supported_model_types()
    if model_type not in supported:
        raise HFModelError(f"{path}: model_type {model_type!r} is not supported; supported families: {', '.join(supported)} "
                           f"({ESCAPE_HATCH})")
    if not (list(path.glob("*.safetensors")) or list(path.glob("*.safetensors.index.json"))):
        raise HFModelError(f"{path} has no *.safetensors weights (save them with model.save_pretrained({str(path)!r}))")
    tf.logging.set_verbosity_error()
    tf.logging.disable_progress_bar()
    kwargs: dict[str, Any] = dict(local_files_only=True, attn_implementation="eager", output_loading_info=True,
                                  dtype=getattr(torch, dtype) if dtype is not None else "auto")
    try:
        model, info = tf.AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a bad folder (shape mismatch, bad file)
        msg = " ".join(str(e).split())
        raise HFModelError(f"the weights in {path} do not load into the model config.json describes: "
                           f"{msg[:400]}{'…' if len(msg) > 400 else ''}") from None
    bad = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        detail = "; ".join(f"{k.replace('_', ' ')}: {[str(x) for x in v[:4]]}{' …' if len(v) > 4 else ''}" for k, v in bad.items())
        raise HFModelError(f"the weights in {path} do not match its config.json ({detail})")
    model.eval()
    model.config.use_cache = False
    model.config.pad_token_id = None  # never padded (full windows); its data-dependent warning check breaks vmap
    model.register_forward_hook(_logits_only)
    cfg = model.config
    n_heads = int(cfg.num_attention_heads)
    vocab = int(cfg.vocab_size)
    _check_causal(model, vocab, path)
    n_ctx = getattr(cfg, "max_position_embeddings", None)
    eos = _eos_id(path, raw)
    info_ = HFModelInfo(
        model_type=model_type, architecture=type(model).__name__, n_layers=layer_count(model), n_heads=n_heads,
        n_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or n_heads), d_model=int(cfg.hidden_size),
        vocab_size=vocab, n_ctx=int(n_ctx) if isinstance(n_ctx, int) else None,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."), eos_token_id=eos)
    return model, _folder_tokenizer(path), info_


def _folder_tokenizer(path: Path):
    """The folder's ``tokenizer.json`` as a ``tokenizers.Tokenizer``, or None when it has none."""
    if not (path / "tokenizer.json").is_file():
        return None
    from ..data.tokenizer import load_tokenizer

    try:
        return load_tokenizer(path)
    except ValueError as e:
        raise HFModelError(str(e)) from None


def _check_causal(model, vocab: int, path: Path) -> None:
    """Logits at positions < T−1 must not depend on the last token. Equal up to rounding: a
    mixture-of-experts layer groups the tokens per expert, so changing one token changes the
    matmul shapes of the others (measured: 6e-8 on logits of size 0.4 in float32), while a model
    that sees the future moves them by far more (a tiny random BERT without is_decoder: 8e-4).
    Tolerance: 64 units of rounding of the model's dtype, relative to the logits' size."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, 6), generator=g)
    other = ids.clone()
    other[0, -1] = (ids[0, -1] + 1) % vocab
    with torch.no_grad():
        a, b = model(ids)[0, :-1].double(), model(other)[0, :-1].double()
    tol = 64 * torch.finfo(next(model.parameters()).dtype).eps * (1 + float(a.abs().max()))
    if float((a - b).abs().max()) > tol:
        raise HFModelError(f"{path}: the model is not causal (its logits at earlier positions change with the last token); "
                           "an encoder checkpoint needs \"is_decoder\": true in config.json")


def _eos_id(path: Path, raw: dict) -> int | None:
    """The end-of-text id that separates documents: config.json's ``eos_token_id`` (the first of a
    list), else ``tokenizer_config.json``'s ``eos_token`` looked up in tokenizer.json."""
    eos = raw.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if isinstance(eos, int):
        return eos
    tc = path / "tokenizer_config.json"
    if tc.is_file() and (path / "tokenizer.json").is_file():
        try:
            tok = json.loads(tc.read_text()).get("eos_token")
            tok = tok.get("content") if isinstance(tok, dict) else tok
            vocab = json.loads((path / "tokenizer.json").read_text())
            ids = {t["content"]: t["id"] for t in vocab.get("added_tokens", [])}
            ids.update(vocab.get("model", {}).get("vocab", {}) if isinstance(vocab.get("model", {}).get("vocab"), dict) else {})
            return ids.get(tok)
        except (OSError, ValueError, AttributeError, TypeError):
            return None
    return None
