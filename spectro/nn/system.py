"""The localized tempered posterior of a network as a :class:`~spectro.engine.system.System`.

Weights are the configuration, one step is one step of the configured method (:mod:`spectro.nn.samplers`) of every chain
(:class:`~spectro.nn.posterior.LocalizedPosterior`), φ and ψ are loss functionals of the
per-token probe losses (:mod:`spectro.nn.observables`, :mod:`spectro.nn.fields`) evaluated at
each draw, and the scale is −1: χ = −Cov(φ, ψ) (docs/design.md §2). Sampled by
:func:`spectro.engine.measure`, which gives library users checkpoints, resume and torchrun.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ContextManager

import numpy as np
import torch
from torch import nn

from ..engine.coords import Axis, EstimatorInfo
from ..engine.driver import RunConfig
from ..engine.system import Gather, SystemBase
from .config import SamplerConfig
from .observables import LossFunctional, concat
from .posterior import Batch, LocalizedPosterior, LossFunction, SamplingResult, _LoopState
from .probes import ProbeSet
from .restrictions import Restriction

__all__ = ["PosteriorSystem", "run_config"]


def run_config(config: SamplerConfig) -> RunConfig:
    """The driver's run length from a sampler config (burn-in, draws, steps per draw, series
    points). One draw per block: the probe forward dominates a draw, and per-draw updates keep
    results bit-identical to :meth:`LocalizedPosterior.sample` with a callback."""
    return RunConfig(draws=config.draws, thin=config.steps_per_draw, burn_in=config.burn_in,
                     batches=config.n_batches, block=1)


class PosteriorSystem(SystemBase):
    """φ = ``observables``, ψ = ``fields`` on ``probe`` under the posterior of ``model``.

    Arguments are those of :class:`LocalizedPosterior` (``posterior_options``: ``chain_mode``,
    ``workers``, ``memoize_frozen``, ``init_loss``) plus the probe and the functionals.
    Observables and fields are evaluated at w* on construction, which checks every selection and
    shape before any sampling and fixes the names (``names``: (observable names, field names,
    probe tokens) when already known, skipping that forward). ``record``: keep every draw's
    probe losses [C, draws, N, T] (float32, part of the state) for export (:meth:`recorded`).
    """

    unit = "step"
    scale = -1.0

    def __init__(
        self,
        model: nn.Module,
        per_sample_loss: LossFunction,
        train_data: Batch,
        config: SamplerConfig,
        probe: ProbeSet,
        observables: Sequence[LossFunctional],
        fields: Sequence[LossFunctional],
        *,
        restriction: Restriction | None = None,
        model_input: Callable[[Batch], Any] | None = None,
        sample_weights: torch.Tensor | None = None,
        shared_batches: bool = False,
        posterior_options: Mapping[str, Any] | None = None,
        name: str | None = None,
        names: tuple[list[str], list[str], int] | None = None,
        record: bool = False,
    ):
        if not observables:
            raise ValueError("need at least one observable")
        if not fields:
            raise ValueError("need at least one field generator")
        self._args = (model, per_sample_loss, train_data, probe, tuple(observables), tuple(fields))
        self._kwargs = dict(restriction=restriction, model_input=model_input, sample_weights=sample_weights,
                            shared_batches=shared_batches, posterior_options=dict(posterior_options or {}))
        self.posterior = LocalizedPosterior(model, per_sample_loss, train_data, config, restriction,
                                            model_input=model_input, sample_weights=sample_weights,
                                            shared_batches=shared_batches, **dict(posterior_options or {}))
        self.config, self.probe = config, probe
        self.observable_functionals, self.field_functionals = tuple(observables), tuple(fields)
        self.observables, self.fields, self.n_tokens = names if names is not None else self._names_at_w_star()
        self.n_chains, self.device = config.chains, config.device
        self.name = name or self.posterior.restriction.name
        self._global = config  # the whole run's settings (a chain block keeps them for its summary)
        self._state: _LoopState | None = None
        self._trace: list[torch.Tensor] = []  # minibatch loss [C] at each draw (the LLC's series)
        self.record = bool(record)
        self._record: list[np.ndarray] = []  # probe losses [C, N, T] per draw, when recording

    def _names_at_w_star(self) -> tuple[list[str], list[str], int]:
        at_star = self.probe.evaluate_at_w_star(self.posterior)
        T = at_star.shape[-1]
        obs = [n for f in self.observable_functionals for n in f.names(self.probe, T)]
        fld = [n for f in self.field_functionals for n in f.names(self.probe, T)]
        m = concat(self.observable_functionals, at_star, self.probe).shape[1]
        k = concat(self.field_functionals, at_star, self.probe).shape[1]
        if (m, k) != (len(obs), len(fld)):
            raise ValueError(f"functionals produced {m} observables / {k} fields but {len(obs)} / {len(fld)} names")
        return obs, fld, T

    @property
    def state(self) -> _LoopState:
        if self._state is None:
            self._state = self.posterior.start()
        return self._state

    # ------------------------------------------------------------------ System
    def chain_block(self, start: int, stop: int) -> "PosteriorSystem":
        local = replace(self.config, chains=stop - start, chain_offset=self.config.chain_offset + start)
        block = PosteriorSystem(*self._args[:3], local, *self._args[3:], **self._kwargs, name=self.name,
                                names=(self.observables, self.fields, self.n_tokens), record=self.record)
        block._global = self._global
        return block

    def running(self) -> ContextManager[None]:
        return self.posterior.running()

    def finish(self) -> None:
        self.posterior.check(self.state)  # otherwise health is read every health_every steps only

    def advance(self, steps: int) -> None:
        self.posterior.advance(self.state, steps)

    def draw(self, n: int, thin: int) -> tuple[torch.Tensor, torch.Tensor]:
        phi, psi = [], []
        for _ in range(n):
            self._trace.append(self.posterior.advance(self.state, thin))
            losses = self.probe.evaluate(self.posterior, self.state.W)
            if self.record:
                self._record.append(losses.detach().float().cpu().numpy())
            phi.append(concat(self.observable_functionals, losses, self.probe))
            psi.append(concat(self.field_functionals, losses, self.probe))
        return torch.stack(phi), torch.stack(psi)

    def state_dict(self) -> dict[str, Any]:
        trace = torch.stack(self._trace, dim=1).cpu() if self._trace else torch.zeros(self.n_chains, 0)
        record = np.stack(self._record, axis=1) if self._record else None
        return {"sampler": self.state.snapshot(self.posterior), "trace": trace, "record": record}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state.restore(state["sampler"], self.posterior)
        self._trace = [t.to(self.device) for t in state["trace"].unbind(dim=1)]
        record = state.get("record")
        self._record = [] if record is None else list(np.moveaxis(np.asarray(record), 1, 0))

    def fingerprint(self) -> dict[str, Any]:
        return {"system": "nn", "state": self.posterior._state_fingerprint(), "observables": self.observables,
                "fields": self.fields}

    def result(self, gather: Gather) -> SamplingResult:
        """The sampling result over all chains (loss trace, LLC with its error; ``final_weights``
        are this process's chains)."""
        local = torch.stack(self._trace, dim=1) if self._trace else torch.zeros(self.n_chains, 0, device=self.device)
        trace = gather(local.to(self.config.master_dtype)).double().cpu().numpy()
        res = self.posterior._result(local, self.state.init_loss, self.state.W)
        return res.with_trace(np.ascontiguousarray(trace), self._global)

    def recorded(self, gather: Gather) -> np.ndarray:
        """Every draw's probe losses over all chains, float32 [C, draws, N, T] (``record=True``)."""
        if not self.record:
            raise ValueError("this system was built without record=True")
        local = torch.from_numpy(np.stack(self._record, axis=1))
        return gather(local).cpu().numpy()

    def summary(self, gather: Gather) -> dict[str, Any]:
        res = self.result(gather)
        return {"system": "nn", "sampling": res.summary(), "loss_trace": res.loss_trace.tolist(),
                "estimator": "-Cov(phi, psi)"}

    def axes(self) -> tuple[Axis, Axis]:
        """Typed coordinates (kind, group, sample, position) when every functional gives
        ``records`` (:func:`spectro.nn.observables.coordinate`), else names only."""
        def axis(name: str, labels: list[str], functionals) -> Axis:
            if not all(hasattr(f, "records") for f in functionals):
                return Axis.from_labels(name, labels)
            records = [r for f in functionals for r in f.records(self.probe, self.n_tokens)]
            return Axis.from_records(name, labels, records)
        return (axis("observable", self.observables, self.observable_functionals),
                axis("field", self.fields, self.field_functionals))

    def estimator(self) -> EstimatorInfo:
        post = self.posterior
        return EstimatorInfo(system="nn", convention="chi = -Cov(phi, psi), psi = L(q') - L(q)",
                             sampler=self._global.to_dict(),
                             run={"restriction": post.restriction.name, "n_free": post.n_free, "nbeta": post.nbeta,
                                  "n_train": post.n, "shared_batches": post.shared_batches,
                                  **({"method_bias": post.method.biased} if post.method.biased else {})})
