"""Frozen-module memo: reuse the outputs of submodules none of whose parameters is free.

In eval mode a frozen submodule is a pure function of its inputs, so its output is reused whenever
it is called again with equal inputs (compared exactly: identical tensors or ``torch.equal``, and
unchanged version counters). With minibatches shared across chains the frozen prefix of the
network (for a layer-1 head: embeddings and all of layer 0) is computed once per step for all
chains of a worker, and on the fixed probe samples once per *run*. Modules that never repeat
switch themselves off after a few misses, per context: with independent minibatches the training
step never repeats and stops being cached, while the probes, evaluated on every draw, still are.
The result is bit-for-bit what recomputation gives.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["_FrozenMemo"]


def _tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            yield from _tensors_in(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors_in(x)


def _same(a: Any, b: Any) -> bool:
    """Exact equality of module inputs: tensors by identity or value, containers elementwise."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
            and a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
            and bool(torch.equal(a, b))
        )
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        eq = a == b
    except Exception:  # noqa: BLE001 — uncomparable objects are simply not equal
        return False
    return eq if isinstance(eq, bool) else False


class _MemoEntry:
    __slots__ = ("args", "kwargs", "out", "tensors", "versions")

    def __init__(self, args: tuple, kwargs: dict, out: Any):
        self.args, self.kwargs, self.out = args, kwargs, out
        self.tensors = list(_tensors_in((args, kwargs, out)))
        self.versions = [t._version for t in self.tensors]

    def matches(self, args: tuple, kwargs: dict) -> bool:
        if any(t._version != v for t, v in zip(self.tensors, self.versions)):
            return False  # something modified a cached tensor in place: never reuse it
        return _same(self.args, args) and _same(self.kwargs, kwargs)


_CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.Sequential)


def _frozen_modules(root: nn.Module, free_ids: set[int]) -> list[tuple[str, nn.Module]]:
    """Top-most submodules with parameters or buffers, none of whose parameters is free
    (by identity, so a weight tied to a free one counts as free)."""
    out: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, mod: nn.Module) -> None:
        for name, child in mod.named_children():
            qual = prefix + name
            params = list(child.parameters())
            if not params and not any(True for _ in child.buffers()):
                continue  # stateless (dropout, activations): nothing worth caching
            if all(id(p) not in free_ids for p in params) and not isinstance(child, _CONTAINERS):
                out.append((qual, child))
            else:
                visit(qual + ".", child)

    visit("", root)
    return out


class _FrozenMemo:
    """Wraps the ``forward`` of frozen submodules of one (private) model copy with an exact cache.

    One entry per (module, context); the caller sets ``context`` (e.g. ``("step",)`` or
    ``("eval", N, start, stop)``) so that the minibatch and each probe chunk keep their own
    entries. Calls whose inputs require grad are passed through. A module that has missed
    ``max_misses`` times in one context without a single hit there stops caching in that context
    (only: a minibatch step that never repeats must not switch off the probes' cache).
    """

    def __init__(self, root: nn.Module, free_ids: set[int], max_misses: int = 8):
        self.context: tuple | None = None
        self.entries: dict[tuple, _MemoEntry] = {}
        self.hits = 0
        self.misses = 0
        self._restore: list[tuple[nn.Module, Any]] = []
        for name, mod in _frozen_modules(root, free_ids):
            self._wrap(name, mod, max_misses)

    def _wrap(self, name: str, mod: nn.Module, max_misses: int) -> None:
        original = mod.forward
        state: dict[tuple, list[int]] = {}  # context -> [hits, misses]; off = misses >= max_misses without a hit
        memo = self

        def forward(*args: Any, **kwargs: Any) -> Any:
            ctx = memo.context
            counts = state.setdefault(ctx, [0, 0]) if ctx is not None else None
            if (counts is None or (counts[0] == 0 and counts[1] >= max_misses)
                    or any(t.requires_grad for t in _tensors_in((args, kwargs)))):
                return original(*args, **kwargs)
            key = (name, ctx)
            entry = memo.entries.get(key)
            if entry is not None and entry.matches(args, kwargs):
                counts[0] += 1
                memo.hits += 1
                return entry.out
            out = original(*args, **kwargs)
            counts[1] += 1
            memo.misses += 1
            if counts[0] == 0 and counts[1] >= max_misses:
                memo.entries.pop(key, None)
            elif not any(t.requires_grad for t in _tensors_in(out)):
                memo.entries[key] = _MemoEntry(args, kwargs, out)
            return out

        self._restore.append((mod, mod.__dict__.get("forward")))
        mod.forward = forward  # instance attribute: shadows the class's forward

    def close(self) -> None:
        for mod, previous in self._restore:
            if previous is None:
                mod.__dict__.pop("forward", None)
            else:
                mod.forward = previous
        self._restore.clear()
        self.entries.clear()
