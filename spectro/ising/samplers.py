"""Batched Ising samplers: many independent chains (one lattice each) advanced together.

Model and conventions (same as :mod:`spectro.ising.lattice`)::

    H(s) = - sum_<ij> J_ij s_i s_j - sum_i h_i s_i ,   p(s) ∝ exp(-beta H(s)),   s_i = ±1.

The local field of site i is ``h_loc = sum_{j nb i} J_ij s_j + h_i``, so flipping s_i changes the
energy by ``2 s_i h_loc``.

Samplers (``SamplerConfig.sampler``)
------------------------------------
* ``"metropolis"``: one sweep = one checkerboard pass, colour 0 (``(r + c)`` even) then colour 1;
  each site flips with probability ``min(1, exp(-2 beta s_i h_loc))``.
* ``"heatbath"``: same pass; each site becomes +1 with probability ``1 / (1 + exp(-2 beta h_loc))``.
* ``"swendsen-wang"``: one sweep = one Swendsen–Wang cluster update; a satisfied bond is
  activated with probability ``1 - exp(-2 beta J_ij)``, then every cluster flips with probability
  1/2. Only for zero site fields and ``J >= 0``; numba backend only.

Sites of one colour share no bond, so a checkerboard half-sweep is an exact product of
single-site kernels, each of which satisfies detailed balance: every sweep leaves p invariant.
A periodic lattice needs even height and width to be two-colourable; open lattices of any size
are fine (a missing bond has J = 0). :func:`checkerboard_transition_matrix` gives the exact
transition matrix of one sweep for small lattices (used as a test oracle).

Backends (``SamplerConfig.backend``)
-----------------------------------
* ``"numba"`` (CPU; default for ``device="cpu"``): hand-written kernels in
  :mod:`spectro.ising._kernels` (no maintained library does batched Ising on walled lattices
  with arbitrary couplings). Chains run in parallel with ``prange``; the whole
  sweep/record loop of :meth:`IsingSampler.sample_regions` is compiled. Spins live as
  halo-padded uint8 bits. When the per-site couplings and fields take at most
  ``MAX_TABLE_CLASSES`` distinct combinations ("site classes": a uniform or walled ferromagnet
  has a handful), the update probabilities are precomputed as integer thresholds
  ``round(P * 2**32)`` indexed by (class, neighbour spins, own spin), so a site update is a
  table look-up and an integer compare; otherwise they are computed with ``exp`` per update.
  Probabilities are thus quantised to multiples of 2**-32 (error <= 2**-33; 0 and 1 exact).
* ``"torch"`` (any device, default for CUDA): batched ``[C, H, W]`` float64 tensors,
  neighbour sums from ``torch.roll`` times coupling tensors (rolled couplings are 0 across open
  boundaries), masked colour updates. Same API; Swendsen–Wang is not implemented there.

Region magnetizations (:meth:`IsingSampler.sample_regions`) are read from a 2-D prefix sum of
the spins: each region is decomposed once into boxes of constant weight (a rectangle is one
box), so a draw costs O(H*W + number of boxes) per chain instead of O(R*H*W).

Performance note: numba's default ``omp`` threading layer spin-waits; on a machine whose cores
are shared with other busy processes it ran ~3x slower here than ``workqueue``. Set
``NUMBA_THREADING_LAYER=workqueue`` (or ``OMP_WAIT_POLICY=PASSIVE``) for such runs; this module
does not change process-wide settings. Chains are handed to threads one at a time.

Note: at ``beta = 0`` Metropolis accepts every proposal, so each sweep flips every spin (a
valid but periodic chain); heat bath draws fresh fair coins.

Random numbers and determinism
------------------------------
Chain ``c`` of seed ``seed`` gets the key ``chain_seed(seed, c)`` (the engine's one seeding
function, :mod:`spectro.engine.seeding`), so its trajectory depends only on ``(seed, c)`` and the backend, never on
the number of chains or threads; chains can be split across processes.

* numba: per-chain xoshiro256** state, initialised with four SplitMix64 outputs started from the
  chain key. Decisions compare a uint32 half of a draw with ``round(P * 2**32)``.
* torch: counter-based Philox4x32-10 (Salmon et al. 2011, the generator behind cuRAND and
  torch's CUDA RNG), written with int64 tensor ops so that it runs unchanged on any device.
  Key = the chain key; counter words = (block of 4 sites, sweeps done by this chain (low and
  high 32 bits), stream: 0 for sweeps, 1 for the random initial state). One 32-bit output per
  site per sweep; decisions compare ``u < P * 2**32`` in float64.

Same seed and backend => bit-identical spins and results. The two backends use different
generators, so they agree in distribution only. :meth:`IsingSampler.state_dict` holds spins and
the full RNG state; loading it resumes a run bit-identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.seeding import chain_seed
from .lattice import Lattice

__all__ = [
    "SAMPLERS",
    "BACKENDS",
    "SamplerConfig",
    "IsingSampler",
    "checkerboard_transition_matrix",
    "philox4x32",
]

SAMPLERS = ("metropolis", "heatbath", "swendsen-wang")
BACKENDS = ("auto", "numba", "torch")
INITS = ("dispersed", "random", "up")

#: Use the acceptance table when the lattice has at most this many site classes (table size =
#: classes * 32 * 8 bytes, 4 MiB at most; a table look-up is ~4x faster than exp even when the
#: table lives in L2, e.g. 80x80 with random couplings); otherwise compute with exp.
MAX_TABLE_CLASSES = 16384

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1
_RULE_CODES = {"metropolis": 0, "heatbath": 1}


# ================================================================================================
# configuration
# ================================================================================================


@dataclass(frozen=True)
class SamplerConfig:
    """How to sample. ``backend="auto"``: numba on CPU, torch on any other device (e.g. cuda).

    ``seed`` is an integer in ``[0, 2**64)``; ``init="dispersed"`` (default) starts global chains
    0, 2, 4, … from all +1 and 1, 3, 5, … from all −1 — over-dispersed starts in both
    magnetisation modes, as Gelman–Rubin diagnostics require (below T_c chains started alike can
    all stay in one mode, and R-hat cannot see it: docs/design.md); ``"random"`` draws the
    initial spins from each chain's own stream, ``"up"`` starts every chain from all +1. ``chain_offset``: local chain c
    is global chain ``chain_offset + c`` (its stream is keyed by ``chain_seed(seed, chain_offset + c)``), so a
    process owning chains [a, b) of a distributed run reproduces them exactly.
    """

    sampler: str = "metropolis"
    chains: int = 8
    seed: int = 0
    backend: str = "auto"
    device: str = "cpu"
    init: str = "dispersed"
    chain_offset: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if isinstance(self.chains, bool) or not isinstance(self.chains, (int, np.integer)) or self.chains < 1:
            raise ValueError(f"chains must be an integer >= 1, got {self.chains!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed <= _M64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {self.seed!r}")
        if isinstance(self.chain_offset, bool) or not isinstance(self.chain_offset, (int, np.integer)) or self.chain_offset < 0:
            raise ValueError(f"chain_offset must be an integer >= 0, got {self.chain_offset!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be a non-empty string such as 'cpu' or 'cuda', got {self.device!r}")

    def resolved_backend(self) -> str:
        """``"numba"`` or ``"torch"``, resolving ``"auto"`` from the device."""
        is_cpu = self.device.split(":")[0] == "cpu"
        if self.backend == "auto":
            return "numba" if is_cpu else "torch"
        if self.backend == "numba" and not is_cpu:
            raise ValueError(f"the numba backend runs on the CPU only, but device={self.device!r}; use backend='torch'")
        return self.backend


# ================================================================================================
# seeding and counter-based random numbers
# ================================================================================================


def _initial_signs(config: "SamplerConfig") -> np.ndarray:
    """+1/−1 per local chain for the uniform starts: all +1 (``"up"``), or by the parity of the
    global chain index (``"dispersed"``: even chains up, odd chains down)."""
    c = config.chain_offset + np.arange(config.chains)
    return np.ones(config.chains) if config.init == "up" else np.where(c % 2 == 0, 1.0, -1.0)


def _splitmix64_mix(z: int) -> int:
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _M64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _M64
    return z ^ (z >> 31)


_GOLDEN = 0x9E3779B97F4A7C15
_LATTICE_STREAM = 0  # the stream index of a chain's lattice updates in chain_seed


def _xoshiro_states(seed: int, chains: int, offset: int = 0) -> np.ndarray:
    """uint64 ``[chains, 4]``: four SplitMix64 outputs started from each (global) chain key."""
    out = np.empty((chains, 4), dtype=np.uint64)
    for c in range(chains):
        x = chain_seed(seed, offset + c, _LATTICE_STREAM)
        for k in range(4):
            x = (x + _GOLDEN) & _M64
            out[c, k] = _splitmix64_mix(x)
        if not out[c].any():  # the all-zero state is xoshiro's only fixed point
            out[c, 0] = 1
    return out


_PHILOX_M0 = 0xD2511F53
_PHILOX_M1 = 0xCD9E8D57
_PHILOX_W0 = 0x9E3779B9
_PHILOX_W1 = 0xBB67AE85


def _mulhilo32(m: int, x: Any) -> tuple[Any, Any]:
    """(hi, lo) 32-bit halves of ``m * x`` for 32-bit ``x`` held in int64, with no overflow.

    ``m = mh * 2**16 + ml``: ``A = x * mh`` and ``B = x * ml`` are < 2**48, and
    ``m * x = A * 2**16 + B``.
    """
    a = x * (m >> 16)
    b = x * (m & 0xFFFF)
    hi = (a + (b >> 16)) >> 16
    lo = (((a & 0xFFFF) << 16) + b) & _M32
    return hi, lo


def philox4x32(c0: Any, c1: Any, c2: Any, c3: Any, k0: Any, k1: Any, rounds: int = 10) -> tuple[Any, Any, Any, Any]:
    """Philox4x32-``rounds`` on int64 arrays/tensors holding 32-bit words (numpy or torch).

    Broadcasts its arguments; returns the four 32-bit output words (as int64). Known answer:
    counter 0, key 0 -> ``0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8``.
    """
    for r in range(rounds):
        if r:
            k0 = (k0 + _PHILOX_W0) & _M32
            k1 = (k1 + _PHILOX_W1) & _M32
        hi0, lo0 = _mulhilo32(_PHILOX_M0, c0)
        hi1, lo1 = _mulhilo32(_PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


# ================================================================================================
# lattice preprocessing
# ================================================================================================


def _site_couplings(lattice: Lattice) -> np.ndarray:
    """float64 ``[5, H, W]``: couplings to the left, right, up, down neighbour and the site field.

    Uses wrapped neighbours; on open lattices the wrapped couplings are 0 by construction.
    """
    jr = np.asarray(lattice.j_right, dtype=np.float64)
    jd = np.asarray(lattice.j_down, dtype=np.float64)
    jl = np.roll(jr, 1, axis=1)  # bond (r, c-1)-(r, c)
    ju = np.roll(jd, 1, axis=0)  # bond (r-1, c)-(r, c)
    return np.stack([jl, jr, ju, jd, np.asarray(lattice.field, dtype=np.float64)]) + 0.0  # +0.0: no -0.0


def _site_classes(couplings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group sites with identical (jl, jr, ju, jd, h): class index ``[H, W]`` and params ``[K, 5]``."""
    _, H, W = couplings.shape
    flat = couplings.reshape(5, H * W).T
    params, inverse = np.unique(flat, axis=0, return_inverse=True)
    return inverse.reshape(H, W).astype(np.int32), params


