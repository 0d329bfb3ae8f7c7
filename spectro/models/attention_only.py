"""The attention-only transformer family of Baker et al. (2025) / Hoogland et al. (2024).

Architecture (``AttentionOnlyConfig`` holds every number)::

    x₀ = W_E[tokens] + W_pos[:T]                                    token + learned positions
    x_{l+1} = x_l + Attn_l(LN_l(x_l))      for l = 0 … n_layers−1    pre-LayerNorm blocks, no MLP
    logits = LN_final(x_L) @ W_U + b_U                              untied unembedding

with ``layer_norm=False`` replacing every LayerNorm by the identity (useful for hand-built
circuits: the residual stream is then exactly linear in the embeddings).

Each attention layer keeps its heads on an explicit leading axis, in TransformerLens' layout and
parameter names, so that one head is ``param[h]``:

    ``blocks.{l}.attn.W_Q, W_K, W_V``  [n_heads, d_model, d_head]
    ``blocks.{l}.attn.b_Q, b_K, b_V``  [n_heads, d_head]
    ``blocks.{l}.attn.W_O``            [n_heads, d_head, d_model]
    ``blocks.{l}.attn.b_O``            [d_model]   (shared by all heads)

Attention of head h: ``softmax((q·kᵀ)/√d_head + causal mask)``, q = LN(x)·W_Q[h] + b_Q[h], etc.;
the layer output is ``Σ_h z_h·W_O[h] + b_O``.

The forward pass is functional-friendly: no in-place ops, no data-dependent Python control flow
(only shape checks), so it runs under ``torch.func.functional_call`` + ``vmap`` over stacked
parameters. :func:`head_parameter_slices` and :func:`head_masks` name exactly the coordinates of
one head for weight-restricted sampling.

Checkpoints (:func:`save_checkpoint` / :func:`load_checkpoint`) are one folder holding
``model.safetensors``, ``config.json`` (model config + free-form metadata + the tokenizer's
fingerprint) and, when given, ``tokenizer.json``; the folder is replaced atomically.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from tokenizers import Tokenizer

__all__ = [
    "AttentionOnlyConfig",
    "AttentionOnlyTransformer",
    "next_token_loss",
    "head_parameter_slices",
    "head_masks",
    "head_restriction",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointError",
    "MODEL_FILE",
    "CONFIG_FILE",
    "TOKENIZER_FILE",
]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
_FORMAT = "spectro.attention_only/1"


class CheckpointError(ValueError):
    """A checkpoint folder is missing a file or disagrees with itself (config vs weights vs tokenizer)."""


@dataclass(frozen=True)
class AttentionOnlyConfig:
    """Hyper-parameters of an attention-only transformer.

    Defaults (≈2.7M parameters with vocab 4096) follow the 3M-parameter model of Baker et al.
    2025 / Hoogland et al. 2024 (d_model 256, 8 heads of 32, 2 layers, pre-LN, untied
    unembedding) with a shorter context (128 instead of 1024) for CPU training.

    Attributes:
        vocab_size: number of token ids (must equal the tokenizer's vocabulary size).
        n_ctx: maximum sequence length (rows of the positional embedding).
        d_model: residual-stream width.
        n_layers: number of attention-only blocks.
        n_heads: heads per block.
        d_head: width of one head's query/key/value (need not equal d_model / n_heads).
        layer_norm: pre-LayerNorm in each block and a final LayerNorm (True), or none at all.
        ln_eps: LayerNorm epsilon.
        init_std: standard deviation of the normal initialisation of weight matrices
            (W_O is further scaled by 1/√(2·n_layers), GPT-2 style); biases start at 0.
    """

    vocab_size: int = 4096
    n_ctx: int = 128
    d_model: int = 256
    n_layers: int = 2
    n_heads: int = 8
    d_head: int = 32
    layer_norm: bool = True
    ln_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_ctx", "d_model", "n_layers", "n_heads", "d_head"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"AttentionOnlyConfig.{name} must be a positive int, got {v!r}")
        if not self.ln_eps > 0 or not self.init_std > 0:
            raise ValueError("AttentionOnlyConfig.ln_eps and init_std must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AttentionOnlyConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown AttentionOnlyConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def n_params(self) -> int:
        """Number of parameters of a model with this config."""
        d, H, e, V = self.d_model, self.n_heads, self.d_head, self.vocab_size
        ln = 2 * d if self.layer_norm else 0
        block = ln + 3 * H * d * e + 3 * H * e + H * e * d + d
        return V * d + self.n_ctx * d + self.n_layers * block + ln + d * V + V


class _LayerNorm(nn.Module):
    """LayerNorm with TransformerLens names ``w`` and ``b`` (or the identity when disabled)."""

    def __init__(self, d_model: int, eps: float, enabled: bool) -> None:
        super().__init__()
        self.eps = eps
        self.enabled = enabled
        if enabled:
            self.w = nn.Parameter(torch.ones(d_model))
            self.b = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:  # a fixed attribute, not data-dependent
            return x
        return F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)


class Attention(nn.Module):
    """Multi-head causal self-attention with per-head parameters on a leading head axis."""

    def __init__(self, cfg: AttentionOnlyConfig) -> None:
        super().__init__()
        H, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(H, d, e))
        self.W_K = nn.Parameter(torch.empty(H, d, e))
        self.W_V = nn.Parameter(torch.empty(H, d, e))
        self.W_O = nn.Parameter(torch.empty(H, e, d))
        self.b_Q = nn.Parameter(torch.zeros(H, e))
        self.b_K = nn.Parameter(torch.zeros(H, e))
        self.b_V = nn.Parameter(torch.zeros(H, e))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.scale = 1.0 / math.sqrt(e)
        self.register_buffer("causal", torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool).tril(), persistent=False)

    def pattern(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention pattern [..., H, T, T] (rows: queries, sum to 1) and values [..., H, T, e]."""
        T = x.shape[-2]
        q = torch.einsum("...td,hde->...hte", x, self.W_Q) + rearrange(self.b_Q, "h e -> h 1 e")
        k = torch.einsum("...td,hde->...hte", x, self.W_K) + rearrange(self.b_K, "h e -> h 1 e")
        v = torch.einsum("...td,hde->...hte", x, self.W_V) + rearrange(self.b_V, "h e -> h 1 e")
        scores = torch.matmul(q, rearrange(k, "... h key e -> ... h e key")) * self.scale  # [..., H, query, key]
        neg = torch.tensor(torch.finfo(scores.dtype).min, dtype=scores.dtype, device=scores.device)
        scores = torch.where(self.causal[:T, :T], scores, neg)
        return torch.softmax(scores, dim=-1), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pattern, v = self.pattern(x)
        z = torch.matmul(pattern, v)  # [..., H, T, e]
        return torch.einsum("...hte,hed->...td", z, self.W_O) + self.b_O


class Block(nn.Module):
    """One attention-only block: ``x + Attn(LN(x))``."""

    def __init__(self, cfg: AttentionOnlyConfig) -> None:
        super().__init__()
        self.ln1 = _LayerNorm(cfg.d_model, cfg.ln_eps, cfg.layer_norm)
        self.attn = Attention(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.ln1(x))


class _Embed(nn.Module):
    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(vocab_size, d_model))


