"""Numba kernels behind :mod:`spectro.ising.samplers` (CPU backend).

Why hand-written: no maintained library advances many independent Ising chains on a lattice
with arbitrary per-bond couplings (walls = removed bonds), site fields and open or periodic
boundaries, while recording region magnetizations inside the compiled loop. The kernels are
small, and each is tested against exact oracles in ``tests/test_ising_samplers.py``.

Layout and conventions shared by all kernels
--------------------------------------------
* ``bits``: uint8 ``[C, H+2, W+2]``; site ``(r, c)`` of chain ``k`` is ``bits[k, r+1, c+1]``,
  1 for spin +1 and 0 for spin -1. The one-site halo lets every neighbour be read at a fixed
  offset. For periodic lattices the halo mirrors the opposite edge (``refresh_halo``) after
  every half-sweep; for open lattices the halo is never meaningful because the couplings that
  would reach it are 0.
* ``rng``: uint64 ``[C, 4]``, one xoshiro256** state per chain (Blackman & Vigna). Chain ``k``
  only ever touches row ``k`` (and ``bits[k]``), so results do not depend on the number of
  chains or threads.
* Random decisions compare a uint32 ``u`` (one half of a 64-bit xoshiro output) with a
  uint64 threshold ``T = round(P * 2**32)`` in ``[0, 2**32]``: the event has probability
  exactly ``T / 2**32`` (quantisation error <= 2**-33; ``T = 2**32`` means "always").
* One checkerboard sweep = colour 0 (``(r + c)`` even) then colour 1, rows top to bottom,
  columns left to right. Same-colour sites share no bond, so updating them one after the
  other equals a simultaneous update. Random-number use is fixed: per row and colour, one
  64-bit draw per pair of sites of that colour (low half for the left site, high half for the
  right one; a lone last site uses the low half). It never depends on the spins.
* Tables: ``table[cls[r, c] | pattern]`` is ``round(P(new spin = +1) * 2**32)`` where ``cls``
  (uint32 ``[H, W]``) holds ``32 * class index`` and the 5-bit pattern is
  ``left | right << 1 | up << 2 | down << 3 | own << 4`` (bits as above).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

U64 = np.uint64
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_S63 = np.uint64(63)
_ONE = np.uint64(1)
_TWO32 = 4294967296.0

# ----------------------------------------------------------------------------------------------
# xoshiro256** (state in four local uint64 variables so that LLVM keeps it in registers)
# ----------------------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _rotl(x, k):
    return (x << U64(k)) | (x >> U64(64 - k))


@njit(inline="always", cache=True)
def _next(s0, s1, s2, s3):
    """One xoshiro256** step: returns (output, new state...)."""
    out = _rotl(s1 * U64(5), 7) * U64(9)
    t = s1 << U64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return out, s0, s1, s2, s3


@njit(cache=True)
def xoshiro_outputs(state, n):
    """First ``n`` outputs of xoshiro256** from a 4-word state (for known-answer tests)."""
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        x, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
        out[i] = x
    return out


# ----------------------------------------------------------------------------------------------
# halo
# ----------------------------------------------------------------------------------------------


@njit(cache=True)
def _refresh_halo(P):
    """Periodic halo: copy the opposite edge into the one-site border of ``P`` ([H+2, W+2])."""
    H = P.shape[0] - 2
    W = P.shape[1] - 2
    for c in range(1, W + 1):
        P[0, c] = P[H, c]
        P[H + 1, c] = P[1, c]
    for r in range(1, H + 1):
        P[r, 0] = P[r, W]
        P[r, W + 1] = P[r, 1]


@njit(cache=True)
def refresh_halo(bits):
    for k in range(bits.shape[0]):
        _refresh_halo(bits[k])


# ----------------------------------------------------------------------------------------------
# checkerboard half-sweeps
# ----------------------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _site_table(P, rp, c, cls, table, x):
    """Update site (rp - 1, c) of padded ``P`` (stored at ``P[rp, c + 1]``) from the table.

    ``cls`` is uint32 (32 * class); ``x`` a uint32 held in a uint64.
    Unsigned indices spare numba's negative-index wraparound checks.
    """
    idx = (
        U64(cls[rp - 1, c])
        | U64(P[rp, c])
        | (U64(P[rp, c + 2]) << U64(1))
        | (U64(P[rp - 1, c + 1]) << U64(2))
        | (U64(P[rp + 1, c + 1]) << U64(3))
        | (U64(P[rp, c + 1]) << U64(4))
    )
    P[rp, c + 1] = np.uint8(x < table[idx])


@njit(inline="always", cache=True)
def _spin(b):
    return 2.0 * np.float64(b) - 1.0


@njit(inline="always", cache=True)
def _site_exp(P, rp, c, jl, jr, ju, jd, hf, beta, rule, x):
    """Update site (rp - 1, c) of padded ``P`` with probabilities from exp (general couplings).

    ``jl .. hf`` are ``[H, W]`` per-site couplings and fields; ``rule`` 0 = Metropolis, 1 = heat bath.
    """
    r = rp - 1
    hloc = (
        jl[r, c] * _spin(P[rp, c])
        + jr[r, c] * _spin(P[rp, c + 2])
        + ju[r, c] * _spin(P[rp - 1, c + 1])
        + jd[r, c] * _spin(P[rp + 1, c + 1])
        + hf[r, c]
    )
    own = P[rp, c + 1]
    if rule == 0:  # Metropolis: flip with probability min(1, exp(-2 beta s hloc))
        e = -2.0 * beta * _spin(own) * hloc
        flip = e >= 0.0 or np.float64(x) < np.exp(e) * _TWO32
        P[rp, c + 1] = np.uint8(1 - own) if flip else own
    else:  # heat bath: +1 with probability 1 / (1 + exp(-2 beta hloc))
        p_up = 1.0 / (1.0 + np.exp(-2.0 * beta * hloc))
        P[rp, c + 1] = np.uint8(np.float64(x) < p_up * _TWO32)


@njit(cache=True)
def _half_sweep_table(P, colour, cls, table, s0, s1, s2, s3):
    H = P.shape[0] - 2
    W = P.shape[1] - 2
    for rp in range(1, H + 1):  # padded row index (site row rp - 1)
        c = (rp - 1 + colour) & 1
        while c + 2 < W:  # two sites per 64-bit draw
            x, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
            _site_table(P, rp, c, cls, table, x & _M32)
            _site_table(P, rp, c + 2, cls, table, x >> _S32)
            c += 4
        if c < W:
            x, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
            _site_table(P, rp, c, cls, table, x & _M32)
    return s0, s1, s2, s3


@njit(cache=True)
def _half_sweep_exp(P, colour, jl, jr, ju, jd, hf, beta, rule, s0, s1, s2, s3):
    H = P.shape[0] - 2
    W = P.shape[1] - 2
    for rp in range(1, H + 1):
        c = (rp - 1 + colour) & 1
        while c + 2 < W:
            x, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
            _site_exp(P, rp, c, jl, jr, ju, jd, hf, beta, rule, x & _M32)
            _site_exp(P, rp, c + 2, jl, jr, ju, jd, hf, beta, rule, x >> _S32)
            c += 4
        if c < W:
            x, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
            _site_exp(P, rp, c, jl, jr, ju, jd, hf, beta, rule, x & _M32)
    return s0, s1, s2, s3


# ----------------------------------------------------------------------------------------------
# Swendsen-Wang
# ----------------------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _find(parent, i):
    while parent[i] != i:  # path halving
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(inline="always", cache=True)
def _union(parent, i, j):
    ri = _find(parent, i)
    rj = _find(parent, j)
    if ri < rj:  # the smaller index becomes the root (deterministic)
        parent[rj] = ri
    elif rj < ri:
        parent[ri] = rj


@njit(cache=True)
def _sw_update(P, parent, flip, t_right, t_down, s0, s1, s2, s3):
    """One Swendsen-Wang update of one chain (flat site index i = r * W + c).

    Bonds are visited row by row, right bond then down bond; a satisfied bond with threshold
    T > 0 draws one 64-bit value and is activated when its high half is < T. Then, in site
    order, every cluster root draws one value and its cluster flips when the top bit is set.
    """
    H = P.shape[0] - 2
    W = P.shape[1] - 2
    for i in range(H * W):
        parent[i] = i
    for r in range(H):
        r2 = r + 1 if r + 1 < H else 0
        for c in range(W):
            c2 = c + 1 if c + 1 < W else 0
            i = r * W + c
            b = P[r + 1, c + 1]
            t = t_right[r, c]
            if t > 0 and b == P[r + 1, c2 + 1]:
                x, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
                if (x >> _S32) < t:
                    _union(parent, i, r * W + c2)
            t = t_down[r, c]
            if t > 0 and b == P[r2 + 1, c + 1]:
                x, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
                if (x >> _S32) < t:
                    _union(parent, i, r2 * W + c)
    for i in range(H * W):
        if _find(parent, i) == i:
            x, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
            flip[i] = np.uint8(x >> _S63)
    for r in range(H):
        for c in range(W):
            if flip[_find(parent, r * W + c)]:
                P[r + 1, c + 1] = 1 - P[r + 1, c + 1]
    return s0, s1, s2, s3


# ----------------------------------------------------------------------------------------------
# region magnetizations via a 2-D prefix sum and constant-weight boxes
# ----------------------------------------------------------------------------------------------


@njit(cache=True)
def _record(P, integ, box_region, box_rc, box_w, out_row):
    """``out_row[k] = sum_i w_k(i) s_i``, every region being a union of constant-weight boxes."""
    H = P.shape[0] - 2
    W = P.shape[1] - 2
    for c in range(W + 1):
        integ[0, c] = 0
    for r in range(H):
        acc = 0
        integ[r + 1, 0] = 0
        for c in range(W):
            acc += 2 * np.int32(P[r + 1, c + 1]) - 1
            integ[r + 1, c + 1] = integ[r, c + 1] + acc
    out_row[:] = 0.0
    for b in range(box_region.shape[0]):
        r0 = box_rc[b, 0]
        r1 = box_rc[b, 1]
        c0 = box_rc[b, 2]
        c1 = box_rc[b, 3]
        tot = integ[r1, c1] - integ[r0, c1] - integ[r1, c0] + integ[r0, c0]
        out_row[box_region[b]] += box_w[b] * tot


# ----------------------------------------------------------------------------------------------
# parallel drivers (one prange iteration per chain)
# ----------------------------------------------------------------------------------------------


@njit(parallel=True, nogil=True, cache=True)
def run_checkerboard(
    bits, rng, periodic,
    use_table, cls, table, jl, jr, ju, jd, hf, beta, rule,
    n_draws, thin, box_region, box_rc, box_w, out, integ,
):  # fmt: skip
    """For every chain: ``n_draws`` times do ``thin`` checkerboard sweeps, then record regions.

    ``out`` is float64 ``[n_draws, C, R]`` (``R = 0``: nothing is recorded); ``integ`` is an
    int32 ``[C, H+1, W+1]`` scratch buffer. ``use_table`` selects the table path (``cls``,
    ``table``) or the exp path (``jl, jr, ju, jd, hf`` per-site couplings, ``beta``, ``rule``).
    """
    n_chains = bits.shape[0]
    record = out.shape[2] > 0
    for k in prange(n_chains):
        P = bits[k]
        s0 = rng[k, 0]
        s1 = rng[k, 1]
        s2 = rng[k, 2]
        s3 = rng[k, 3]
        for d in range(n_draws):
            for _ in range(thin):
                for colour in range(2):
                    if use_table:
                        s0, s1, s2, s3 = _half_sweep_table(P, colour, cls, table, s0, s1, s2, s3)
                    else:
                        s0, s1, s2, s3 = _half_sweep_exp(P, colour, jl, jr, ju, jd, hf, beta, rule, s0, s1, s2, s3)
                    if periodic:
                        _refresh_halo(P)
            if record:
                _record(P, integ[k], box_region, box_rc, box_w, out[d, k])
        rng[k, 0] = s0
        rng[k, 1] = s1
        rng[k, 2] = s2
        rng[k, 3] = s3


@njit(parallel=True, nogil=True, cache=True)
def run_swendsen_wang(
    bits, rng, periodic, t_right, t_down, parent, flip,
    n_draws, thin, box_region, box_rc, box_w, out, integ,
):  # fmt: skip
    """Like :func:`run_checkerboard` with one Swendsen-Wang update per sweep.

    ``parent`` int32 ``[C, H*W]`` and ``flip`` uint8 ``[C, H*W]`` are scratch buffers.
    """
    n_chains = bits.shape[0]
    record = out.shape[2] > 0
    for k in prange(n_chains):
        P = bits[k]
        s0 = rng[k, 0]
        s1 = rng[k, 1]
        s2 = rng[k, 2]
        s3 = rng[k, 3]
        for d in range(n_draws):
            for _ in range(thin):
                s0, s1, s2, s3 = _sw_update(P, parent[k], flip[k], t_right, t_down, s0, s1, s2, s3)
            if record:
                _record(P, integ[k], box_region, box_rc, box_w, out[d, k])
        if periodic:
            _refresh_halo(P)
        rng[k, 0] = s0
        rng[k, 1] = s1
        rng[k, 2] = s2
        rng[k, 3] = s3


@njit(cache=True)
def random_bits(bits, rng):
    """Fill the interior of ``bits`` with fair coin flips from each chain's own stream.

    One 64-bit draw per 64 sites (row-major), bit ``j`` of a draw for its ``j``-th site.
    """
    n_chains = bits.shape[0]
    H = bits.shape[1] - 2
    W = bits.shape[2] - 2
    for k in range(n_chains):
        s0 = rng[k, 0]
        s1 = rng[k, 1]
        s2 = rng[k, 2]
        s3 = rng[k, 3]
        j = 64
        x = U64(0)
        for r in range(H):
            for c in range(W):
                if j == 64:
                    x, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
                    j = 0
                bits[k, r + 1, c + 1] = np.uint8((x >> U64(j)) & _ONE)
                j += 1
        rng[k, 0] = s0
        rng[k, 1] = s1
        rng[k, 2] = s2
        rng[k, 3] = s3


@njit(cache=True)
def region_extents(masks):
    """Per region of ``masks [R, H, W]`` (uint8 or float64): bounding box of the non-zero weights, their count
    and their min and max. Returns int64 ``[R, 5]`` (r0, r1, c0, c1, count) and float64 ``[R, 2]``.
    """
    R, H, W = masks.shape
    ext = np.zeros((R, 5), dtype=np.int64)
    wrange = np.zeros((R, 2), dtype=np.float64)
    for k in range(R):
        r0, r1, c0, c1, n = H, 0, W, 0, 0
        lo, hi = np.inf, -np.inf
        for r in range(H):
            for c in range(W):
                w = np.float64(masks[k, r, c])
                if w != 0.0:
                    n += 1
                    r0 = min(r0, r)
                    r1 = max(r1, r + 1)
                    c0 = min(c0, c)
                    c1 = max(c1, c + 1)
                    lo = min(lo, w)
                    hi = max(hi, w)
        ext[k, 0], ext[k, 1], ext[k, 2], ext[k, 3], ext[k, 4] = r0, r1, c0, c1, n
        wrange[k, 0], wrange[k, 1] = lo, hi
    return ext, wrange
