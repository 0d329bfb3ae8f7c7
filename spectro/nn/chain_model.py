"""The network as a function of C chains' flat weight vectors: losses and gradients of all
chains at once, executed in one vmapped call or one call per chain spread over worker threads.

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
are reused on equal inputs, exactly (:mod:`spectro.nn.memo`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map_only

from .batches import Batch, _batch_size_of, _default_model_input, _index_chain, _mismatch_message, _slice
from .chains import DataMismatchError, LossShapeError
from .config import SamplerConfig
from .memo import _FrozenMemo
from .precision import LOSS_SCALE_INIT, LOSS_SCALE_MIN, check_precision
from .restrictions import Restriction

__all__ = ["ChainModel", "ChainMode", "LossFunction"]

LossFunction = Callable[[Any, Batch], torch.Tensor]
"""``per_sample_loss(model_output, batch) -> [batch]`` or ``[batch, tokens]`` (unreduced)."""

ChainMode = Literal["auto", "vmap", "loop"]
_LOOP_MIN_PARAMS = 100_000  # "auto": loop over chains (and worker threads) on the CPU from this model size
_LOOP_MAX_CHAINS = 64


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


class ChainModel:
    """``model`` as a function of flat weight vectors [C, D] of its free coordinates (those of
    ``restriction``; ``None`` = all parameters), with every other parameter and buffer a constant
    at its current value. Arguments: those of :class:`~spectro.nn.posterior.LocalizedPosterior`
    (``loss_term`` is added to every minibatch loss). ``w_star`` [D] are the model's own values of
    the free coordinates, ``mask`` [D] (or None) marks the coordinates that move.
    """

    def __init__(
        self,
        model: nn.Module,
        per_sample_loss: LossFunction,
        config: SamplerConfig,
        restriction: Restriction | None = None,
        *,
        model_input: Callable[[Batch], Any] | None = None,
        chain_mode: ChainMode = "auto",
        workers: int | None = None,
        memoize_frozen: bool = True,
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
        # CPU with a model big enough that a forward outweighs the per-call Python overhead
        # (~0.1 ms): one call per chain, chains spread over worker threads. Otherwise (GPU, or
        # toy models with many chains) one vmapped call for all chains.
        big = (dev.type == "cpu" and sum(p.numel() for p in model.parameters()) >= _LOOP_MIN_PARAMS
               and config.chains <= _LOOP_MAX_CHAINS)
        self.chain_mode: str = chain_mode if chain_mode != "auto" else ("loop" if big else "vmap")
        if dev.type != "cpu":
            self.workers = 1
        elif workers is None:
            self.workers = min(torch.get_num_threads(), config.chains) if big else 1
        else:
            self.workers = min(workers, config.chains)
        self.memoize_frozen = bool(memoize_frozen) and self.chain_mode == "loop"

        self.restriction = restriction if restriction is not None else Restriction.full(model)
        resolved = self.restriction.resolve(model)
        self.free_names = [n for n, _, _ in resolved]
        self.shapes = [tuple(p.shape) for _, p, _ in resolved]
        self.numels = [p.numel() for _, p, _ in resolved]
        low = config.compute_dtype
        check_precision(model, config, stacklevel=4)  # names the line that builds the posterior
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
        self.loss_term = loss_term  # added to every minibatch loss: spectro.nn.reweighting (q_h)
        # execution state, live only inside a run (executing())
        self._pool: ThreadPoolExecutor | None = None
        self._shells: list[nn.Module] = []
        self._memos: list[_FrozenMemo | None] = []
        self._memo_counts = [0, 0]  # hits, misses of memos already closed (a run's memos close with executing())

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


    def memo_counts(self) -> tuple[int, int]:
        """Frozen-module memo hits and misses so far."""
        return (self._memo_counts[0] + sum(m.hits for m in self._memos if m is not None),
                self._memo_counts[1] + sum(m.misses for m in self._memos if m is not None))
