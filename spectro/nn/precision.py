"""Checks of a compute precision against the model and the machine (docs/design.md §2, "Precision").

The update itself always runs on master weights in ``config.master_dtype``; these checks refuse
a model stored in a dtype that contradicts ``config.precision``, refuse fp16 where this CPU's
torch cannot run it, warn (once per process) when bf16 or fp16 is asked of a CPU without such
instructions, and warn when the step is too small for the master dtype to register.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..devices import cpu_bf16_fast, cpu_fp16_fast
from .config import SamplerConfig

__all__ = ["check_precision", "lost_update_fraction", "warn_lost_updates", "LOSS_SCALE_INIT", "LOSS_SCALE_GROWTH_INTERVAL",
           "LOSS_SCALE_MIN", "grow_loss_scales"]

# fp16 loss scaling (docs/design.md §2, "Precision"): torch.amp.GradScaler's defaults, one scale per chain.
LOSS_SCALE_INIT = 2.0**16  # first scale of every chain
LOSS_SCALE_GROWTH_INTERVAL = 2000  # finite steps in a row after which a chain's scale doubles
LOSS_SCALE_MIN = 2.0**-24  # backoff stops here (a gradient that still overflows is reported as divergence)

_LOW = (torch.bfloat16, torch.float16)
_BF16_WARNED = False  # the slow-bf16-CPU warning was given in this process
_FP16_WARNED = False  # likewise for fp16


def check_precision(model: nn.Module, config: SamplerConfig, stacklevel: int = 3) -> None:
    """Raise ValueError when the model's stored dtype contradicts ``config.precision``, or fp16
    is requested on a CPU where torch cannot run an fp16 matmul and its backward. Warn (once per
    process: a job builds one posterior per restriction) when bf16 or fp16 is requested on a CPU
    without bf16 / fp16 instructions (/proc/cpuinfo), where it is slower than fp32 (``stacklevel``:
    the frame the warning names, counted from this function)."""
    low = config.compute_dtype
    stored = {t.dtype for t in (*model.parameters(), *model.buffers()) if t.dtype in _LOW}
    if stored - {low}:
        names = ", ".join(sorted(str(d).removeprefix("torch.") for d in stored))
        raise ValueError(
            f"the model is stored in {names} but precision={config.precision!r}: pass "
            f"precision={'bf16' if torch.bfloat16 in stored else 'fp16'!r} (forward in the stored dtype, update on "
            f"{str(config.master_dtype).removeprefix('torch.')} masters), or cast the model to float32 first"
        )
    if low == torch.float16 and torch.device(config.device).type == "cpu" and not _cpu_runs_fp16():
        raise ValueError("precision='fp16': torch cannot run an fp16 matmul on this CPU; use precision='bf16' or 'fp32'")
    global _BF16_WARNED, _FP16_WARNED
    if low == torch.float16 and torch.device(config.device).type == "cpu" and not _FP16_WARNED and cpu_fp16_fast() is False:
        _FP16_WARNED = True
        warnings.warn("precision='fp16': this CPU has no fp16 arithmetic instructions (no avx512_fp16, amx_fp16 or "
                      "asimdhp in /proc/cpuinfo), so torch runs fp16 matmuls through a slow fallback, far slower than "
                      "fp32; use precision='fp32' (or 'bf16' where the CPU has bf16 instructions) on this machine",
                      UserWarning, stacklevel=stacklevel)
    if low == torch.bfloat16 and torch.device(config.device).type == "cpu" and not _BF16_WARNED and cpu_bf16_fast() is False:
        _BF16_WARNED = True
        warnings.warn("precision='bf16': this CPU has no bf16 matmul instructions (no amx_bf16 or avx512_bf16 in "
                      "/proc/cpuinfo), so bf16 matmuls run slower than fp32 here and the precision buys no speed; "
                      "use precision='fp32' on this machine", UserWarning, stacklevel=stacklevel)


def _cpu_runs_fp16() -> bool:
    """Whether a tiny fp16 matmul and its backward run on this CPU (torch builds differ)."""
    try:
        a = torch.ones(4, 4, dtype=torch.float16, requires_grad=True)
        (a @ a).float().sum().backward()
        return bool(torch.isfinite(a.grad.float()).all())
    except (RuntimeError, NotImplementedError):
        return False


def lost_update_fraction(w: torch.Tensor, step: float, dtype: torch.dtype) -> float:
    """Fraction of the coordinates of ``w`` for which an update of size ``step`` applied in place
    in ``dtype`` is rounded away: ``step < ulp(w)/2`` in ``dtype`` (round-to-nearest)."""
    x = w.detach().to(dtype)
    ulp = (torch.nextafter(x.abs(), torch.tensor(float("inf"), dtype=dtype)) - x.abs()).double()
    return float((step < 0.5 * ulp).double().mean()) if w.numel() else 0.0


def warn_lost_updates(w_free: torch.Tensor, config: SamplerConfig) -> None:
    """Warn when the noise step √ε is below half an ulp of the master weights for ≥ 1 % of the free
    coordinates: those coordinates never move. Only the master dtype matters: the update is
    applied there whatever the compute precision (docs/design.md §2, "Precision")."""
    frac = lost_update_fraction(w_free, config.epsilon**0.5, config.master_dtype)
    if frac >= 0.01:
        warnings.warn(
            f"epsilon={config.epsilon:g}: the noise step sqrt(epsilon)={config.epsilon ** 0.5:.3g} is below half an ulp "
            f"of {str(config.master_dtype).removeprefix('torch.')} for {frac:.1%} of the free weights, which will not "
            "move; raise epsilon or use master_dtype=float64",
            stacklevel=3,
        )


def grow_loss_scales(scale: torch.Tensor, streak: torch.Tensor, overflowed: torch.Tensor) -> None:
    """Update fp16 loss scales after a step, in place and without a host sync: a chain whose
    first backward overflowed (its scale was already halved and the gradient recomputed) restarts
    its streak; a chain with ``LOSS_SCALE_GROWTH_INTERVAL`` finite steps in a row doubles its scale
    (torch.amp.GradScaler's rule, per chain)."""
    streak.copy_(torch.where(overflowed, torch.zeros_like(streak), streak + 1))
    grow = streak >= LOSS_SCALE_GROWTH_INTERVAL
    scale.copy_(torch.where(grow, scale * 2, scale))
    streak.copy_(torch.where(grow, torch.zeros_like(streak), streak))
