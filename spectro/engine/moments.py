"""Streaming co-moments of observables φ and field generators ψ, per chain and per batch.

Nothing here stores draws. For every chain c the accumulator keeps *shifted power sums*
(shift = the chain's first draw, so that the sums stay well conditioned in float64):

    a = φ − φ_c^(0)   [m],   b = ψ − ψ_c^(0)   [k]

    per chain c:            n, Σa, Σb, Σa², Σb², Σa⊗b, Σa²⊗b, Σa⊗b², Σa²⊗b²
    per chain and batch:    n, Σa, Σb, Σa⊗b

Draw t of a run of ``n_draws`` falls in batch ``floor(t·B / n_draws)`` (B batches of equal
size ±1). The batch sums are the *series* the error estimate works on (Geyer's autocorrelation
estimate in :mod:`spectro.engine.diagnostics`): by default B = n_draws (one point per draw) up to
4,096 points per chain and while the batch tensors fit ``series_budget_mb`` (default 256 MiB),
coarser equal batches beyond — memory (and snapshot size) then stay fixed however long the run. Non-finite values are counted per chain and entry
(flagged downstream, never passed off as a number). Why power sums and not Welford updates: with a fixed shift per chain, sums are
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
_COUNT_KEYS = ("bad_a", "bad_b")  # non-finite counts [C, m], [C, k]
_OBSERVABLE_AXIS = {"sa": 1, "saa": 1, "sab": 1, "saab": 1, "sabb": 1, "saabb": 1, "shift_a": 1, "bad_a": 1,
                    "bsa": 2, "bsab": 2}  # where the φ index sits in each tensor that has one
DEFAULT_SERIES_BUDGET_MB = 256.0
MAX_SERIES_POINTS = 4096  # per chain: Geyer on 4,096 batch means loses nothing against per-draw points
MIN_BATCHES = 8


@dataclass
class MomentAccumulator:
    """Streaming per-chain, per-batch co-moments of φ [m] and ψ [k].

    Args:
        n_chains: C, number of chains (rows of every update).
        n_observables: m, length of φ.
        n_fields: k, length of ψ.
        n_draws: total draws each chain will contribute (fixes the batch boundaries).
        n_batches: B, points per chain of the error-estimate series. ``None`` (default): one
            per draw while the batch tensors fit ``series_budget_mb``, else as many as fit.
            An explicit B must be ≤ n_draws. Fewer than 8 points per chain cannot carry an
            autocorrelation estimate: such results are flagged (``Flags.FEW_POINTS``).
        device: where the sums live (the device the draws are produced on).
        series_budget_mb: memory for the per-batch tensors, C·B·(m·k + m + k + 1)·8 bytes.
    """

    n_chains: int
    n_observables: int
    n_fields: int
    n_draws: int
    n_batches: int | None = None
    device: str | torch.device = "cpu"
    series_budget_mb: float = DEFAULT_SERIES_BUDGET_MB

    def __post_init__(self) -> None:
        for name in ("n_chains", "n_observables", "n_fields", "n_draws"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise MomentError(f"{name} must be a positive integer, got {v!r}")
        self.n_batches = self.series_points(self.n_chains, self.n_observables, self.n_fields, self.n_draws,
                                            self.n_batches, self.series_budget_mb)
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
        self.bad_a = torch.zeros(C, m, **z)
        self.bad_b = torch.zeros(C, k, **z)
        self.draws_seen = 0  # host counter: never read back from the device

    @staticmethod
    def series_points(C: int, m: int, k: int, n_draws: int, n_batches: int | None, budget_mb: float) -> int:
        """Points per chain of the error series: ``n_batches`` if given, else the finest that fits."""
        per_point = C * (m * k + m + k + 1) * 8
        if n_batches is None:
            fit = int(min(budget_mb * 2**20 // per_point, n_draws, MAX_SERIES_POINTS))
            if fit < 1:
                raise MomentError(
                    f"a series budget of {budget_mb} MiB does not hold one batch of {C} chains x {m} observables "
                    f"x {k} fields ({per_point / 2**20:.3g} MiB); raise series_budget_mb")
            return min(n_draws, fit)
        if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches < 1:
            raise MomentError(f"n_batches must be a positive integer or None, got {n_batches!r}")
        if n_batches > n_draws:
            raise MomentError(f"n_batches ({n_batches}) exceeds the draws per chain ({n_draws}): "
                              "a batch must hold at least one draw")
        return n_batches

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
        self.bad_a += (~torch.isfinite(a)).sum(0)
        self.bad_b += (~torch.isfinite(b)).sum(0)
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
        t0 = self.draws_seen
        B, N = self.n_batches, self.n_draws
        first, last = (t0 * B) // N, ((t0 + T - 1) * B) // N
        if last - first + 1 > 4:  # fine batches: scatter-add per draw, in chunks of bounded memory
            self._scatter_batches(a, b, t0)
            self.draws_seen += T
            return
        # coarse batches: a block spans few of them; one reduction per batch (host arithmetic only)
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

    def _scatter_batches(self, a: torch.Tensor, b: torch.Tensor, t0: int) -> None:
        """Add draws t0.. of a block into their batches with index_add (no per-draw Python loop)."""
        T, C, m = a.shape
        k = b.shape[2]
        B, N = self.n_batches, self.n_draws
        idx = (torch.arange(t0, t0 + T, device=a.device) * B) // N
        chunk = max(1, int(2**25 // max(1, C * m * k)))  # ≤ 256 MiB of float64 products per chunk
        for s in range(0, T, chunk):
            sl = slice(s, min(T, s + chunk))
            i = idx[sl]
            self.bn.index_add_(1, i, torch.ones(C, i.numel(), dtype=torch.float64, device=a.device))
            self.bsa.index_add_(1, i, a[sl].transpose(0, 1))
            self.bsb.index_add_(1, i, b[sl].transpose(0, 1))
            self.bsab.index_add_(1, i, torch.einsum("tcm,tck->ctmk", a[sl], b[sl]))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to resume or merge (tensors + the host draw counter)."""
        d = {key: getattr(self, key).clone() for key in _CHAIN_KEYS + _BATCH_KEYS + _COUNT_KEYS}
        d["draws_seen"] = self.draws_seen
        d["shape"] = (self.n_chains, self.n_observables, self.n_fields, self.n_draws, self.n_batches)
        return d

    def load_state_dict(self, d: dict) -> None:
        shape = (self.n_chains, self.n_observables, self.n_fields, self.n_draws, self.n_batches)
        if tuple(d["shape"]) != shape:
            raise MomentError(f"saved accumulator has shape {tuple(d['shape'])}, this one {shape}")
        missing = [key for key in _CHAIN_KEYS + _BATCH_KEYS if key not in d]
        if missing:
            raise MomentError(f"saved accumulator lacks {', '.join(missing)}")
        for key in _CHAIN_KEYS + _BATCH_KEYS:
            getattr(self, key).copy_(d[key])
        for key in _COUNT_KEYS:  # absent in snapshots written before non-finite counting
            if key in d:
                getattr(self, key).copy_(d[key])
        self.draws_seen = int(d["draws_seen"])

    def chain_tensors(self) -> dict[str, torch.Tensor]:
        """The additive per-chain tensors (what an all-reduce SUM over ranks combines)."""
        return {key: getattr(self, key) for key in _CHAIN_KEYS + _BATCH_KEYS + _COUNT_KEYS}

    def select_chains(self, chains: slice) -> "MomentAccumulator":
        """A view-free copy holding only ``chains`` (for split-chain replicates of an estimate)."""
        out = MomentAccumulator.__new__(MomentAccumulator)
        out.__dict__.update({k: v for k, v in self.__dict__.items() if not isinstance(v, torch.Tensor)})
        for key in _CHAIN_KEYS + _BATCH_KEYS + _COUNT_KEYS:
            setattr(out, key, getattr(self, key)[chains].clone())
        out.n_chains = int(out.n.shape[0])
        return out

    def select_observables(self, rows: list[int]) -> "MomentAccumulator":
        """A copy holding only the observable ``rows`` (every φ-indexed sum; ψ sums unchanged)."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.n.device)
        out = MomentAccumulator.__new__(MomentAccumulator)
        out.__dict__.update({k: v for k, v in self.__dict__.items() if not isinstance(v, torch.Tensor)})
        for key in _CHAIN_KEYS + _BATCH_KEYS + _COUNT_KEYS:
            t = getattr(self, key)
            axis = _OBSERVABLE_AXIS.get(key)
            setattr(out, key, t.clone() if axis is None else t.index_select(axis, idx))
        out.n_observables = len(rows)
        return out

    @classmethod
    def concatenate(cls, parts: list["MomentAccumulator"]) -> "MomentAccumulator":
        """Merge accumulators over disjoint sets of chains (same m, k, draws, batches)."""
        if not parts:
            raise MomentError("nothing to concatenate")
        p0 = parts[0]
        for p in parts[1:]:
            if (p.n_observables, p.n_fields, p.n_draws, p.n_batches) != (p0.n_observables, p0.n_fields, p0.n_draws, p0.n_batches):
                raise MomentError("accumulators differ in observables, fields, draws or batches")
        out = cls(sum(p.n_chains for p in parts), p0.n_observables, p0.n_fields, p0.n_draws, p0.n_batches, p0.n.device,
                  series_budget_mb=float("inf"))
        for key in _CHAIN_KEYS + _BATCH_KEYS + _COUNT_KEYS:
            setattr(out, key, torch.cat([getattr(p, key) for p in parts], dim=0))
        out.draws_seen = min(p.draws_seen for p in parts)
        return out
