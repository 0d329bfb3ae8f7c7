"""Sampling methods as small pure kernels, and the registry every other layer reads.

A method is one module with its state (a NamedTuple of tensors, ``w`` [C, D] first), ``init``
and a pure ``step(state, grad, noise, hyper) -> state``: no loop, no I/O, no health checks
(blackjax's ``sgmcmc`` kernels are the model). ``grad`` is the minibatch-mean loss gradient
∇L_m(w) [C, D] (or a control-variate estimate of it), ``noise`` one N(0, I) draw [C, D] per step,
``hyper`` the method's NamedTuple of step parameters, which holds the :class:`Potential` of the
localized tempered posterior (docs/design.md §2)::

    U(w) = nβ·L_n(w) + (γ/2)·‖w − w*‖²,   p(w) ∝ exp(−U(w)),   ∇U ≈ nβ·grad + γ·(w − w*)

A restriction ``mask`` multiplies drift and noise (the mask is a preconditioner, as in devinterp).

Preconditioned Langevin with a position-dependent diagonal preconditioner G(w) samples p only with
the correction Γ_i = ∂G_i/∂w_i (Ma, Chen & Fox 2015):
``w ← w − (ε/2)·G·∇U + (ε/2)·Γ + √(εG)·η`` (:func:`langevin`; devinterp's ``grad_correction``).

The registry (:data:`METHODS`, :func:`register`, :func:`get`) is what :class:`SamplerConfig`
validation, the job schema (method-specific keys) and the devinterp export read; no other module
branches on a method's name. Adding a method: one module defining a :class:`Method`, one
:func:`register` call (``tests/test_samplers.py`` adds one in a test).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

__all__ = ["Potential", "Hyper", "Method", "METHODS", "register", "unregister", "get", "extra_keys", "langevin", "drift", "masked"]

Scalar = float | torch.Tensor


class Potential(NamedTuple):
    """The target: w* [D], the restriction mask [D] (None: every coordinate free), nβ and γ."""

    w_star: torch.Tensor
    mask: torch.Tensor | None
    nbeta: float
    gamma: float


def drift(grad: torch.Tensor, w: torch.Tensor, pot: Potential) -> torch.Tensor:
    """∇U = ``nβ·grad + γ·(w − w*)`` (not masked)."""
    return grad * pot.nbeta + (w - pot.w_star) * pot.gamma


def masked(x: torch.Tensor, pot: Potential) -> torch.Tensor:
    return x if pot.mask is None else x * pot.mask


def langevin(w: torch.Tensor, drift_: torch.Tensor, noise: torch.Tensor, eps: Scalar,
             correction: torch.Tensor | None = None) -> torch.Tensor:
    """One Euler–Maruyama step ``w − (ε_i/2)·drift + ½·correction + √ε_i·η`` with ``eps`` = ε_i
    (= ε·G_i; a scalar or per coordinate) and ``correction`` = ε·Γ (None: Γ = 0). The operations of
    the pre-registry kernels in their order, so SGLD stays bit-identical to devinterp."""
    if isinstance(eps, (int, float)):
        out = w.add(drift_, alpha=-0.5 * float(eps)).add_(noise, alpha=math.sqrt(float(eps)))
    else:
        out = w - (0.5 * eps) * drift_ + torch.sqrt(eps) * noise
    return out if correction is None else out + 0.5 * correction


@dataclass(frozen=True)
class Hyper:
    """A method-specific hyperparameter: read from the :class:`SamplerConfig` field of that name
    when there is one (``rmsprop_alpha``, ``friction``…), else from ``SamplerConfig.options``."""

    name: str
    default: float
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    doc: str = ""

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{self.name} must be a finite number, got {value!r}")
        lo_bad = value <= self.low if self.low_open else value < self.low
        hi_bad = value >= self.high if self.high_open else value > self.high
        if lo_bad or hi_bad:
            lo = f"{'(' if self.low_open else '['}{self.low:g}"
            hi = f"{self.high:g}{')' if self.high_open else ']'}"
            raise ValueError(f"{self.name} must lie in {lo}, {hi}, got {value!r}")
        return float(value)


@dataclass(frozen=True)
class Method:
    """A registered sampling method.

    Attributes:
        name: the ``SamplerConfig.method`` value.
        init: ``init(w [C, D], hyper) -> state`` (``state.w`` is ``w``).
        step: the pure kernel ``step(state, grad, noise, hyper) -> state``.
        make_hyper: ``make_hyper(potential, epsilon, values, burn_in) -> hyper``; ``values`` maps
            every name of ``hypers`` to its checked value.
        hypers: the method's own hyperparameters (validated at config time, one-line errors).
        step_size: ``step_size(state, hyper) -> ε_i`` (scalar or [C, D]) for the divergence report.
        steps: the ``SamplerConfig.step`` modes it supports ("fused"/"compiled" need the
            hand-written update of :mod:`spectro.nn.kernels`).
        precisions: the compute precisions it supports.
        supports_mask: whether it samples restrictions with a coordinate mask.
        biased: a sentence naming the bias of its stationary law beyond the O(ε) step-size bias,
            or None (reported in the run's metadata).
        devinterp: ``devinterp(values) -> (sampling_method, sampling_method_kwargs)`` of
            devinterp 2.0.1, or None where devinterp has no such method (its export then names ours).
    """

    name: str
    init: Callable[[torch.Tensor, Any], Any]
    step: Callable[[Any, torch.Tensor, torch.Tensor, Any], Any]
    make_hyper: Callable[[Potential, float, Mapping[str, float], int], Any]
    hypers: tuple[Hyper, ...] = ()
    step_size: Callable[[Any, Any], Scalar] | None = None
    steps: tuple[str, ...] = ("eager",)
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")
    supports_mask: bool = True
    biased: str | None = None
    devinterp: Callable[[Mapping[str, float]], tuple[str, dict]] | None = None
    check: Callable[[Any], None] | None = None
    doc: str = ""

    def values(self, config: Any) -> dict[str, float]:
        """This method's hyperparameter values from a SamplerConfig, checked (ValueError naming the key)."""
        options = dict(getattr(config, "options", None) or {})
        known = {h.name for h in self.hypers}
        for key in options:
            if hasattr(config, key):
                raise ValueError(f"options: {key!r} is a SamplerConfig field; set it there")
            if key not in known:
                raise ValueError(f"options: {key!r} is not a hyperparameter of method {self.name!r} "
                                 f"(it has: {sorted(known) or 'none'})")
        out = {}
        for h in self.hypers:
            v = getattr(config, h.name) if hasattr(config, h.name) else options.get(h.name, h.default)
            out[h.name] = h.check(v)
        return out

    def hyper(self, pot: Potential, config: Any) -> Any:
        return self.make_hyper(pot, float(config.epsilon), self.values(config), int(config.burn_in))


METHODS: dict[str, Method] = {}
"""name → :class:`Method`, in registration order."""


def register(method: Method, *, replace: bool = False) -> Method:
    """Add a method to the registry (``replace`` to redefine one, e.g. in tests)."""
    if not replace and method.name in METHODS:
        raise ValueError(f"sampling method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    METHODS.pop(name, None)


def get(name: Any) -> Method:
    """The registered method ``name``; ValueError listing the registered ones otherwise."""
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {name!r}")
    return METHODS[name]


def extra_keys() -> dict[str, Hyper]:
    """Every registered method's hyperparameters (the job schema's method-specific sampler keys)."""
    return {h.name: h for m in METHODS.values() for h in m.hypers}


from . import sgld  # noqa: E402,F401,I001  (register the built-in methods, in this order)
from . import rmsprop  # noqa: E402,F401
from . import sghmc  # noqa: E402,F401