def _prob_up(hloc: np.ndarray, s: np.ndarray, beta: float, rule: str) -> np.ndarray:
    """P(new spin = +1) for a site with local field ``hloc`` and current spin ``s``."""
    with np.errstate(over="ignore"):
        if rule == "heatbath":
            return 1.0 / (1.0 + np.exp(-2.0 * beta * hloc))
        acc = np.minimum(1.0, np.exp(-2.0 * beta * s * hloc))  # Metropolis flip probability
    return np.where(s > 0, 1.0 - acc, acc)


def _threshold_table(params: np.ndarray, beta: float, rule: str) -> np.ndarray:
    """uint64 ``[K * 32]``: ``round(P(new = +1) * 2**32)`` per class and 5-bit spin pattern.

    Pattern bits (1 = spin +1): 0 left, 1 right, 2 up, 3 down, 4 own spin.
    """
    pattern = np.arange(32)
    spin = lambda bit: 2.0 * ((pattern >> bit) & 1) - 1.0  # noqa: E731
    nb = np.stack([spin(0), spin(1), spin(2), spin(3)])  # [4, 32]
    hloc = params[:, :4] @ nb + params[:, 4:5]  # [K, 32]
    p = _prob_up(hloc, np.broadcast_to(spin(4), hloc.shape), beta, rule)
    return np.rint(np.clip(p, 0.0, 1.0) * 2.0**32).astype(np.uint64).reshape(-1)


