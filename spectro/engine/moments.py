"""Streaming co-moments of observables φ and field generators ψ, per chain and per batch.

Nothing here stores draws. For every chain c the accumulator keeps *shifted power sums*
(shift = the chain's first draw, so that the sums stay well conditioned in float64):

    a = φ − φ_c^(0)   [m],   b = ψ − ψ_c^(0)   [k]

    per chain c:            n, Σa, Σb, Σa², Σb², Σa⊗b, Σa²⊗b, Σa⊗b², Σa²⊗b²
    per chain and batch:    n, Σa, Σb, Σa⊗b

Draw t of a run of ``n_draws`` falls in batch ``floor(t·B / n_draws)`` (B batches of equal
size ±1). Why power sums and not Welford updates: with a fixed shift per chain, sums are
*additive*, so (i) two segments of one chain (a resumed run) merge by addition, (ii) chains on
different processes merge by an all-reduce SUM of zero-padded tensors, (iii) every quantity the
estimators need (pooled covariance, batch means of the centred product, its variance for the
ESS) is an exact polynomial in the sums. The Chan et al. combination of central moments across
chains with different shifts is done once, at the end, in :mod:`spectro.engine.susceptibility`.

Precision: accumulators are float64 on the accumulator's device. Updates are batched tensor ops
([T, C, m] x [T, C, k] einsums); the draw counter is a host integer, so the hot path never
synchronises with the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MomentAccumulator", "MomentError"]


class MomentError(ValueError):
    """Bad shapes or counts handed to the accumulator."""


_CHAIN_KEYS = ("n", "sa", "sb", "saa", "sbb", "sab", "saab", "sabb", "saabb", "shift_a", "shift_b", "started")
_BATCH_KEYS = ("bn", "bsa", "bsb", "bsab")


@dataclass
class MomentAccumulator:
    """Streaming per-chain, per-batch co-moments of φ [m] and ψ [k].

    Args:
        n_chains: C, number of chains (rows of every update).
        n_observables: m, length of φ.
        n_fields: k, length of ψ.
        n_draws: total draws each chain will contribute (fixes the batch boundaries).
        n_batches: B, batches per chain for batch-means standard errors and split R-hat
            (at least 4, at most n_draws).
        device: where the sums live (the device the draws are produced on).
    """

    n_chains: int
    n_observables: int
    n_fields: int
    n_draws: int
    n_batches: int = 20
    device: str | torch.device = "cpu"

    def __post_init__(self) -> None:
        for name in ("n_chains", "n_observables", "n_fields", "n_draws"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise MomentError(f"{name} must be a positive integer, got {v!r}")
        self.n_batches = min(int(self.n_batches), self.n_draws)
        if self.n_batches < 1:
            raise MomentError(f"n_batches must be >= 1, got {self.n_batches}")
        C, m, k, B = self.n_chains, self.n_observables, self.n_fields, self.n_batches
        z = dict(dtype=torch.float64, device=self.device)
        self.n = torch.zeros(C, **z)
        self.sa = torch.zeros(C, m, **z)
        self.sb = torch.zeros(C, k, **z)
        self.saa = torch.zeros(C, m, **z)
        self.sbb = torch.zeros(C, k, **z)
        self.sab = torch.zeros(C, m, k, **z)
        self.saab = torch.zeros(C, m, k, **z)
        self.sabb = torch.zeros(C, m, k, **z)
        self.saabb = torch.zeros(C, m, k, **z)
        self.shift_a = torch.zeros(C, m, **z)
        self.shift_b = torch.zeros(C, k, **z)
        self.started = torch.zeros(C, **z)  # 1.0 once the shift is set (a float so all-reduce can sum it)
        self.bn = torch.zeros(C, B, **z)
        self.bsa = torch.zeros(C, B, m, **z)
        self.bsb = torch.zeros(C, B, k, **z)
        self.bsab = torch.zeros(C, B, m, k, **z)
        self.draws_seen = 0  # host counter: never read back from the device

    # ------------------------------------------------------------------ update
    def update(self, phi: torch.Tensor, psi: torch.Tensor) -> None:
        """Fold draws in. ``phi`` is [C, m] or [T, C, m]; ``psi`` is [C, k] or [T, C, k]."""
        phi = torch.as_tensor(phi)
        psi = torch.as_tensor(psi)
        if phi.dim() == 2:
            phi = phi.unsqueeze(0)
        if psi.dim() == 2:
            psi = psi.unsqueeze(0)
        C, m, k = self.n_chains, self.n_observables, self.n_fields
        if phi.dim() != 3 or phi.shape[1:] != (C, m):
            raise MomentError(f"observables have shape {tuple(phi.shape)}, expected [T, chains={C}, observables={m}]")
        if psi.dim() != 3 or psi.shape[1:] != (C, k):
            raise MomentError(f"field generators have shape {tuple(psi.shape)}, expected [T, chains={C}, fields={k}]")
        if phi.shape[0] != psi.shape[0]:
            raise MomentError(f"observables carry {phi.shape[0]} draws but field generators {psi.shape[0]}")
        T = phi.shape[0]
        if self.draws_seen + T > self.n_draws:
            raise MomentError(f"accumulator was sized for {self.n_draws} draws; got {self.draws_seen + T}")
        phi = phi.to(device=self.n.device, dtype=torch.float64)
        psi = psi.to(device=self.n.device, dtype=torch.float64)
        if self.draws_seen == 0:
            self.shift_a.copy_(phi[0])
            self.shift_b.copy_(psi[0])
            self.started.fill_(1.0)
        a = phi - self.shift_a
        b = psi - self.shift_b
        a2 = a * a
        b2 = b * b
        self.n += T
        self.sa += a.sum(0)
        self.sb += b.sum(0)
        self.saa += a2.sum(0)
        self.sbb += b2.sum(0)
        self.sab += torch.einsum("tcm,tck->cmk", a, b)
        self.saab += torch.einsum("tcm,tck->cmk", a2, b)
        self.sabb += torch.einsum("tcm,tck->cmk", a, b2)
        self.saabb += torch.einsum("tcm,tck->cmk", a2, b2)
        # batch sums: a block spans few batches; slice per batch (host arithmetic only)
        t0 = self.draws_seen
        B, N = self.n_batches, self.n_draws
        start = 0
        while start < T:
            batch = ((t0 + start) * B) // N
            end_global = -(-(batch + 1) * N // B)  # first draw of the next batch
            stop = min(T, end_global - t0)
            sl = slice(start, stop)
            self.bn[:, batch] += stop - start
            self.bsa[:, batch] += a[sl].sum(0)
            self.bsb[:, batch] += b[sl].sum(0)
            self.bsab[:, batch] += torch.einsum("tcm,tck->cmk", a[sl], b[sl])
            start = stop
        self.draws_seen += T

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to resume or merge (tensors + the host draw counter)."""
        d = {key: getattr(self, key).clone() for key in _CHAIN_KEYS + _BATCH_KEYS}
        d["draws_seen"] = self.draws_seen
        d["shape"] = (self.n_chains, self.n_observables, self.n_fields, self.n_draws, self.n_batches)
        return d

    def load_state_dict(self, d: dict) -> None:
        shape = (self.n_chains, self.n_observables, self.n_fields, self.n_draws, self.n_batches)
        if tuple(d["shape"]) != shape:
            raise MomentError(f"saved accumulator has shape {tuple(d['shape'])}, this one {shape}")
        for key in _CHAIN_KEYS + _BATCH_KEYS:
            getattr(self, key).copy_(d[key])
        self.draws_seen = int(d["draws_seen"])

    def chain_tensors(self) -> dict[str, torch.Tensor]:
        """The additive per-chain tensors (what an all-reduce SUM over ranks combines)."""
        return {key: getattr(self, key) for key in _CHAIN_KEYS + _BATCH_KEYS}

    @classmethod
    def concatenate(cls, parts: list["MomentAccumulator"]) -> "MomentAccumulator":
        """Merge accumulators over disjoint sets of chains (same m, k, draws, batches)."""
        if not parts:
            raise MomentError("nothing to concatenate")
        p0 = parts[0]
        for p in parts[1:]:
            if (p.n_observables, p.n_fields, p.n_draws, p.n_batches) != (p0.n_observables, p0.n_fields, p0.n_draws, p0.n_batches):
                raise MomentError("accumulators differ in observables, fields, draws or batches")
        out = cls(sum(p.n_chains for p in parts), p0.n_observables, p0.n_fields, p0.n_draws, p0.n_batches, p0.n.device)
        for key in _CHAIN_KEYS + _BATCH_KEYS:
            setattr(out, key, torch.cat([getattr(p, key) for p in parts], dim=0))
        out.draws_seen = min(p.draws_seen for p in parts)
        return out
