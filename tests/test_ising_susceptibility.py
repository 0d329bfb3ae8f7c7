"""Monte Carlo χ through the shared engine against the exact transfer matrix, and finite differences.

Every comparison is a z-score with the engine's batch-means standard error; |z| < 4 per entry.
"""

import numpy as np
import pytest

from spectro.ising import LatticeError, walled_lattice
from spectro.ising.exact import ONSAGER_BETA_C, transfer_matrix_moments
from spectro.ising.samplers import SamplerConfig
from spectro.ising.susceptibility import RunConfig, chamber_susceptibility, exact_chamber_susceptibility, probe_grid

Z_MAX = 4.0


@pytest.mark.parametrize(
    "beta, sampler, draws",
    [
        (0.3, "metropolis", 20_000),
        (0.4, "heatbath", 20_000),
        (ONSAGER_BETA_C, "swendsen-wang", 20_000),
    ],
)
def test_chi_matches_transfer_matrix_on_walled_lattice(beta, sampler, draws):
    lat = walled_lattice(10, 10)  # wall depth 7
    probes = probe_grid(lat, (5, 5))  # 4 probes: two beside the wall, two below it
    res = chamber_susceptibility(lat, beta, probes, SamplerConfig(sampler=sampler, chains=8, seed=11), RunConfig(draws=draws), progress=False)
    exact = exact_chamber_susceptibility(lat, beta, probes)
    z = res.z_scores(exact)
    assert np.all(np.abs(z) < Z_MAX), f"z-scores {np.round(z, 2)}"
    assert np.all(res.rhat < 1.1)
    # the error bars are informative: relative stderr of the large entries is small
    assert np.median(res.stderr / np.abs(exact)) < 0.1


def test_result_carries_typed_probe_coordinates():
    lat = walled_lattice(6, 6)
    probes = probe_grid(lat, (2, 3))
    s = chamber_susceptibility(lat, 0.3, probes, SamplerConfig(chains=2, seed=1), RunConfig(draws=50), progress=False)
    ax = s.field_axis
    rects = [(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(*(ax.column(k) for k in ("row0", "row1", "col0", "col1")))]
    assert rects == [(r, r + 2, c, c + 3) for r in (0, 2, 4) for c in (0, 3)]
    assert s.estimator.system == "ising" and s.estimator.run["beta"] == 0.3 and s.estimator.run["draws"] == 50
    ds = s.to_xarray()
    assert ds["chi"].sel(field="2:4,3:6", observable=s.observables[0]).item() == s.chi[0, 3]


def test_chi_sees_the_wall():
    """A probe in the left chamber: strong response of M_left, almost none of M_right (exactly)."""
    lat = walled_lattice(12, 12)
    probes = {"in_left": lat.rect("0:4,0:3"), "in_right": lat.rect("0:4,9:12")}
    exact = exact_chamber_susceptibility(lat, 0.4, probes)
    res = chamber_susceptibility(lat, 0.4, probes, SamplerConfig(chains=8, seed=3), RunConfig(draws=10_000), progress=False)
    assert np.all(np.abs(res.z_scores(exact)) < Z_MAX)
    left, right = res.observables.index("left"), res.observables.index("right")
    assert exact[left, 0] > 50 * abs(exact[right, 0])
    assert res.chi[left, 0] - res.chi[right, 0] > 10 * np.hypot(res.stderr[left, 0], res.stderr[right, 0])


def test_finite_difference_matches_covariance():
    """(⟨M_A⟩_{+h} − ⟨M_A⟩_{−h}) / 2h, sampled with the field actually applied, equals β·Cov at h = 0."""
    beta, h = 0.4, 0.025
    lat = walled_lattice(8, 8)
    probe = lat.rect("5:8,0:8")  # the lower chamber's strip as the probe
    probes = {"B": probe}
    run = RunConfig(draws=40_000)
    means, ses = [], []
    for sign, seed in ((+1, 21), (-1, 22)):
        shifted = lat.with_region_field(probe, sign * h)
        r = chamber_susceptibility(shifted, beta, probes, SamplerConfig(chains=8, seed=seed), run, progress=False)
        means.append(r.observable_mean)
        ses.append(r.observable_stderr)
    fd = (means[0] - means[1]) / (2 * h)
    fd_se = np.hypot(ses[0], ses[1]) / (2 * h)
    exact0 = exact_chamber_susceptibility(lat, beta, probes)[:, 0]
    # O(h²) bias of the central difference, from the exact oracle at ±h
    regions = [lat.regions[n] for n in ("left", "right", "lower")]
    exact_fd = (
        transfer_matrix_moments(lat.with_region_field(probe, h), beta, regions).mean
        - transfer_matrix_moments(lat.with_region_field(probe, -h), beta, regions).mean
    ) / (2 * h)
    assert np.all(np.abs(exact_fd - exact0) < 0.25 * fd_se)  # the O(h²) bias is small against the error bar
    z = (fd - exact0) / fd_se
    assert np.all(np.abs(z) < Z_MAX), f"finite-difference z {np.round(z, 2)}"
    # and against the sampled covariance at h = 0 (independent chains)
    r0 = chamber_susceptibility(lat, beta, probes, SamplerConfig(chains=8, seed=23), run, progress=False)
    z0 = (fd - r0.chi[:, 0]) / np.hypot(fd_se, r0.stderr[:, 0])
    assert np.all(np.abs(z0) < Z_MAX)


def test_deterministic_given_seed():
    lat = walled_lattice(6, 6)
    probes = probe_grid(lat, 3)
    cfg, run = SamplerConfig(chains=4, seed=5), RunConfig(draws=500, block=128)
    a = chamber_susceptibility(lat, 0.4, probes, cfg, run, progress=False)
    b = chamber_susceptibility(lat, 0.4, probes, cfg, run, progress=False)
    np.testing.assert_array_equal(a.chi, b.chi)
    np.testing.assert_array_equal(a.stderr, b.stderr)


def test_bad_inputs_are_named():
    lat = walled_lattice(6, 6)
    with pytest.raises(LatticeError, match="beta"):
        chamber_susceptibility(lat, -0.1, probe_grid(lat, 3), progress=False)
    with pytest.raises(LatticeError, match="empty"):
        chamber_susceptibility(lat, 0.4, {"b": np.zeros((6, 6), bool)}, progress=False)
    with pytest.raises(LatticeError, match="no probe"):
        chamber_susceptibility(lat, 0.4, {}, progress=False)
    with pytest.raises(LatticeError, match="does not fit"):
        probe_grid(lat, 7)
    with pytest.raises(ValueError, match="draws"):
        RunConfig(draws=0)
