"""Batches as the sampler sees them: one tensor or a tuple of tensors sharing the sample axis,
and the checks that turn a model/data mismatch into one line naming both."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .chains import DataMismatchError

if TYPE_CHECKING:
    from .posterior import LocalizedPosterior

__all__ = ["Batch"]

Batch = torch.Tensor | tuple[torch.Tensor, ...]
"""A dataset or minibatch: one tensor or a tuple of tensors sharing the leading (sample) axis."""


def _batch_size_of(data: Batch) -> int:
    return (data[0] if isinstance(data, tuple) else data).shape[0]


def _index(data: Batch, idx: torch.Tensor) -> Batch:
    if isinstance(data, tuple):
        return tuple(t[idx] for t in data)
    return data[idx]


def _index_chain(data: Batch, i: int) -> Batch:
    if isinstance(data, tuple):
        return tuple(t[i] for t in data)
    return data[i]


def _slice(data: Batch, sl: slice) -> Batch:
    if isinstance(data, tuple):
        return tuple(t[sl] for t in data)
    return data[sl]


def _default_model_input(batch: Batch) -> Any:
    return batch[0] if isinstance(batch, tuple) else batch


def _check_tensors(model: nn.Module, data: Batch) -> None:
    """Raise :class:`DataMismatchError` for data that is not tensors, or tensors (or a model) without values."""
    for t in data if isinstance(data, tuple) else (data,):
        if not isinstance(t, torch.Tensor):
            raise DataMismatchError(f"train_data must be a tensor or a tuple of tensors, got {type(t).__name__}")
        if t.is_meta:
            raise DataMismatchError("train_data is a meta tensor (it holds no values)")
    if any(p.is_meta for p in model.parameters()):
        raise DataMismatchError("the model's parameters are meta tensors (no values); load its weights first")


def _mismatch_message(posterior: "LocalizedPosterior", data: Batch, e: BaseException) -> str:
    """One line: what the model and the data are, and the error of the first evaluation."""
    tensors = data if isinstance(data, tuple) else (data,)
    described = ", ".join(f"{t.dtype} {tuple(t.shape)} on {t.device}" for t in tensors if isinstance(t, torch.Tensor))
    params = {(p.dtype, p.device.type) for p in posterior.model.parameters()}
    model = ", ".join(sorted(f"{d} on {dev}" for d, dev in params))
    reason = " ".join(str(e).split())[:300]
    return (f"the model ({model}; sampling on {posterior.device}) cannot evaluate the data ({described}): "
            f"{type(e).__name__}: {reason}; check the data's dtype (token ids: integers), device and value range")
