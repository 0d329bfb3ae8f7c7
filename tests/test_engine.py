"""The streaming engine against direct NumPy computations on stored draws, and against known truths."""

import numpy as np
import pytest
import torch

from spectro.engine import MomentAccumulator, MomentError, Susceptibility, estimate_susceptibility, pooled_moments


def _ar1(rng, T, C, dim, rho, offset):
    x = np.empty((T, C, dim))
    x[0] = rng.normal(size=(C, dim))
    for t in range(1, T):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=(C, dim))
    return x + offset


def _draws(seed=0, T=400, C=4, m=3, k=2, rho=0.5):
    rng = np.random.default_rng(seed)
    z = _ar1(rng, T, C, m + k, rho, 0.0)
    mix = rng.normal(size=(m + k, m + k))
    y = z @ mix + np.concatenate([np.full(m, 1e3), np.full(k, -50.0)])  # large offsets test the shift
    return y[..., :m], y[..., m:]


def _fill(phi, psi, B=10, block=37):
    T, C, m = phi.shape
    acc = MomentAccumulator(C, m, psi.shape[2], T, n_batches=B)
    for s in range(0, T, block):  # odd block size: blocks straddle batch boundaries
        acc.update(torch.from_numpy(phi[s : s + block]), torch.from_numpy(psi[s : s + block]))
    return acc


def test_pooled_moments_match_numpy_on_stored_draws():
    phi, psi = _draws()
    T, C, m = phi.shape
    k = psi.shape[2]
    pm = pooled_moments(_fill(phi, psi))
    flat_phi, flat_psi = phi.reshape(-1, m), psi.reshape(-1, k)
    full = np.cov(flat_phi.T, flat_psi.T)  # ddof = 1
    np.testing.assert_allclose(pm.cov, full[:m, m:], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pm.mean_phi, flat_phi.mean(0), rtol=1e-12)
    u = (flat_phi - flat_phi.mean(0))[:, :, None] * (flat_psi - flat_psi.mean(0))[:, None, :]
    np.testing.assert_allclose(pm.var_u, u.var(0), rtol=1e-7)
    # batch means of u: batch b holds draws floor(t*B/T) == b
    bidx = (np.arange(T) * 10) // T
    uc = u.reshape(T, C, m, k)
    ref = np.stack([uc[bidx == b].mean(0) for b in range(10)], axis=1)  # [C, B, m, k]
    np.testing.assert_allclose(pm.batch_u, ref, rtol=1e-7, atol=1e-9)
    for c in range(C):
        own = np.cov(phi[:, c].T, psi[:, c].T)[:m, m:]
        np.testing.assert_allclose(pm.chain_cov[c], own, rtol=1e-8, atol=1e-9)


def test_block_size_and_concatenation_do_not_change_results():
    phi, psi = _draws(seed=1)
    one = pooled_moments(_fill(phi, psi, block=1))
    big = pooled_moments(_fill(phi, psi, block=400))
    halves = MomentAccumulator.concatenate([_fill(phi[:, :2], psi[:, :2]), _fill(phi[:, 2:], psi[:, 2:])])
    cat = pooled_moments(halves)
    for other in (big, cat):
        np.testing.assert_allclose(one.cov, other.cov, rtol=1e-10)
        np.testing.assert_allclose(one.batch_u, other.batch_u, rtol=1e-8, atol=1e-10)


def test_state_dict_resume_is_identical():
    phi, psi = _draws(seed=2)
    whole = _fill(phi, psi, block=50)
    part = MomentAccumulator(4, 3, 2, 400, n_batches=10)
    part.update(torch.from_numpy(phi[:150]), torch.from_numpy(psi[:150]))
    resumed = MomentAccumulator(4, 3, 2, 400, n_batches=10)
    resumed.load_state_dict(part.state_dict())
    resumed.update(torch.from_numpy(phi[150:]), torch.from_numpy(psi[150:]))
    for key, v in whole.chain_tensors().items():
        torch.testing.assert_close(v, resumed.chain_tensors()[key], rtol=1e-12, atol=1e-9)


def test_known_covariance_within_error_bars_and_calibrated_stderr():
    """AR(1) pairs with known Cov(φ, ψ) = c: z-scores over replicates have mean ≈ 0 and sd ≈ 1."""
    rng = np.random.default_rng(3)
    T, C, rho, c, reps = 2000, 4, 0.8, 0.6, 60
    x_all = _ar1(rng, T, C * reps, 2, rho, 0.0)  # all replicates in one vectorised recursion
    zs, rhats = [], []
    for rep in range(reps):
        x = x_all[:, rep * C : (rep + 1) * C]
        phi = x[..., :1]
        psi = c * x[..., :1] + np.sqrt(1 - c**2) * x[..., 1:]
        res = estimate_susceptibility(_fill(phi, psi, B=None, block=500), scale=2.0)
        zs.append((res.chi[0, 0] - 2.0 * c) / res.stderr[0, 0])
        rhats.append(res.rhat[0, 0])
        # u = φψ of Gaussian AR(1)s has autocorrelation ρ^(2k): IAT = (1+ρ²)/(1−ρ²) = 4.56, ESS ≈ N/4.56
        assert C * T / 8 < res.ess[0, 0] < C * T / 2.5
    zs = np.asarray(zs)
    assert np.all(np.abs(zs) < 4.5), zs
    assert abs(zs.mean()) < 4 / np.sqrt(len(zs))  # mean of 60 unit normals
    assert 0.7 < zs.std() < 1.35  # sd of 60 calibrated z: ±20 % holds with > 99.5 % probability
    assert np.median(rhats) < 1.05


