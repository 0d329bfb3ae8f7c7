"""Field generators ψ for data perturbations: ψ = ∂_h[L_h(w)] for q_h = (1−h)·q + h·q'.

With ``p_h(w) ∝ exp(−nβ·L_h(w) − γ/2‖w − w*‖²)`` and ``L_h = L_q + h·(L_q' − L_q)``:

    ∂_h⟨φ⟩_h |₀ = −nβ·Cov(φ, ψ),   ψ = ΔL = L(w; q') − L(w; q),

so the susceptibility is ``χ(φ) = −Cov(φ, ψ)`` (engine scale −1); χ > 0 means up-weighting q'
raises ⟨φ⟩. The base distribution q is represented by a fixed probe selection ``base``.

* :class:`SubsetFields`       ψ_a = L(q'_a) − L(q) for several subsets at once        (k = #subsets)
* :class:`SampleUpweighting`  ψ_m = ℓ_m − L(q): q' = δ_m, the Bayesian influence function
  generator (BIF(z_m, φ) = −Cov(ℓ_m, φ); the constant L(q) does not change the covariance
  but keeps ψ a proper ΔL)                                                            (k = |S|)
* :class:`TokenPointMasses`   ψ_xy = ℓ_xy − L̄(q): q' a point mass on (context x, token y);
  for any subset S, mean_{xy∈S} ψ_xy = L(S) − L̄(q), so the mean of per-token χ over S equals
  the dataset-level χ of S                                                            (k = |S|·|P|)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .observables import _positions, coordinate, mean_loss, sample_losses, token_losses
from .probes import Indices, ProbeSet, Selection, as_selection

__all__ = ["SubsetFields", "SampleUpweighting", "TokenPointMasses"]

SelectionLike = Selection | str | tuple[str, Indices]


@dataclass(frozen=True)
class SubsetFields:
    """ψ_a = L(w; q'_a) − L(w; q) for each named subset q'_a (``subsets``) against ``base`` = q."""

    subsets: Mapping[str, SelectionLike]
    base: SelectionLike

    def __post_init__(self) -> None:
        if not self.subsets:
            raise ValueError("SubsetFields needs at least one subset")
        object.__setattr__(self, "subsets", {k: as_selection(v) for k, v in self.subsets.items()})
        object.__setattr__(self, "base", as_selection(self.base))

    def names(self, probe: ProbeSet, n_tokens: int) -> list[str]:
        return [f"dL:{name}" for name in self.subsets]

    def records(self, probe: ProbeSet, n_tokens: int) -> list[dict]:
        return [coordinate("dataset", name) for name in self.subsets]

    def __call__(self, losses: torch.Tensor, probe: ProbeSet) -> torch.Tensor:
        base = mean_loss(losses, probe, self.base)
        return torch.stack([mean_loss(losses, probe, s) - base for s in self.subsets.values()], dim=1)


@dataclass(frozen=True)
class SampleUpweighting:
    """ψ_m = ℓ_m(w) − L(w; q) for the samples m of ``selection`` (Bayesian influence functions)."""

    selection: SelectionLike
    base: SelectionLike

    def __post_init__(self) -> None:
        object.__setattr__(self, "selection", as_selection(self.selection))
        object.__setattr__(self, "base", as_selection(self.base))

    def names(self, probe: ProbeSet, n_tokens: int) -> list[str]:
        g = self.selection.group
        return [f"up:{g}[{i}]" for i in probe.sample_ids(self.selection)]

    def records(self, probe: ProbeSet, n_tokens: int) -> list[dict]:
        return [coordinate("sample", self.selection.group, i) for i in probe.sample_ids(self.selection)]

    def __call__(self, losses: torch.Tensor, probe: ProbeSet) -> torch.Tensor:
        return sample_losses(losses, probe, self.selection) - mean_loss(losses, probe, self.base).unsqueeze(1)


@dataclass(frozen=True)
class TokenPointMasses:
    """ψ_xy = ℓ_xy(w) − L̄(w; q) for the tokens (sample, position) of ``selection`` × ``positions``."""

    selection: SelectionLike
    base: SelectionLike
    positions: Sequence[int] | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "selection", as_selection(self.selection))
        object.__setattr__(self, "base", as_selection(self.base))

    def names(self, probe: ProbeSet, n_tokens: int) -> list[str]:
        g = self.selection.group
        pos = _positions(self.positions, n_tokens)
        return [f"tok:{g}[{i},{t}]" for i in probe.sample_ids(self.selection) for t in pos]

    def records(self, probe: ProbeSet, n_tokens: int) -> list[dict]:
        pos = _positions(self.positions, n_tokens)
        return [coordinate("token", self.selection.group, i, t) for i in probe.sample_ids(self.selection) for t in pos]

    def __call__(self, losses: torch.Tensor, probe: ProbeSet) -> torch.Tensor:
        tok = token_losses(losses, probe, self.selection, self.positions)
        return tok - mean_loss(losses, probe, self.base).unsqueeze(1)
