"""The chains' bookkeeping: seeds, the loop state carried between SGLD steps, draws handed to
callbacks, the sampling result (loss trace, LLC with its Monte Carlo error) and the errors a
run can stop with. Used by :class:`~spectro.nn.posterior.LocalizedPosterior`.

Randomness: chain c (global index ``config.chain_offset + c``) owns two ``torch.Generator`` s
seeded by :func:`spectro.engine.seeding.chain_seed` from (seed, c): one for its minibatch permutations, one for its
Langevin noise, so a chain's trajectory does not depend on how many chains run beside it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..engine.diagnostics import ess_bulk, ess_tail, mean_error, rhat_rank
from .config import SamplerConfig

if TYPE_CHECKING:
    from .posterior import LocalizedPosterior

__all__ = ["DivergenceError", "LossShapeError", "NonFiniteLossError", "DataMismatchError",
           "Draw", "SamplingResult"]


class DivergenceError(RuntimeError):
    """A chain blew up. Attributes: ``chain`` (global index), ``step``, ``loss``, ``norms``."""

    def __init__(self, chain: int, step: int, loss: float, init_loss: float, norms: dict[str, float], culprit: str):
        self.chain, self.step, self.loss, self.norms, self.culprit = chain, step, loss, norms, culprit
        terms = ", ".join(f"{k} {v:.3g}" for k, v in norms.items())
        super().__init__(
            f"chain {chain} diverged at step {step}: minibatch loss {loss:.6g} (L_n(w*) = {init_loss:.6g}); "
            f"step displacement norms: {terms}; the {culprit} term blew up. "
            f"Reduce epsilon, increase gamma or reduce nbeta."
        )

    @classmethod
    def elsewhere(cls) -> "DivergenceError":
        """The error raised by the other processes of a distributed run when one process's chain diverged."""
        err = cls.__new__(cls)
        err.chain = err.step = err.loss = err.culprit = None
        err.norms = {}
        RuntimeError.__init__(err, "a chain of another process diverged (that process reports which chain, at which "
                                   "step and why). Reduce epsilon, increase gamma or reduce nbeta.")
        return err


class LossShapeError(ValueError):
    """``per_sample_loss`` returned a tensor that is not [batch] or [batch, tokens]."""


class NonFiniteLossError(ValueError):
    """The loss at w* (before any sampling step) is NaN or infinite: the model or the data are at fault."""


class DataMismatchError(TypeError, ValueError):
    """The model cannot evaluate the data (dtype, device, shape or value range do not fit); raised
    at the first evaluation, at w*. A ``ValueError`` (a user error) and, for older callers, a ``TypeError``."""


@dataclass(frozen=True)
class Draw:
    """One draw of all chains (handed to ``on_draw``; valid only during the callback).

    Attributes:
        index: draw number, 0 … draws−1.
        step: SGLD steps taken so far (including burn-in).
        weights: master weights of the free coordinates, [C, D] (do not modify).
        loss: minibatch loss of each chain at the step that produced this draw, [C]
            (evaluated at the weights *before* that step's update, as devinterp records it).
        posterior: the sampler, for evaluating losses at ``weights``.
    """

    index: int
    step: int
    weights: torch.Tensor
    loss: torch.Tensor
    posterior: "LocalizedPosterior"

    def params(self) -> dict[str, torch.Tensor]:
        """Free parameters stacked over chains: name → [C, *shape] views of ``weights``."""
        return self.posterior.unflatten(self.weights)


@dataclass
class SamplingResult:
    """What a run leaves behind besides the callback's statistics.

    ``llc = nβ·(E[L_m] − L_n(w*))`` with E over all chains' recorded minibatch losses
    (unbiased for E[L_n] since minibatches are uniform), ``llc_stderr`` its Monte Carlo error
    (Geyer ESS on each chain's trace) with ``llc_dof`` t degrees of freedom and ``llc_ess``,
    ``llc_rhat`` rank-normalised split R-hat of the trace.
    """

    loss_trace: np.ndarray  # [C, draws]
    init_loss: float
    nbeta: float
    llc: float
    llc_stderr: float
    llc_per_chain: np.ndarray  # [C]
    llc_rhat: float
    final_weights: torch.Tensor  # [C, D]
    config: SamplerConfig
    restriction: str
    n_free: int
    execution: dict = field(default_factory=dict)  # shared_batches, chain_mode, workers, memo hits
    llc_dof: float = float("inf")
    llc_ess: float = float("nan")
    llc_ess_bulk: float = float("nan")
    llc_ess_tail: float = float("nan")

    def with_trace(self, loss_trace: np.ndarray, config: SamplerConfig) -> "SamplingResult":
        """This result with the loss trace (and LLC statistics) of all chains, e.g. gathered from
        the processes of a distributed run; ``final_weights`` stay this process's chains."""
        stats = _llc_statistics(loss_trace, self.init_loss, self.nbeta, config.n_batches)
        return dataclasses.replace(self, loss_trace=loss_trace, config=config, **stats)

    def summary(self) -> dict:
        """JSON-friendly summary (no arrays larger than [C])."""
        return {
            "llc": self.llc,
            "llc_stderr": self.llc_stderr,
            "llc_rhat": self.llc_rhat,
            "llc_dof": self.llc_dof,
            "llc_ess": self.llc_ess,
            "llc_ess_bulk": self.llc_ess_bulk,
            "llc_ess_tail": self.llc_ess_tail,
            "llc_per_chain": self.llc_per_chain.tolist(),
            "init_loss": self.init_loss,
            "nbeta": self.nbeta,
            "restriction": self.restriction,
            "n_free": self.n_free,
            "sampler": self.config.to_dict(),
            "execution": dict(self.execution),
        }


