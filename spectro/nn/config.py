"""Sampler configuration for the localized tempered posterior.

The target of every sampler in :mod:`spectro.nn` is

    p(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²)

with L_n the **mean** per-sample loss over the n training samples, w* the trained weights and
γ the localization strength. Only the product nβ enters.

Default nβ: ``n / log n`` with **n the training-set size** (the WBIC temperature β = 1/log n).
devinterp's ``default_nbeta`` uses the *batch size* m instead (``m / log m``); pass
``nbeta=m / math.log(m)`` to reproduce devinterp's default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

__all__ = ["SamplerConfig", "default_nbeta", "PRECISIONS", "STEPS"]

Method = str  # a name registered in spectro.nn.samplers (sgld, rmsprop_sgld, rmsprop_sgld_warmup, sghmc, …)
Precision = Literal["fp32", "bf16", "fp16"]
Step = Literal["eager", "fused", "compiled"]
STEPS = ("eager", "fused", "compiled")
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Compute precision → dtype of the forward/backward (None: each parameter's stored dtype)."""


def default_nbeta(n: int) -> float:
    """nβ = n / log n for a training set of n samples (β = 1/log n, the WBIC temperature)."""
    if n < 2:
        raise ValueError(f"default nbeta = n/log n needs a dataset of at least 2 samples, got n={n}")
    return n / math.log(n)


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of an SGLD / RMSProp-SGLD run on the localized tempered posterior.

    Update (one step, per chain, on the free coordinates only)::

        w ← w − (ε_i/2)·[nβ·∇L_m(w) + γ·(w − w*)] + √ε_i·η,    η ~ N(0, I)

    with L_m the (weighted) minibatch mean loss and ε_i = ε for ``method="sgld"``. For
    ``method="rmsprop_sgld"`` (devinterp's ``SGMCMC.rmsprop_sgld``, matched exactly):

        v ← α·v + (1−α)·g²         g = ∇L_m(w), the raw minibatch-mean gradient (not × nβ)
        ε_i = ε / (√v_i + δ)        v starts at 0 and is NOT bias-corrected

    so the first steps have v ≈ (1−α)·g² and a larger step than a bias-corrected RMSProp would
    take; this is devinterp's behaviour and we keep it for parity (the papers' bias-corrected
    variant would divide v by 1 − α^t).

    Caveat (measured in ``tests/test_nn_linear_gaussian.py``): like devinterp, RMSProp-SGLD here
    has no Γ(w) correction term, so a preconditioner that follows the position biases the
    stationary law towards ≈ p(w)·(√v(w) + δ) (heavier tails). On the linear-Gaussian oracle with
    α = 0.99, δ = 0.1 the susceptibilities come out ~35 % too large; with δ ≫ √v (nearly constant
    preconditioner) they are exact. Prefer ``"sgld"`` where its step size is affordable.

    Other methods (``rmsprop_sgld_warmup``: the preconditioner fixed after burn-in, unbiased;
    ``sghmc``: underdamped Langevin by BAOAB) and their laws: :mod:`spectro.nn.samplers`.

    Attributes:
        method: a registered method (:data:`spectro.nn.samplers.METHODS`): "sgld" (default),
            "rmsprop_sgld" (devinterp's, biased), "rmsprop_sgld_warmup", "sghmc".
        options: the method's own hyperparameters that are not fields here (e.g. ``friction``
            of "sghmc"); unknown keys are an error.
        control_variate: use the control-variate gradient ∇L_m(w) − ∇L_m(w*) + ∇L_n(w*) (Baker,
            Fearnhead, Fox & Nemeth 2019), centred at w*: one more backward per step (at w*, on
            the same minibatch; once per step for all chains with shared batches), the full-data
            gradient at w* computed once. Unbiased; its noise shrinks with ‖w − w*‖.
        epsilon: step size ε > 0.
        gamma: localization strength γ ≥ 0 (0 = no localization; unbounded directions then diffuse).
        nbeta: nβ > 0; ``None`` → n/log n with n the training-set size (see module docstring).
        chains: number of chains C, run batched (vmapped) in one process.
        draws: draws per chain recorded after burn-in.
        burn_in: SGLD steps discarded before the first draw.
        steps_per_draw: SGLD steps between consecutive draws (thinning).
        batch_size: minibatch size m; ``None`` → full batch (deterministic gradient, all n samples).
        seed: base seed. Chain c's minibatch stream and noise stream depend only on
            (seed, chain_offset + c), so a chain is reproducible whatever the number of chains.
        chain_offset: global index of this run's first chain (split chains across processes).
        rmsprop_alpha: α, RMSProp decay (devinterp default 0.99).
        rmsprop_delta: δ, RMSProp stabiliser added to √v (devinterp's ``eps``, default 0.1).
        device: device of the master weights and all sampling tensors.
        master_dtype: dtype of the master weights (float32 default; float64 for validation).
            A model stored in bf16/fp16 needs the matching ``precision`` (its forward runs in
            that dtype; the update happens in ``master_dtype``).
        precision: compute precision of the forward and backward, ``"fp32"`` (default: the model's
            own dtype, no cast), ``"bf16"`` or ``"fp16"`` (a low-precision copy of the frozen
            weights, free weights cast from the master on every call, loss upcast to
            ``master_dtype``; fp16 backward on a per-chain loss scale, GradScaler's rule). Master
            weights, drift, noise, localization and RMSProp state stay in ``master_dtype`` whatever
            the precision (docs/design.md §2, "Precision").
        step: how the update after the gradient runs: ``"eager"`` (default: the kernels of
            :mod:`spectro.nn.kernels` one by one), ``"fused"`` (hand-fused, in place) or
            ``"compiled"`` (``torch.compile`` of the whole update, compiled once per block shape
            and process; falls back to uncompiled with a warning where torch.compile fails). The
            same draws to float rounding; speed measured in docs/benchmarks_nn.md ("Fused step").
        eval_batch_size: chunk size (samples) for evaluating losses on probe sets and for L_n(w*).
        n_batches: points per chain of the error-estimate series (None: one per draw, within
            the engine's memory budget; docs/design.md §4).
        health_every: check chain health on the host every this many steps (the per-step
            check is accumulated on the device, so a failure is still located to its step).
        max_loss_increase: a chain whose minibatch loss exceeds L_n(w*) + this (in loss units)
            is declared divergent.
    """

    method: Method = "sgld"
    epsilon: float = 1e-3
    gamma: float = 100.0
    nbeta: float | None = None
    chains: int = 4
    draws: int = 200
    burn_in: int = 0
    steps_per_draw: int = 1
    batch_size: int | None = 64
    seed: int = 0
    chain_offset: int = 0
    rmsprop_alpha: float = 0.99
    rmsprop_delta: float = 0.1
    device: str = "cpu"
    master_dtype: torch.dtype = field(default=torch.float32)
    precision: Precision = "fp32"
    step: Step = "eager"
    eval_batch_size: int = 64
    n_batches: int | None = None
    health_every: int = 10
    max_loss_increase: float = 100.0
    options: Mapping[str, Any] = field(default_factory=dict)
    control_variate: bool = False

    def __post_init__(self) -> None:
        from .samplers import get

        method = get(self.method)
        _finite("epsilon", self.epsilon)
        if self.epsilon <= 0:
            raise ValueError(f"epsilon (step size) must be > 0, got {self.epsilon}")
        _finite("gamma", self.gamma)
        if self.gamma < 0:
            raise ValueError(f"gamma (localization) must be >= 0, got {self.gamma}")
        if self.nbeta is not None:
            _finite("nbeta", self.nbeta)
            if self.nbeta <= 0:
                raise ValueError(f"nbeta must be > 0, got {self.nbeta}")
        for name in ("chains", "draws", "steps_per_draw", "eval_batch_size", "health_every"):
            _positive_int(name, getattr(self, name))
        for name in ("burn_in", "chain_offset", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        if self.n_batches is not None:
            if isinstance(self.n_batches, bool) or not isinstance(self.n_batches, int) or self.n_batches < 2:
                raise ValueError(f"n_batches must be an integer >= 2 or null (one point per draw), got {self.n_batches!r}")
            if self.n_batches > self.draws:
                raise ValueError(f"n_batches ({self.n_batches}) exceeds draws ({self.draws}): a batch must hold a draw")
        _finite("rmsprop_alpha", self.rmsprop_alpha)
        if not 0.0 <= self.rmsprop_alpha < 1.0:
            raise ValueError(f"rmsprop_alpha must lie in [0, 1), got {self.rmsprop_alpha}")
        _finite("rmsprop_delta", self.rmsprop_delta)
        if self.rmsprop_delta <= 0:
            raise ValueError(f"rmsprop_delta must be > 0, got {self.rmsprop_delta}")
        _finite("max_loss_increase", self.max_loss_increase)
        if self.max_loss_increase <= 0:
            raise ValueError(f"max_loss_increase must be > 0, got {self.max_loss_increase}")
        if not isinstance(self.master_dtype, torch.dtype) or not self.master_dtype.is_floating_point:
            raise ValueError(f"master_dtype must be a floating torch.dtype, got {self.master_dtype!r}")
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.step, str) or self.step not in STEPS:
            raise ValueError(f"step must be one of {list(STEPS)}, got {self.step!r}")
        _representable(self, ("epsilon", "gamma", "nbeta", "rmsprop_delta", "max_loss_increase"))
        if not isinstance(self.options, Mapping):
            raise ValueError(f"options must be a mapping of hyperparameter names to numbers, got {self.options!r}")
        object.__setattr__(self, "options", dict(self.options))
        method.values(self)
        if self.step not in method.steps:
            raise ValueError(f"method {self.method!r} supports step {list(method.steps)}, got step={self.step!r}")
        if self.precision not in method.precisions:
            raise ValueError(f"method {self.method!r} supports precision {list(method.precisions)}, got {self.precision!r}")
        if method.check is not None:
            method.check(self)
        if not isinstance(self.control_variate, bool):
            raise ValueError(f"control_variate must be true or false, got {self.control_variate!r}")
        if self.control_variate and self.precision == "fp16":
            raise ValueError("control_variate does not support precision='fp16' (the gradient at w* has no loss scale)")
        from ..devices import check_device

        check_device(self.device)

    @property
    def total_steps(self) -> int:
        """burn_in + draws · steps_per_draw."""
        return self.burn_in + self.draws * self.steps_per_draw

    @property
    def compute_dtype(self) -> torch.dtype | None:
        """dtype of the forward/backward: bfloat16 / float16, or None for "fp32" (stored dtypes)."""
        return PRECISIONS[self.precision]

    def resolve_nbeta(self, n: int) -> float:
        """nβ for a training set of n samples: the configured value, else n / log n."""
        return float(self.nbeta) if self.nbeta is not None else default_nbeta(n)

    def to_dict(self) -> dict:
        """JSON-friendly dict (dtype as its name)."""
        d = asdict(self)
        d["master_dtype"] = str(self.master_dtype).removeprefix("torch.")
        return d


def _representable(cfg: "SamplerConfig", names: tuple[str, ...]) -> None:
    """Raise ValueError when a number overflows the master dtype (it would become inf in the sampler)."""
    top = torch.finfo(cfg.master_dtype).max
    name = str(cfg.master_dtype).removeprefix("torch.")
    for key in names:
        v = getattr(cfg, key)
        if v is not None and abs(v) > top:
            raise ValueError(f"{key}={v:g} overflows the master dtype {name} (largest {top:.3g})")


def _finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}")
