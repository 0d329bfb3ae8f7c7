"""The localized tempered posterior of a neural network, sampled by C chains in one batch.

Target (docs/design.md §2)::

    p(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²),   L_n(w) = Σ_i ρ_i·ℓ_i(w)   (ρ_i = 1/n by default)

where ℓ_i is the per-sample loss (the mean over tokens when ``per_sample_loss`` returns
``[batch, tokens]``) and w* the trained weights. Only the coordinates freed by a
:class:`~spectro.nn.restrictions.Restriction` move; all other weights are constants at w*.

Master weights: the free coordinates of all free parameters are concatenated into one flat
vector, and the C chains' vectors are stacked into ``W`` of shape [C, D] (dtype
``config.master_dtype``). A chain's model is ``torch.func.functional_call`` on the flat vector
split back into parameter views. Frozen parameters and buffers are constants: no gradient is
taken for them, and autograd never enters a part of the network that depends on constants only
(for a layer-1 head, layer 0 is never differentiated).

Precision (``config.precision``, docs/design.md §2): "fp32" runs the model in its stored dtypes.
"bf16"/"fp16" run forward and backward in that dtype: the floating constants are copied to it
once, the free views are cast to it inside each call (the cast is differentiable, so the
gradient arrives in the master dtype), floating model inputs are cast to it, and every floating
tensor of the model output (a tensor, tuple, dict or Hugging Face ``ModelOutput``) is upcast to
the master dtype before ``per_sample_loss``; per-sample losses, the update
and every moment stay in the master dtype. fp16 backpropagates each chain's loss times its own
power-of-2 loss scale (carried in the loop state; halved and recomputed on overflow) so small
gradients do not underflow. A model stored in bf16/fp16 must be sampled with the matching
precision (an error otherwise).

How chains are executed (``chain_mode``): ``"vmap"`` evaluates all chains of a worker in one
``torch.func.vmap`` (the GPU default: one kernel per op for all chains); ``"loop"`` calls the
model once per chain (the CPU default: unbatched kernels are 10–40 % faster there than vmap's
batching rules, which split fused ops such as ``addmm``/``layer_norm`` and blow intermediates
out of cache). Either way one backward of Σ_c L_m(w_c) gives every chain's gradient (chains are
independent, so row c of the gradient is ∇L_m(w_c)). On the CPU the chains are split over
``workers`` threads (default: ``torch.get_num_threads()``, at most C), each running its chains
with one intra-op thread: the same cores as intra-op parallelism, without its per-op barriers,
which is faster for small models and robust when other processes share the cores. A chain's
arithmetic does not depend on the worker that runs it.

Frozen-module memo (``memoize_frozen``, loop mode): outputs of submodules with no free weights
are reused on equal inputs, exactly (:mod:`spectro.nn.memo`). Randomness: chain c's minibatch
and noise streams are seeded from (seed, c) alone (:func:`spectro.nn.chains.chain_seed`), so a
chain does not depend on how many chains run beside it (tested).

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

Chain health: after each step a flag marks a chain whose minibatch loss is non-finite or
exceeds L_n(w*) + ``max_loss_increase``, or whose weights are non-finite, recording the first
bad step and the norms of the gradient, localization and noise displacements (computed on the
step that failed: always on accelerators, where the check stays on the device, and only when a
flag is raised on the CPU, where reading it costs nothing). The flag is read on the host every
``health_every`` steps and a :class:`DivergenceError` is raised for the earliest failure.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map_only

from .chains import (DataMismatchError, DivergenceError, Draw, LossShapeError, NonFiniteLossError, SamplingResult,
                     _llc_statistics, _LoopState)
from ..engine.seeding import chain_seed
from .config import SamplerConfig
from .kernels import compiled_update, fused_update_, step_terms
from . import samplers
from .batches import Batch, _batch_size_of, _check_tensors, _default_model_input, _index, _index_chain, _mismatch_message, _slice
from .memo import _FrozenMemo
from .precision import LOSS_SCALE_INIT, LOSS_SCALE_MIN, check_precision, grow_loss_scales, warn_lost_updates
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

LossFunction = Callable[[Any, Batch], torch.Tensor]
"""``per_sample_loss(model_output, batch) -> [batch]`` or ``[batch, tokens]`` (unreduced)."""

_NOISE_STREAM, _DATA_STREAM = 1, 2
_SHARED_CHAIN = 2**32  # the "chain index" of the one minibatch stream shared by all chains
ChainMode = Literal["auto", "vmap", "loop"]
_LOOP_MIN_PARAMS = 100_000  # "auto": loop over chains (and worker threads) on the CPU from this model size
_LOOP_MAX_CHAINS = 64
_TERM_NAMES = ("gradient", "localization", "noise")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    if not was:  # already in eval mode: skip the walk over every submodule (twice per step)
        yield
        return
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


# L_n(w*) per (model, training data, loss): the same number for every restriction of one model.
# Entries hold weak references only (no data kept alive; a recycled id can never match).
_INIT_LOSS_CACHE: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()


def forget_init_losses() -> None:
    """Drop the cached L_n(w*) values (e.g. to time a run that pays for them again). The cache
    never returns a stale value (keys include tensor versions), so correctness never needs this."""
    _INIT_LOSS_CACHE.clear()


def _weak(obj: Any) -> Callable[[], Any]:
    """A weak reference (``WeakMethod`` for bound methods); a strong one for objects that
    cannot be weakly referenced (builtins: long-lived anyway)."""
    try:
        return weakref.WeakMethod(obj) if inspect.ismethod(obj) else weakref.ref(obj)
    except TypeError:
        return lambda: obj


class LocalizedPosterior:
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
            100k parameters and at most 64 chains, vmap otherwise); see the module docstring.
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
        self.model = model
        self.per_sample_loss = per_sample_loss
        self.config = config
        self.model_input = model_input or _default_model_input
        self.device = torch.device(config.device)
        dev = self.device

        if chain_mode not in ("auto", "vmap", "loop"):
            raise ValueError(f"chain_mode must be 'auto', 'vmap' or 'loop', got {chain_mode!r}")
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
            raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
        self.shared_batches = bool(shared_batches)
        # CPU with a model big enough that a forward outweighs the per-call Python overhead
        # (~0.1 ms): one call per chain, chains spread over worker threads. Otherwise (GPU, or
        # toy models with many chains) one vmapped call for all chains.
        big = dev.type == "cpu" and sum(p.numel() for p in model.parameters()) >= _LOOP_MIN_PARAMS and config.chains <= _LOOP_MAX_CHAINS
        self.chain_mode: str = chain_mode if chain_mode != "auto" else ("loop" if big else "vmap")
        if dev.type != "cpu":
            self.workers = 1
        elif workers is None:
            self.workers = min(torch.get_num_threads(), config.chains) if big else 1
        else:
            self.workers = min(workers, config.chains)
        self.memoize_frozen = bool(memoize_frozen) and self.chain_mode == "loop"

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

        self.restriction = restriction if restriction is not None else Restriction.full(model)
        resolved = self.restriction.resolve(model)
        self.free_names = [n for n, _, _ in resolved]
        self.shapes = [tuple(p.shape) for _, p, _ in resolved]
        self.numels = [p.numel() for _, p, _ in resolved]
        low = config.compute_dtype
        check_precision(model, config)
        self.compute_dtype = low
        self.param_dtypes = [low if (low is not None and p.is_floating_point()) else p.dtype for _, p, _ in resolved]
        self._one_cast = low is not None and all(dt == low for dt in self.param_dtypes)
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
        self._free_ids = {id(p) for _, p, _ in resolved}
        self.constants: dict[str, torch.Tensor] = {
            n: p.detach().to(dev) for n, p in model.named_parameters() if n not in free
        }
        self.constants.update({n: b.detach().to(dev) for n, b in model.named_buffers()})
        if low is not None:  # one low-precision copy of the frozen weights, made once
            self.constants = {n: t.to(low) if t.is_floating_point() else t for n, t in self.constants.items()}
        warn_lost_updates(self.w_star if self.mask is None else self.w_star[self.mask > 0], config)
        self.method = samplers.get(config.method)
        if self.mask is not None and not self.method.supports_mask:
            raise ValueError(f"method {config.method!r} does not support restrictions with a coordinate mask")
        self.hyper = self.method.hyper(samplers.Potential(self.w_star, self.mask, self.nbeta, config.gamma), config)
        self._grad_star: torch.Tensor | None = None  # ∇L_n(w*) for control-variate gradients
        self._init_loss: float | None = None if init_loss is None else float(init_loss)
        self.loss_term = loss_term  # added to every minibatch loss: spectro.nn.reweighting (q_h)
        # execution state, live only inside sample()
        self._pool: ThreadPoolExecutor | None = None
        self._shells: list[nn.Module] = []
        self._memos: list[_FrozenMemo | None] = []
        self._memo_counts = [0, 0]  # hits, misses of memos already closed (a run's memos close with running())

    # ------------------------------------------------------------------ functional model
    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``flat`` [..., D] into free-parameter views name → [..., *shape] (master dtype)."""
        lead = flat.shape[:-1]
        parts = torch.split(flat, self.numels, dim=-1)
        return {n: t.view(*lead, *s) for n, t, s in zip(self.free_names, parts, self.shapes)}

    def _call(self, flat: torch.Tensor, batch: Batch, module: nn.Module | None = None) -> torch.Tensor:
        """Per-sample-and-token losses [B, T] of one chain (``flat`` is [D]); T = 1 for [B] losses."""
        if self._one_cast:  # one cast of the whole vector (forward and backward), then views
            flat_c = flat.to(self.compute_dtype)
            params = {n: t.view(s) for n, t, s in zip(self.free_names, torch.split(flat_c, self.numels), self.shapes)}
        else:
            parts = torch.split(flat, self.numels)
            params = {
                n: t.view(s).to(dt) for n, t, s, dt in zip(self.free_names, parts, self.shapes, self.param_dtypes)
            }
        args = self.model_input(batch)
        args = args if isinstance(args, tuple) else (args,)
        low = self.compute_dtype
        if low is not None:
            args = tuple(a.to(low) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
        out = functional_call(self.model if module is None else module, {**self.constants, **params}, args)
        if low is not None:  # the loss (e.g. log-softmax) in the master dtype; pytree: HF ModelOutput too
            out = tree_map_only(torch.Tensor, lambda t: t.to(flat.dtype) if t.is_floating_point() else t, out)
        loss = self.per_sample_loss(out, batch)
        B = _batch_size_of(batch)
        if not isinstance(loss, torch.Tensor) or loss.dim() not in (1, 2) or loss.shape[0] != B:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise LossShapeError(
                f"per_sample_loss returned shape {shape} for a batch of {B} samples; expected [{B}] or [{B}, tokens]"
            )
        loss = loss.to(flat.dtype)
        return loss if loss.dim() == 2 else loss.unsqueeze(1)

    def _minibatch_loss(
        self, flat: torch.Tensor, batch: Batch, weights: torch.Tensor | None, module: nn.Module | None = None
    ) -> torch.Tensor:
        """One chain's minibatch loss L_m = mean_b(w_b·ℓ_b) (w_b = n·ρ_b, or 1), ℓ_b = mean over tokens."""
        per_sample = self._call(flat, batch, module).mean(dim=1)  # [B]
        loss = (per_sample * weights).mean() if weights is not None else per_sample.mean()
        if self.loss_term is not None:  # h·ψ(w) on fixed data, evaluated exactly (spectro.nn.reweighting)
            loss = loss + self.loss_term(lambda b: self._call(flat, b, module))
        return loss

    # ------------------------------------------------------------------ execution
    def _blocks(self, C: int) -> list[slice]:
        """Contiguous chain blocks, one per worker (fewer when there are fewer chains)."""
        k = max(1, min(self.workers if self._pool is not None else 1, C))
        bounds = [round(i * C / k) for i in range(k + 1)]
        return [slice(bounds[i], bounds[i + 1]) for i in range(k) if bounds[i + 1] > bounds[i]]

    def _run_blocks(self, fn: Callable[[int, slice], Any], C: int) -> list[Any]:
        """``fn(worker, block)`` for every chain block, in parallel when a pool is open."""
        blocks = self._blocks(C)
        if len(blocks) == 1 or self._pool is None:
            return [fn(0, blocks[0])] if len(blocks) == 1 else [fn(0, b) for b in blocks]
        futures = [self._pool.submit(fn, k, b) for k, b in enumerate(blocks[1:], start=1)]
        first = fn(0, blocks[0])
        return [first] + [f.result() for f in futures]

    def _module(self, worker: int) -> nn.Module:
        return self._shells[worker] if self._shells else self.model

    def _set_context(self, worker: int, context: tuple | None) -> None:
        if self._memos and self._memos[worker] is not None:
            self._memos[worker].context = context

    @contextlib.contextmanager
    def _executing(self) -> Iterator[None]:
        """Open the worker pool and the private model copies (with memos) for one sampling run."""
        if self._pool is not None or self._shells:
            yield
            return
        n_shells = self.workers if self.device.type == "cpu" else 1
        shared = {id(t): t for t in (*self.model.parameters(), *self.model.buffers())}
        try:  # private copies of the module tree sharing the model's tensors (thread-safe reparametrisation)
            self._shells = [copy.deepcopy(self.model, memo=dict(shared)) for _ in range(n_shells)]
        except Exception:  # noqa: BLE001 — a model that cannot be copied runs as before: one thread, no memo
            self._shells = []
        for s in self._shells:
            s.eval()
        self._memos = [_FrozenMemo(s, self._free_ids) if self.memoize_frozen else None for s in self._shells]
        pool_cm: contextlib.AbstractContextManager = contextlib.nullcontext()
        if self.workers > 1 and self._shells:
            self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="spectro-chain")
            pool_cm = _intra_op_threads(1)
        try:
            with pool_cm:
                yield
        finally:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = None
            for m in self._memos:
                if m is not None:
                    self._memo_counts[0] += m.hits
                    self._memo_counts[1] += m.misses
                    m.close()
            self._memos, self._shells = [], []

    def _block_loss_and_grad(
        self, worker: int, weights: torch.Tensor, batch: Batch, sample_weights: torch.Tensor | None, shared_batch: bool,
        scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Losses [c] and gradients [c, D] of one block of chains (``weights`` [c, D]).

        ``scale`` [c] (fp16 only): per-chain loss scales; the backward runs on scale·L and the
        gradient is divided by the scale in the master dtype (exact: powers of 2), so gradients of
        small losses do not underflow fp16. A chain whose gradient overflows (finite loss, non-finite
        gradient) has its scale halved and the block is recomputed, down to ``LOSS_SCALE_MIN``.
        Returns (loss, grad, the scales used, which chains overflowed at their incoming scale)."""
        module = self._module(worker)
        self._set_context(worker, ("step",))
        overflowed = None if scale is None else torch.zeros_like(scale, dtype=torch.bool)
        try:
            while True:
                loss, g = self._block_backward(module, weights, batch, sample_weights, shared_batch, scale)
                if scale is None:
                    break
                over = torch.isfinite(loss) & ~torch.isfinite(g).all(-1) & (scale > LOSS_SCALE_MIN)
                if not bool(over.any()):  # a host sync: fp16 only (the recompute must be decided now)
                    break
                overflowed = overflowed | over
                scale = torch.where(over, scale * 0.5, scale)
        finally:
            self._set_context(worker, None)
        return loss, g, scale, overflowed

    def _block_backward(
        self, module: nn.Module, weights: torch.Tensor, batch: Batch, sample_weights: torch.Tensor | None,
        shared_batch: bool, scale: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            if self.chain_mode == "vmap":
                w = weights.detach().requires_grad_(True)
                bdim = None if shared_batch else 0
                wdim = None if (sample_weights is None or shared_batch) else 0
                f = lambda flat, b, sw: self._minibatch_loss(flat, b, sw, module)  # noqa: E731
                loss = vmap(f, in_dims=(0, bdim, wdim))(w, batch, sample_weights)
                (g,) = torch.autograd.grad((loss if scale is None else loss * scale).sum(), w)
            else:
                # one leaf per chain: indexing a stacked leaf would make every chain's
                # backward materialise (and sum) a zero-padded [c, D] gradient
                ws = [weights[i].detach().requires_grad_(True) for i in range(weights.shape[0])]
                losses = []
                for i, wi in enumerate(ws):
                    b = batch if shared_batch else _index_chain(batch, i)
                    sw = sample_weights if (sample_weights is None or shared_batch) else sample_weights[i]
                    losses.append(self._minibatch_loss(wi, b, sw, module))
                loss = torch.stack(losses)
                g = torch.stack(torch.autograd.grad((loss if scale is None else loss * scale).sum(), ws))
        if scale is not None:
            g = g / scale[:, None]
        return loss.detach(), g

    def _initial_loss_scales(self, C: int) -> torch.Tensor | None:
        """Per-chain fp16 loss scales [C] (master dtype), or None: bf16 has fp32's exponent range."""
        if self.compute_dtype != torch.float16:
            return None
        return torch.full((C,), LOSS_SCALE_INIT, dtype=self.config.master_dtype, device=self.device)

    def loss_and_grad(
        self, weights: torch.Tensor, batch: Batch, sample_weights: torch.Tensor | None = None, *, shared_batch: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Minibatch-mean losses [C] and their gradients [C, D] for all chains at once.

        ``batch`` has a leading chain axis ([C, B, ...]) unless ``shared_batch`` (all chains
        see the same [B, ...] batch). ``sample_weights`` ([C, B], or [B] when shared) multiply
        the per-sample losses. One forward per chain (vmapped or looped, see ``chain_mode``),
        then one backward of Σ_c L_m(w_c) with respect to the stacked weights: chains are
        independent, so row c of that gradient is ∇L_m(w_c). In fp16 each call starts from the
        initial loss scale (sampling carries the scales from step to step instead).
        """
        C = weights.shape[0]
        loss = torch.empty(C, dtype=weights.dtype, device=weights.device)
        grad = torch.empty_like(weights)

        def work(k: int, sl: slice) -> None:
            b = batch if shared_batch else _slice(batch, sl)
            sw = sample_weights if (sample_weights is None or shared_batch) else sample_weights[sl]
            scale = self._initial_loss_scales(sl.stop - sl.start)
            loss[sl], grad[sl], _, _ = self._block_loss_and_grad(k, weights[sl], b, sw, shared_batch, scale)

        with _eval_mode(self.model):
            self._run_blocks(work, C)
        return loss, grad

    @torch.no_grad()
    def evaluate_losses(self, weights: torch.Tensor, data: Batch, chunk: int | None = None) -> torch.Tensor:
        """Per-sample-and-token losses of every chain on ``data``: [C, N, T] (eval mode, no grad).

        The same ``data`` is shared by all chains and evaluated in chunks of ``chunk`` samples
        (default ``config.eval_batch_size``); chains are split over the workers during sampling.
        """
        chunk = chunk or self.config.eval_batch_size
        N = _batch_size_of(data)
        C = weights.shape[0]
        starts = list(range(0, N, chunk))
        parts: list[list[torch.Tensor]] = [[None] * len(starts) for _ in range(C)]  # type: ignore[list-item]

        @torch.no_grad()  # grad mode is per thread: the workers need their own
        def work(k: int, sl: slice) -> None:
            module = self._module(k)
            for j, s in enumerate(starts):
                e = min(N, s + chunk)
                piece = _slice(data, slice(s, e))
                self._set_context(k, ("eval", N, s, e))
                try:
                    if self.chain_mode == "vmap":
                        f = lambda flat, b: self._call(flat, b, module)  # noqa: E731
                        out = vmap(f, in_dims=(0, None))(weights[sl], piece)
                        for i, c in enumerate(range(sl.start, sl.stop)):
                            parts[c][j] = out[i]
                    else:
                        for c in range(sl.start, sl.stop):
                            parts[c][j] = self._call(weights[c], piece, module)
                finally:
                    self._set_context(k, None)

        with _eval_mode(self.model):
            self._run_blocks(work, C)
        return torch.stack([torch.cat(p, dim=0) for p in parts])

    def losses_at_w_star(self, data: Batch) -> torch.Tensor:
        """Per-sample-and-token losses at w*: [N, T].

        Raises :class:`DataMismatchError` when the model cannot evaluate ``data`` at all (wrong
        dtype or device, token ids beyond the vocabulary, tensors without data).
        """
        try:
            return self.evaluate_losses(self.w_star.unsqueeze(0), data)[0]
        except LossShapeError:
            raise
        except (RuntimeError, TypeError, IndexError, NotImplementedError) as e:
            raise DataMismatchError(_mismatch_message(self, data, e)) from e

    @property
    def init_loss(self) -> float:
        """L_n(w*) on the whole (weighted) training set (computed once, in eval mode).

        Cached per (model, its parameter and buffer tensors and their versions, training data,
        loss, input map, sample weights, device, dtype, chunk size): every restriction of the
        same model shares it, and any change to the weights recomputes it.
        """
        if self._init_loss is None:
            objects, scalars = self._init_loss_key()
            entries = _INIT_LOSS_CACHE.setdefault(self.model, [])
            for refs, key, value in entries:
                if key == scalars and len(refs) == len(objects) and all(r() is o for r, o in zip(refs, objects)):
                    self._init_loss = value
                    return value
            per_sample = self.losses_at_w_star(self.train_data).mean(dim=1)
            if self.sample_weights is not None:
                val = (per_sample * self.sample_weights).sum()
            else:
                val = per_sample.mean()
            self._init_loss = float(val)
            entries.append((tuple(_weak(o) for o in objects), scalars, self._init_loss))
            del entries[:-8]  # a few (data, loss) combinations per model
        return self._init_loss

    def _init_loss_key(self) -> tuple[list, tuple]:
        """(objects compared by identity through weak references, scalars compared by value)."""
        data = list(self.train_data) if isinstance(self.train_data, tuple) else [self.train_data]
        tensors = [*self.model.parameters(), *self.model.buffers(), *data]
        if self.sample_weights is not None:
            tensors.append(self.sample_weights)
        objects = [*tensors, self.per_sample_loss, self.model_input]
        scalars = (
            tuple(t._version for t in tensors), str(self.device), str(self.config.master_dtype), self.config.precision,
            self.config.eval_batch_size,
        )
        return objects, scalars

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
        self._raise_if_diverged(state.first_bad, state.bad_info, state.init_loss)

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
        threshold = state.init_loss + cfg.max_loss_increase
        bad = ~torch.isfinite(loss) | (loss > threshold) | ~torch.isfinite(new_state.w.sum(-1))
        if dev.type != "cpu" or bool(bad.any()):
            eps_i = self.method.step_size(new_state, self.hyper) if self.method.step_size else cfg.epsilon
            gm = G if self.mask is None else G * self.mask
            eta = noise if self.mask is None else noise * self.mask
            norms = step_terms(gm, W, self.w_star, eta, self.nbeta, cfg.gamma, eps_i)
            bad = bad | ~torch.isfinite(norms).all(-1)
            new = bad & (state.first_bad < 0)
            state.first_bad = torch.where(new, torch.full_like(state.first_bad, state.step), state.first_bad)
            state.bad_info = torch.where(new[:, None], torch.cat([loss[:, None], norms], dim=1), state.bad_info)
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
                "memo_hits": self._memo_counts[0] + sum(m.hits for m in self._memos if m is not None),
                "memo_misses": self._memo_counts[1] + sum(m.misses for m in self._memos if m is not None),
            },
        )
