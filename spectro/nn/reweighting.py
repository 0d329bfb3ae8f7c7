"""Linear response measured directly: sample the posterior of reweighted data and difference it.

χ claims (docs/design.md §2) ``χ(φ, ψ) = (1/nβ)·∂_h⟨φ⟩_h`` at h = 0, where ⟨·⟩_h is the
posterior of ``L_h(w) = L_n(w) + h·ψ(w)``, ψ = L(w; q') − L(w; q) the field generator of
:mod:`spectro.nn.fields` (q_h = (1−h)·q + h·q', with q represented by the field's base probes).
This module samples that posterior at h = ±δ and compares the central difference

    FD_δ = (⟨φ⟩_{+δ} − ⟨φ⟩_{−δ}) / (2δ·nβ)  =  χ + O(δ²)

with χ from the h = 0 run, entry by entry.

* Reweighting (:class:`FieldTerm`): every field of :mod:`spectro.nn.fields` is a linear
  functional of per-token probe losses, ψ_a = Σ_it F_a[i, t]·ℓ_it (its token weights F_a are the
  gradient of the functional with respect to the losses, :func:`field_weights`). The sampler's
  minibatch loss gets ``h·Σ_it F_a[i, t]·ℓ_it(w)`` on the probe samples with F_a ≠ 0, evaluated
  exactly every step (``LocalizedPosterior(loss_term=…)``), so ∇ of the minibatch loss stays
  unbiased for ∇L_h. Signed weights are fine: h < 0 is as well defined as h > 0.
* Common random numbers: the ±δ runs use the h = 0 run's seed, so every chain has the same
  minibatch order and Langevin noise in all three; only the h-term differs.
* δ per field: ``δ_a = c / (nβ·sd_0(ψ_a))`` for each c of ``ResponseConfig.c`` (two values show
  the O(δ²) term): the reweighting factor exp(−nβ·δ·ψ) then has log-sd c over the h = 0 law.
* Error of the difference D = FD − χ, CRN covariance included: to first order
  D = mean over draws of s_t = (φ_t(+δ) − φ_t(−δ))/(2δnβ) + (φ_t − φ̄)(ψ_t − ψ̄) (the second
  term at h = 0: −χ is the mean of the centred product), one series per chain and draw, whose
  mean gets the engine's calibrated Monte Carlo error (:func:`spectro.engine.mean_error`: Geyer
  ESS per chain, t dof). A delete-one-chain jackknife of D (independent chains are the only
  assumption) is reported beside it as a check. z-scores are t-values mapped to the normal scale.

Baker's restricted estimator (docs/design.md §2) ``χ^C = −Cov_C(φ, ψ) − E_C[φ]·(E_C[ψ] − E_full[ψ])``
is not the response of ⟨φ⟩ under any one posterior: it is ``(1/nβ)·∂_h[R(h)·E_{C,h}[φ]] / R(0)``
with ``R(h) = Z_C(h)/Z_full(h)`` (∂_h log Z = −nβ·E_h[ψ]); R is the full posterior's marginal
density of the frozen weights at w*_R (up to a constant). Its first part is the restricted
response measured here (``restriction=``); the second is an exact identity of partition functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from ..engine import mean_error
from ..engine.diagnostics import MIN_POINTS_PER_CHAIN, rhat_rank
from ..engine.susceptibility import RHAT_MAX
from .batches import _index
from .config import SamplerConfig
from .observables import LossFunctional
from .posterior import Batch, LossFunction
from .probes import ProbeSet
from .restrictions import Restriction
from .system import PosteriorSystem

__all__ = ["field_weights", "FieldTerm", "ResponseConfig", "ResponseRow", "linear_response", "z_from_t"]


def field_weights(fields: Sequence[LossFunctional], probe: ProbeSet, n_tokens: int) -> torch.Tensor:
    """Token weights F [k, N, T] of the fields (concatenated): ψ_a(ℓ) = Σ_it F[a, i, t]·ℓ_it.

    Exact for the linear functionals of :mod:`spectro.nn.fields` (the Jacobian of a linear map)."""
    losses = torch.zeros(1, probe.size, n_tokens, dtype=torch.float64, requires_grad=True)
    psi = torch.cat([f(losses, probe) for f in fields], dim=1)[0]  # [k]
    rows = [torch.autograd.grad(psi[a], losses, retain_graph=True)[0][0] for a in range(psi.shape[0])]
    return torch.stack(rows)


@dataclass(frozen=True, eq=False)
class FieldTerm:
    """``h·Σ_it F[i, t]·ℓ_it(w)`` on the probe samples ``rows`` (``data``): the loss_term of q_h."""

    h: float
    data: Batch  # the probe samples with a non-zero weight
    weights: torch.Tensor  # [B, T]
    label: str = ""

    @classmethod
    def of(cls, h: float, F: torch.Tensor, probe: ProbeSet, device: torch.device | str, dtype: torch.dtype,
           label: str = "") -> "FieldTerm":
        rows = torch.nonzero(F.abs().sum(dim=1) > 0).reshape(-1)
        data = _index(probe.data_on(device), rows.to(device))
        return cls(float(h), data, F[rows].to(device, dtype), label)

    def __call__(self, losses_of: Callable[[Batch], torch.Tensor]) -> torch.Tensor:
        return self.h * (losses_of(self.data) * self.weights).sum()

    def __repr__(self) -> str:
        return f"FieldTerm({self.label!r}, h={self.h!r})"


@dataclass(frozen=True)
class ResponseConfig:
    """Which fields to perturb and by how much: δ_a = c/(nβ·sd_0(ψ_a)) for each c."""

    fields: Sequence[int] | None = None  # field indices to reweight (None: all)
    c: tuple[float, ...] = (0.05, 0.1)


@dataclass
class ResponseRow:
    """One entry: observable i under the reweighting of field a by ±δ."""

    component: str
    field: str
    observable: str
    c: float
    delta: float
    fd: float  # (⟨φ⟩_{+δ} − ⟨φ⟩_{−δ}) / (2δ·nβ)
    chi: float  # −Cov(φ, ψ) at h = 0 (pooled)
    chi_stderr: float  # the engine-style stderr of χ alone (influence series)
    diff: float  # fd − chi
    diff_se: float  # calibrated MC error of diff, CRN covariance included
    dof: float
    z: float  # diff/diff_se as a normal-scale z (t → normal quantile)
    diff_se_jackknife: float
    z_jackknife: float
    rhat: float  # rank-normalised split R-hat of χ's series at h = 0 (the engine's UNMIXED test)
    flagged: bool  # what the engine would flag χ for: R-hat > RHAT_MAX or too few draws per chain

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def z_from_t(t: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """A Student-t value mapped to the standard normal with the same tail probability."""
    t, dof = np.asarray(t, float), np.broadcast_to(np.asarray(dof, float), np.shape(t))
    p = stats.t.cdf(-np.abs(t), np.where(np.isfinite(dof), dof, 1e9))
    return np.sign(t) * -stats.norm.ppf(np.maximum(p, 1e-300))


@dataclass
class _Draws:
    phi: np.ndarray  # [C, T, m]
    psi: np.ndarray  # [C, T, k]
    seconds: float


def _sample(make: Callable[[Any], PosteriorSystem], term: FieldTerm | None, cfg: SamplerConfig) -> _Draws:
    t0 = time.perf_counter()
    system = make(term)
    with system.running():
        system.advance(cfg.burn_in)
        phi, psi = system.draw(cfg.draws, cfg.steps_per_draw)
        system.finish()
    to = lambda x: np.ascontiguousarray(x.double().cpu().numpy().transpose(1, 0, 2))  # noqa: E731 - [C, T, ·]
    return _Draws(to(phi), to(psi), time.perf_counter() - t0)


def _difference(base: _Draws, plus: _Draws, minus: _Draws, a: int, scale: float, chains: np.ndarray) -> np.ndarray:
    """D = FD − χ for every observable, from the given chains (pooled over them)."""
    fd = (plus.phi[chains].mean(axis=(0, 1)) - minus.phi[chains].mean(axis=(0, 1))) * scale
    phi, psi = base.phi[chains], base.psi[chains, :, a]
    cov = ((phi - phi.mean(axis=(0, 1))) * (psi - psi.mean())[..., None]).mean(axis=(0, 1))
    return fd + cov


def linear_response(
    model: nn.Module,
    per_sample_loss: LossFunction,
    train_data: Batch,
    probe: ProbeSet,
    observables: Sequence[LossFunctional],
    fields: Sequence[LossFunctional],
    config: SamplerConfig,
    response: ResponseConfig = ResponseConfig(),
    *,
    restriction: Restriction | None = None,
    component: str | None = None,
    model_input: Callable[[Batch], Any] | None = None,
    posterior_options: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[ResponseRow], dict]:
    """Rows of FD vs χ for every observable × chosen field × c, and a meta dict (δ's, nβ, timings,
    the h = 0 LLC). One h = 0 run plus 2·len(c) runs per chosen field, all with ``config.seed``."""
    opts = dict(posterior_options or {})
    name = component or (restriction.name if restriction is not None else "full")

    def make(term: FieldTerm | None) -> PosteriorSystem:
        return PosteriorSystem(model, per_sample_loss, train_data, config, probe, observables, fields,
                               restriction=restriction, model_input=model_input,
                               posterior_options={**opts, "loss_term": term})

    sys0 = make(None)
    obs_names, field_names, T = sys0.observables, sys0.fields, sys0.n_tokens
    nbeta, dev, dtype = sys0.posterior.nbeta, sys0.posterior.device, config.master_dtype
    opts.setdefault("init_loss", sys0.posterior.init_loss)
    F = field_weights(fields, probe, T)
    base = _sample(lambda _: sys0, None, config)
    chosen = list(range(len(field_names))) if response.fields is None else list(response.fields)
    sd = base.psi.reshape(-1, base.psi.shape[-1]).std(axis=0, ddof=1)
    rows: list[ResponseRow] = []
    meta: dict = {"component": name, "nbeta": nbeta, "n_free": sys0.posterior.n_free, "runs": {}, "deltas": {},
                  "seconds": {"h0": base.seconds}}
    C = config.chains
    for a in chosen:
        for c in response.c:
            delta = float(c / (nbeta * sd[a])) if sd[a] > 0 else float("nan")
            if not np.isfinite(delta):
                raise ValueError(f"field {field_names[a]!r} does not fluctuate at h = 0 (sd 0): nothing to reweight")
            meta["deltas"][f"{field_names[a]}|c={c}"] = delta
            runs = {}
            for sign in (+1, -1):
                term = FieldTerm.of(sign * delta, F[a], probe, dev, dtype, label=field_names[a])
                runs[sign] = _sample(make, term, config)
                meta["seconds"][f"{field_names[a]}|c={c}|{sign:+d}"] = runs[sign].seconds
            scale = 1.0 / (2 * delta * nbeta)
            # influence series: mean_t s_t = D to first order; the engine's calibrated error of a mean
            centred = (base.phi - base.phi.mean(axis=(0, 1))) * (base.psi[..., a] - base.psi[..., a].mean())[..., None]
            s = (runs[+1].phi - runs[-1].phi) * scale + centred
            err, chi_err = mean_error(s), mean_error(centred)
            diff = _difference(base, runs[+1], runs[-1], a, scale, np.arange(C))
            jk = np.stack([_difference(base, runs[+1], runs[-1], a, scale, np.delete(np.arange(C), j)) for j in range(C)])
            se_jk = np.sqrt((C - 1) / C * ((jk - jk.mean(axis=0)) ** 2).sum(axis=0)) if C > 1 else np.full(len(diff), np.nan)
            fd = (runs[+1].phi.mean(axis=(0, 1)) - runs[-1].phi.mean(axis=(0, 1))) * scale
            z = z_from_t(diff / err.se, err.dof)
            zj = z_from_t(diff / se_jk, C - 1)
            n = centred.shape[1]
            rhat = rhat_rank(centred) if n >= 4 else np.full(len(diff), np.nan)
            flagged = (rhat > RHAT_MAX) | (n < MIN_POINTS_PER_CHAIN)
            for i, o in enumerate(obs_names):
                rows.append(ResponseRow(name, field_names[a], o, c, delta, float(fd[i]), float(fd[i] - diff[i]),
                                        float(chi_err.se[i]), float(diff[i]), float(err.se[i]), float(err.dof[i]),
                                        float(z[i]), float(se_jk[i]), float(zj[i]), float(rhat[i]), bool(flagged[i])))
    if log is not None:
        log(f"{name}: {len(rows)} entries, {sum(meta['seconds'].values()):.1f} s")
    return rows, meta


def summarize(rows: Sequence[ResponseRow], which: str = "z") -> dict:
    """rms z, max |z|, count — overall and per (component, c)."""
    def block(rs: Sequence[ResponseRow]) -> dict:
        z = np.array([getattr(r, which) for r in rs], float)
        return {"n": int(z.size), "rms_z": float(np.sqrt(np.mean(z**2))), "max_abs_z": float(np.max(np.abs(z))),
                "mean_z": float(np.mean(z)), "flagged": int(sum(r.flagged for r in rs))}
    out = {"all": block(rows)}
    for key in sorted({(r.component, r.c) for r in rows}):
        out[f"{key[0]}|c={key[1]}"] = block([r for r in rows if (r.component, r.c) == key])
    return out
