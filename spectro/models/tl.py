"""TransformerLens models as job models: a ``HookedTransformer`` saved as its config and a state dict.

A *TransformerLens folder* is what :func:`save_tl_model` writes:

* ``tl_config.json`` — the ``HookedTransformerConfig`` as JSON (its ``to_dict()``, ``dtype`` as a
  string such as ``"float32"``); a hand-written file with only the fields the model needs
  (``n_layers``, ``d_model``, ``n_ctx``, ``d_head``, ``n_heads``, ``d_vocab``, ``act_fn``, …) works too;
* the weights: ``model.safetensors`` or ``model.pt`` (``torch.save(model.state_dict(), ...)``);
* ``tokenizer.json`` (a fast tokenizer; ``data.tokenizer`` otherwise), and optionally
  ``tokenizer_config.json`` naming the ``eos_token`` that separates documents.

:func:`load_tl_model` builds ``HookedTransformer(config)`` on the CPU and loads the state dict
as it is — no ``fold_ln``, ``center_writing_weights`` or other weight processing, so the
parameters are the saved ones — then checks it like a Hugging Face folder
(:mod:`spectro.models.hf`): every parameter present with its shape and nothing unexpected (the
attention masks and rotary tables are buffers rebuilt from the config, so a state dict may omit
them), the weights stored in the config's dtype, and the model causal. ``model(ids)`` returns the
logits ``[..., T, d_vocab_out]``, so :func:`spectro.models.next_token_loss` applies unchanged.
Components by name come from devinterp's ``hooked_transformer`` table (per-head slices of
``W_Q``/``W_K``/``W_V`` ``[n_heads, d_model, d_head]``, ``b_Q``/``b_K``/``b_V`` ``[n_heads, d_head]``
and ``W_O`` ``[n_heads, d_head, d_model]``; under GQA the shared ``_W_K``/``_W_V`` head).

``HookedTransformer`` exists in ``transformer_lens`` up to 3.x (deprecated there; 4.0 removed it in
favour of ``TransformerBridge``, which wraps a Hugging Face model — save that model with
``save_pretrained`` and use the folder as a Hugging Face model folder instead).
``pip install -e '.[tl]'``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .hf import HFModelError, HFModelInfo, _check_causal, _eos_id, _folder_tokenizer

__all__ = ["TL_CONFIG", "TL_EXTRA", "is_tl_model_dir", "load_tl_model", "save_tl_model"]

TL_CONFIG = "tl_config.json"
TL_EXTRA = "pip install -e '.[tl]'"
_WEIGHTS = ("model.safetensors", "model.pt")


def is_tl_model_dir(path: str | os.PathLike) -> bool:
    """A folder with a ``tl_config.json``."""
    return (Path(path) / TL_CONFIG).is_file()


def _hooked_transformer():
    try:
        import transformer_lens
    except ImportError:
        raise HFModelError(f"TransformerLens folders need the optional dependency transformer_lens 3.x: {TL_EXTRA}") from None
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:
        raise HFModelError(f"transformer_lens {getattr(transformer_lens, '__version__', '?')} has no HookedTransformer "
                           f"(removed in 4.0): install transformer_lens 3.x ({TL_EXTRA}), or save the model as a "
                           "Hugging Face folder with save_pretrained") from None
    return HookedTransformer, HookedTransformerConfig


def _jsonable(value):
    import torch

    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return value.item()
    return value


def save_tl_model(model, folder: str | os.PathLike, tokenizer_file: str | os.PathLike | None = None,
                  eos_token: str | None = None) -> Path:
    """Write ``model`` (a ``HookedTransformer``) as a TransformerLens folder: ``tl_config.json``,
    ``model.safetensors`` and, when given, a copy of ``tokenizer_file`` as ``tokenizer.json``
    (``eos_token``: written to ``tokenizer_config.json``)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {k: _jsonable(v) for k, v in model.cfg.to_dict().items()}
    (folder / TL_CONFIG).write_text(json.dumps(cfg, indent=1) + "\n")
    save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters()}, str(folder / "model.safetensors"))
    if tokenizer_file is not None:
        (folder / "tokenizer.json").write_text(Path(tokenizer_file).read_text())
    if eos_token is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": eos_token}) + "\n")
    return folder