class _PosEmbed(nn.Module):
    def __init__(self, n_ctx: int, d_model: int) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))


class _Unembed(nn.Module):
    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_model, vocab_size))
        self.b_U = nn.Parameter(torch.zeros(vocab_size))


class AttentionOnlyTransformer(nn.Module):
    """``forward(tokens [..., T] int) -> logits [..., T, vocab_size]`` (T ≤ n_ctx).

    Parameter names follow TransformerLens (``embed.W_E``, ``pos_embed.W_pos``,
    ``blocks.{l}.ln1.w``, ``blocks.{l}.attn.W_Q`` …, ``ln_final.w``, ``unembed.W_U``).
    """

    def __init__(self, cfg: AttentionOnlyConfig, *, seed: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = _Embed(cfg.vocab_size, cfg.d_model)
        self.pos_embed = _PosEmbed(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = _LayerNorm(cfg.d_model, cfg.ln_eps, cfg.layer_norm)
        self.unembed = _Unembed(cfg.d_model, cfg.vocab_size)
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Normal(0, init_std) weights (W_O scaled by 1/√(2·n_layers)), zero biases, unit LN gains.

        With ``seed`` the draw uses its own generator, so it is independent of the global RNG.
        """
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("W_"):
                s = std / math.sqrt(2 * self.cfg.n_layers) if leaf == "W_O" else std
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * s)
            elif leaf == "w":
                p.fill_(1.0)
            else:
                p.zero_()

    def _check_tokens(self, tokens: torch.Tensor) -> int:
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
        if tokens.dim() < 1:
            raise ValueError("tokens must have a sequence axis: shape [..., T]")
        T = tokens.shape[-1]
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence length {T} exceeds the model's context n_ctx={self.cfg.n_ctx}")
        return T

    def residual_input(self, tokens: torch.Tensor) -> torch.Tensor:
        """x₀ = W_E[tokens] + W_pos[:T], shape [..., T, d_model]."""
        T = self._check_tokens(tokens)
        return F.embedding(tokens.long(), self.embed.W_E) + self.pos_embed.W_pos[:T]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.residual_input(tokens)
        for block in self.blocks:
            x = block(x)
        return torch.matmul(self.ln_final(x), self.unembed.W_U) + self.unembed.b_U

    @torch.no_grad()
    def attention_patterns(self, tokens: torch.Tensor) -> torch.Tensor:
        """All attention patterns, shape [n_layers, ..., n_heads, T, T] (query × key)."""
        x = self.residual_input(tokens)
        patterns = []
        for block in self.blocks:
            pattern, _ = block.attn.pattern(block.ln1(x))
            patterns.append(pattern)
            x = block(x)
        return torch.stack(patterns)


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-token next-token cross-entropy, shape [..., T−1]: −log p(tokens[t+1] | tokens[:t+1]).

    The signature ``(model_output, batch)`` fits ``spectro.nn.posterior``'s ``per_sample_loss``
    when a batch is a token tensor [B, T]. Computed in float32 at least.
    """
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(tokens.shape)} (expected [..., T, V] vs [..., T])")
    pred = logits[..., :-1, :]
    if pred.dtype in (torch.float16, torch.bfloat16):  # a dtype check, not data-dependent
        pred = pred.float()
    logp = torch.log_softmax(pred, dim=-1)
    target = tokens[..., 1:].long().unsqueeze(-1)
    return -torch.gather(logp, -1, target).squeeze(-1)


# ---------------------------------------------------------------------------- per-head access
_HEAD_PARAMS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")


def _check_head(model: nn.Module, layer: int, head: int) -> AttentionOnlyConfig:
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, AttentionOnlyConfig):
        raise TypeError(f"expected an AttentionOnlyTransformer, got {type(model).__name__}")
    if not 0 <= layer < cfg.n_layers:
        raise ValueError(f"layer {layer} out of range: the model has n_layers={cfg.n_layers}")
    if not 0 <= head < cfg.n_heads:
        raise ValueError(f"head {head} out of range: the model has n_heads={cfg.n_heads}")
    return cfg


