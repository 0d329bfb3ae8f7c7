"""Chains across processes with torch.distributed: split the chains, all-reduce the moments.

Launch any spectro command with ``torchrun --nproc-per-node P -m spectro ...``. Rank r owns a
contiguous block of the global chains and seeds them exactly as a single process would (chain
c's random stream depends only on (seed, c)), so the per-chain power sums are the same numbers
and an all-reduce SUM of the zero-padded accumulators reproduces the single-process
accumulator. Backend: gloo on CPU, nccl when the accumulators live on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .moments import MomentAccumulator

__all__ = ["World", "current_world", "chain_block", "all_reduce_accumulator", "gather_chain_rows", "any_rank"]


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` processes (``World(0, 1)`` when not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world(device: str | torch.device = "cpu") -> World:
    """The process group, initialised from torchrun's environment on first use (or World(0, 1))."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not dist.is_available():
        return World()
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":  # one GPU per process
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size())


def chain_block(n_chains: int, world: World) -> tuple[int, int]:
    """Global chains [start, stop) owned by ``world.rank``: contiguous, sizes differ by at most one."""
    if n_chains < world.size:
        raise ValueError(f"{n_chains} chains cannot be split over {world.size} processes (need chains >= processes)")
    base, extra = divmod(n_chains, world.size)
    start = world.rank * base + min(world.rank, extra)
    return start, start + base + (1 if world.rank < extra else 0)


def all_reduce_accumulator(local: MomentAccumulator, start: int, n_chains: int, world: World) -> MomentAccumulator:
    """The accumulator over all ``n_chains`` chains, on every rank, from each rank's block.

    Local tensors are copied into rows [start, start + local.n_chains) of zero tensors and summed
    across ranks in one flat buffer (one collective call).
    """
    full = MomentAccumulator(n_chains, local.n_observables, local.n_fields, local.n_draws, local.n_batches, local.n.device)
    stop = start + local.n_chains
    for (key, dst), src in zip(full.chain_tensors().items(), local.chain_tensors().values()):
        dst[start:stop] = src
    full.draws_seen = local.draws_seen
    if world.size > 1:
        tensors = list(full.chain_tensors().values())
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
    return full


def gather_chain_rows(local: torch.Tensor, start: int, n_chains: int, world: World) -> torch.Tensor:
    """Per-chain rows [local chains, ...] of every rank stacked into [n_chains, ...] on every rank.

    Zero-padded all-reduce SUM: each rank fills its rows [start, start + len(local)), so the
    result holds every rank's values exactly (x + 0 = x).
    """
    full = torch.zeros((n_chains, *local.shape[1:]), dtype=local.dtype, device=local.device)
    full[start : start + local.shape[0]] = local
    if world.size > 1:
        dist.all_reduce(full, op=dist.ReduceOp.SUM)
    return full


def any_rank(flag: bool, world: World, device: str | torch.device = "cpu") -> bool:
    """True on every rank if ``flag`` is true on any (a collective: all ranks must call it;
    ``device``: where the backend wants its tensors, CUDA for nccl)."""
    if world.size <= 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
