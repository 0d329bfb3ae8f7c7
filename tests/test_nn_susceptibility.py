"""Observables, fields and the susceptibility drivers: identities, null controls, Baker et al.'s
component estimator against devinterp, and its standard error."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from spectro.engine import MomentAccumulator, estimate_susceptibility
from spectro.nn import (
    LocalizedPosterior,
    MeanLoss,
    PerSampleLoss,
    PerTokenLoss,
    ProbeSet,
    Restriction,
    SampleUpweighting,
    SamplerConfig,
    Selection,
    SubsetFields,
    TokenPointMasses,
    baker_susceptibility,
    component_susceptibility,
    run_susceptibility,
)
from spectro.nn.oracles import LinearGaussianOracle

T_TOK, D = 5, 3


class TokenLinear(nn.Module):
    """Per-token linear regression: x [B, T, d] → ŷ [B, T] = x·w + b."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(torch.randn(D, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x):
        return x @ self.w + self.b


def token_loss(out, batch):
    return (out - batch[1]) ** 2  # [B, T]


def _token_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, T_TOK, D, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64) + 0.3 * torch.randn(n, T_TOK, generator=g, dtype=torch.float64)
    return X, y


def test_mean_of_per_token_chi_over_a_subset_equals_the_subset_chi(tmp_path):
    """mean_{xy∈S} ψ_xy = L(S) − L̄(q) draw by draw, and χ is linear in ψ: exact identity."""
    model = TokenLinear()
    train = _token_data(24, 0)
    probe = ProbeSet({"base": _token_data(8, 1), "p": _token_data(6, 2)})
    S = [1, 2, 4]
    observables = [PerTokenLoss(("p", [0]), positions=[0, 3]), PerSampleLoss("base"), MeanLoss("base")]
    fields = [
        TokenPointMasses(("p", S), base="base"),
        SubsetFields({"S": ("p", S), "all": "p"}, base="base"),
        SampleUpweighting(("p", S), base="base"),
    ]
    cfg = SamplerConfig(chains=4, draws=60, epsilon=1e-3, gamma=10.0, nbeta=20.0, batch_size=8, master_dtype=torch.float64, n_batches=10)
    sus = run_susceptibility(model, token_loss, train, probe, observables, fields, cfg)
    k_tok = len(S) * T_TOK
    assert sus.chi.shape == (2 + 8 + 1, k_tok + 2 + len(S))
    assert sus.fields[0] == "tok:p[1,0]" and sus.fields[k_tok] == "dL:S" and sus.observables[0] == "loss:p[0,0]"
    per_token_mean = sus.chi[:, :k_tok].mean(axis=1)
    np.testing.assert_allclose(per_token_mean, sus.chi[:, k_tok], rtol=1e-9, atol=1e-12)
    # per-sample up-weighting: the mean over the tokens of sample m is the sample's field
    np.testing.assert_allclose(sus.chi[:, :k_tok].reshape(-1, len(S), T_TOK).mean(2), sus.chi[:, k_tok + 2 :], rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(sus.stderr)) and np.all(sus.stderr > 0)
    assert sus.meta["sampling"]["nbeta"] == 20.0 and len(sus.meta["loss_trace"]) == 4
    back = type(sus).load(sus.save(tmp_path / "chi.npz"))  # the result (with its meta) round-trips
    np.testing.assert_array_equal(back.chi, sus.chi)
    assert back.meta["sampling"]["sampler"]["master_dtype"] == "float64"


# ---------------------------------------------------------------------- null controls
def _linear_problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, D, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.5 * torch.randn(20, generator=g, dtype=torch.float64)
    w_star = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    model = nn.Linear(D, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w_star[None])
    return model, X, y, w_star


def sq_loss(out, batch):
    return (out[:, 0] - batch[1]) ** 2


