"""The localized tempered posterior of a neural network, sampled by C chains in one batch.

Target (DESIGN.md §2)::

    p(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²),   L_n(w) = Σ_i ρ_i·ℓ_i(w)   (ρ_i = 1/n by default)

where ℓ_i is the per-sample loss (the mean over tokens when ``per_sample_loss`` returns
``[batch, tokens]``) and w* the trained weights. Only the coordinates freed by a
:class:`~spectro.nn.restrictions.Restriction` move; all other weights are constants at w*.

How chains are batched: the free coordinates of all free parameters are concatenated into one
flat vector, and the C chains' vectors are stacked into master weights ``W`` of shape [C, D]
(dtype ``config.master_dtype``). A chain's model is ``torch.func.functional_call`` on the flat
vector split back into parameter views (cast to each parameter's dtype, so bf16/fp16 models
run their forward in their own precision while the update is done on fp32 masters);
``torch.func.vmap`` of the forward plus one autograd backward with respect to the stacked
weights then gives all C losses and gradients from one batched forward/backward. Frozen parameters and buffers are shared, unbatched constants, and no
gradient is taken for them.

Randomness: chain c (global index ``config.chain_offset + c``) owns two ``torch.Generator`` s
seeded from (seed, c): one for its minibatch permutations, one for its Langevin noise. A chain's
trajectory therefore does not depend on how many chains run beside it (tested).

Minibatches: each chain walks through its own random permutation of the n training samples in
steps of m = ``batch_size`` (dropping the last partial batch of each epoch, like a shuffled
``DataLoader(drop_last=True)``); ``batch_size=None`` uses all n samples in order every step.
With sample weights ρ the minibatch loss is ``mean_b(n·ρ_b·ℓ_b)``, unbiased for L_n.

Evaluation mode: the model is run in ``eval()`` mode throughout (sampling and observables), so
L_n is deterministic (no dropout). devinterp samples in ``train()`` mode.

Chain health: after each step a device-side flag marks a chain whose minibatch loss is
non-finite or exceeds L_n(w*) + ``max_loss_increase``, or whose weights or step terms are
non-finite, recording the first bad step and the norms of the gradient, localization and
noise displacements. The flag is read on the host every ``health_every`` steps (no per-step
synchronisation) and a :class:`DivergenceError` is raised for the earliest failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from ..engine.diagnostics import batch_means_stderr, split_rhat
from .config import SamplerConfig
from .kernels import langevin_step, rmsprop_preconditioner, rmsprop_update, sgld_drift, step_terms
from .restrictions import Restriction

__all__ = [
    "Batch",
    "PerSampleLoss",
    "DivergenceError",
    "LossShapeError",
    "Draw",
    "SamplingResult",
    "LocalizedPosterior",
    "chain_seed",
]

Batch = torch.Tensor | tuple[torch.Tensor, ...]
"""A dataset or minibatch: one tensor or a tuple of tensors sharing the leading (sample) axis."""

PerSampleLoss = Callable[[Any, Batch], torch.Tensor]
"""``per_sample_loss(model_output, batch) -> [batch]`` or ``[batch, tokens]`` (unreduced)."""

_NOISE_STREAM, _DATA_STREAM = 1, 2
_TERM_NAMES = ("gradient", "localization", "noise")


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


class LossShapeError(ValueError):
    """``per_sample_loss`` returned a tensor that is not [batch] or [batch, tokens]."""


def chain_seed(seed: int, chain: int, stream: int) -> int:
    """A 63-bit seed for (base seed, global chain index, stream) via NumPy's SeedSequence."""
    state = np.random.SeedSequence([seed, chain, stream]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def _batch_size_of(data: Batch) -> int:
    return (data[0] if isinstance(data, tuple) else data).shape[0]


def _index(data: Batch, idx: torch.Tensor) -> Batch:
    if isinstance(data, tuple):
        return tuple(t[idx] for t in data)
    return data[idx]


def _slice(data: Batch, sl: slice) -> Batch:
    if isinstance(data, tuple):
        return tuple(t[sl] for t in data)
    return data[sl]


def _default_model_input(batch: Batch) -> Any:
    return batch[0] if isinstance(batch, tuple) else batch


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


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
    (unbiased for E[L_n] since minibatches are uniform), ``llc_stderr`` from batch means of the
    loss trace (C·B batches), ``llc_rhat`` split R-hat of those batch means.
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

    def summary(self) -> dict:
        """JSON-friendly summary (no arrays larger than [C])."""
        return {
            "llc": self.llc,
            "llc_stderr": self.llc_stderr,
            "llc_rhat": self.llc_rhat,
            "llc_per_chain": self.llc_per_chain.tolist(),
            "init_loss": self.init_loss,
            "nbeta": self.nbeta,
            "restriction": self.restriction,
            "n_free": self.n_free,
            "sampler": self.config.to_dict(),
        }


class LocalizedPosterior:
    """SGLD / RMSProp-SGLD on ``p(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²)`` with C batched chains.

    Args:
        model: any ``nn.Module``; its current parameters are w*. It is called functionally
            with all parameters and buffers supplied on ``config.device`` (never modified).
            Its operations must be vmappable: e.g. HuggingFace models need
            ``config._attn_implementation = "eager"`` (the SDPA kernels fall back to a slow loop).
        per_sample_loss: ``(model_output, batch) -> [batch]`` or ``[batch, tokens]``. For
            bf16/fp16 models, upcast logits inside it (the loss is then cast to ``master_dtype``).
        train_data: the n training samples (a tensor or tuple of tensors, leading axis n).
        config: sampler settings.
        restriction: free parameters/coordinates; ``None`` = all parameters.
        model_input: ``batch -> model input`` (a tuple is splatted as positional arguments);
            default: the batch itself, or its first tensor when it is a tuple.
        sample_weights: optional data weights ρ [n] (non-negative, normalised here to sum 1);
            L_n = Σ ρ_i ℓ_i. Used to sample a reweighted data distribution q_h.
    """

    def __init__(
        self,
        model: nn.Module,
        per_sample_loss: PerSampleLoss,
        train_data: Batch,
        config: SamplerConfig,
        restriction: Restriction | None = None,
        *,
        model_input: Callable[[Batch], Any] | None = None,
        sample_weights: torch.Tensor | None = None,
    ):
        self.model = model
        self.per_sample_loss = per_sample_loss
        self.config = config
        self.model_input = model_input or _default_model_input
        self.device = torch.device(config.device)
        dev = self.device

        if isinstance(train_data, list):
            train_data = tuple(train_data)
        self.train_data: Batch = (
            tuple(t.to(dev) for t in train_data) if isinstance(train_data, tuple) else train_data.to(dev)
        )
        sizes = {t.shape[0] for t in (self.train_data if isinstance(self.train_data, tuple) else (self.train_data,))}
        if len(sizes) != 1:
            raise ValueError(f"train_data tensors disagree on the number of samples: {sorted(sizes)}")
        self.n = sizes.pop()
        if self.n < 1:
            raise ValueError("train_data is empty")
        if config.batch_size is not None and config.batch_size > self.n:
            raise ValueError(f"batch_size={config.batch_size} exceeds the {self.n} training samples (use batch_size=None for full batch)")
        self.nbeta = config.resolve_nbeta(self.n)

        self.sample_weights: torch.Tensor | None = None
        if sample_weights is not None:
            rho = torch.as_tensor(sample_weights, dtype=config.master_dtype, device=dev)
            if rho.shape != (self.n,):
                raise ValueError(f"sample_weights has shape {tuple(rho.shape)}, expected [{self.n}]")
            if not torch.isfinite(rho).all() or (rho < 0).any() or rho.sum() <= 0:
                raise ValueError("sample_weights must be finite, non-negative and not all zero")
            self.sample_weights = rho / rho.sum()

        self.restriction = restriction if restriction is not None else Restriction.full(model)
        resolved = self.restriction.resolve(model)
        self.free_names = [n for n, _, _ in resolved]
        self.shapes = [tuple(p.shape) for _, p, _ in resolved]
        self.numels = [p.numel() for _, p, _ in resolved]
        self.param_dtypes = [p.dtype for _, p, _ in resolved]
        self.dim = sum(self.numels)
        md = config.master_dtype
        self.w_star = torch.cat([p.detach().to(dev, md).reshape(-1) for _, p, _ in resolved])
        if any(m is not None for _, _, m in resolved):
            self.mask: torch.Tensor | None = torch.cat(
                [(torch.ones(p.numel(), dtype=torch.float64) if m is None else m.reshape(-1)) for _, p, m in resolved]
            ).to(dev, md)
            self.n_free = int((self.mask > 0).sum())
        else:
            self.mask = None
            self.n_free = self.dim
        free = set(self.free_names)
        self.constants: dict[str, torch.Tensor] = {
            n: p.detach().to(dev) for n, p in model.named_parameters() if n not in free
        }
        self.constants.update({n: b.detach().to(dev) for n, b in model.named_buffers()})
        self._init_loss: float | None = None

    # ------------------------------------------------------------------ functional model
    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``flat`` [..., D] into free-parameter views name → [..., *shape] (master dtype)."""
        lead = flat.shape[:-1]
        parts = torch.split(flat, self.numels, dim=-1)
        return {n: t.view(*lead, *s) for n, t, s in zip(self.free_names, parts, self.shapes)}

    def _call(self, flat: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per-sample-and-token losses [B, T] of one chain (``flat`` is [D]); T = 1 for [B] losses."""
        parts = torch.split(flat, self.numels)
        params = {
            n: t.view(s).to(dt) for n, t, s, dt in zip(self.free_names, parts, self.shapes, self.param_dtypes)
        }
        args = self.model_input(batch)
        args = args if isinstance(args, tuple) else (args,)
        out = functional_call(self.model, {**self.constants, **params}, args)
        loss = self.per_sample_loss(out, batch)
        B = _batch_size_of(batch)
        if not isinstance(loss, torch.Tensor) or loss.dim() not in (1, 2) or loss.shape[0] != B:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise LossShapeError(
                f"per_sample_loss returned shape {shape} for a batch of {B} samples; expected [{B}] or [{B}, tokens]"
            )
        loss = loss.to(flat.dtype)
        return loss if loss.dim() == 2 else loss.unsqueeze(1)

    def _minibatch_loss(self, flat: torch.Tensor, batch: Batch, weights: torch.Tensor | None) -> torch.Tensor:
        """One chain's minibatch loss L_m = mean_b(w_b·ℓ_b) (w_b = n·ρ_b, or 1), ℓ_b = mean over tokens."""
        per_sample = self._call(flat, batch).mean(dim=1)  # [B]
        return (per_sample * weights).mean() if weights is not None else per_sample.mean()

    def loss_and_grad(
        self, weights: torch.Tensor, batch: Batch, sample_weights: torch.Tensor | None = None, *, shared_batch: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Minibatch-mean losses [C] and their gradients [C, D] for all chains at once.

        ``batch`` has a leading chain axis ([C, B, ...]) unless ``shared_batch`` (all chains
        see the same [B, ...] batch). ``sample_weights`` ([C, B], or [B] when shared) multiply
        the per-sample losses. One vmapped forward over the chains, then one backward of
        Σ_c L_m(w_c) with respect to the stacked weights: chains are independent, so row c of
        that gradient is ∇L_m(w_c). (Plain autograd through vmap is ~1.5× faster than
        ``vmap(grad(·))`` for small models and identical in value.)
        """
        bdim = None if shared_batch else 0
        wdim = None if (sample_weights is None or shared_batch) else 0
        w = weights.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = vmap(self._minibatch_loss, in_dims=(0, bdim, wdim))(w, batch, sample_weights)
            (g,) = torch.autograd.grad(loss.sum(), w)
        return loss.detach(), g

    @torch.no_grad()
    def evaluate_losses(self, weights: torch.Tensor, data: Batch, chunk: int | None = None) -> torch.Tensor:
        """Per-sample-and-token losses of every chain on ``data``: [C, N, T] (eval mode, no grad).

        The same ``data`` is shared by all chains (vmapped over ``weights`` [C, D] only) and
        evaluated in chunks of ``chunk`` samples (default ``config.eval_batch_size``).
        """
        chunk = chunk or self.config.eval_batch_size
        N = _batch_size_of(data)
        f = vmap(self._call, in_dims=(0, None))
        with _eval_mode(self.model):
            outs = [f(weights, _slice(data, slice(s, min(N, s + chunk)))) for s in range(0, N, chunk)]
        return torch.cat(outs, dim=1)

    def losses_at_w_star(self, data: Batch) -> torch.Tensor:
        """Per-sample-and-token losses at w*: [N, T]."""
        return self.evaluate_losses(self.w_star.unsqueeze(0), data)[0]

    @property
    def init_loss(self) -> float:
        """L_n(w*) on the whole (weighted) training set (computed once, in eval mode)."""
        if self._init_loss is None:
            per_sample = self.losses_at_w_star(self.train_data).mean(dim=1)
            if self.sample_weights is not None:
                val = (per_sample * self.sample_weights).sum()
            else:
                val = per_sample.mean()
            self._init_loss = float(val)
        return self._init_loss

    # ------------------------------------------------------------------ sampling
    def _generators(self, stream: int) -> list[torch.Generator]:
        cfg = self.config
        gens = []
        for c in range(cfg.chains):
            g = torch.Generator(device=self.device)
            g.manual_seed(chain_seed(cfg.seed, cfg.chain_offset + c, stream))
            gens.append(g)
        return gens

    def sample(self, on_draw: Callable[[Draw], None] | None = None) -> SamplingResult:
        """Run all chains from w*; call ``on_draw(draw)`` after every recorded draw.

        Returns the loss trace, L_n(w*) and the LLC estimate. Raises :class:`DivergenceError`
        when a chain blows up (checked every ``config.health_every`` steps and at the end).
        """
        cfg = self.config
        dev, md = self.device, cfg.master_dtype
        C, D, n = cfg.chains, self.dim, self.n
        eps, nbeta, gamma = cfg.epsilon, self.nbeta, cfg.gamma
        full_batch = cfg.batch_size is None
        B = n if full_batch else cfg.batch_size

        init_loss = self.init_loss
        threshold = init_loss + cfg.max_loss_increase
        W = self.w_star.unsqueeze(0).repeat(C, 1)
        v = torch.zeros_like(W) if cfg.method == "rmsprop_sgld" else None
        noise_gens = self._generators(_NOISE_STREAM)
        data_gens = self._generators(_DATA_STREAM)
        noise = torch.empty(C, D, dtype=md, device=dev)
        scaled_w = None if self.sample_weights is None else self.sample_weights * n  # n·ρ_i

        trace = torch.empty(C, cfg.draws, dtype=md, device=dev)
        first_bad = torch.full((C,), -1, dtype=torch.long, device=dev)
        bad_info = torch.zeros(C, 4, dtype=md, device=dev)  # loss, gradient, localization, noise norms
        perm: torch.Tensor | None = None
        pos = n  # forces a permutation draw at the first step

        with _eval_mode(self.model):
            for step in range(cfg.total_steps):
                # ---- minibatch
                if full_batch:
                    batch, sw = self.train_data, scaled_w
                else:
                    if pos + B > n:
                        perm = torch.stack([torch.randperm(n, generator=g, device=dev) for g in data_gens])
                        pos = 0
                    idx = perm[:, pos : pos + B]
                    pos += B
                    batch = _index(self.train_data, idx)
                    sw = None if scaled_w is None else scaled_w[idx]
                loss, g = self.loss_and_grad(W, batch, sw, shared_batch=full_batch)

                # ---- update
                if v is not None:
                    v = rmsprop_update(v, g, cfg.rmsprop_alpha)
                    eps_i: float | torch.Tensor = eps * rmsprop_preconditioner(v, cfg.rmsprop_delta)
                else:
                    eps_i = eps
                for c in range(C):
                    noise[c].normal_(generator=noise_gens[c])
                drift = sgld_drift(g, W, self.w_star, nbeta, gamma)
                eta = noise
                if self.mask is not None:
                    drift = drift * self.mask
                    eta = noise * self.mask
                norms = step_terms(g if self.mask is None else g * self.mask, W, self.w_star, eta, nbeta, gamma, eps_i)
                W = langevin_step(W, drift, eta, eps_i)

                # ---- health flag, on device
                bad = ~torch.isfinite(loss) | (loss > threshold) | ~torch.isfinite(norms).all(-1) | ~torch.isfinite(W.sum(-1))
                new = bad & (first_bad < 0)
                first_bad = torch.where(new, torch.full_like(first_bad, step), first_bad)
                bad_info = torch.where(new[:, None], torch.cat([loss[:, None], norms], dim=1), bad_info)

                # ---- draw
                k = step + 1 - cfg.burn_in
                if k > 0 and k % cfg.steps_per_draw == 0:
                    d = k // cfg.steps_per_draw - 1
                    trace[:, d] = loss
                    if on_draw is not None:
                        on_draw(Draw(index=d, step=step + 1, weights=W, loss=loss, posterior=self))
                if (step + 1) % cfg.health_every == 0 or step + 1 == cfg.total_steps:
                    self._raise_if_diverged(first_bad, bad_info, init_loss)

        return self._result(trace, init_loss, W)

    def _raise_if_diverged(self, first_bad: torch.Tensor, bad_info: torch.Tensor, init_loss: float) -> None:
        fb = first_bad.cpu()
        if not (fb >= 0).any():
            return
        steps = torch.where(fb >= 0, fb, torch.iinfo(torch.long).max)
        c = int(torch.argmin(steps))
        info = bad_info[c].double().cpu().tolist()
        norms = dict(zip(_TERM_NAMES, info[1:]))
        nonfinite = [k for k, val in norms.items() if not np.isfinite(val)]
        culprit = nonfinite[0] if nonfinite else max(norms, key=lambda k: norms[k])
        raise DivergenceError(self.config.chain_offset + c, int(fb[c]), info[0], init_loss, norms, culprit)

    def _result(self, trace: torch.Tensor, init_loss: float, W: torch.Tensor) -> SamplingResult:
        cfg = self.config
        tr = trace.double().cpu().numpy()
        nb = min(cfg.n_batches, cfg.draws)
        bmeans = np.stack([b.mean(axis=1) for b in np.array_split(tr, nb, axis=1)], axis=1)  # [C, B]
        se = float(batch_means_stderr(bmeans)) if nb >= 1 else float("nan")
        rhat = float(split_rhat(bmeans))
        return SamplingResult(
            loss_trace=tr,
            init_loss=init_loss,
            nbeta=self.nbeta,
            llc=float(self.nbeta * (tr.mean() - init_loss)),
            llc_stderr=self.nbeta * se,
            llc_per_chain=self.nbeta * (tr.mean(axis=1) - init_loss),
            llc_rhat=rhat,
            final_weights=W,
            config=cfg,
            restriction=self.restriction.name,
            n_free=self.n_free,
        )
