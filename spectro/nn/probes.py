"""Probe sets: named groups of fixed samples, evaluated together with one forward per draw.

Every observable and field generator of :mod:`spectro.nn.observables` / :mod:`spectro.nn.fields`
is a *linear functional of per-token losses on fixed probe samples*. A :class:`ProbeSet`
concatenates the groups (e.g. ``"base"`` — samples standing in for the training distribution
q — and ``"code"``, ``"math"`` — the probe distributions q') into one union, so one vmapped,
chunked forward per draw gives the losses ``ℓ[c, i, t]`` ([chains, union samples, tokens])
from which all observables and fields are read.

Conventions: ``ℓ_i = mean_t ℓ_it`` is sample i's loss; the loss of a set of samples S is
``L(S) = mean_{i∈S} ℓ_i`` (= the mean over all their tokens, as every sample has T tokens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .batches import _batch_size_of
from .posterior import Batch, LocalizedPosterior

__all__ = ["ProbeSet", "Selection"]

Indices = Sequence[int] | torch.Tensor | None


@dataclass(frozen=True)
class Selection:
    """Samples ``indices`` (positions inside the group; ``None`` = all) of probe group ``group``."""

    group: str
    indices: Indices = None

    def __post_init__(self) -> None:
        if self.indices is not None:
            idx = tuple(int(i) for i in torch.as_tensor(self.indices).reshape(-1).tolist())
            if not idx:
                raise ValueError(f"empty selection of probe group {self.group!r}: a field or observable needs at least one sample")
            object.__setattr__(self, "indices", idx)  # hashable, so index tensors can be cached

    def label(self) -> str:
        return self.group if self.indices is None else f"{self.group}[{len(self.indices)}]"


def as_selection(sel: "Selection | str | tuple[str, Indices]") -> Selection:
    """Accept ``"group"``, ``("group", indices)`` or a :class:`Selection`."""
    if isinstance(sel, Selection):
        return sel
    if isinstance(sel, str):
        return Selection(sel)
    if isinstance(sel, tuple) and len(sel) == 2 and isinstance(sel[0], str):
        return Selection(sel[0], sel[1])
    raise TypeError(f"cannot read a probe selection from {sel!r}; use 'group', ('group', indices) or Selection")


class ProbeSet:
    """Named groups of probe samples, stored as one union batch.

    Args:
        groups: group name → samples (a tensor or tuple of tensors, leading axis = samples;
            every group must have the same structure and trailing shapes).
    """

    def __init__(self, groups: Mapping[str, Batch]):
        if not groups:
            raise ValueError("a probe set needs at least one group")
        self.slices: dict[str, slice] = {}
        parts: list[Batch] = []
        start = 0
        structure = None
        for name, data in groups.items():
            if isinstance(data, list):
                data = tuple(data)
            kind = len(data) if isinstance(data, tuple) else None
            if structure is None:
                structure = kind
            elif kind != structure:
                raise ValueError(f"probe group {name!r} is structured differently from the first group")
            if isinstance(data, tuple) and len({t.shape[0] for t in data}) != 1:
                raise ValueError(f"probe group {name!r}: its tensors disagree on the number of samples")
            size = _batch_size_of(data)
            if size == 0:
                raise ValueError(f"probe group {name!r} is empty")
            self.slices[name] = slice(start, start + size)
            start += size
            parts.append(data)
        self.size = start
        self._cache: dict[tuple, object] = {}
        if structure is None:
            self.data: Batch = torch.cat(list(parts))  # type: ignore[arg-type]
        else:
            self.data = tuple(torch.cat([p[j] for p in parts]) for j in range(structure))  # type: ignore[index]

    @property
    def groups(self) -> list[str]:
        return list(self.slices)

    def group_size(self, group: str) -> int:
        return self._slice(group).stop - self._slice(group).start

    def _slice(self, group: str) -> slice:
        if group not in self.slices:
            raise ValueError(f"unknown probe group {group!r}; groups are {self.groups}")
        return self.slices[group]

    def indices(self, sel: Selection | str | tuple[str, Indices], device: torch.device | str | None = None) -> torch.Tensor:
        """Union positions [s] of a selection (validated: in range, non-empty), cached per device."""
        sel = as_selection(sel)
        key = ("idx", sel.group, sel.indices, str(device))
        if key not in self._cache:
            sl = self._slice(sel.group)
            size = sl.stop - sl.start
            if sel.indices is None:
                idx = torch.arange(sl.start, sl.stop)
            else:
                idx = torch.as_tensor(sel.indices, dtype=torch.long)
                if (idx < 0).any() or (idx >= size).any():
                    raise ValueError(f"selection of probe group {sel.group!r} has indices outside [0, {size})")
                idx = idx + sl.start
            self._cache[key] = idx.to(device) if device is not None else idx
        return self._cache[key]  # type: ignore[return-value]

    def positions(self, positions: Sequence[int] | None, n_tokens: int, device: torch.device | str) -> torch.Tensor:
        """Token positions as a (cached) index tensor; ``None`` = all ``n_tokens``."""
        key = ("pos", None if positions is None else tuple(int(p) for p in positions), n_tokens, str(device))
        if key not in self._cache:
            if positions is None:
                pos = list(range(n_tokens))
            else:
                pos = [int(p) for p in positions]
                if not pos:
                    raise ValueError("empty token-position selection")
                bad = [p for p in pos if not 0 <= p < n_tokens]
                if bad:
                    raise ValueError(f"token positions {bad} outside [0, {n_tokens})")
            self._cache[key] = torch.as_tensor(pos, dtype=torch.long, device=device)
        return self._cache[key]  # type: ignore[return-value]

    def data_on(self, device: torch.device | str) -> Batch:
        """The union batch on ``device`` (copied once, then cached)."""
        key = ("data", str(torch.device(device)))
        if key not in self._cache:
            d = self.data
            self._cache[key] = tuple(t.to(device) for t in d) if isinstance(d, tuple) else d.to(device)
        return self._cache[key]  # type: ignore[return-value]

    def sample_ids(self, sel: Selection | str | tuple[str, Indices]) -> list[int]:
        """Positions inside the group (for naming)."""
        sel = as_selection(sel)
        return list(range(self.group_size(sel.group))) if sel.indices is None else list(sel.indices)

    def evaluate(self, posterior: LocalizedPosterior, weights: torch.Tensor) -> torch.Tensor:
        """Losses ℓ[c, i, t] of every chain on the union: [C, N, T] (one chunked forward)."""
        return posterior.evaluate_losses(weights, self.data_on(posterior.device))

    def evaluate_at_w_star(self, posterior: LocalizedPosterior) -> torch.Tensor:
        """Losses at w*: [1, N, T]."""
        return posterior.evaluate_losses(posterior.w_star.unsqueeze(0), self.data_on(posterior.device))