def test_null_decoupled_chains_give_zero_chi_with_calibrated_errors():
    """Pair φ from chains 0–15 with ψ from chains 16–31 (independent): the true χ is 0 for all
    20×3 entries. Criterion: max |z| < 4.5 and the RMS of z in [0.5, 1.7] (stderr calibrated;
    the 60 entries are correlated, so their RMS scatters more than independent ones would)."""
    model, X, y, _ = _linear_problem()
    cfg = SamplerConfig(chains=32, draws=200, steps_per_draw=5, burn_in=100, epsilon=4e-3, gamma=2.0, nbeta=5.0, batch_size=None, master_dtype=torch.float64)
    post = LocalizedPosterior(model, sq_loss, (X, y), cfg)
    probe = ProbeSet({"train": (X, y)})
    observables = [PerSampleLoss("train")]
    fields = [SubsetFields({"A": ("train", range(5)), "B": ("train", range(10, 20))}, base="train"), SampleUpweighting(("train", [7]), base="train")]
    acc = MomentAccumulator(16, 20, 3, cfg.draws, n_batches=10)

    def on_draw(draw):
        losses = probe.evaluate(post, draw.weights)
        phi = torch.cat([o(losses, probe) for o in observables], 1)
        psi = torch.cat([f(losses, probe) for f in fields], 1)
        acc.update(phi[:16], psi[16:])

    post.sample(on_draw)
    z = estimate_susceptibility(acc, -1.0).z_scores(np.zeros((20, 3)))
    assert np.abs(z).max() < 4.5, np.round(z, 2)
    assert 0.5 < np.sqrt(np.mean(z**2)) < 1.7


def test_null_tiny_nbeta_posterior_forgets_the_data():
    """nβ → 0: the posterior is the localizing Gaussian N(w*, I/γ). Reweighting the data must not
    move ⟨φ⟩ (finite difference = 0 within 4σ), and χ equals the prior-only closed form."""
    model, X, y, w_star = _linear_problem()
    nbeta, gamma, h = 1e-8, 5.0, 0.3
    probe = ProbeSet({"train": (X, y)})
    observables = [PerSampleLoss(("train", [0, 3, 7])), MeanLoss("train")]
    fields = [SubsetFields({"A": ("train", range(5))}, base="train")]
    q = torch.zeros(20, dtype=torch.float64)
    q[:5] = 0.2
    runs = []
    for sign, seed in ((0, 1), (+1, 2), (-1, 3)):
        rho = (1 - sign * h) / 20 + sign * h * q
        cfg = SamplerConfig(chains=64, draws=200, steps_per_draw=4, burn_in=100, epsilon=2e-2, gamma=gamma, nbeta=nbeta, batch_size=None, seed=seed, master_dtype=torch.float64)
        runs.append(run_susceptibility(model, sq_loss, (X, y), probe, observables, fields, cfg, sample_weights=rho))
    diff = runs[1].observable_mean - runs[2].observable_mean
    assert np.all(np.abs(diff) < 4 * np.hypot(runs[1].observable_stderr, runs[2].observable_stderr))
    O = np.zeros((4, 20))
    O[[0, 1, 2], [0, 3, 7]] = 1
    O[3] = 1 / 20
    F = (q.numpy() - 1 / 20)[None]
    prior_only = LinearGaussianOracle(X.numpy(), y.numpy(), w_star.numpy(), nbeta, gamma).susceptibility(O, F, epsilon=2e-2)
    assert np.abs(runs[0].z_scores(prior_only)).max() < 4


# ---------------------------------------------------------------------- Baker et al. 2025
def _synthetic_runs(rng, C=3, T=40, n_pt=4, n_obs=2, L=5, coupling=0.5):
    """Per-token losses of a 'sampling task' probe and an observable probe, [C, T, batch, L]."""
    common = rng.normal(size=(C, T, 1, 1))
    pt = 3.0 + 0.2 * common + 0.1 * rng.normal(size=(C, T, n_pt, L))
    obs = 3.5 + coupling * 0.2 * common * rng.uniform(0.5, 1.5, size=(1, 1, n_obs, L)) + 0.1 * rng.normal(size=(C, T, n_obs, L))
    return pt, obs


def _accumulate(pt, obs, init_loss_mean, B=8):
    C, T = pt.shape[:2]
    pt_mean = pt.mean(axis=(2, 3))  # L̄ per draw
    phi = (pt_mean - init_loss_mean)[:, :, None]
    psi = obs.reshape(C, T, -1) - pt_mean[:, :, None]
    acc = MomentAccumulator(C, 1, psi.shape[2], T, n_batches=B)
    acc.update(torch.from_numpy(phi.transpose(1, 0, 2)), torch.from_numpy(psi.transpose(1, 0, 2)))
    return acc