def head_parameter_slices(model: nn.Module, layer: int, head: int) -> dict[str, tuple[int]]:
    """Parameter name → index selecting head ``head`` of layer ``layer``: ``param[index]``.

    Covers W_Q, W_K, W_V, W_O, b_Q, b_K, b_V of ``blocks.{layer}.attn`` (each indexed by
    ``(head,)`` on the leading head axis). The shared output bias ``b_O`` is not a per-head
    parameter and is left out.
    """
    _check_head(model, layer, head)
    return {f"blocks.{layer}.attn.{p}": (head,) for p in _HEAD_PARAMS}


def head_masks(model: nn.Module, layer: int, head: int) -> dict[str, torch.Tensor]:
    """Boolean masks of each parameter's shape, True exactly on one head's coordinates.

    The dict fits :class:`spectro.nn.restrictions.Restriction` (``Restriction(head_masks(...))``).
    """
    params = dict(model.named_parameters())
    masks = {}
    for name, idx in head_parameter_slices(model, layer, head).items():
        m = torch.zeros_like(params[name], dtype=torch.bool)
        m[idx] = True
        masks[name] = m
    return masks


def head_restriction(model: nn.Module, layer: int, head: int):  # -> spectro.nn.restrictions.Restriction
    """One head as a :class:`spectro.nn.restrictions.Restriction` named ``"l{layer}h{head}"``."""
    from ..nn.restrictions import Restriction

    return Restriction(head_masks(model, layer, head), name=f"l{layer}h{head}")


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    folder: str | os.PathLike,
    model: AttentionOnlyTransformer,
    tokenizer: "Tokenizer | None" = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (+ ``tokenizer.json``) into ``folder``.

    The folder is assembled beside its destination and renamed into place, so a reader sees
    either the previous complete checkpoint or the new one. Weights are saved bit-exactly
    (contiguous CPU copies, dtype preserved). ``metadata`` (JSON-serialisable) goes into
    config.json under ``"metadata"``; the tokenizer's fingerprint under ``"tokenizer"``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None and tokenizer.get_vocab_size() != model.cfg.vocab_size:
        raise CheckpointError(
            f"tokenizer vocabulary size {tokenizer.get_vocab_size()} != model vocab_size {model.cfg.vocab_size}"
        )
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        tensors = {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters()}
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": _FORMAT})
        meta: dict[str, Any] = {
            "format": _FORMAT,
            "model": model.cfg.to_dict(),
            "n_params": sum(t.numel() for t in tensors.values()),
            "metadata": metadata or {},
        }
        if tokenizer is not None:
            from ..data.tokenizer import fingerprint

            tokenizer.save(str(tmp / TOKENIZER_FILE))
            meta["tokenizer"] = fingerprint(tokenizer).to_dict()
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _swap_into_place(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _swap_into_place(tmp: Path, folder: Path) -> None:
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
        os.rmdir(old)
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    folder: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> tuple[AttentionOnlyTransformer, "Tokenizer | None", dict[str, Any]]:
    """Load ``(model, tokenizer or None, config.json contents)`` from a checkpoint folder.

    Raises :class:`CheckpointError` when a file is missing, the weights do not match the config
    (missing/unexpected names, wrong shapes), or the tokenizer's fingerprint differs from the
    one recorded at save time.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    for f in (CONFIG_FILE, MODEL_FILE):
        if not (folder / f).is_file():
            raise CheckpointError(f"checkpoint {folder} has no {f}")
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG_FILE} is not valid JSON ({' '.join(str(e).split())})") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{folder / CONFIG_FILE} has format {found!r}, expected {_FORMAT!r}")
    try:
        cfg = AttentionOnlyConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG_FILE}: bad model config ({' '.join(str(e).split())})") from None
    model = AttentionOnlyTransformer(cfg, seed=0)
    try:
        tensors = load_file(str(folder / MODEL_FILE), device=str(map_location))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError (and OSError)
        raise CheckpointError(f"{folder / MODEL_FILE} is not a readable safetensors file, corrupt or truncated "
                              f"({' '.join(str(e).split())})") from None
    expected = dict(model.named_parameters())
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{folder / MODEL_FILE}: missing {missing}, unexpected {unexpected}")
    for n, p in expected.items():
        if tensors[n].shape != p.shape:
            raise CheckpointError(f"{folder / MODEL_FILE}: {n} has shape {tuple(tensors[n].shape)}, config implies {tuple(p.shape)}")
    with torch.no_grad():
        for n, p in expected.items():
            p.data = tensors[n]
    model.to(map_location)
    tokenizer = None
    if (folder / TOKENIZER_FILE).is_file():
        from ..data.tokenizer import check_tokenizer, load_tokenizer

        try:
            tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        if "tokenizer" in meta:
            check_tokenizer(tokenizer, meta["tokenizer"], what=f"checkpoint {folder}")
        if tokenizer.get_vocab_size() != cfg.vocab_size:
            raise CheckpointError(f"{folder}: tokenizer has {tokenizer.get_vocab_size()} tokens, model vocab_size {cfg.vocab_size}")
    return model, tokenizer, meta