def _region_boxes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decompose each region weight map (uint8 0/1 or float64 ``[R, H, W]``) into boxes of constant
    non-zero weight.

    Returns ``region [B]`` (int64), ``rc [B, 4]`` (half-open r0, r1, c0, c1; int64) and
    ``weight [B]`` (float64) with ``masks[r] = sum_{b: region[b] = r} weight[b] * 1_box(b)``.
    A constant-weight rectangle is one box, so a region costs 4 prefix-sum look-ups per draw;
    arbitrary masks cost one box per maximal run of rows with identical column runs.
    """
    R, H, W = masks.shape
    # fast path, vectorised over regions: a region whose non-zero weights fill their bounding
    # box with a single value is one box
    from ._kernels import region_extents

    ext, wrange = region_extents(masks)  # masks: C-contiguous uint8 (boolean) or float64
    r0, r1, c0, c1, count = ext.T
    w_min, w_max = wrange.T
    is_rect = (count > 0) & (count == (r1 - r0) * (c1 - c0)) & (w_max == w_min)

    regions: list[int] = []
    rcs: list[tuple[int, int, int, int]] = []
    weights: list[float] = []
    for k in range(R):
        if is_rect[k]:
            regions.append(k)
            rcs.append((int(r0[k]), int(r1[k]), int(c0[k]), int(c1[k])))
            weights.append(float(w_max[k]))
            continue
        if count[k] == 0:
            continue
        m = masks[k]
        open_boxes: dict[tuple[int, int, float], int] = {}  # (c0, c1, w) -> row where the box began
        padded = np.zeros(W + 2)
        for r in range(H + 1):
            runs: set[tuple[int, int, float]] = set()
            if r < H:
                padded[1:-1] = m[r]
                change = np.nonzero(padded[1:] != padded[:-1])[0]  # run boundaries in column units
                for a, b in zip(change[:-1], change[1:]):
                    w = float(padded[a + 1])
                    if w != 0.0:
                        runs.add((int(a), int(b), w))
            for key in list(open_boxes):
                if key not in runs:
                    regions.append(k)
                    rcs.append((open_boxes.pop(key), r, key[0], key[1]))
                    weights.append(key[2])
            for key in sorted(runs):
                open_boxes.setdefault(key, r)
    return (
        np.asarray(regions, dtype=np.int64),
        np.asarray(rcs, dtype=np.int64).reshape(-1, 4),
        np.asarray(weights, dtype=np.float64),
    )


def _check_checkerboard(lattice: Lattice, sampler: str) -> None:
    if lattice.periodic and (lattice.height % 2 or lattice.width % 2):
        raise ValueError(
            f"periodic lattice with odd height/width cannot use the checkerboard {sampler} sampler "
            f"(got {lattice.height}x{lattice.width}: a torus with an odd side is not two-colourable); "
            "use an even-sized lattice, an open lattice, or sampler='swendsen-wang'"
        )


def _check_swendsen_wang(lattice: Lattice) -> None:
    if lattice.has_field:
        raise ValueError("swendsen-wang needs zero site fields (lattice.field is non-zero); use metropolis or heatbath")
    if np.any(lattice.j_right < 0) or np.any(lattice.j_down < 0):
        raise ValueError("swendsen-wang needs ferromagnetic couplings J >= 0; use metropolis or heatbath")


def checkerboard_transition_matrix(lattice: Lattice, beta: float, rule: str) -> np.ndarray:
    """Exact transition matrix ``T[x, y]`` of one checkerboard sweep (colour 0, then colour 1).

    Pure NumPy, for lattices with at most 12 sites. State ``x`` in ``[0, 2**N)`` has spin
    ``s_i = +1`` iff bit ``i`` of ``x`` is set, with ``i = r * W + c`` (row-major).
    ``rule`` is ``"metropolis"`` or ``"heatbath"``. Each half-sweep is the product of the
    single-site kernels of its colour (they commute: same-colour sites share no bond).
    """
    if rule not in _RULE_CODES:
        raise ValueError(f"rule must be 'metropolis' or 'heatbath', got {rule!r}")
    _check_checkerboard(lattice, rule)
    H, W = lattice.height, lattice.width
    n = H * W
    if n > 12:
        raise ValueError(f"checkerboard_transition_matrix enumerates 2**N states; N = {n} > 12 is too large")
    n_states = 1 << n
    states = np.arange(n_states)
    spins = 2.0 * ((states[:, None] >> np.arange(n)) & 1) - 1.0  # [S, N]
    # dense symmetric coupling matrix (bonds add up when a periodic side has length 2)
    jmat = np.zeros((n, n))
    for r in range(H):
        for c in range(W):
            i = r * W + c
            for j, coupling in ((r * W + (c + 1) % W, lattice.j_right[r, c]), (((r + 1) % H) * W + c, lattice.j_down[r, c])):
                jmat[i, j] += coupling
                jmat[j, i] += coupling
    hloc = spins @ jmat + np.asarray(lattice.field, dtype=np.float64).reshape(n)  # [S, N]
    T = np.eye(n_states)
    for colour in (0, 1):
        for i in range(n):
            r, c = divmod(i, W)
            if (r + c) % 2 != colour:
                continue
            # single-site kernel K: from z, site i becomes +1 w.p. p_up(z). Column y of T @ K
            # collects T[:, y] K[y, y] + T[:, y ^ bit] K[y ^ bit, y] (K is sparse: O(S^2) update)
            p_up = _prob_up(hloc[:, i], spins[:, i], beta, rule)
            bit = 1 << i
            partner = states ^ bit
            is_up = (states & bit) != 0
            stay = np.where(is_up, p_up, 1.0 - p_up)  # K[y, y]
            move = np.where(is_up, p_up[partner], 1.0 - p_up[partner])  # K[y ^ bit, y]
            T = T * stay + T[:, partner] * move
    return T


# ================================================================================================
# backends
# ================================================================================================


class _NumbaBackend:
    """Compiled CPU kernels (:mod:`spectro.ising._kernels`); spins kept as halo-padded bits."""

    def __init__(self, lattice: Lattice, beta: float, config: SamplerConfig) -> None:
        from . import _kernels

        self._k = _kernels
        self.sampler = config.sampler
        self.periodic = bool(lattice.periodic)
        H, W, C = lattice.height, lattice.width, config.chains
        self.rng = _xoshiro_states(config.seed, C, config.chain_offset)
        self.bits = np.zeros((C, H + 2, W + 2), dtype=np.uint8)
        if config.init == "random":
            _kernels.random_bits(self.bits, self.rng)
        else:
            self.bits[:, 1:-1, 1:-1] = (_initial_signs(config) > 0)[:, None, None]
        self._refresh_halo()
        self.integ = np.zeros((C, H + 1, W + 1), dtype=np.int32)
        if config.sampler == "swendsen-wang":
            self.t_right = _bond_thresholds(lattice.j_right, beta)
            self.t_down = _bond_thresholds(lattice.j_down, beta)
            self.parent = np.zeros((C, H * W), dtype=np.int32)
            self.flip = np.zeros((C, H * W), dtype=np.uint8)
        else:
            couplings = _site_couplings(lattice)
            cls, params = _site_classes(couplings)
            self.use_table = len(params) <= MAX_TABLE_CLASSES
            if self.use_table:
                self.cls = (cls * 32).astype(np.uint32)
                self.table = _threshold_table(params, beta, config.sampler)
            else:
                self.cls = np.zeros((H, W), dtype=np.uint32)
                self.table = np.zeros(32, dtype=np.uint64)
            self.jl, self.jr, self.ju, self.jd, self.hf = (np.ascontiguousarray(a) for a in couplings)
            self.beta = float(beta)
            self.rule = _RULE_CODES[config.sampler]

    def _refresh_halo(self) -> None:
        if self.periodic:
            self._k.refresh_halo(self.bits)

    def run(self, n_draws: int, thin: int, boxes: tuple[np.ndarray, np.ndarray, np.ndarray], n_regions: int) -> np.ndarray:
        import numba

        box_region, box_rc, box_w = boxes
        out = np.zeros((n_draws, self.bits.shape[0], n_regions), dtype=np.float64)
        # hand chains to threads one at a time (numba's default is one static block per thread):
        # balanced when a core is shared with other work; chains do not interact, so results
        # do not depend on the schedule
        previous = numba.set_parallel_chunksize(1)
        try:
            self._launch(n_draws, thin, box_region, box_rc, box_w, out)
        finally:
            numba.set_parallel_chunksize(previous)
        return out

    def _launch(
        self, n_draws: int, thin: int, box_region: np.ndarray, box_rc: np.ndarray, box_w: np.ndarray, out: np.ndarray
    ) -> None:
        if self.sampler == "swendsen-wang":
            self._k.run_swendsen_wang(
                self.bits, self.rng, self.periodic, self.t_right, self.t_down, self.parent, self.flip,
                n_draws, thin, box_region, box_rc, box_w, out, self.integ,
            )  # fmt: skip
        else:
            self._k.run_checkerboard(
                self.bits, self.rng, self.periodic,
                self.use_table, self.cls, self.table, self.jl, self.jr, self.ju, self.jd, self.hf, self.beta, self.rule,
                n_draws, thin, box_region, box_rc, box_w, out, self.integ,
            )  # fmt: skip

    def get_spins(self) -> np.ndarray:
        return (2 * self.bits[:, 1:-1, 1:-1].astype(np.int8) - 1).astype(np.int8)

    def state(self) -> dict[str, Any]:
        return {"spins": self.get_spins(), "rng": self.rng.copy()}

    def load(self, d: dict[str, Any]) -> None:
        rng = np.asarray(d["rng"])
        if rng.shape != self.rng.shape or rng.dtype != np.uint64:
            raise ValueError(
                f"state_dict 'rng' must be uint64 {self.rng.shape} (xoshiro256** states), got {rng.dtype} {rng.shape}"
            )
        self.bits[:, 1:-1, 1:-1] = np.asarray(d["spins"]) > 0
        self._refresh_halo()
        self.rng[...] = rng


def _bond_thresholds(j: np.ndarray, beta: float) -> np.ndarray:
    """uint64 ``round(p * 2**32)`` with the Swendsen-Wang bond probability ``p = 1 - exp(-2 beta J)``."""
    j = np.asarray(j, dtype=np.float64)
    p = np.where(j > 0, -np.expm1(-2.0 * beta * np.maximum(j, 0.0)), 0.0)
    return np.rint(p * 2.0**32).astype(np.uint64)


class _TorchBackend:
    """Batched float64 tensors on ``config.device``; Philox4x32-10 counter-based randomness."""

    def __init__(self, lattice: Lattice, beta: float, config: SamplerConfig) -> None:
        import torch

        if config.sampler == "swendsen-wang":
            raise ValueError("swendsen-wang is implemented for the numba backend only; use backend='numba' (CPU)")
        self.torch = torch
        self.device = torch.device(config.device)
        self.rule = config.sampler
        self.beta = float(beta)
        H, W, C = lattice.height, lattice.width, config.chains
        self.n_sites = H * W
        f64 = dict(dtype=torch.float64, device=self.device)
        jl, jr, ju, jd, hf = _site_couplings(lattice)
        self.jl, self.jr, self.ju, self.jd, self.hf = (torch.as_tensor(a, **f64) for a in (jl, jr, ju, jd, hf))
        rows, cols = np.indices((H, W))
        self.colour = [torch.as_tensor((rows + cols) % 2 == k, device=self.device) for k in (0, 1)]
        keys = np.array([chain_seed(config.seed, config.chain_offset + c, _LATTICE_STREAM) for c in range(C)], dtype=np.uint64)
        self.key = torch.as_tensor(keys.view(np.int64), device=self.device)  # bit pattern of the uint64 key
        self.counter = torch.zeros(C, dtype=torch.int64, device=self.device)  # sweeps done, per chain
        n_blocks = -(-self.n_sites // 4)
        self.block = torch.arange(n_blocks, dtype=torch.int64, device=self.device)
        if config.init == "random":
            bits = self._uniform_u32(stream=1) >> 31
            self.spins = (2.0 * bits - 1.0).to(torch.float64)
        else:
            signs = torch.as_tensor(_initial_signs(config), **f64)
            self.spins = signs[:, None, None] * torch.ones((C, H, W), **f64)

    def _uniform_u32(self, stream: int) -> Any:
        """One 32-bit Philox output per site and chain (int64 ``[C, H, W]``) for the current counter."""
        t = self.torch
        k0 = (self.key & _M32)[:, None]
        k1 = ((self.key >> 32) & _M32)[:, None]
        c1 = (self.counter & _M32)[:, None]
        c2 = ((self.counter >> 32) & _M32)[:, None]
        c0 = self.block[None, :]
        c3 = t.full_like(c0, stream)
        words = philox4x32(c0, c1, c2, c3, k0, k1)
        u = t.stack(words, dim=-1).reshape(self.key.shape[0], -1)[:, : self.n_sites]
        return u.reshape(self.key.shape[0], *self.jl.shape)

    def _sweep(self) -> None:
        t = self.torch
        u = self._uniform_u32(stream=0).to(t.float64)
        s = self.spins
        for mask in self.colour:
            hloc = (
                self.jl * t.roll(s, 1, dims=2)
                + self.jr * t.roll(s, -1, dims=2)
                + self.ju * t.roll(s, 1, dims=1)
                + self.jd * t.roll(s, -1, dims=1)
                + self.hf
            )
            if self.rule == "metropolis":
                p_flip = t.exp(t.clamp(-2.0 * self.beta * s * hloc, max=0.0))
                s = t.where(mask & (u < p_flip * 2.0**32), -s, s)
            else:
                p_up = t.sigmoid(2.0 * self.beta * hloc)
                s = t.where(mask, t.where(u < p_up * 2.0**32, 1.0, -1.0).to(t.float64), s)
        self.spins = s
        self.counter += 1

    def run(self, n_draws: int, thin: int, boxes: tuple[np.ndarray, np.ndarray, np.ndarray], n_regions: int) -> np.ndarray:
        t = self.torch
        C, H, W = self.spins.shape
        box_region, box_rc, box_w = boxes
        if n_regions == 0:
            for _ in range(n_draws * thin):
                self._sweep()
            return np.zeros((n_draws, C, 0))
        stride = W + 1
        r0, r1, c0, c1 = t.as_tensor(np.ascontiguousarray(box_rc.T), device=self.device)
        corners = [r1 * stride + c1, r0 * stride + c1, r1 * stride + c0, r0 * stride + c0]
        select = np.zeros((len(box_region), n_regions))
        select[np.arange(len(box_region)), box_region] = box_w
        select_t = t.as_tensor(select, dtype=t.float64, device=self.device)
        out = t.empty((n_draws, C, n_regions), dtype=t.float64, device=self.device)
        for d in range(n_draws):
            for _ in range(thin):
                self._sweep()
            integ = t.nn.functional.pad(self.spins.cumsum(1).cumsum(2), (1, 0, 1, 0)).reshape(C, -1)
            box_sum = integ[:, corners[0]] - integ[:, corners[1]] - integ[:, corners[2]] + integ[:, corners[3]]
            out[d] = box_sum @ select_t
        return out.cpu().numpy()

    def get_spins(self) -> np.ndarray:
        return self.spins.to(self.torch.int8).cpu().numpy()

    def state(self) -> dict[str, Any]:
        key = self.key.cpu().numpy().view(np.uint64)
        counter = self.counter.cpu().numpy().view(np.uint64)
        return {"spins": self.get_spins(), "rng": np.stack([key, counter], axis=1)}

    def load(self, d: dict[str, Any]) -> None:
        t = self.torch
        rng = np.asarray(d["rng"])
        C = self.spins.shape[0]
        if rng.shape != (C, 2) or rng.dtype != np.uint64:
            raise ValueError(f"state_dict 'rng' must be uint64 ({C}, 2) (Philox key, counter), got {rng.dtype} {rng.shape}")
        self.spins = t.as_tensor(np.asarray(d["spins"], dtype=np.float64), device=self.device)
        self.key = t.as_tensor(rng[:, 0].copy().view(np.int64), device=self.device)
        self.counter = t.as_tensor(rng[:, 1].copy().view(np.int64), device=self.device)


# ================================================================================================
# public sampler
# ================================================================================================


class IsingSampler:
    """``config.chains`` independent Markov chains targeting ``p(s) ∝ exp(-beta H(s))``.

    Example::

        lat = walled_lattice(80, 80)
        smp = IsingSampler(lat, beta=0.4, config=SamplerConfig(chains=16, seed=1))
        smp.sweep(1000)                                   # burn-in
        masks = np.stack([lat.regions[k] for k in CHAMBERS])
        M = smp.sample_regions(masks, n_draws=500, thin=2)  # float64 [500, 16, 3]
    """

    def __init__(self, lattice: Lattice, beta: float, config: SamplerConfig) -> None:
        if not isinstance(lattice, Lattice):
            raise TypeError(f"lattice must be a spectro.ising.Lattice, got {type(lattice).__name__}")
        if not isinstance(config, SamplerConfig):
            raise TypeError(f"config must be a SamplerConfig, got {type(config).__name__}")
        try:
            beta = float(beta)
        except (TypeError, ValueError):
            raise ValueError(f"beta must be a real number, got {beta!r}") from None
        if not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be finite and >= 0, got {beta}")
        if config.sampler == "swendsen-wang":
            _check_swendsen_wang(lattice)
        else:
            _check_checkerboard(lattice, config.sampler)
        self.lattice = lattice
        self.beta = beta
        self.config = config
        self.backend = config.resolved_backend()
        self._impl: _NumbaBackend | _TorchBackend
        self._impl = _NumbaBackend(lattice, beta, config) if self.backend == "numba" else _TorchBackend(lattice, beta, config)
        self.sweeps_done = 0

    # ------------------------------------------------------------------------------------------

    def sweep(self, n_sweeps: int = 1) -> None:
        """Advance every chain by ``n_sweeps`` sweeps (see the module docstring for "sweep")."""
        n_sweeps = _check_count("n_sweeps", n_sweeps, minimum=0)
        if n_sweeps:
            self._impl.run(1, n_sweeps, _NO_BOXES, 0)
            self.sweeps_done += n_sweeps

    def sample_regions(self, masks: np.ndarray, n_draws: int, thin: int = 1) -> np.ndarray:
        """Region magnetizations along the chains: float64 ``[n_draws, chains, R]``.

        ``masks``: ``[R, H, W]`` boolean masks or float weights. For each draw every chain does
        ``thin`` sweeps, then ``M_r = sum_i masks[r, i] * s_i`` is recorded. Regions are
        decomposed into constant-weight boxes read off a 2-D prefix sum of the spins, so a
        rectangle costs O(1) per draw whatever its size.
        """
        n_draws = _check_count("n_draws", n_draws, minimum=0)
        thin = _check_count("thin", thin, minimum=1)
        m = np.asarray(masks)
        shape = (self.lattice.height, self.lattice.width)
        if m.ndim != 3 or m.shape[1:] != shape:
            raise ValueError(f"masks must have shape [R, {shape[0]}, {shape[1]}] (regions, height, width), got {m.shape}")
        if m.dtype == bool:
            m = np.ascontiguousarray(m).view(np.uint8)  # no float copy: weights 0/1
        elif np.issubdtype(m.dtype, np.number) and not np.iscomplexobj(m):
            m = np.ascontiguousarray(m, dtype=np.float64)
            if not np.all(np.isfinite(m)):
                raise ValueError("masks contain NaN or Inf weights")
        else:
            raise ValueError(f"masks must be boolean or real-valued, got dtype {m.dtype}")
        R = m.shape[0]
        if n_draws == 0:
            return np.zeros((0, self.config.chains, R))
        if R == 0:
            self.sweep(n_draws * thin)
            return np.zeros((n_draws, self.config.chains, 0))
        out = self._impl.run(n_draws, thin, _region_boxes(m), R)
        self.sweeps_done += n_draws * thin
        return out

    @property
    def spins(self) -> np.ndarray:
        """int8 ``[chains, H, W]`` copy of the current spins."""
        return self._impl.get_spins()

    # ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Spins and complete RNG state (copies), enough to resume bit-identically.

        Keys: ``backend``, ``sampler``, ``sweeps_done``, ``spins`` (int8 ``[C, H, W]``) and
        ``rng`` (numba: uint64 ``[C, 4]`` xoshiro256** states; torch: uint64 ``[C, 2]`` Philox
        key and sweep counter per chain).
        """
        return {"backend": self.backend, "sampler": self.config.sampler, "sweeps_done": self.sweeps_done, **self._impl.state()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a sampler with the same backend, sampler and shape."""
        for key in ("backend", "sampler", "spins", "rng"):
            if key not in d:
                raise ValueError(f"state_dict is missing {key!r}")
        if d["backend"] != self.backend:
            raise ValueError(f"state_dict is from the {d['backend']!r} backend, this sampler uses {self.backend!r}")
        if d["sampler"] != self.config.sampler:
            raise ValueError(f"state_dict is from sampler {d['sampler']!r}, this sampler is {self.config.sampler!r}")
        spins = np.asarray(d["spins"])
        expected = (self.config.chains, self.lattice.height, self.lattice.width)
        if spins.shape != expected:
            raise ValueError(f"state_dict spins have shape {spins.shape}, expected {expected} (chains, height, width)")
        if not np.all((spins == 1) | (spins == -1)):
            raise ValueError("state_dict spins must all be -1 or +1")
        self._impl.load({"spins": spins.astype(np.int8), "rng": d["rng"]})
        self.sweeps_done = int(d.get("sweeps_done", 0))


_NO_BOXES = (np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.float64))


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
