"""Exact Ising oracles checked against each other, against brute force and against published numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spectro.ising.exact import (
    ONSAGER_BETA_C,
    enumerate_moments,
    kaufman_energy,
    kaufman_log_z,
    kaufman_specific_heat,
    onsager_energy_per_spin,
    onsager_log_z_per_spin,
    transfer_matrix_moments,
    yang_magnetization,
)
from spectro.ising.lattice import Lattice, open_lattice, periodic_lattice, walled_lattice


def random_open_lattice(rng: np.random.Generator, height: int, width: int, wall_depth: int | None = None) -> Lattice:
    """Open lattice with random couplings (some zero, some negative) and random site fields."""
    j_right = rng.normal(0.5, 0.8, size=(height, width)) * (rng.random((height, width)) > 0.15)
    j_down = rng.normal(0.5, 0.8, size=(height, width)) * (rng.random((height, width)) > 0.15)
    j_right[:, -1] = 0.0
    j_down[-1, :] = 0.0
    if wall_depth is not None:
        j_right[:wall_depth, width // 2 - 1] = 0.0
    return Lattice(j_right, j_down, rng.normal(0.0, 0.4, size=(height, width)))


def random_regions(rng: np.random.Generator, height: int, width: int) -> list[np.ndarray]:
    """Three overlapping boolean masks and one float weight mask."""
    masks = [rng.random((height, width)) < p for p in (0.3, 0.5, 0.7)]
    masks[0][0, 0] = masks[1][0, 0] = True  # overlap guaranteed
    return [*masks, rng.normal(size=(height, width))]


def assert_moments_close(a, b, rtol: float) -> None:
    scale = max(1.0, float(np.abs(a.second).max()))
    assert a.log_z == pytest.approx(b.log_z, rel=rtol)
    np.testing.assert_allclose(a.mean, b.mean, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(a.second, b.second, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(a.cov, b.cov, rtol=rtol, atol=rtol * scale)
    assert a.energy_mean == pytest.approx(b.energy_mean, rel=rtol, abs=rtol * abs(b.energy_mean) + 1e-12)
    assert a.energy_var == pytest.approx(b.energy_var, rel=rtol)


# ---------------------------------------------------------------- enumeration vs brute force


def test_enumeration_matches_brute_force_with_lattice_energy():
    """Chunked enumeration (several chunks) against a direct sum using Lattice.energy, periodic and random."""
    rng = np.random.default_rng(0)
    height, width, beta = 3, 4, 0.7
    j_right, j_down, field = (rng.normal(size=(height, width)) for _ in range(3))
    lat = Lattice(j_right, j_down, field, periodic=True)
    region = rng.random((height, width)) < 0.5
    n = height * width
    spins = (((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1).reshape(-1, height, width)
    energy = lat.energy(spins)
    log_w = -beta * energy
    p = np.exp(log_w - log_w.max())
    p /= p.sum()
    m = lat.magnetization(spins, region)
    ex = enumerate_moments(lat, beta, [region], chunk_bits=5)
    assert ex.log_z == pytest.approx(math.log(np.exp(log_w - log_w.max()).sum()) + log_w.max(), rel=1e-13)
    assert ex.mean[0] == pytest.approx(p @ m, abs=1e-12)
    assert ex.second[0, 0] == pytest.approx(p @ m**2, rel=1e-12)
    assert ex.cov[0, 0] == pytest.approx(p @ m**2 - (p @ m) ** 2, rel=1e-12)
    assert ex.energy_mean == pytest.approx(p @ energy, rel=1e-12)
    assert ex.energy_var == pytest.approx(p @ energy**2 - (p @ energy) ** 2, rel=1e-12)


def test_enumeration_of_24_spins_matches_transfer_matrix():
    """The largest allowed size: 2^24 states (free 4x6 ferromagnet), against the transfer matrix."""
    lat = open_lattice(4, 6)
    region = [np.ones((4, 6), dtype=bool)]
    assert_moments_close(enumerate_moments(lat, 0.35, region), transfer_matrix_moments(lat, 0.35, region), 1e-10)


# ---------------------------------------------------------------- transfer matrix vs enumeration


@pytest.mark.parametrize(
    ("height", "width", "wall_depth", "beta"),
    [
        (3, 4, None, 0.6),
        (4, 4, None, 0.9),
        (4, 4, 2, 0.5),
        (4, 5, None, 0.4),
        (4, 6, 3, 0.7),
        (3, 6, None, 0.8),
        (4, 4, None, 2.5),
    ],
)
def test_transfer_matrix_matches_enumeration(height, width, wall_depth, beta):
    """Random couplings (zero and negative ones too), random fields, overlapping and weighted regions.

    (3, 6) has W > H, which exercises the automatic transpose; beta = 2.5 is nearly frozen.
    """
    rng = np.random.default_rng(height * 100 + width * 10 + (wall_depth or 0))
    lat = random_open_lattice(rng, height, width, wall_depth)
    regions = random_regions(rng, height, width)
    assert_moments_close(transfer_matrix_moments(lat, beta, regions), enumerate_moments(lat, beta, regions), 1e-10)


def test_walled_8x8_design_reference():
    """docs/design.md §5: walled 8x8 (wall rows 0-4), beta = 0.4."""
    m = transfer_matrix_moments(walled_lattice(8, 8), 0.4, ["left", "right", "lower"])
    assert m.cov[0, 0] == pytest.approx(116.88192696, rel=1e-9)
    assert m.cov[0, 1] == pytest.approx(5.08641255, rel=1e-8)
    assert m.cov[0, 2] == pytest.approx(36.81437903, rel=1e-9)
    assert m.cov[2, 2] == pytest.approx(141.25634747, rel=1e-9)
    np.testing.assert_allclose(m.mean, 0.0, atol=1e-10)  # zero field: up-down symmetry
    np.testing.assert_allclose(m.cov, m.cov.T)


def test_fluctuation_dissipation_by_finite_differences():
    """d<M_A>/dh_B (field h added on B: H_h = H - h M_B) equals beta Cov(M_A, M_B); d ln Z/d beta = -<H>."""
    beta, h = 0.4, 1e-4
    cases = [(walled_lattice(8, 8), "left", "right"), (walled_lattice(8, 8), "left", "lower")]
    rng = np.random.default_rng(7)
    rand = random_open_lattice(rng, 5, 6, wall_depth=3)  # non-zero base field: <M> != 0
    cases.append((rand.with_regions(a=rng.random((5, 6)) < 0.4, b=rng.random((5, 6)) < 0.4), "a", "b"))
    for lat, a, b in cases:
        m0 = transfer_matrix_moments(lat, beta, [a, b])
        region_b = lat.regions[b]
        mean = {
            sgn: transfer_matrix_moments(lat.with_region_field(region_b, sgn * h), beta, [a])
            for sgn in (-1, 1)
        }
        slope = (mean[1].mean[0] - mean[-1].mean[0]) / (2 * h)
        assert slope == pytest.approx(beta * m0.cov[0, 1], rel=1e-6)
        d_log_z = (mean[1].log_z - mean[-1].log_z) / (2 * h)  # d ln Z/dh = beta <M_B>
        assert d_log_z == pytest.approx(beta * m0.mean[1], rel=1e-6, abs=1e-8)
        up, down = (transfer_matrix_moments(lat, beta + sgn * h, [a]).log_z for sgn in (1, -1))
        assert (up - down) / (2 * h) == pytest.approx(-m0.energy_mean, rel=1e-7)


# ---------------------------------------------------------------- Kaufman (finite torus)


def test_kaufman_reference_4x4():
    """docs/design.md §5: periodic 4x4 at beta = 0.4."""
    assert kaufman_log_z(4, 4, 0.4) == pytest.approx(14.5610930238, abs=1e-9)
    assert kaufman_energy(4, 4, 0.4) == pytest.approx(-1.37911648226, abs=1e-10)
    ex = enumerate_moments(periodic_lattice(4, 4), 0.4, [])
    assert ex.log_z == pytest.approx(14.5610930238, abs=1e-9)
    assert ex.energy_mean / 16 == pytest.approx(-1.37911648226, abs=1e-10)


@pytest.mark.parametrize("shape", [(4, 4), (3, 4), (4, 3), (3, 5), (4, 5)])
@pytest.mark.parametrize("beta", [0.1, 0.3, 0.4, ONSAGER_BETA_C, 0.5, 0.8, 1.5])
def test_kaufman_matches_enumeration(shape, beta):
    """Both sides of beta_c (where g_0 and the fourth term change sign), odd and even sizes, both orientations."""
    height, width = shape
    n = height * width
    ex = enumerate_moments(periodic_lattice(height, width), beta, [])
    assert kaufman_log_z(height, width, beta) == pytest.approx(ex.log_z, rel=1e-12)
    assert kaufman_energy(height, width, beta) == pytest.approx(ex.energy_mean / n, rel=1e-11)
    assert kaufman_specific_heat(height, width, beta) == pytest.approx(beta**2 * ex.energy_var / n, rel=1e-10)


def test_kaufman_coupling_scales_beta():
    assert kaufman_log_z(4, 5, 0.2, coupling=2.0) == pytest.approx(kaufman_log_z(4, 5, 0.4), rel=1e-14)
    ex = enumerate_moments(periodic_lattice(4, 4, coupling=0.5), 0.8, [])
    assert kaufman_energy(4, 4, 0.8, coupling=0.5) == pytest.approx(ex.energy_mean / 16, rel=1e-12)


def test_kaufman_64x64_approaches_onsager():
    """Away from beta_c finite-size corrections are exponentially small (ln 2 / N from the two ground states
    in the ordered phase); at beta_c ln Z/N converges as 1/L^2 and the energy as 1/L (ratios 4 and 2 from L = 32 to 64).
    """
    n = 64 * 64
    assert kaufman_log_z(64, 64, 0.3) / n == pytest.approx(onsager_log_z_per_spin(0.3), abs=1e-12)
    assert kaufman_log_z(64, 64, 0.6) / n - math.log(2) / n == pytest.approx(onsager_log_z_per_spin(0.6), abs=1e-12)
    for beta in (0.3, 0.6):
        assert kaufman_energy(64, 64, beta) == pytest.approx(onsager_energy_per_spin(beta), abs=1e-12)
    bc = ONSAGER_BETA_C
    f_err = {size: kaufman_log_z(size, size, bc) / size**2 - onsager_log_z_per_spin(bc) for size in (32, 64)}
    u_err = {size: kaufman_energy(size, size, bc) - onsager_energy_per_spin(bc) for size in (32, 64)}
    assert 0 < f_err[64] < 2e-4 and f_err[32] / f_err[64] == pytest.approx(4.0, rel=0.01)
    assert -0.011 < u_err[64] < 0 and u_err[32] / u_err[64] == pytest.approx(2.0, rel=0.01)


# ---------------------------------------------------------------- Onsager and Yang


def test_onsager_energy_at_critical_point_and_derivative_of_free_energy():
    assert ONSAGER_BETA_C == pytest.approx(0.4406867935097715, rel=1e-15)
    assert onsager_energy_per_spin(ONSAGER_BETA_C) == pytest.approx(-math.sqrt(2.0), rel=1e-13)
    for beta in (0.05, 0.3, 0.6, 1.0):  # u = -d(ln Z/N)/d beta, two independent formulas
        h = 1e-4
        slope = (onsager_log_z_per_spin(beta + h) - onsager_log_z_per_spin(beta - h)) / (2 * h)
        assert onsager_energy_per_spin(beta) == pytest.approx(-slope, rel=1e-7)
    assert onsager_energy_per_spin(1e-3) == pytest.approx(-2 * math.tanh(1e-3), rel=1e-5)  # high temperature
    catalan = 0.915965594177219015
    assert onsager_log_z_per_spin(ONSAGER_BETA_C) == pytest.approx(2 * catalan / math.pi + math.log(2) / 2, abs=1e-8)


def test_yang_magnetization():
    assert yang_magnetization(0.3) == 0.0
    assert yang_magnetization(ONSAGER_BETA_C) == 0.0
    assert yang_magnetization(0.5) == pytest.approx(0.911319377877496, rel=1e-12)  # T = 2
    assert yang_magnetization(5.0) == pytest.approx(1.0, abs=1e-15)
    d = 1e-8  # M^8 ~ 8 sqrt(2) (beta - beta_c) just above beta_c
    assert yang_magnetization(ONSAGER_BETA_C + d) ** 8 / d == pytest.approx(8 * math.sqrt(2.0), rel=1e-6)


# ---------------------------------------------------------------- errors


def test_clear_errors():
    with pytest.raises(ValueError, match="N = 25"):
        enumerate_moments(open_lattice(5, 5), 0.4, [])
    with pytest.raises(ValueError, match="periodic"):
        transfer_matrix_moments(periodic_lattice(4, 4), 0.4, [])
    with pytest.raises(ValueError, match="min\\(height, width\\) <= 16"):
        transfer_matrix_moments(open_lattice(17, 18), 0.4, [])
    with pytest.raises(ValueError, match="shape"):
        transfer_matrix_moments(open_lattice(3, 3), 0.4, [np.ones((3, 4), dtype=bool)])
    with pytest.raises(ValueError, match="not defined"):
        enumerate_moments(open_lattice(3, 3), 0.4, ["left"])
    with pytest.raises(ValueError, match="K = beta"):
        kaufman_log_z(4, 4, 0.0)
