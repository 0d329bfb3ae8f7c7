"""Observables φ: functions of the per-token probe losses, evaluated per draw for all chains.

Each observable reads ``losses`` [C, N, T] (see :class:`~spectro.nn.probes.ProbeSet`) and
returns ``[C, m]``; ``names(probe, T)`` gives the m labels. All are evaluated in eval mode at the
chains' current weights, from the single per-draw forward on the probe union.

* :class:`PerSampleLoss`  φ_i = ℓ_i = mean_t ℓ_it                 (m = |S|)
* :class:`PerTokenLoss`   φ_it = ℓ_it                             (m = |S|·|positions|, sample-major)
* :class:`MeanLoss`       φ = L(S) = mean_{i∈S} ℓ_i, optionally minus its value at w*  (m = 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .probes import Indices, ProbeSet, Selection, as_selection

__all__ = ["LossFunctional", "PerSampleLoss", "PerTokenLoss", "MeanLoss", "concat", "coordinate"]


class LossFunctional(Protocol):
    """Anything mapping probe losses [C, N, T] to [C, m] with m names (and, optionally, m
    coordinate records via ``records(probe, T)``: see :func:`coordinate`)."""

    def names(self, probe: ProbeSet, n_tokens: int) -> list[str]: ...

    def __call__(self, losses: torch.Tensor, probe: ProbeSet) -> torch.Tensor: ...


def coordinate(kind: str, group: str, sample: int = -1, position: int = -1) -> dict:
    """One entry's typed coordinates (a row of the result's :class:`~spectro.engine.Axis`):
    ``kind`` (``"token"``, ``"sample"``, ``"dataset"``, ``"token_loss"``, ``"sample_loss"``,
    ``"mean_loss"``), probe ``group``, ``sample`` id and token ``position`` (−1: not applicable)."""
    return {"kind": kind, "group": group, "sample": int(sample), "position": int(position)}


def _positions(positions: Sequence[int] | None, n_tokens: int) -> list[int]:
    if positions is None:
        return list(range(n_tokens))
    pos = [int(p) for p in positions]
    if not pos:
        raise ValueError("empty token-position selection")
    bad = [p for p in pos if not 0 <= p < n_tokens]
    if bad:
        raise ValueError(f"token positions {bad} outside [0, {n_tokens})")
    return pos


def sample_losses(losses: torch.Tensor, probe: ProbeSet, sel: Selection) -> torch.Tensor:
    """ℓ_i = mean_t ℓ_it for the selected samples: [C, |S|]."""
    return losses.index_select(1, probe.indices(sel, losses.device)).mean(dim=-1)


def token_losses(losses: torch.Tensor, probe: ProbeSet, sel: Selection, positions: Sequence[int] | None) -> torch.Tensor:
    """ℓ_it for the selected samples and positions, flattened sample-major: [C, |S|·|P|]."""
    idx = probe.indices(sel, losses.device)
    pos = probe.positions(positions, losses.shape[-1], losses.device)
    sub = losses.index_select(1, idx).index_select(2, pos)
    return sub.reshape(losses.shape[0], -1)


def mean_loss(losses: torch.Tensor, probe: ProbeSet, sel: Selection) -> torch.Tensor:
    """L(S) = mean_{i∈S} ℓ_i: [C]."""
    return sample_losses(losses, probe, sel).mean(dim=1)


@dataclass(frozen=True)
class PerSampleLoss:
    """φ_i = ℓ_i(w) for the samples of ``selection``."""

    selection: Selection | str | tuple[str, Indices]

    def __post_init__(self) -> None:
        object.__setattr__(self, "selection", as_selection(self.selection))

    def names(self, probe: ProbeSet, n_tokens: int) -> list[str]:
        g = self.selection.group
        return [f"loss:{g}[{i}]" for i in probe.sample_ids(self.selection)]

    def records(self, probe: ProbeSet, n_tokens: int) -> list[dict]:
        return [coordinate("sample_loss", self.selection.group, i) for i in probe.sample_ids(self.selection)]

    def __call__(self, losses: torch.Tensor, probe: ProbeSet) -> torch.Tensor:
        return sample_losses(losses, probe, self.selection)


@dataclass(frozen=True)
class PerTokenLoss:
    """φ_it = ℓ_it(w) for the samples of ``selection`` and token ``positions`` (None = all)."""

    selection: Selection | str | tuple[str, Indices]
    positions: Sequence[int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "selection", as_selection(self.selection))

    def names(self, probe: ProbeSet, n_tokens: int) -> list[str]:
        g = self.selection.group
        pos = _positions(self.positions, n_tokens)
        return [f"loss:{g}[{i},{t}]" for i in probe.sample_ids(self.selection) for t in pos]

    def records(self, probe: ProbeSet, n_tokens: int) -> list[dict]:
        pos = _positions(self.positions, n_tokens)
        return [coordinate("token_loss", self.selection.group, i, t) for i in probe.sample_ids(self.selection) for t in pos]

    def __call__(self, losses: torch.Tensor, probe: ProbeSet) -> torch.Tensor:
        return token_losses(losses, probe, self.selection, self.positions)


@dataclass(frozen=True)
class MeanLoss:
    """φ = L(S; w) = mean_{i∈S} ℓ_i(w), or L(S; w) − L(S; w*) when ``reference`` is given.

    ``reference`` is L(S; w*) (a float; :func:`spectro.nn.susceptibility.component_susceptibility`
    fills it in). The offset does not change a covariance but does change Baker et al.'s
    component estimator, whose φ_C is defined relative to w*.
    """

    selection: Selection | str | tuple[str, Indices]
    reference: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "selection", as_selection(self.selection))

    def names(self, probe: ProbeSet, n_tokens: int) -> list[str]:
        label = self.selection.label()
        return [f"mean_loss:{label}" if self.reference is None else f"mean_loss:{label}-w*"]

    def records(self, probe: ProbeSet, n_tokens: int) -> list[dict]:
        return [coordinate("mean_loss", self.selection.label())]

    def __call__(self, losses: torch.Tensor, probe: ProbeSet) -> torch.Tensor:
        val = mean_loss(losses, probe, self.selection)
        if self.reference is not None:
            val = val - self.reference
        return val.unsqueeze(1)


def concat(functionals: Sequence[LossFunctional], losses: torch.Tensor, probe: ProbeSet) -> torch.Tensor:
    """Evaluate several functionals on the same losses and concatenate: [C, Σm]."""
    return torch.cat([f(losses, probe) for f in functionals], dim=1)
