"""Checks of what a run asks of the machine: a usable torch device, memory it can have, and
whether its CPU has the instructions a low compute precision needs to pay."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["check_device", "check_memory", "physical_memory", "cpu_isa", "cpu_bf16_fast", "cpu_fp16_fast"]

_ISA_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f")
_FP16_FLAGS = ("avx512_fp16", "amx_fp16", "asimdhp")  # x86 (Sapphire / Granite Rapids), Arm half-precision SIMD


def _cpu_flags(path: str | os.PathLike = "/proc/cpuinfo") -> set[str] | None:
    """The CPU feature flags of /proc/cpuinfo (x86 ``flags``, Arm ``Features``); None where unreadable."""
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return set(value.split())
    except OSError:
        pass
    return None


def cpu_isa() -> dict[str, bool]:
    """bf16 matmul hardware of this CPU from the /proc/cpuinfo flags: ``amx_bf16``, ``avx512_bf16``,
    ``avx512f`` → present (Linux; all False where the flags cannot be read)."""
    flags = _cpu_flags() or set()
    return {f: f in flags for f in _ISA_FLAGS}


def cpu_bf16_fast() -> bool | None:
    """Whether this CPU has bf16 matmul instructions (x86: ``amx_bf16`` or ``avx512_bf16``; Arm:
    ``bf16``); None where /proc/cpuinfo cannot be read (not Linux: unknown). Without them torch runs
    a bf16 matmul at a small fraction of the fp32 rate (measured: about 1 % on an AVX2-only AMD
    EPYC, docs/benchmarks_nn.md "bf16")."""
    flags = _cpu_flags()
    if flags is None:
        return None
    isa = cpu_isa()
    return isa["amx_bf16"] or isa["avx512_bf16"] or "bf16" in flags


def cpu_fp16_fast() -> bool | None:
    """Whether this CPU has fp16 arithmetic instructions (x86: ``avx512_fp16`` or ``amx_fp16``; Arm:
    ``asimdhp``); None where /proc/cpuinfo cannot be read. Without them torch runs an fp16 matmul
    through a scalar fallback (measured: 1 GFLOP/s against 184 in fp32 on an AMD EPYC with
    AVX-512, docs/benchmarks_nn.md). With them fp16 was not measured."""
    flags = _cpu_flags()
    if flags is None:
        return None
    return any(f in flags for f in _FP16_FLAGS)


def check_device(device: str) -> None:
    """Raise ValueError unless ``device`` names a torch device that is present (cpu, cuda[:N], mps, ...)."""
    import torch

    if not isinstance(device, str) or not device:
        raise ValueError(f"device must be a non-empty string such as 'cpu' or 'cuda', got {device!r}")
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if d.type == "cpu":
        return
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} is not available: torch sees no CUDA GPU (use 'cpu')")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} is not available: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
        return
    if d.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r} is not available on this machine (use 'cpu')")
        return
    try:
        torch.empty(1, device=d)
    except Exception:  # noqa: BLE001 - each backend fails in its own way
        raise ValueError(f"device {device!r} is not available on this machine (use 'cpu')") from None


def physical_memory() -> int | None:
    """Bytes of physical memory (None where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(n_bytes: float, what: str) -> None:
    """Raise ValueError when ``what`` needs more than this machine's physical memory."""
    total = physical_memory()
    if total is not None and n_bytes > total:
        raise ValueError(f"{what} needs about {_size(n_bytes)} of memory; this machine has {_size(total)}")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"  # pragma: no cover