def _one_line(e: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg[:limit] + ("…" if len(msg) > limit else "")


def _read_state_dict(path: Path) -> dict:
    import torch

    found = [path / w for w in _WEIGHTS if (path / w).is_file()]
    if len(found) != 1:
        what = "no weights" if not found else "two weight files"
        raise HFModelError(f"{path}: {what}; a TransformerLens folder holds exactly one of {', '.join(_WEIGHTS)} "
                           "(the model's state dict)")
    try:
        if found[0].suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(found[0]))
        else:
            sd = torch.load(found[0], map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - safetensors / pickle raise many types for a bad file
        raise HFModelError(f"cannot read {found[0]}: {_one_line(e)}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise HFModelError(f"{found[0]} is not a state dict (a dict of tensors: torch.save(model.state_dict(), ...))")
    return sd


def load_tl_model(path: str | os.PathLike, dtype: str | None = None):
    """``(model, tokenizer | None, info)`` from a TransformerLens folder (see the module docstring).

    ``dtype``: ``"float32"`` / ``"bfloat16"`` / ``"float16"`` to cast the weights on load;
    ``None`` keeps the config's dtype. Raises :class:`spectro.models.hf.HFModelError` with a
    one-line message for every problem.
    """
    import torch

    path = Path(path)
    HookedTransformer, HookedTransformerConfig = _hooked_transformer()
    try:
        raw = json.loads((path / TL_CONFIG).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise HFModelError(f"{path / TL_CONFIG} is not a readable JSON config ({_one_line(e)})") from None
    if not isinstance(raw, dict):
        raise HFModelError(f"{path / TL_CONFIG} is not a JSON object of HookedTransformerConfig fields")
    fields = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise HFModelError(f"{path / TL_CONFIG}: {unknown[:5]} are not HookedTransformerConfig fields")
    stored = raw.get("dtype", "float32")
    if not (isinstance(stored, str) and isinstance(getattr(torch, stored.removeprefix("torch."), None), torch.dtype)):
        raise HFModelError(f"{path / TL_CONFIG}: dtype {stored!r} is not a torch dtype (e.g. \"float32\", \"bfloat16\")")
    stored_dtype = getattr(torch, stored.removeprefix("torch."))
    kwargs = {**raw, "dtype": stored_dtype, "device": "cpu", "n_devices": 1, "init_weights": False}
    try:
        cfg = HookedTransformerConfig(**kwargs)
    except Exception as e:  # noqa: BLE001 - its __post_init__ raises ValueError, AssertionError, TypeError, ...
        raise HFModelError(f"{path / TL_CONFIG} is not a valid HookedTransformerConfig: {_one_line(e)}") from None
    sd = _read_state_dict(path)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")
        try:
            model = HookedTransformer(cfg)
        except Exception as e:  # noqa: BLE001 - an inconsistent config fails inside the constructor
            raise HFModelError(f"{path / TL_CONFIG}: HookedTransformer cannot be built from it: {_one_line(e)}") from None
    params = dict(model.named_parameters())
    buffers = {n for n, _ in model.named_buffers()}
    bad = {"missing keys": sorted(set(params) - set(sd)), "unexpected keys": sorted(set(sd) - set(params) - buffers),
           "mismatched keys": sorted(n for n in set(sd) & set(params) if tuple(sd[n].shape) != tuple(params[n].shape))}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        detail = "; ".join(f"{k}: {v[:4]}{' …' if len(v) > 4 else ''}" for k, v in bad.items())
        raise HFModelError(f"the weights in {path} do not match its {TL_CONFIG} ({detail})")
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for n, t in sd.items() if n in params})
    if dtypes != [str(stored_dtype).removeprefix("torch.")]:
        raise HFModelError(f"the weights in {path} are stored in {', '.join(dtypes)} but {TL_CONFIG} says dtype "
                           f"{str(stored_dtype).removeprefix('torch.')!r}; make them agree")
    model.load_state_dict(sd, strict=False)  # buffers a state dict omits keep the values the config builds
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
        model.cfg.dtype = getattr(torch, dtype)
    model.eval()
    _check_causal(model, cfg.d_vocab, path)
    info = HFModelInfo(
        model_type="hooked_transformer", architecture=type(model).__name__, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_key_value_heads or cfg.n_heads, d_model=cfg.d_model, vocab_size=cfg.d_vocab, n_ctx=cfg.n_ctx,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."), eos_token_id=_eos_id(path, {}),
        family="transformer_lens")
    return model, _folder_tokenizer(path), info
