"""The SGLD / RMSProp-SGLD update as small pure functions on (batched) parameter tensors.

Every function works elementwise, so the same code serves one parameter tensor, a flat vector
of all free coordinates, or a stack of chains ``[C, D]`` (scalars broadcast; per-chain tensors
must be given shapes that broadcast, e.g. ``[C, 1]``). Nothing is modified in place.

Composition (what :mod:`spectro.nn.posterior` does each step)::

    g      = ∇L_m(w)                                   # minibatch-mean loss gradient
    v      = rmsprop_update(v, g, α)                    # rmsprop_sgld only
    ε_i    = ε · rmsprop_preconditioner(v, δ)            # or ε for plain sgld
    drift  = sgld_drift(g, w, w*, nβ, γ)                 # nβ·g + γ·(w − w*)
    w_new  = langevin_step(w, mask·drift, mask·η, ε_i)   # w − (ε_i/2)·drift + √ε_i·η

This is devinterp's ``SGMCMC.sgld`` / ``SGMCMC.rmsprop_sgld`` step (noise_level = 1, no weight
decay, no bounding box), checked step for step in ``tests/test_nn_kernels.py``. A restriction
mask multiplies drift and noise, as devinterp's ``MaskPreconditioner`` (``overall_coef``) does.
"""

from __future__ import annotations

import math

import torch

__all__ = ["sgld_drift", "rmsprop_update", "rmsprop_preconditioner", "langevin_step", "step_terms"]

Scalar = float | torch.Tensor


def sgld_drift(grad: torch.Tensor, w: torch.Tensor, w_star: torch.Tensor, nbeta: Scalar, gamma: Scalar) -> torch.Tensor:
    """Gradient of the negative log posterior: ``nβ·∇L_m(w) + γ·(w − w*)``.

    This is ∇_w [nβ·L_m(w) + (γ/2)·‖w − w*‖²]; SGLD moves *against* it.
    """
    return grad * nbeta + (w - w_star) * gamma


def rmsprop_update(v: torch.Tensor, grad: torch.Tensor, alpha: float) -> torch.Tensor:
    """Running mean of the squared gradient: ``v ← α·v + (1−α)·g²``.

    As in devinterp: ``g`` is the raw minibatch-mean gradient (not multiplied by nβ), ``v``
    starts at zeros and is not bias-corrected.
    """
    return v * alpha + grad * grad * (1.0 - alpha)


def rmsprop_preconditioner(v: torch.Tensor, delta: float) -> torch.Tensor:
    """Diagonal preconditioner ``G = 1 / (√v + δ)``; the per-coordinate step is ``ε_i = ε·G_i``."""
    return 1.0 / (torch.sqrt(v) + delta)


def langevin_step(w: torch.Tensor, drift: torch.Tensor, noise: torch.Tensor, eps_per_coord: Scalar) -> torch.Tensor:
    """One Euler–Maruyama step of overdamped Langevin dynamics.

    ``w_new = w − (ε_i/2)·drift + √ε_i·η`` with ``η = noise`` ~ N(0, I) and ``ε_i`` a scalar
    step size or a per-coordinate tensor (RMSProp-SGLD). Its stationary law approximates
    ∝ exp(−U) where drift = ∇U, with an O(ε) bias.
    """
    if isinstance(eps_per_coord, (int, float)):
        eps = float(eps_per_coord)
        return w.add(drift, alpha=-0.5 * eps).add_(noise, alpha=math.sqrt(eps))
    return w - (0.5 * eps_per_coord) * drift + torch.sqrt(eps_per_coord) * noise


def step_terms(
    grad: torch.Tensor,
    w: torch.Tensor,
    w_star: torch.Tensor,
    noise: torch.Tensor,
    nbeta: Scalar,
    gamma: Scalar,
    eps_per_coord: Scalar,
) -> torch.Tensor:
    """Norms of the three terms of a step over the last axis, ``[..., 3]``.

    ``(‖(ε_i/2)·nβ·g‖, ‖(ε_i/2)·γ·(w − w*)‖, ‖√ε_i·η‖)``: gradient, localization and noise
    displacement (pass masked ``grad``/``noise``). Used to say which term blew up when a
    chain diverges.
    """
    half = 0.5 * eps_per_coord
    root = math.sqrt(eps_per_coord) if isinstance(eps_per_coord, (int, float)) else torch.sqrt(eps_per_coord)
    g = torch.linalg.vector_norm(half * nbeta * grad, dim=-1)
    loc = torch.linalg.vector_norm(half * gamma * (w - w_star), dim=-1)
    nz = torch.linalg.vector_norm(root * noise, dim=-1)
    return torch.stack([g, loc, nz], dim=-1)
