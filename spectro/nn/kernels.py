"""The hand-written SGLD / RMSProp-SGLD update for ``SamplerConfig.step`` "fused" and "compiled",
and the step's displacement norms for the divergence report.

The eager step of every method is its pure kernel in :mod:`spectro.nn.samplers`. For SGLD and
devinterp's RMSProp-SGLD the whole update after the gradient and the noise is also written out
here as one function, :func:`fused_update` (the kernels' operations in their order: bit-identical
to them when run eagerly): ``"fused"`` runs the hand-fused in-place variant :func:`fused_update_`
(fewer passes, no temporaries), ``"compiled"`` ``torch.compile(fused_update, dynamic=False)``
through :func:`compiled_update` (one compiled graph per device, dtype, block shape and method,
cached for the process; inductor's on-disk cache serves later processes). The three agree to
float rounding (``tests/test_nn_fused.py``); which one is fastest is measured in
docs/benchmarks_nn.md ("Fused step").
"""

from __future__ import annotations

import math
import threading
import time
import types
import warnings
from collections.abc import Callable

import torch

from .config import STEPS  # re-exported: the values of SamplerConfig.step

__all__ = ["step_terms", "STEPS", "fused_update", "fused_update_", "compiled_update", "compile_seconds"]


Scalar = float | torch.Tensor


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


