"""Susceptibilities of a neural network: sample, evaluate probes per draw, stream into the engine.

* :func:`run_susceptibility` — ``χ[i, a] = −Cov(φ_i, ψ_a)`` (docs/design.md §2; engine scale −1) for
  observables φ (:mod:`spectro.nn.observables`) and field generators ψ (:mod:`spectro.nn.fields`)
  under the (optionally weight-restricted) localized tempered posterior. Equivalently
  ``χ = (1/nβ)·∂_h⟨φ⟩_h`` at h = 0; χ > 0 means up-weighting q' raises ⟨φ⟩. Nothing is
  stored per draw: each draw's [C, m] and [C, k] values go straight into a
  :class:`~spectro.engine.MomentAccumulator`.
* :func:`component_susceptibility` — Baker et al. 2025's per-token susceptibility of a weight
  component C (see :func:`baker_susceptibility`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine import MomentAccumulator, Susceptibility, component_susceptibility_estimate, estimate_susceptibility
from ..engine.susceptibility import environment_versions
from .config import SamplerConfig
from .fields import TokenPointMasses
from .observables import LossFunctional, MeanLoss, concat, mean_loss
from .posterior import Batch, Draw, LocalizedPosterior, PerSampleLoss, SamplingResult, run_seed
from .probes import ProbeSet
from .restrictions import Restriction

__all__ = ["run_susceptibility", "sample_moments", "component_susceptibility", "baker_susceptibility"]


def _names(functionals: Sequence[LossFunctional], probe: ProbeSet, n_tokens: int) -> list[str]:
    return [name for f in functionals for name in f.names(probe, n_tokens)]


def sample_moments(
    posterior: LocalizedPosterior,
    probe: ProbeSet,
    observables: Sequence[LossFunctional],
    fields: Sequence[LossFunctional],
) -> tuple[MomentAccumulator, SamplingResult, list[str], list[str]]:
    """Sample ``posterior`` and stream (φ, ψ) of every draw into a fresh accumulator.

    Observables and fields are first evaluated at w* (a [1, N, T] probe forward), which checks
    every selection and the loss shapes before any sampling, and fixes m, k and the names.
    Returns (accumulator, sampling result, observable names, field names).
    """
    if not observables:
        raise ValueError("need at least one observable")
    if not fields:
        raise ValueError("need at least one field generator")
    cfg = posterior.config
    at_star = probe.evaluate_at_w_star(posterior)
    n_tokens = at_star.shape[-1]
    obs_names, field_names = _names(observables, probe, n_tokens), _names(fields, probe, n_tokens)
    m = concat(observables, at_star, probe).shape[1]
    k = concat(fields, at_star, probe).shape[1]
    if (m, k) != (len(obs_names), len(field_names)):
        raise ValueError(f"functionals produced {m} observables / {k} fields but {len(obs_names)} / {len(field_names)} names")
    acc = MomentAccumulator(cfg.chains, m, k, cfg.draws, n_batches=cfg.n_batches, device=cfg.device)

    def on_draw(draw: Draw) -> None:
        losses = probe.evaluate(posterior, draw.weights)
        acc.update(concat(observables, losses, probe), concat(fields, losses, probe))

    result = posterior.sample(on_draw)
    return acc, result, obs_names, field_names


def run_susceptibility(
    model: nn.Module,
    per_sample_loss: PerSampleLoss,
    train_data: Batch,
    probe: ProbeSet,
    observables: Sequence[LossFunctional],
    fields: Sequence[LossFunctional],
    config: SamplerConfig,
    *,
    restriction: Restriction | None = None,
    model_input: Callable[[Batch], Any] | None = None,
    sample_weights: torch.Tensor | None = None,
    meta: dict | None = None,
    shared_batches: bool = False,
    posterior_options: Mapping[str, Any] | None = None,
) -> Susceptibility:
    """χ[i, a] = −Cov_β(φ_i, ψ_a) under p(w) ∝ exp(−nβ·L_n(w) − γ/2‖w − w*‖²).

    Standard errors, ESS and R-hat come from the engine's streamed per-chain batch moments.
    ``meta`` of the result gets ``"sampling"`` (LLC λ̂ = nβ·(E[L_n] − L_n(w*)) ± stderr, L_n(w*),
    nβ, sampler config, restriction), ``"loss_trace"`` ([C][draws] minibatch losses) and
    ``"timing"`` (wall seconds). ``shared_batches`` and ``posterior_options`` (``chain_mode``,
    ``workers``, ``memoize_frozen``) are passed to :class:`LocalizedPosterior`.
    """
    t0 = time.perf_counter()
    post = LocalizedPosterior(
        model, per_sample_loss, train_data, config, restriction, model_input=model_input, sample_weights=sample_weights,
        shared_batches=shared_batches, **dict(posterior_options or {}),
    )
    acc, result, obs_names, field_names = sample_moments(post, probe, observables, fields)
    info = {
        "sampling": result.summary(), "loss_trace": result.loss_trace.tolist(), "estimator": "-Cov(phi, psi)",
        "timing": {"sample_s": time.perf_counter() - t0},
    }
    return estimate_susceptibility(acc, -1.0, obs_names, field_names, meta={**info, **(meta or {})})


# ---------------------------------------------------------------------- Baker et al. 2025
def baker_susceptibility(
    component: MomentAccumulator,
    full: MomentAccumulator,
    observables: list[str] | None = None,
    fields: list[str] | None = None,
    meta: dict | None = None,
) -> Susceptibility:
    """Baker et al. 2025's component susceptibility: :func:`spectro.engine.component_susceptibility_estimate`."""
    return component_susceptibility_estimate(component, full, observables, fields, meta)