def test_baker_estimator_equals_devinterp_compute_susceptibilities():
    xr = pytest.importorskip("xarray")
    from devinterp.slt.susceptibilities import compute_susceptibilities

    rng = np.random.default_rng(0)
    pt_full, obs_full = _synthetic_runs(rng, coupling=0.2)
    pt_c, obs_c = _synthetic_runs(rng, coupling=1.0)
    init_loss = 2.9 + 0.01 * rng.normal(size=(3, 5))

    def tree(pt, obs):
        ds = xr.Dataset(
            {
                "loss_pile": (("chain", "draw", "batch_pile", "token_pos"), pt),
                "loss_probe": (("chain", "draw", "batch_probe", "token_pos"), obs),
                "init_loss": (("chain", "token_pos"), init_loss),
                "input_ids_probe": (("batch_probe", "token"), np.arange(12).reshape(2, 6)),
            }
        )
        return xr.DataTree(ds)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = compute_susceptibilities({"full": tree(pt_full, obs_full), "l0h0": tree(pt_c, obs_c)}, "pile")
    theirs = out["susceptibilities"]["sus"].sel(wr="l0h0").values  # [2·5] (batch, target_position) raveled

    ref = init_loss.mean()
    ours = baker_susceptibility(_accumulate(pt_c, obs_c, ref), _accumulate(pt_full, obs_full, ref))
    np.testing.assert_allclose(ours.chi[0], theirs, rtol=1e-10, atol=1e-12)
    assert np.abs(theirs).max() > 1e-3  # not a trivial 0 = 0


def test_baker_standard_error_is_calibrated():
    """Over 300 independent replicate experiments (AR(1) draws), the spread of the Baker
    estimates matches the reported standard error (ratio within 0.8–1.25)."""
    rng = np.random.default_rng(1)
    C, T, k, rho = 4, 200, 3, 0.6
    mix = np.array([[1.0, 0.5, -0.3, 0.2], [0.0, 1.0, 0.2, 0.1], [0.0, 0.0, 1.0, 0.4], [0.0, 0.0, 0.0, 1.0]])

    def ar_draws(offset):
        x = np.empty((T, C, 1 + k))
        x[0] = rng.normal(size=(C, 1 + k))
        for t in range(1, T):
            x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=(C, 1 + k))
        x = x @ mix + offset
        acc = MomentAccumulator(C, 1, k, T, n_batches=10)
        acc.update(torch.from_numpy(x[..., :1]), torch.from_numpy(x[..., 1:]))
        return acc

    est, se = [], []
    for _ in range(300):
        s = baker_susceptibility(ar_draws(np.array([0.7, 0.2, -0.1, 0.3])), ar_draws(np.array([0.0, 0.5, 0.1, 0.0])))
        est.append(s.chi[0])
        se.append(s.stderr[0])
    ratio = np.std(est, axis=0, ddof=1) / np.sqrt(np.mean(np.square(se), axis=0))
    assert np.all((0.8 < ratio) & (ratio < 1.25)), ratio
    assert np.all(np.isfinite(s.ess)) and np.all(np.abs(s.rhat - 1) < 0.2)
    # E_C[φ] ≈ 0.7 ≠ 0: the full run's error is a visible share of the variance, not all of it
    assert 0.05 < s.meta["full_run_variance_share"] < 0.95


