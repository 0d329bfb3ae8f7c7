"""The one interface every sampled system implements (docs/design.md §3).

A *system* is a Boltzmann distribution sampled by C independent chains: the Ising lattice
(spins, sweeps), the localized tempered posterior of a network (weights, SGLD steps), or a
system of your own. It exposes

* ``observables`` φ [m] and ``fields`` ψ [k] (names of the rows and columns of χ) and the
  ``scale`` of the fluctuation–dissipation relation, χ = scale·Cov(φ, ψ) (β for the Ising model,
  −1 for a network, docs/design.md §2);
* ``advance(steps)`` — move every chain, record nothing (burn-in);
* ``draw(n, thin)`` — the next n draws, each after ``thin`` steps, as φ [n, C, m] and ψ [n, C, k];
* ``chain_block(start, stop)`` — the same system restricted to global chains [start, stop).
  Chain c's random stream must depend only on (seed, c), so a block reproduces those chains of
  the full run exactly (this is what lets :func:`~spectro.engine.driver.measure` split chains
  over processes and merge them bit for bit);
* ``state_dict()`` / ``load_state_dict()`` — everything needed to continue identically;
  ``fingerprint()`` — the settings a saved state must agree with;
* ``running()`` — a context held while sampling (thread pools, caches); ``finish()`` — called
  once after the last draw (a final health check); ``summary(gather)`` —
  JSON-friendly facts for the result's ``meta`` after sampling (``gather`` turns this process's
  per-chain rows into all chains' rows in a distributed run); ``axes()`` — typed coordinates of
  χ's rows and columns (:class:`~spectro.engine.coords.Axis`); ``estimator()`` — the typed
  record of system and sampler saved with the result.

The driver owns everything else: run length, accumulator sizing, progress bar, checkpoints,
torchrun split and merge, divergence stops, timing. :class:`SystemBase` gives the optional
members their defaults, so a new system is a class with ``advance``, ``draw``, ``chain_block``
and its state (see tests/test_third_system.py for one in under 100 lines).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ContextManager, Protocol, runtime_checkable

import torch

from .coords import Axis, EstimatorInfo

__all__ = ["System", "SystemBase", "Gather"]

Gather = Callable[[torch.Tensor], torch.Tensor]
"""``gather(rows)``: this process's per-chain rows [C_local, ...] → all chains' rows [C, ...]."""


@runtime_checkable
class System(Protocol):
    n_chains: int
    scale: float
    observables: list[str]
    fields: list[str]
    device: torch.device | str
    unit: str  # what one step is called in progress bars ("sweep", "step")

    def advance(self, steps: int) -> None: ...

    def draw(self, n: int, thin: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def chain_block(self, start: int, stop: int) -> "System": ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def fingerprint(self) -> dict[str, Any]: ...

    def running(self) -> ContextManager[None]: ...

    def finish(self) -> None: ...

    def summary(self, gather: Gather) -> dict[str, Any]: ...

    def axes(self) -> tuple[Axis, Axis]: ...

    def estimator(self) -> EstimatorInfo: ...


class SystemBase:
    """Defaults for the optional members of :class:`System`."""

    device: torch.device | str = "cpu"
    unit: str = "step"
    name: str = "system"

    def running(self) -> ContextManager[None]:
        return contextlib.nullcontext()

    def finish(self) -> None:
        """Called once after the last draw, inside :meth:`running` (e.g. a final health check)."""

    def summary(self, gather: Gather) -> dict[str, Any]:
        return {}

    def fingerprint(self) -> dict[str, Any]:
        return {"n_chains": self.n_chains, "observables": list(self.observables), "fields": list(self.fields)}

    def axes(self) -> tuple[Axis, Axis]:
        """Typed coordinates of χ's rows and columns (default: the names only)."""
        return Axis.from_labels("observable", self.observables), Axis.from_labels("field", self.fields)

    def estimator(self) -> EstimatorInfo:
        """What was sampled and how, saved with the result (the driver adds the run settings)."""
        return EstimatorInfo(system=type(self).__name__)