def test_rhat_flags_chains_in_different_states():
    rng = np.random.default_rng(4)
    T, C = 400, 4
    phi = rng.normal(size=(T, C, 1)) + np.array([0, 0, 5, 5])[None, :, None] * np.linspace(0, 1, T)[:, None, None]
    psi = phi + rng.normal(size=(T, C, 1))
    res = estimate_susceptibility(_fill(phi, psi), scale=1.0)
    assert res.rhat[0, 0] > 1.1


def test_save_load_roundtrip_and_atomicity(tmp_path):
    phi, psi = _draws(seed=5)
    res = estimate_susceptibility(_fill(phi, psi), scale=-1.0, observables=["a", "b", "c"], fields=["x", "y"], meta={"seed": 5})
    path = res.save(tmp_path / "chi.npz")
    back = Susceptibility.load(path)
    np.testing.assert_array_equal(back.chi, res.chi)
    np.testing.assert_array_equal(back.rhat, res.rhat)
    assert back.observables == ["a", "b", "c"] and back.fields == ["x", "y"] and back.meta["seed"] == 5
    assert back.entry("b", "y")["mean"] == res.chi[1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chi.npz"]  # no temporary left behind


def test_bad_shapes_and_counts_are_named():
    acc = MomentAccumulator(2, 3, 1, 10)
    with pytest.raises(MomentError, match="observables have shape"):
        acc.update(torch.zeros(2, 4), torch.zeros(2, 1))
    with pytest.raises(MomentError, match="chains=2"):
        acc.update(torch.zeros(3, 3), torch.zeros(3, 1))
    with pytest.raises(MomentError, match="sized for 10 draws"):
        acc.update(torch.zeros(11, 2, 3), torch.zeros(11, 2, 1))
    with pytest.raises(MomentError, match="n_chains"):
        MomentAccumulator(0, 3, 1, 10)


def test_select_observables_equals_accumulating_only_those_rows():
    """An accumulator cut to observable rows [2, 0] holds what one fed with only those φ columns
    (in that order) holds: every φ-indexed sum, the ψ sums unchanged (to float64 rounding: the
    einsums run on other shapes)."""
    phi, psi = _draws(seed=5, m=3, k=2)
    cut = _fill(phi, psi).select_observables([2, 0])
    direct = _fill(np.ascontiguousarray(phi[..., [2, 0]]), psi)
    assert cut.n_observables == 2 and cut.n_batches == direct.n_batches and cut.draws_seen == direct.draws_seen
    for key, want in direct.chain_tensors().items():
        np.testing.assert_allclose(cut.chain_tensors()[key].numpy(), want.numpy(), rtol=1e-13, atol=1e-9, err_msg=key)
    np.testing.assert_allclose(estimate_susceptibility(cut, 1.0).chi, estimate_susceptibility(direct, 1.0).chi, rtol=1e-10)


def test_baker_on_chosen_rows_takes_each_row_from_its_own_estimator():
    """rows=[0]: row 0 is Baker's estimator whole (χ, errors, dof, flags, noise, means), row 1 the
    plain −Cov of the component run whole; the observable axis names the estimator per row."""
    from spectro.engine import component_susceptibility_estimate
    from spectro.engine.susceptibility import ROW_ARRAYS

    comp = _fill(*_draws(seed=1, m=2, k=3))
    full = _fill(*_draws(seed=2, m=2, k=3))
    mixed = component_susceptibility_estimate(comp, full, rows=[0])
    baker = component_susceptibility_estimate(comp, full)
    plain = estimate_susceptibility(comp, -1.0)
    # Baker's rows come from an accumulator of those rows only: numpy reduces arrays of another
    # shape in another order, so they agree to float64 rounding (a few ulp), not bit for bit
    for name in ROW_ARRAYS:
        np.testing.assert_allclose(getattr(mixed, name)[0], getattr(baker, name)[0], rtol=1e-13, atol=0, err_msg=name)
        np.testing.assert_array_equal(getattr(mixed, name)[1], getattr(plain, name)[1], err_msg=name)
    # the two estimators differ by far more than that, so the test can fail
    assert np.abs(baker.chi[0] - plain.chi[0]).max() > 1e-3 * np.abs(plain.chi[0]).max()
    assert list(mixed.observable_axis.column("estimator")) == ["baker2025", "cov"]
    assert mixed.estimator.kind == "cov"
    with pytest.raises(ValueError, match="rows must index the 2 observables"):
        component_susceptibility_estimate(comp, full, rows=[2])


def test_too_few_draws_per_half_give_no_split_noise_instead_of_an_error():
    """2 chains × 3 draws: χ and its error exist (6 draws), the split-chain noise (3 draws a half) does not."""
    from spectro.engine import component_susceptibility_estimate

    comp, full = _fill(*_draws(seed=3, T=3, C=2), B=3), _fill(*_draws(seed=4, T=3, C=2), B=3)
    for res in (estimate_susceptibility(comp, 1.0), component_susceptibility_estimate(comp, full)):
        assert res.noise is None and np.isfinite(res.chi).all()
