"""SGLD (Welling & Teh 2011) on the localized posterior: devinterp's ``SGMCMC.sgld``.

    w ← w − (ε/2)·m⊙[nβ·∇L_m(w) + γ·(w − w*)] + √ε·m⊙η,   η ~ N(0, I),  m the mask

Stationary law with the full-batch gradient on a Gaussian target: N(μ, Σ_ε),
Σ_ε = U diag(1/(λ(1 − ελ/4))) Uᵀ (:class:`spectro.nn.oracles.LinearGaussianOracle`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import Method, Potential, drift, langevin, masked, register


class State(NamedTuple):
    w: torch.Tensor  # [C, D]


class Hyper(NamedTuple):
    pot: Potential
    eps: float


def init(w: torch.Tensor, hyper: Hyper) -> State:
    return State(w)


def step(state: State, grad: torch.Tensor, noise: torch.Tensor, hyper: Hyper) -> State:
    d = masked(drift(grad, state.w, hyper.pot), hyper.pot)
    return State(langevin(state.w, d, masked(noise, hyper.pot), hyper.eps))


METHOD = register(Method(
    name="sgld", init=init, step=step,
    make_hyper=lambda pot, eps, values, burn_in: Hyper(pot, eps),
    step_size=lambda state, hyper: hyper.eps,
    steps=("eager", "fused", "compiled"),
    devinterp=lambda values: ("sgmcmc_sgld", {}),
    doc="SGLD (devinterp's sgld, step for step)",
))