@dataclass
class _LoopState:
    """Everything the sampling loop carries from one step to the next."""

    step: int  # steps completed
    kernel: Any  # the method's state (a NamedTuple, ``kernel.w`` the weights [C, D]; spectro.nn.samplers)
    perm: torch.Tensor | None  # current minibatch permutation(s)
    pos: int  # position in the permutation
    first_bad: torch.Tensor  # [C]
    bad_info: torch.Tensor  # [C, 4]
    noise_gens: list[torch.Generator]
    data_gens: list[torch.Generator]
    init_loss: float = float("nan")  # L_n(w*), the reference of the health threshold
    loss_scale: torch.Tensor | None = None  # [C] fp16 loss scales (None in fp32/bf16)
    scale_streak: torch.Tensor | None = None  # [C] finite steps since each scale last changed

    @property
    def W(self) -> torch.Tensor:
        """The chains' master weights [C, D]."""
        return self.kernel.w

    @W.setter
    def W(self, value: torch.Tensor) -> None:
        self.kernel = self.kernel._replace(w=value)

    @property
    def v(self) -> torch.Tensor | None:
        """RMSProp's running mean of g² [C, D] (None for methods without one)."""
        return getattr(self.kernel, "v", None)

    @v.setter
    def v(self, value: torch.Tensor) -> None:
        self.kernel = self.kernel._replace(v=value)

    def snapshot(self, posterior: "LocalizedPosterior") -> dict:
        cpu = lambda t: t.detach().to("cpu", copy=True) if isinstance(t, torch.Tensor) else t  # noqa: E731
        kernel = {k: cpu(x) for k, x in self.kernel._asdict().items()}
        return {
            "format": "spectro.sgld_state/1",
            "fingerprint": posterior._state_fingerprint(),
            "step": self.step,
            "W": kernel.pop("w"), "v": kernel.pop("v", None), "kernel": kernel, "perm": cpu(self.perm), "pos": self.pos,
            "first_bad": cpu(self.first_bad), "bad_info": cpu(self.bad_info),
            "noise_gens": [g.get_state() for g in self.noise_gens],
            "data_gens": [g.get_state() for g in self.data_gens],
            "loss_scale": cpu(self.loss_scale), "scale_streak": cpu(self.scale_streak),
        }

    def restore(self, snap: dict, posterior: "LocalizedPosterior") -> None:
        if not isinstance(snap, dict) or snap.get("format") != "spectro.sgld_state/1":
            raise ValueError("not a sampler snapshot (_LoopState.snapshot())")
        want = posterior._state_fingerprint()
        if snap["fingerprint"] != want:
            diff = sorted(k for k in want if snap["fingerprint"].get(k) != want[k])
            raise ValueError(f"sampler snapshot belongs to a different run (differs in: {', '.join(diff)})")
        dev = posterior.device
        on = lambda t: t.to(dev) if isinstance(t, torch.Tensor) else t  # noqa: E731
        self.step, self.pos = int(snap["step"]), int(snap["pos"])
        fields = {"w": snap["W"], **({"v": snap["v"]} if snap["v"] is not None else {}), **snap.get("kernel", {})}
        if "t" in self.kernel._fields and "t" not in fields:  # snapshots from before the method registry
            fields["t"] = self.step
        self.kernel = type(self.kernel)(**{k: on(x) for k, x in fields.items()})
        self.perm = on(snap["perm"])
        self.first_bad, self.bad_info = on(snap["first_bad"]), on(snap["bad_info"])
        if snap.get("loss_scale") is not None:  # fp16 runs; snapshots from before loss scaling start afresh
            self.loss_scale, self.scale_streak = on(snap["loss_scale"]), on(snap["scale_streak"])
        if len(snap["noise_gens"]) != len(self.noise_gens) or len(snap["data_gens"]) != len(self.data_gens):
            raise ValueError("sampler snapshot has a different number of random streams")
        for g, st in zip(self.noise_gens + self.data_gens, snap["noise_gens"] + snap["data_gens"]):
            g.set_state(st)


def _llc_statistics(trace: np.ndarray, init_loss: float, nbeta: float, n_batches: int | None = None) -> dict:
    """λ̂ = nβ·(mean loss − L_n(w*)) with its Monte Carlo stderr (Geyer ESS on each chain's trace,
    the engine's :class:`~spectro.engine.MeanError`), t degrees of freedom, per-chain λ̂ and
    rank-normalised split R-hat. ``n_batches`` is accepted for compatibility and ignored: the
    trace is stored per step, so the error uses every step."""
    err = mean_error(trace[:, :, None])
    long_enough = trace.shape[1] >= 4
    return {
        "llc": float(nbeta * (trace.mean() - init_loss)),
        "llc_stderr": float(nbeta * err.se[0]),
        "llc_dof": float(err.dof[0]),
        "llc_ess": float(err.ess[0]),
        "llc_per_chain": nbeta * (trace.mean(axis=1) - init_loss),
        "llc_rhat": float(rhat_rank(trace[:, :, None])[0]) if long_enough else float("nan"),
        "llc_ess_bulk": float(ess_bulk(trace[:, :, None])[0]) if long_enough else float("nan"),
        "llc_ess_tail": float(ess_tail(trace[:, :, None])[0]) if long_enough else float("nan"),
    }
