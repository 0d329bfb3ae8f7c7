"""The engine's error bars: diagnostics equal to arviz-stats on stored series, flags for
untrustworthy entries, t intervals, split-chain noise replicates, series budget and bad input."""

import numpy as np
import pytest
import torch
from scipy import stats

from spectro.engine import Flags, MomentAccumulator, MomentError, Susceptibility, estimate_susceptibility
from spectro.engine import diagnostics as d

az = pytest.importorskip("arviz_stats.base").array_stats


def _ar1(rng, C, n, E, rho, df=None):
    noise = (lambda size: rng.standard_t(df, size=size)) if df else (lambda size: rng.normal(size=size))
    x = np.empty((C, n, E))
    x[:, 0] = noise((C, E))
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * noise((C, E))
    return x


@pytest.mark.parametrize("C,n,rho,df", [(4, 100, 0.8, None), (1, 37, 0.3, 4), (3, 8, -0.4, None), (8, 400, 0.95, 3)])
def test_diagnostics_equal_arviz_stats_on_the_same_series(C, n, rho, df):
    rng = np.random.default_rng(C * 1000 + n)
    x = _ar1(rng, C, n, 25, rho, df)
    x[..., :5] += np.arange(C)[:, None, None] * 0.5  # some entries with unmixed chains
    xa = np.moveaxis(x, (0, 1), (-2, -1))  # arviz: [..., chain, draw]
    np.testing.assert_allclose(d.ess_mean(x), az.ess(xa, method="mean"), rtol=1e-10)
    np.testing.assert_allclose(d.mean_error(x).se, az.mcse(xa, method="mean"), rtol=1e-10)
    np.testing.assert_allclose(d.ess_bulk(x), az.ess(xa, method="bulk"), rtol=1e-10)
    np.testing.assert_allclose(d.ess_tail(x), az.ess(xa, method="tail", prob=(0.05, 0.95)), rtol=1e-10)
    if C >= 2:
        np.testing.assert_allclose(d.rhat_rank(x), az.rhat(xa, method="rank"), rtol=1e-10)


def test_rank_diagnostics_equal_arviz_stats_with_ties():
    """Discrete series (Ising magnetizations take few values): average ranks of ties as arviz-stats."""
    rng = np.random.default_rng(9)
    x = rng.integers(-3, 4, size=(4, 60, 7)).astype(float)
    xa = np.moveaxis(x, (0, 1), (-2, -1))
    np.testing.assert_allclose(d.rhat_rank(x), az.rhat(xa, method="rank"), rtol=1e-10)
    np.testing.assert_allclose(d.ess_bulk(x), az.ess(xa, method="bulk"), rtol=1e-10)


def _fill(phi, psi, n_batches=None, block=37, **kw):
    T, C, m = phi.shape
    acc = MomentAccumulator(C, m, psi.shape[2], T, n_batches=n_batches, **kw)
    for s in range(0, T, block):
        acc.update(torch.from_numpy(phi[s:s + block]), torch.from_numpy(psi[s:s + block]))
    return acc


def _pair(seed, T=200, C=4, rho=0.7, c=0.5):
    rng = np.random.default_rng(seed)
    x = np.moveaxis(_ar1(rng, C, T, 2, rho), 0, 1)  # [T, C, 2]
    return x[..., :1], c * x[..., :1] + np.sqrt(1 - c**2) * x[..., 1:]


def test_default_series_is_per_draw_and_equals_arviz_on_u():
    phi, psi = _pair(0)
    acc = _fill(phi, psi)
    assert acc.n_batches == 200
    res = estimate_susceptibility(acc, scale=1.0)
    u = (phi - phi.mean()) * (psi - psi.mean())  # [T, C, 1]
    ua = np.moveaxis(u[..., 0], 0, 1)  # [C, T]
    np.testing.assert_allclose(res.stderr[0, 0], az.mcse(ua, method="mean"), rtol=1e-8)
    np.testing.assert_allclose(res.rhat[0, 0], az.rhat(ua, method="rank"), rtol=1e-8)


def test_fine_scatter_path_equals_per_batch_path():
    phi, psi = _pair(1)
    one = _fill(phi, psi, block=1)
    big = _fill(phi, psi, block=200)
    for key, v in one.chain_tensors().items():
        torch.testing.assert_close(v, big.chain_tensors()[key], rtol=1e-12, atol=1e-10)


