"""Checks of what a run asks of the machine: a usable torch device, and memory it can have."""

from __future__ import annotations

import os

__all__ = ["check_device", "check_memory", "physical_memory"]


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