def fused_update(
    W: torch.Tensor,
    G: torch.Tensor,
    v: torch.Tensor | None,
    noise: torch.Tensor,
    w_star: torch.Tensor,
    mask: torch.Tensor | None,
    eps: float,
    nbeta: float,
    gamma: float,
    alpha: float,
    delta: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One whole SGLD (``v is None``) or RMSProp-SGLD step after the gradient: ``(W_new, v_new)``.

    The step of :mod:`spectro.nn.samplers.sgld` / ``.rmsprop``, operation for operation (so, run
    eagerly, bit-identical to it): ``v_new = α·v + (1−α)·G²``, ``ε_i = ε/(√v_new + δ)`` (or ε),
    ``drift = nβ·G + γ·(W − w*)``, drift and noise times ``mask`` (if any),
    ``W_new = W − (ε_i/2)·drift + √ε_i·η``. Written out rather than calling those
    functions so that ``torch.compile`` traces it with ε as a symbolic float (no recompile per ε).
    """
    drift = G * nbeta + (W - w_star) * gamma
    eta = noise
    if mask is not None:
        drift = drift * mask
        eta = noise * mask
    if v is None:
        return W.add(drift, alpha=-0.5 * eps).add_(eta, alpha=math.sqrt(eps)), None
    v_new = v * alpha + G * G * (1.0 - alpha)
    eps_i = eps * (1.0 / (torch.sqrt(v_new) + delta))
    return W - (0.5 * eps_i) * drift + torch.sqrt(eps_i) * eta, v_new


def fused_update_(
    W: torch.Tensor,
    G: torch.Tensor,
    v: torch.Tensor | None,
    noise: torch.Tensor,
    w_star: torch.Tensor,
    mask: torch.Tensor | None,
    eps: float,
    nbeta: float,
    gamma: float,
    alpha: float,
    delta: float,
    out_W: torch.Tensor,
    out_v: torch.Tensor | None = None,
) -> None:
    """:func:`fused_update` written by hand into ``out_W`` (and ``out_v``): in-place passes over
    the outputs, one temporary (ε_i) for RMSProp-SGLD, none for SGLD. The same step to float
    rounding (``add_``/``addcmul_`` may contract a multiply-add). ``out_W`` must not overlap
    ``W``, ``G`` or ``noise``; ``out_v`` (required when ``v`` is given) must not overlap ``v``."""
    out = out_W
    torch.sub(W, w_star, out=out)
    out.mul_(gamma).add_(G, alpha=nbeta)  # drift = nβ·G + γ·(W − w*)
    if mask is not None:
        out.mul_(mask)
    if v is None:
        out.mul_(-0.5 * eps).add_(W)  # W − (ε/2)·drift
        if mask is None:
            out.add_(noise, alpha=math.sqrt(eps))
        else:
            out.addcmul_(noise, mask, value=math.sqrt(eps))
        return
    if out_v is None:
        raise ValueError("fused_update_: out_v is required for RMSProp-SGLD (v given)")
    torch.mul(v, alpha, out=out_v).addcmul_(G, G, value=1.0 - alpha)  # v ← α·v + (1−α)·g²
    eps_i = torch.sqrt(out_v).add_(delta).reciprocal_().mul_(eps)  # ε / (√v + δ)
    out.mul_(eps_i).mul_(-0.5).add_(W)  # W − (ε_i/2)·drift
    root = eps_i.sqrt_().mul_(noise)  # √ε_i·η
    if mask is not None:
        root.mul_(mask)
    out.add_(root)


# ---------------------------------------------------------------------- torch.compile, cached
_COMPILED: dict[tuple, Callable] = {}
_COMPILE_SECONDS: dict[tuple, float] = {}
_LOCK = threading.Lock()


def compile_seconds() -> dict[tuple, float]:
    """Wall time of the first call of every compiled graph of this process (tracing, compiling and
    one run; from inductor's on-disk cache when it holds the graph), keyed by
    (device type, dtype, block shape, RMSProp, masked)."""
    return dict(_COMPILE_SECONDS)


def _fresh_copy(fn: Callable, tag: str) -> Callable:
    """``fn`` with its own code object: dynamo caches compiled graphs on the code object, with at
    most ``recompile_limit`` (8) variants each, so one copy per key keeps every key compiled."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def compiled_update(
    W: torch.Tensor,
    G: torch.Tensor,
    v: torch.Tensor | None,
    noise: torch.Tensor,
    w_star: torch.Tensor,
    mask: torch.Tensor | None,
    eps: float,
    nbeta: float,
    gamma: float,
    alpha: float,
    delta: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`fused_update` through ``torch.compile(..., dynamic=False)``, compiled once per
    (device type, dtype, block shape, RMSProp, masked) and process and reused by every posterior
    (restrictions of one model with the same number of coordinates share a graph); ε, nβ, γ, α, δ
    are graph inputs, not constants. The first call of a key compiles (its wall time is kept,
    :func:`compile_seconds`). Where torch.compile fails (no C++ compiler, an unsupported Python or
    platform), one RuntimeWarning names the error and this key runs :func:`fused_update`
    uncompiled: the same draws to rounding, without the speed."""
    key = (W.device.type, W.dtype, tuple(W.shape), v is not None, mask is not None)
    args = (W, G, v, noise, w_star, mask, eps, nbeta, gamma, alpha, delta)
    fn = _COMPILED.get(key)
    if fn is None:
        with _LOCK:  # one thread compiles a key; the others wait for it
            fn = _COMPILED.get(key)
            if fn is None:
                t0 = time.perf_counter()
                try:
                    fn = torch.compile(_fresh_copy(fused_update, str(len(_COMPILED))), dynamic=False)
                    out = fn(*args)
                except Exception as e:  # noqa: BLE001 — every backend and platform fails in its own way
                    _compile_failed(e)
                    fn = fused_update
                    out = fn(*args)
                _COMPILE_SECONDS[key] = time.perf_counter() - t0
                _COMPILED[key] = fn
                return out
    if fn is fused_update:
        return fn(*args)
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 — a recompile (guard failure) that fails: fall back as above
        _compile_failed(e)
        _COMPILED[key] = fused_update
        return fused_update(*args)


def _compile_failed(e: BaseException) -> None:
    reason = " ".join(str(e).split())[:300]
    warnings.warn(f"step='compiled': torch.compile failed on this platform ({type(e).__name__}: {reason}); "
                  "running the uncompiled fused update instead (same draws, no speed-up); use step='eager' "
                  "or 'fused' to silence this", RuntimeWarning, stacklevel=3)
