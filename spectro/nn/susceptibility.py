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
from functools import partial
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..engine import MomentAccumulator, Susceptibility, component_susceptibility_estimate
from ..engine.distributed import World
from ..engine.driver import Checkpointing, measure, measure_components
from .config import SamplerConfig
from .fields import TokenPointMasses
from .observables import LossFunctional, MeanLoss, mean_loss
from ..engine.seeding import run_seed
from .posterior import Batch, LocalizedPosterior, LossFunction
from .probes import ProbeSet
from .restrictions import Restriction
from .system import PosteriorSystem, run_config

__all__ = ["run_susceptibility", "component_susceptibility", "baker_susceptibility"]


def run_susceptibility(
    model: nn.Module,
    per_sample_loss: LossFunction,
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
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
    progress: bool = False,
) -> Susceptibility:
    """χ[i, a] = −Cov_β(φ_i, ψ_a) under p(w) ∝ exp(−nβ·L_n(w) − γ/2‖w − w*‖²):
    :func:`spectro.engine.measure` on a :class:`~spectro.nn.system.PosteriorSystem`.

    ``meta`` of the result gets ``"sampling"`` (LLC λ̂ = nβ·(E[L_n] − L_n(w*)) ± stderr, L_n(w*),
    nβ, sampler config, restriction), ``"loss_trace"`` ([C][draws] minibatch losses), ``"run"``
    and ``"timing"``. ``shared_batches`` and ``posterior_options`` (``chain_mode``, ``workers``,
    ``memoize_frozen``) are passed to :class:`LocalizedPosterior`. ``checkpoint`` and ``world``:
    resume and torchrun, as for every system (docs/design.md §3).
    """
    system = PosteriorSystem(model, per_sample_loss, train_data, config, probe, observables, fields,
                             restriction=restriction, model_input=model_input, sample_weights=sample_weights,
                             shared_batches=shared_batches, posterior_options=posterior_options)
    return measure(system, run_config(config), checkpoint=checkpoint, world=world, progress=progress, meta=meta)


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
    per_sample_loss: LossFunction,
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
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
    progress: bool = False,
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
    :mod:`spectro.nn.chain_model`).

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

    Sampling goes through :func:`spectro.engine.measure_components` (checkpoints: one file per
    run; torchrun). Returns component name → Susceptibility with one observable ``"phi_C"`` and
    the token fields; ``meta["timing"]`` holds wall seconds of the shared set-up, the full run and
    every component run.
    """
    if not components:
        raise ValueError("need at least one component restriction")
    full_config = full_config or config
    base_sel = tokens.base
    opts = dict(posterior_options or {})
    t0 = time.perf_counter()
    # L̄(w*) on the base selection and L_n(w*): once for every run (w* is the same)
    probe_post = LocalizedPosterior(model, per_sample_loss, train_data, full_config, None, model_input=model_input,
                                    shared_batches=shared_batches, **opts)
    ref_star = float(mean_loss(probe.evaluate_at_w_star(probe_post), probe, base_sel)[0])
    ref = ref_star if phi_reference is None else float(phi_reference)
    phi = MeanLoss(base_sel, reference=ref)
    init_loss = probe_post.init_loss

    def system(cfg: SamplerConfig, restriction: Restriction | None, name: str) -> PosteriorSystem:
        sys = PosteriorSystem(model, per_sample_loss, train_data, cfg, probe, [phi], [tokens], restriction=restriction,
                              model_input=model_input, shared_batches=shared_batches,
                              posterior_options={**opts, "init_loss": init_loss}, name=name)
        sys.observables = ["phi_C"]
        return sys

    full = partial(system, full_config, None, "full")  # built when its run starts (one model copy at a time)
    comps = {name: partial(system, replace(config, seed=run_seed(config.seed, name)), r, name)  # independent streams
             for name, r in components.items()}
    setup_s = time.perf_counter() - t0
    full_run = run_config(full_config) if full_config is not config else None
    out = measure_components(full, comps, run_config(config), full_run=full_run, checkpoint=checkpoint, world=world,
                             progress=progress,
                             meta={"phi_reference_loss": ref, "phi_reference_at_w_star": ref_star, **(meta or {})})
    for s in out.values():
        s.meta["full_sampling"] = s.meta.pop("full_run")["sampling"]
        s.meta["timing"]["setup_s"] = setup_s
    return out