def _fitted_token_model(train):
    """TokenLinear at the least-squares solution (a genuine w*, as for a trained network)."""
    X, y = train
    A = torch.cat([X.reshape(-1, D), torch.ones(X.shape[0] * T_TOK, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(A, y.reshape(-1, 1)).solution[:, 0]
    model = TokenLinear()
    with torch.no_grad():
        model.w.copy_(sol[:D])
        model.b.copy_(sol[D])
    return model


def test_component_susceptibility_runs_full_and_component_chains():
    train = _token_data(24, 0)
    model = _fitted_token_model(train)
    probe = ProbeSet({"base": _token_data(8, 1), "p": _token_data(3, 2)})
    components = {"w": Restriction({"w": None}, name="w"), "b": Restriction({"b": None}, name="b")}
    cfg = SamplerConfig(chains=4, draws=40, epsilon=1e-3, gamma=50.0, nbeta=20.0, batch_size=8, master_dtype=torch.float64, n_batches=8)
    out = component_susceptibility(model, token_loss, train, probe, components, TokenPointMasses("p", base="base"), cfg)
    assert set(out) == {"w", "b"}
    for name, sus in out.items():
        assert sus.chi.shape == (1, 3 * T_TOK) and sus.observables == ["phi_C"]
        assert np.all(np.isfinite(sus.chi)) and np.all(sus.stderr > 0)
        assert sus.meta["component"] == name and sus.meta["sampling"]["restriction"] == name
    # φ_C = L̄(w) − L̄(w*) vanishes at w*; near a minimum its posterior mean is small (≈ d/(2nβ)
    # scale), not offset by L̄ itself
    for sus in out.values():
        assert abs(sus.observable_mean[0]) < 0.2
    assert out["w"].meta["phi_reference_loss"] > 0
    # typed coordinates instead of names to parse: token (sample, position) of every column
    axis = out["w"].field_axis
    assert list(axis.column("kind")) == ["token"] * (3 * T_TOK)
    assert [(int(i), int(t)) for i, t in zip(axis.column("sample"), axis.column("position"))] == \
        [(i, t) for i in range(3) for t in range(T_TOK)]
    assert out["w"].estimator.kind == "baker2025" and out["w"].estimator.run["restriction"] == "w"
    ds = out["w"].to_xarray()
    np.testing.assert_array_equal(ds["chi"].values, out["w"].chi)


# ---------------------------------------------------------------------- bad input
def test_bad_probe_selections_are_rejected_before_sampling():
    model = TokenLinear()
    train = _token_data(16, 0)
    probe = ProbeSet({"base": _token_data(4, 1), "p": _token_data(3, 2)})
    cfg = SamplerConfig(chains=2, draws=4, batch_size=4, nbeta=1.0)
    with pytest.raises(ValueError, match="empty selection"):
        SubsetFields({"S": ("p", [])}, base="base")
    with pytest.raises(ValueError, match="at least one subset"):
        SubsetFields({}, base="base")
    with pytest.raises(ValueError, match="unknown probe group 'q'"):
        run_susceptibility(model, token_loss, train, probe, [MeanLoss("q")], [SubsetFields({"S": "p"}, base="base")], cfg)
    with pytest.raises(ValueError, match="outside"):
        run_susceptibility(model, token_loss, train, probe, [MeanLoss("base")], [SampleUpweighting(("p", [5]), base="base")], cfg)
    with pytest.raises(ValueError, match="token positions"):
        run_susceptibility(model, token_loss, train, probe, [PerTokenLoss("p", positions=[9])], [SubsetFields({"S": "p"}, base="base")], cfg)
    with pytest.raises(ValueError, match="at least one field"):
        run_susceptibility(model, token_loss, train, probe, [MeanLoss("base")], [], cfg)
    with pytest.raises(ValueError, match="empty"):
        ProbeSet({"a": _token_data(0, 0)})
    with pytest.raises(ValueError, match="empty selection"):
        Selection("p", [])
    with pytest.raises(TypeError, match="probe selection"):
        MeanLoss(3)


def test_divergence_between_health_reads_is_caught_at_the_end():
    """Health is read every health_every steps (no per-step device sync) and once after the last draw:
    a run shorter than health_every still reports its diverged chain."""
    from spectro.nn import DivergenceError

    torch.manual_seed(0)
    X = torch.randn(32, 3)
    y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(32)
    probe = ProbeSet({"a": (X[:8], y[:8]), "b": (X[8:16], y[8:16])})
    cfg = SamplerConfig(chains=2, draws=7, epsilon=5.0, nbeta=10.0, gamma=1.0, batch_size=None, health_every=1000,
                        max_loss_increase=1.0)
    with pytest.raises(DivergenceError, match="diverged at step"):
        run_susceptibility(nn.Linear(3, 1), lambda out, b: (out.squeeze(-1) - b[1]) ** 2, (X, y), probe,
                           [MeanLoss("a")], [SubsetFields({"b": "b"}, base="a")], cfg)