def component_susceptibility(
    model: nn.Module,
    per_sample_loss: PerSampleLoss,
    train_data: Batch,
    probe: ProbeSet,
    components: Mapping[str, Restriction],
    tokens: TokenPointMasses,
    config: SamplerConfig,
    *,
    full_config: SamplerConfig | None = None,
    model_input: Callable[[Batch], Any] | None = None,
    meta: dict | None = None,
    phi_reference: float | None = None,
    shared_batches: bool = False,
    posterior_options: Mapping[str, Any] | None = None,
) -> dict[str, Susceptibility]:
    """Per-token susceptibilities of weight components (Baker et al. 2025, docs/design.md §2).

    For each component C (a :class:`Restriction`): sample with only C's weights free, record
    φ_C = L̄(w) − L̄(w*) (L̄ = mean loss on ``tokens.base``, the probe stand-in for the
    training distribution) and ψ_xy = ℓ_xy − L̄ for the tokens of ``tokens``; one unrestricted
    run (``full_config``, default ``config``) gives E_full[ψ_xy]. Then (:func:`baker_susceptibility`)

        χ^C_xy = −(E_C[φ_C·(ℓ_xy − L̄)] − E_C[φ_C]·E_full[ℓ_xy − L̄]).

    ``phi_reference`` replaces L̄(w*) as φ's offset (e.g. devinterp's ``init_loss`` mean, to
    compute exactly devinterp's estimand). ``shared_batches``: all chains of a run see the same
    minibatch sequence (devinterp's default). ``posterior_options`` (``chain_mode``, ``workers``,
    ``memoize_frozen``) go to every :class:`LocalizedPosterior`.

    Work shared across the runs (each exact): L_n(w*) is evaluated once (it does not depend on
    the restriction), L̄(w*) once, and the full run once for all components. Inside a restricted
    run, autograd only differentiates the free weights and never enters the part of the network
    upstream of them; with the default CPU execution the frozen upstream part is evaluated once
    per step for all chains of a worker and once per run on the probe samples (see
    :mod:`spectro.nn.posterior`).

    Cross-check with devinterp 2.0.1 ``slt.susceptibilities.compute_susceptibilities``: it
    computes ``sus = E_C[φ·L̄] − E_C[φ·ℓ_xy] − E_C[φ]·(E_full[L̄] − E_full[ℓ_xy])``, algebraically
    the same formula. Differences:

    * φ's offset: devinterp uses φ = L̄(w) − mean(init_loss), init_loss measured at w* on
      ``num_init_loss_batches`` *training minibatches* in train mode; we use L̄(w*) on the same
      probe samples as L̄(w), so φ_C(w*) = 0 exactly (pass ``phi_reference`` for devinterp's).
      The offset matters here: shifting φ by δ shifts χ^C by −δ·(E_C[ψ] − E_full[ψ]).
    * devinterp evaluates every loss in ``model.train()`` mode (dropout active, if any); we use
      eval mode. By default devinterp feeds all chains the same minibatch sequence; our chains
      draw independent minibatches (seeded per chain) unless ``shared_batches``.
    * devinterp reports no uncertainty; we give the standard error derived in
      :func:`baker_susceptibility`.

    Returns component name → Susceptibility with one observable ``"phi_C"`` and the token fields;
    ``meta["timing"]`` holds wall seconds of the shared set-up, the full run and the component run.
    """
    if not components:
        raise ValueError("need at least one component restriction")
    full_config = full_config or config
    base_sel = tokens.base
    opts = {"shared_batches": shared_batches, **dict(posterior_options or {})}
    t0 = time.perf_counter()
    # L̄(w*) on the base selection (shared by all runs: w* is the same)
    probe_post = LocalizedPosterior(model, per_sample_loss, train_data, full_config, None, model_input=model_input, **opts)
    ref_star = float(mean_loss(probe.evaluate_at_w_star(probe_post), probe, base_sel)[0])
    ref = ref_star if phi_reference is None else float(phi_reference)
    phi = MeanLoss(base_sel, reference=ref)
    init_loss = probe_post.init_loss  # L_n(w*): once, for every run
    t1 = time.perf_counter()

    full_acc, full_res, _, field_names = sample_moments(probe_post, probe, [phi], [tokens])
    t2 = time.perf_counter()
    timing = {"setup_s": t1 - t0, "full_s": t2 - t1}
    out: dict[str, Susceptibility] = {}
    for name, restriction in components.items():
        tc = time.perf_counter()
        run_config = replace(config, seed=run_seed(config.seed, name))  # independent of the full run and other components
        post = LocalizedPosterior(model, per_sample_loss, train_data, run_config, restriction, model_input=model_input,
                                  init_loss=init_loss, **opts)
        acc, res, _, _ = sample_moments(post, probe, [phi], [tokens])
        info = {
            "component": name,
            "sampling": res.summary(),
            "full_sampling": full_res.summary(),
            "phi_reference_loss": ref,
            "phi_reference_at_w_star": ref_star,
        }
        out[name] = baker_susceptibility(acc, full_acc, ["phi_C"], field_names, meta={**info, **(meta or {})})
        timing[f"{name}_s"] = time.perf_counter() - tc
    for s in out.values():
        s.meta["timing"] = dict(timing)
    return out
