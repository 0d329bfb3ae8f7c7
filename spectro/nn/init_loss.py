"""L_n(w*), the training loss at the model's own weights, computed once per (model, data, loss).

Every restriction of one model has the same L_n(w*), so a job's components share one
evaluation. The cache keys on the model's parameter and buffer tensors and their versions, the
training data, the loss, the input map, the sample weights, the device, the dtypes and the chunk
size, and holds only weak references (no data kept alive; a recycled id can never match), so it
never returns a stale value: any change to the weights recomputes it.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from .posterior import LocalizedPosterior

__all__ = ["init_loss", "forget_init_losses"]

_CACHE: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()


def forget_init_losses() -> None:
    """Drop the cached L_n(w*) values (e.g. to time a run that pays for them again). The cache
    never returns a stale value (keys include tensor versions), so correctness never needs this."""
    _CACHE.clear()


def init_loss(post: "LocalizedPosterior") -> float:
    """L_n(w*) of ``post`` on its whole (weighted) training set (eval mode), from the cache when known."""
    objects, scalars = _key(post)
    entries = _CACHE.setdefault(post.model, [])
    for refs, key, value in entries:
        if key == scalars and len(refs) == len(objects) and all(r() is o for r, o in zip(refs, objects)):
            return value
    per_sample = post.losses_at_w_star(post.train_data).mean(dim=1)
    if post.sample_weights is not None:
        val = (per_sample * post.sample_weights).sum()
    else:
        val = per_sample.mean()
    entries.append((tuple(_weak(o) for o in objects), scalars, float(val)))
    del entries[:-8]  # a few (data, loss) combinations per model
    return float(val)


def _key(post: "LocalizedPosterior") -> tuple[list, tuple]:
    """(objects compared by identity through weak references, scalars compared by value)."""
    data = list(post.train_data) if isinstance(post.train_data, tuple) else [post.train_data]
    tensors = [*post.model.parameters(), *post.model.buffers(), *data]
    if post.sample_weights is not None:
        tensors.append(post.sample_weights)
    objects = [*tensors, post.per_sample_loss, post.model_input]
    scalars = (
        tuple(t._version for t in tensors), str(post.device), str(post.config.master_dtype), post.config.precision,
        post.config.eval_batch_size,
    )
    return objects, scalars


def _weak(obj: Any) -> Callable[[], Any]:
    """A weak reference (``WeakMethod`` for bound methods); a strong one for objects that
    cannot be weakly referenced (builtins: long-lived anyway)."""
    try:
        return weakref.WeakMethod(obj) if inspect.ismethod(obj) else weakref.ref(obj)
    except TypeError:
        return lambda: obj
