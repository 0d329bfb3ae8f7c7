"""RMSProp-preconditioned SGLD (Li et al. 2016), two ways.

``rmsprop_sgld`` — devinterp's ``SGMCMC.rmsprop_sgld``, matched step for step::

    v ← α·v + (1−α)·g²,   G = 1/(√v + δ),   w ← w − (ε/2)·G⊙m⊙∇U + √(εG)⊙m⊙η

with g = ∇L_m(w) the raw minibatch-mean gradient, v from 0, no bias correction. Its law is
biased: G follows the trajectory, so the chain is not a Langevin diffusion for any fixed G and the
correction Γ_i = ∂G_i/∂w_i is not defined by the position alone. Taking v as a function of the
current w through its own update (∂v_i/∂w_i = 2(1−α)·g_i·∂g_i/∂w_i) gives a Γ that changes the law
by < 1 % on the linear-Gaussian oracle while the bias is +18 % in the variance (+35 % in χ)
(docs/results/samplers/rmsprop_gamma.txt): the bias comes from the preconditioner's memory.

``rmsprop_sgld_warmup`` — the same preconditioner adapted during burn-in only and then held
fixed: G no longer depends on w, so Γ = 0 exactly and the law is p up to the O(ε) step bias
(Σ_ε of the oracle with P replaced by G^{1/2} P G^{1/2}); tested against the oracle in
``tests/test_samplers.py``. Use ``burn_in`` long enough for v to settle (≳ 3/(1−α) steps).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import Hyper as Key
from . import Method, Potential, drift, langevin, masked, register


class State(NamedTuple):
    w: torch.Tensor  # [C, D]
    v: torch.Tensor  # [C, D] running mean of g²
    t: int = 0       # steps taken (the warm-up variant adapts while t < burn_in)


class Hyper(NamedTuple):
    pot: Potential
    eps: float
    alpha: float
    delta: float
    adapt: int = -1  # adapt v for the first `adapt` steps; −1: always (devinterp)


def init(w: torch.Tensor, hyper: Hyper) -> State:
    return State(w, torch.zeros_like(w), 0)


def preconditioner(v: torch.Tensor, delta: float) -> torch.Tensor:
    """G = 1/(√v + δ)."""
    return 1.0 / (torch.sqrt(v) + delta)


def step(state: State, grad: torch.Tensor, noise: torch.Tensor, hyper: Hyper) -> State:
    if hyper.adapt < 0 or state.t < hyper.adapt:
        v = state.v * hyper.alpha + grad * grad * (1.0 - hyper.alpha)
    else:
        v = state.v
    eps_i = hyper.eps * preconditioner(v, hyper.delta)
    d = masked(drift(grad, state.w, hyper.pot), hyper.pot)
    return State(langevin(state.w, d, masked(noise, hyper.pot), eps_i), v, state.t + 1)


def step_size(state: State, hyper: Hyper) -> torch.Tensor:
    return hyper.eps * preconditioner(state.v, hyper.delta)


KEYS = (Key("rmsprop_alpha", 0.99, 0.0, 1.0, high_open=True, doc="α, decay of the running mean of g²"),
        Key("rmsprop_delta", 0.1, 0.0, low_open=True, doc="δ added to √v (devinterp's eps)"))


def _devinterp(values):
    return "rmsprop_sgld", {"alpha": values["rmsprop_alpha"], "eps": values["rmsprop_delta"]}


METHOD = register(Method(
    name="rmsprop_sgld", init=init, step=step, hypers=KEYS, step_size=step_size,
    make_hyper=lambda pot, eps, v, burn_in: Hyper(pot, eps, v["rmsprop_alpha"], v["rmsprop_delta"]),
    steps=("eager", "fused", "compiled"), devinterp=_devinterp,
    biased="the preconditioner follows the trajectory and no correction term is applied (devinterp's method): "
           "measured +35 % in chi on the linear-Gaussian oracle at alpha = 0.99, delta = 0.1",
    doc="devinterp's rmsprop_sgld, step for step (biased)",
))

def _needs_burn_in(config) -> None:
    if config.burn_in < 1:
        raise ValueError("method 'rmsprop_sgld_warmup' adapts its preconditioner during burn_in: burn_in must be >= 1 "
                         "(a few times 1/(1 - rmsprop_alpha) steps)")


WARMUP = register(Method(
    name="rmsprop_sgld_warmup", init=init, step=step, hypers=KEYS, step_size=step_size, check=_needs_burn_in,
    make_hyper=lambda pot, eps, v, burn_in: Hyper(pot, eps, v["rmsprop_alpha"], v["rmsprop_delta"], burn_in),
    doc="RMSProp preconditioner adapted during burn-in, then fixed (Gamma = 0, unbiased)",
))