def test_budget_coarsens_the_series_and_memory_stays_bounded():
    acc = MomentAccumulator(4, 100, 100, 10_000, series_budget_mb=1.0)
    per_point = 4 * (100 * 100 + 201) * 8
    assert acc.n_batches == 2**20 // per_point  # as many points as fit in 1 MiB
    assert acc.bsab.numel() * 8 <= 2**20
    with pytest.raises(MomentError, match="does not hold one batch"):
        MomentAccumulator(4, 1000, 1000, 100, series_budget_mb=1.0)


def test_more_batches_than_draws_is_an_error_not_a_silent_cap():
    with pytest.raises(MomentError, match="exceeds the draws"):
        MomentAccumulator(2, 1, 1, 10, n_batches=20)


def test_interval_uses_student_t_with_the_reported_dof():
    phi, psi = _pair(2, T=100)
    res = estimate_susceptibility(_fill(phi, psi), scale=-1.0)
    lo, hi = res.interval(0.9)
    q = stats.t.ppf(0.95, res.dof)
    np.testing.assert_allclose(hi - res.chi, q * res.stderr)
    np.testing.assert_allclose(res.chi - lo, q * res.stderr)
    assert np.all(q > stats.norm.ppf(0.95))  # finite dof: wider than the normal interval
    e = res.entry("obs0", "field0")
    assert e["ci95"][0] < e["mean"] < e["ci95"][1] and isinstance(e["reliable"], bool)


def test_frozen_and_nonfinite_entries_are_flagged_with_reasons():
    phi, psi = _pair(3, T=100)
    phi = np.concatenate([phi, np.full_like(phi, 2.0)], axis=2)  # observable 1 never moves
    phi[50, 2, 0] = np.nan  # observable 0 has a NaN draw in chain 2
    res = estimate_susceptibility(_fill(phi, psi), scale=1.0)
    assert res.flags[0, 0] & Flags.NONFINITE and not res.reliable[0, 0]
    assert res.flags[1, 0] & Flags.FROZEN and not res.reliable[1, 0]
    assert any("never moved" in r for r in res.reasons(1, 0))
    assert "2 of 2" in res.warning()


def test_too_few_points_per_chain_are_flagged():
    phi, psi = _pair(4, T=40)
    res = estimate_susceptibility(_fill(phi, psi, n_batches=5), scale=1.0)
    assert np.all(res.flags & Flags.FEW_POINTS)


def test_mixed_long_chains_are_reliable():
    phi, psi = _pair(5, T=2000, rho=0.5)
    res = estimate_susceptibility(_fill(phi, psi, block=500), scale=1.0)
    assert res.reliable.all(), res.warning()


def test_split_chain_noise_has_the_variance_of_the_error():
    """Over replicates, the split-chain noise realisation and the actual error χ − c have the same spread."""
    c, noise, err = 0.5, [], []
    for rep in range(150):
        phi, psi = _pair(100 + rep, T=100, rho=0.5, c=c)
        res = estimate_susceptibility(_fill(phi, psi, block=100), scale=1.0)
        noise.append(res.noise[0, 0])
        err.append(res.chi[0, 0] - c)
    ratio = np.std(noise) / np.std(err)
    # each sd from 150 near-Gaussian values has relative sd ≈ 1/sqrt(300) ≈ 0.06: ratio within ±4 sd of 1
    assert abs(ratio - 1) < 4 * np.sqrt(2) * 0.06, ratio


def test_save_load_keeps_dof_flags_noise_and_rejects_foreign_files(tmp_path):
    phi, psi = _pair(6, T=100)
    res = estimate_susceptibility(_fill(phi, psi), scale=1.0)
    back = Susceptibility.load(res.save(tmp_path / "r.npz"))
    np.testing.assert_array_equal(back.dof, res.dof)
    np.testing.assert_array_equal(back.flags, res.flags)
    np.testing.assert_array_equal(back.noise, res.noise)
    bad = tmp_path / "notes.npz"
    bad.write_text("my notes")
    with pytest.raises(ValueError, match="notes.npz is not a spectro susceptibility file"):
        Susceptibility.load(bad)
