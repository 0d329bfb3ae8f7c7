"""The localized tempered posterior of a neural network, sampled by C chains in one batch.

Target (docs/design.md §2)::

    p(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²),   L_n(w) = Σ_i ρ_i·ℓ_i(w)   (ρ_i = 1/n by default)

where ℓ_i is the per-sample loss (the mean over tokens when ``per_sample_loss`` returns
``[batch, tokens]``) and w* the trained weights. Only the coordinates freed by a
:class:`~spectro.nn.restrictions.Restriction` move; all other weights are constants at w*.

How the network is evaluated (the flat weight vectors, precision, vmap or a loop over chains,
worker threads, the frozen-module memo): :mod:`spectro.nn.chain_model`. Chain health (the
divergence check after each step): :mod:`spectro.nn.health`. L_n(w*), computed once per model
and data: :mod:`spectro.nn.init_loss`. Randomness: chain c's minibatch and noise streams are
seeded from (seed, c) alone (:func:`spectro.engine.seeding.chain_seed`), so a chain does not
depend on how many chains run beside it (tested).

Minibatches: each chain walks through its own random permutation of the n training samples in
steps of m = ``batch_size`` (dropping the last partial batch of each epoch, like a shuffled
``DataLoader(drop_last=True)``); ``batch_size=None`` uses all n samples in order every step.
With ``shared_batches=True`` all chains walk through one permutation (seeded from the seed
alone, so still independent of the number of chains and of ``chain_offset``) — devinterp's
default (``match_sampling_input_ids_across_chains=True``). Each chain is still an exact SGLD
chain of the same posterior; the chains become weakly correlated through the common minibatch
noise, which the between-chain diagnostics (R-hat, ``stderr_chains``) then slightly understate.
With sample weights ρ the minibatch loss is ``mean_b(n·ρ_b·ℓ_b)``, unbiased for L_n.

Evaluation mode: the model is run in ``eval()`` mode throughout (sampling and observables), so
L_n is deterministic (no dropout). devinterp samples in ``train()`` mode.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine.seeding import chain_seed
from . import samplers
from .batches import Batch, _check_tensors, _index, _slice
from .chain_model import ChainMode, ChainModel, LossFunction, _eval_mode
from .chains import (DataMismatchError, DivergenceError, Draw, LossShapeError, NonFiniteLossError, SamplingResult,
                     _llc_statistics, _LoopState)
from .config import SamplerConfig
from .health import flag_unhealthy, raise_if_diverged
from .init_loss import forget_init_losses
from .init_loss import init_loss as _cached_init_loss
from .kernels import compiled_update, fused_update_, step_terms
from .precision import grow_loss_scales, warn_lost_updates
from .restrictions import Restriction

__all__ = [
    "Batch",
    "LossFunction",
    "DivergenceError",
    "LossShapeError",
    "NonFiniteLossError",
    "DataMismatchError",
    "Draw",
    "SamplingResult",
    "LocalizedPosterior",
    "forget_init_losses",
]


_NOISE_STREAM, _DATA_STREAM = 1, 2
_SHARED_CHAIN = 2**32  # the "chain index" of the one minibatch stream shared by all chains


class LocalizedPosterior(ChainModel):
    """SGLD / RMSProp-SGLD on ``p(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²)`` with C batched chains.

    Args:
        model: any ``nn.Module``; its current parameters are w*. It is called functionally
            with all parameters and buffers supplied on ``config.device`` (never modified; the
            sampler runs private copies that share its tensors). For ``chain_mode="vmap"`` its
            operations must be vmappable: e.g. HuggingFace models need
            ``config._attn_implementation = "eager"`` (the SDPA kernels fall back to a slow loop).
        per_sample_loss: ``(model_output, batch) -> [batch]`` or ``[batch, tokens]`` (cast to
            ``master_dtype``). With a low ``precision`` every floating tensor of the model output
            (tensors, tuples, dicts, HF ``ModelOutput``) arrives already upcast to ``master_dtype``.
        train_data: the n training samples (a tensor or tuple of tensors, leading axis n).
        config: sampler settings.
        restriction: free parameters/coordinates; ``None`` = all parameters.
        model_input: ``batch -> model input`` (a tuple is splatted as positional arguments);
            default: the batch itself, or its first tensor when it is a tuple.
        sample_weights: optional data weights ρ [n] (non-negative, normalised here to sum 1);
            L_n = Σ ρ_i ℓ_i. Used to sample a reweighted data distribution q_h.
        shared_batches: all chains see the same minibatch sequence (devinterp's default);
            default False: independent minibatch streams per chain.
        chain_mode: ``"vmap"``, ``"loop"`` or ``"auto"`` (loop on the CPU for models of at least
            100k parameters and at most 64 chains, vmap otherwise); see :mod:`spectro.nn.chain_model`.
            Values agree to rounding.
        workers: chain-parallel threads on the CPU (``None``: ``torch.get_num_threads()``,
            capped at the number of chains, where "auto" picks the loop, else 1; 1 = run in the
            calling thread with its intra-op threads). Ignored on accelerators.
        memoize_frozen: reuse outputs of frozen submodules on repeated inputs (loop mode only;
            exact; switch off for models whose frozen parts are random in eval mode).
        init_loss: L_n(w*) if already known (e.g. from a run of another restriction of the same
            model and data); by default computed once per (model, data, loss) and cached.
        loss_term: ``term(losses_of) -> scalar`` added to every minibatch loss, where
            ``losses_of(batch)`` gives this chain's [B, T] losses on any batch: the reweighted
            data q_h of :mod:`spectro.nn.reweighting` (None: the plain posterior).
    """

    def __init__(
        self,
        model: nn.Module,
        per_sample_loss: LossFunction,
        train_data: Batch,
        config: SamplerConfig,
        restriction: Restriction | None = None,
        *,
        model_input: Callable[[Batch], Any] | None = None,
        sample_weights: torch.Tensor | None = None,
        shared_batches: bool = False,
        chain_mode: ChainMode = "auto",
        workers: int | None = None,
        memoize_frozen: bool = True,
        init_loss: float | None = None,
        loss_term: Callable[[Callable[[Batch], torch.Tensor]], torch.Tensor] | None = None,
    ):
        super().__init__(model, per_sample_loss, config, restriction, model_input=model_input, chain_mode=chain_mode,
                         workers=workers, memoize_frozen=memoize_frozen, loss_term=loss_term)
        dev = self.device
        self.shared_batches = bool(shared_batches)

        if isinstance(train_data, list):
            train_data = tuple(train_data)
        _check_tensors(model, train_data)
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

        warn_lost_updates(self.w_star if self.mask is None else self.w_star[self.mask > 0], config)
        self.method = samplers.get(config.method)
        if self.mask is not None and not self.method.supports_mask:
            raise ValueError(f"method {config.method!r} does not support restrictions with a coordinate mask")
        self.hyper = self.method.hyper(samplers.Potential(self.w_star, self.mask, self.nbeta, config.gamma), config)
        self._grad_star: torch.Tensor | None = None  # ∇L_n(w*) for control-variate gradients
        self._init_loss: float | None = None if init_loss is None else float(init_loss)

    @property
    def init_loss(self) -> float:
        """L_n(w*) on the whole (weighted) training set (computed once, in eval mode, and shared by
        every restriction of the same model: :mod:`spectro.nn.init_loss`)."""
        if self._init_loss is None:
            self._init_loss = _cached_init_loss(self)
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

    def _shared_generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(chain_seed(self.config.seed, _SHARED_CHAIN, _DATA_STREAM))
        return g

    def sample(self, on_draw: Callable[[Draw], None] | None = None) -> SamplingResult:
        """Run all chains from w*; call ``on_draw(draw)`` after every recorded draw.

        Returns the loss trace, L_n(w*) and the LLC estimate. Raises :class:`DivergenceError`
        when a chain blows up (checked every ``config.health_every`` steps and at the end), and
        :class:`NonFiniteLossError` when the loss is already NaN/inf at w*. Checkpoints, resume
        and torchrun: sample through :class:`spectro.nn.system.PosteriorSystem` and
        :func:`spectro.engine.measure` instead.
        """
        cfg = self.config
        with self.running():
            state = self.start()
            self.advance(state, cfg.burn_in)
            trace = []
            for d in range(cfg.draws):
                trace.append(self.advance(state, cfg.steps_per_draw))
                if on_draw is not None:
                    on_draw(Draw(index=d, step=state.step, weights=state.W, loss=trace[-1], posterior=self))
            self.check(state)
            return self._result(torch.stack(trace, dim=1), state.init_loss, state.W)

    def _state_fingerprint(self) -> dict:
        """What a snapshot must agree on to be resumed by this sampler."""
        config = self.config.to_dict()
        if config["precision"] == "fp32":  # snapshots written before precision existed stay resumable
            del config["precision"]
        if config["step"] == "eager":  # likewise before step existed
            del config["step"]
        for key, default in (("options", {}), ("control_variate", False)):  # and before the method registry
            if config[key] == default:
                del config[key]
        return {"config": config, "dim": self.dim, "n": self.n, "restriction": self.restriction.name,
                "shared_batches": bool(self.shared_batches), "weighted": self.sample_weights is not None,
                **({"loss_term": repr(self.loss_term)} if self.loss_term is not None else {})}

    # ------------------------------------------------------------------ step-wise sampling
    def start(self, init_loss: float | None = None) -> "_LoopState":
        """A fresh sampling state: every chain at w*, random streams seeded from (seed, chain).

        Step it with :meth:`advance` inside :meth:`running` (what :meth:`sample` and
        :class:`spectro.nn.system.PosteriorSystem` do)."""
        cfg = self.config
        dev, md = self.device, cfg.master_dtype
        C, n = cfg.chains, self.n
        init_loss = self.init_loss if init_loss is None else init_loss
        full_batch = cfg.batch_size is None
        kernel = self.method.init(self.w_star.unsqueeze(0).repeat(C, 1), self.hyper)
        if cfg.control_variate and self._grad_star is None:
            self._grad_star = self._full_gradient_at_w_star()
        noise_gens = self._generators(_NOISE_STREAM)
        data_gens = [self._shared_generator()] if (self.shared_batches and not full_batch) else self._generators(_DATA_STREAM)
        first_bad = torch.full((C,), -1, dtype=torch.long, device=dev)
        bad_info = torch.zeros(C, 4, dtype=md, device=dev)  # loss, gradient, localization, noise norms
        scale = self._initial_loss_scales(C)
        streak = None if scale is None else torch.zeros(C, dtype=torch.long, device=dev)
        # pos = n forces a permutation draw at the first step
        return _LoopState(0, kernel, None, n, first_bad, bad_info, noise_gens, data_gens, init_loss, scale, streak)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Eval mode and the execution resources (worker threads, frozen-module memos) for a
        sequence of :meth:`advance` calls and probe evaluations."""
        if not np.isfinite(self.init_loss):
            raise NonFiniteLossError(
                f"the training loss at w* (the model's own weights, before any sampling step) is {self.init_loss}: "
                "the model's weights or the data give a non-finite loss; no step size can fix that"
            )
        with _eval_mode(self.model), self._executing():
            yield

    def advance(self, state: "_LoopState", steps: int, *, check: bool = True) -> torch.Tensor:
        """Take ``steps`` SGLD steps from ``state`` (in place); return the last step's minibatch
        loss [C] (at the weights before its update, as devinterp records it). With ``check``,
        health is read on the host every ``health_every`` steps (:class:`DivergenceError`); the
        caller reads it once more at the end (:meth:`check`), so no other step syncs with the device."""
        loss = None
        for _ in range(steps):
            loss = self._step(state)
            if check and (state.step % self.config.health_every == 0):
                self.check(state)
        return loss

    def check(self, state: "_LoopState") -> None:
        """Raise :class:`DivergenceError` for the earliest chain flagged unhealthy so far."""
        raise_if_diverged(state, self.config.chain_offset)

    def _step(self, state: "_LoopState") -> torch.Tensor:
        """One step of every chain by the configured method's kernel (:mod:`spectro.nn.samplers`);
        updates ``state``; returns the minibatch loss [C] at the weights before the step."""
        cfg = self.config
        dev, md = self.device, cfg.master_dtype
        C, D, n = cfg.chains, self.dim, self.n
        full_batch = cfg.batch_size is None
        shared = full_batch or self.shared_batches
        B = n if full_batch else cfg.batch_size
        ks, W = state.kernel, state.W
        scaled_w = None if self.sample_weights is None else self.sample_weights * n  # n·ρ_i

        # ---- minibatch (indices drawn here, in the calling thread: reproducible)
        if full_batch:
            batch, sw = self.train_data, scaled_w
        else:
            if state.pos + B > n:
                state.perm = torch.stack([torch.randperm(n, generator=g, device=dev) for g in state.data_gens])
                state.pos = 0
            idx = state.perm[:, state.pos : state.pos + B]
            state.pos += B
            if shared:
                idx = idx[0]
            batch = _index(self.train_data, idx)
            sw = None if scaled_w is None else scaled_w[idx]

        # ---- gradient, noise and the kernel's step, chain block by chain block
        out = [torch.empty_like(x) if isinstance(x, torch.Tensor) else x for x in ks]
        G = torch.empty_like(W)
        noise = torch.empty(C, D, dtype=md, device=dev)
        loss = torch.empty(C, dtype=md, device=dev)
        noise_gens = state.noise_gens
        scales = state.loss_scale
        overflowed = None if scales is None else torch.zeros(C, dtype=torch.bool, device=dev)
        cv = cfg.control_variate and not full_batch  # full batch: ∇L_m = ∇L_n, the control variate is exact

        def work(k: int, sl: slice) -> None:
            b = batch if shared else _slice(batch, sl)
            swk = sw if (sw is None or shared) else sw[sl]
            lk, gk, sk, ok = self._block_loss_and_grad(k, W[sl], b, swk, shared, None if scales is None else scales[sl])
            if cv:  # ∇L_m(w) − ∇L_m(w*) + ∇L_n(w*)
                star = self.w_star.unsqueeze(0).expand(1 if shared else sl.stop - sl.start, D)
                _, g0, _, _ = self._block_loss_and_grad(k, star, b, swk, shared, None)
                gk = gk - g0 + self._grad_star
            loss[sl], G[sl] = lk, gk
            if scales is not None:
                scales[sl], overflowed[sl] = sk, ok
            for c in range(sl.start, sl.stop):
                noise[c].normal_(generator=noise_gens[c])
            sub = type(ks)(*(x[sl] if isinstance(x, torch.Tensor) else x for x in ks))
            new = self._update(sub, gk, noise[sl])
            for i, x in enumerate(new):
                if isinstance(x, torch.Tensor):
                    out[i][sl] = x
                else:
                    out[i] = x

        self._run_blocks(work, C)
        if scales is not None:
            grow_loss_scales(scales, state.scale_streak, overflowed)
        new_state = type(ks)(*out)

        # ---- health flag (on the device; the displacement norms only when needed)
        def norms() -> torch.Tensor:
            eps_i = self.method.step_size(new_state, self.hyper) if self.method.step_size else cfg.epsilon
            gm = G if self.mask is None else G * self.mask
            eta = noise if self.mask is None else noise * self.mask
            return step_terms(gm, W, self.w_star, eta, self.nbeta, cfg.gamma, eps_i)

        flag_unhealthy(state, loss, new_state.w, cfg.max_loss_increase, dev.type != "cpu", norms)
        state.kernel = new_state
        state.step += 1
        return loss

    def _update(self, ks: Any, grad: torch.Tensor, noise: torch.Tensor) -> Any:
        """The method's step on one chain block: its pure kernel (step="eager"), or for SGLD and
        RMSProp-SGLD the hand-fused / compiled update of :mod:`spectro.nn.kernels` (the same step)."""
        cfg = self.config
        if cfg.step == "eager":
            return self.method.step(ks, grad, noise, self.hyper)
        v = getattr(ks, "v", None)
        args = (ks.w, grad, v, noise, self.w_star, self.mask, cfg.epsilon, self.nbeta, cfg.gamma,
                cfg.rmsprop_alpha, cfg.rmsprop_delta)
        if cfg.step == "fused":
            w_new, v_new = torch.empty_like(ks.w), None if v is None else torch.empty_like(v)
            fused_update_(*args, w_new, v_new)
        else:
            w_new, v_new = compiled_update(*args)
        if v is None:
            return ks._replace(w=w_new)
        return ks._replace(w=w_new, v=v_new, t=ks.t + 1)

    def _full_gradient_at_w_star(self) -> torch.Tensor:
        """∇L_n(w*) [D] on the whole (weighted) training set, in chunks of ``eval_batch_size``."""
        chunk, n = self.config.eval_batch_size, self.n
        total = torch.zeros(self.dim, dtype=self.config.master_dtype, device=self.device)
        scaled = None if self.sample_weights is None else self.sample_weights * n
        with _eval_mode(self.model):
            for s in range(0, n, chunk):
                e = min(n, s + chunk)
                piece = _slice(self.train_data, slice(s, e))
                sw = None if scaled is None else scaled[s:e]
                _, g = self.loss_and_grad(self.w_star.unsqueeze(0), piece, sw, shared_batch=True)
                total += g[0] * ((e - s) / n)
        return total

    def _result(self, trace: torch.Tensor, init_loss: float, W: torch.Tensor) -> SamplingResult:
        cfg = self.config
        tr = trace.double().cpu().numpy()
        return SamplingResult(
            loss_trace=tr,
            init_loss=init_loss,
            nbeta=self.nbeta,
            **_llc_statistics(tr, init_loss, self.nbeta, cfg.n_batches),
            final_weights=W,
            config=cfg,
            restriction=self.restriction.name,
            n_free=self.n_free,
            execution={
                "shared_batches": self.shared_batches,
                "chain_mode": self.chain_mode,
                "workers": self.workers,
                "memo_hits": self.memo_counts()[0],
                "memo_misses": self.memo_counts()[1],
            },
        )
