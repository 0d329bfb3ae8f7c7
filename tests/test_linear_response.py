"""χ = (1/nβ)·∂_h⟨φ⟩_h measured directly: sample the posterior of reweighted data at h = ±δ with
common random numbers and compare the central difference with χ at h = 0 (spectro.nn.reweighting).

Oracles: the reweighting term is checked against the sampler's own data weights ρ (exact, full
batch); the finite difference against the closed-form Gaussian posterior of reweighted data
(spectro.nn.oracles); then the same comparison on builtin:tiny, a transformer, where χ and the
difference have only their Monte Carlo errors (fast: one field of each kind; slow: per-domain and
per-token fields, full model and two heads, two δ).
"""

import numpy as np
import pytest
import torch
from torch import nn

from spectro.nn import MeanLoss, PerSampleLoss, ProbeSet, SamplerConfig, SubsetFields
from spectro.nn.fields import SampleUpweighting, TokenPointMasses
from spectro.nn.oracles import LinearGaussianOracle
from spectro.nn.posterior import LocalizedPosterior
from spectro.nn.reweighting import FieldTerm, ResponseConfig, field_weights, linear_response, summarize, z_from_t
from toy_regression import linear_gaussian_problem, squared_loss

N, D = 20, 3
NBETA, GAMMA = 5.0, 2.0
SUBSET_A = list(range(5))


def _problem():
    return linear_gaussian_problem(N)


def test_field_weights_reproduce_every_field_functional():
    """ψ_a(ℓ) = Σ_it F[a, i, t]·ℓ_it for random losses, for each kind of field."""
    probe = ProbeSet({"base": torch.zeros(6, 4), "code": torch.zeros(3, 4)})
    fields = [SubsetFields({"code": "code", "c01": ("code", [0, 1])}, base="base"),
              SampleUpweighting(("code", [2]), base="base"),
              TokenPointMasses(("code", [1]), base="base", positions=[0, 2])]
    F = field_weights(fields, probe, n_tokens=5)
    losses = torch.rand(3, probe.size, 5, dtype=torch.float64)
    psi = torch.cat([f(losses, probe) for f in fields], dim=1)
    assert F.shape == (psi.shape[1], probe.size, 5)
    torch.testing.assert_close(torch.einsum("ant,cnt->ca", F, losses), psi, rtol=1e-12, atol=1e-12)


def test_field_term_is_the_reweighted_data_loss():
    """L_n + h·ψ_A with the term equals the loss of the data weights ρ_h = (1−h)/n + h·1_A/|A| (ψ_A's
    base = the training set), in value and gradient (full batch)."""
    model, X, y, _ = _problem()
    probe = ProbeSet({"train": (X, y)})
    F = field_weights([SubsetFields({"A": ("train", SUBSET_A)}, base="train")], probe, 1)[0]
    cfg = SamplerConfig(chains=2, batch_size=None, master_dtype=torch.float64, nbeta=NBETA, gamma=GAMMA)
    W = torch.randn(2, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for h in (0.3, -0.2):
        rho = torch.full((N,), (1 - h) / N, dtype=torch.float64)
        rho[SUBSET_A] += h / len(SUBSET_A)
        term = FieldTerm.of(h, F, probe, "cpu", torch.float64)
        with_term = LocalizedPosterior(model, squared_loss, (X, y), cfg, loss_term=term)
        weighted = LocalizedPosterior(model, squared_loss, (X, y), cfg, sample_weights=rho)
        l1, g1 = with_term.loss_and_grad(W, (X, y), shared_batch=True)
        l0, g0 = weighted.loss_and_grad(W, (X, y), N * rho, shared_batch=True)
        torch.testing.assert_close(l1, l0, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g1, g0, rtol=1e-12, atol=1e-12)
    # and the term is really there: without it the loss differs
    plain = LocalizedPosterior(model, squared_loss, (X, y), cfg)
    assert not torch.allclose(plain.loss_and_grad(W, (X, y), shared_batch=True)[0], l1)


def test_z_from_t_is_the_normal_quantile_of_the_t_tail():
    assert z_from_t(np.array([1.96]), np.inf)[0] == pytest.approx(1.96, abs=1e-6)
    z = z_from_t(np.array([-4.0, 4.0]), 3.0)  # t_3: P(|t| > 4) = 0.028 ⇒ |z| = 2.2
    assert z[1] == pytest.approx(2.197, abs=0.01) and z[0] == pytest.approx(-z[1])


def test_finite_difference_matches_chi_and_the_exact_response_on_the_gaussian_oracle():
    """Linear-Gaussian posterior: FD of ⟨ℓ_i⟩ under ±δ reweighting (CRN) vs χ from h = 0, z with the
    paired error; and the FD itself against the closed-form reweighted posterior."""
    model, X, y, w_star = _problem()
    probe = ProbeSet({"train": (X, y)})
    obs = [PerSampleLoss(("train", [0, 1, 2, 3, 10])), MeanLoss("train")]
    fields = [SubsetFields({"A": ("train", SUBSET_A)}, base="train")]
    eps = 4e-3
    cfg = SamplerConfig(epsilon=eps, gamma=GAMMA, nbeta=NBETA, chains=16, draws=200, steps_per_draw=5, burn_in=200,
                        batch_size=None, seed=3, master_dtype=torch.float64)
    rows, meta = linear_response(model, squared_loss, (X, y), probe, obs, fields, cfg, ResponseConfig(c=(0.1,)))
    z = np.array([r.z for r in rows])
    assert np.abs(z).max() < 4 and np.sqrt(np.mean(z**2)) < 1.6, np.round(z, 2)
    zj = np.array([r.z_jackknife for r in rows])
    assert np.abs(zj).max() < 4, np.round(zj, 2)
    # 16 × 200 draws of a well-mixed Gaussian posterior: no entry carries the engine's flag (R-hat ≤ 1.1)
    assert all(np.isfinite(r.rhat) and not r.flagged for r in rows), [r.rhat for r in rows]
    # the paired (CRN) error is far below the unpaired one: common random numbers do their job
    diff_se = np.array([r.diff_se for r in rows])
    chi_se = np.array([r.chi_stderr for r in rows])
    assert np.median(diff_se / chi_se) < 1.5  # the CRN-paired FD adds little to χ's own error
    # the response is resolved, and it is the exact derivative of the Gaussian oracle
    fd, chi = np.array([r.fd for r in rows]), np.array([r.chi for r in rows])
    assert np.all(np.abs(chi[[0, 2]]) > 3 * chi_se[[0, 2]])  # samples 0 and 2 respond (exact χ −0.19, −0.057)
    delta = rows[0].delta
    exact = []
    for sign in (+1, -1):
        rho = np.full(N, (1 - sign * delta) / N)
        rho[SUBSET_A] += sign * delta / len(SUBSET_A)
        lm = LinearGaussianOracle(X.numpy(), y.numpy(), w_star.numpy(), NBETA, GAMMA, rho).loss_mean(eps)
        exact.append(np.concatenate([lm[[0, 1, 2, 3, 10]], [lm.mean()]]))
    exact_fd = (exact[0] - exact[1]) / (2 * delta * NBETA)
    zf = (fd - exact_fd) / np.array([r.diff_se for r in rows])
    assert np.abs(zf).max() < 4, np.round(zf, 2)


# ---------------------------------------------------------------------------- builtin:tiny
def _tiny(chains, draws, per_domain=2, base=8, burn_in=100, steps_per_draw=2):
    from spectro.jobs.nn_config import JobConfig
    from spectro.jobs.nn_prepare import _prepare

    cfg = JobConfig.from_dict({
        "model": {"checkpoint": "builtin:tiny"},
        "data": {"corpus": "fixture", "context": 32, "train_sequences": 256},
        "probes": {"base": base, "per_domain": per_domain, "split": "validation"},
        "observables": ["component_loss"], "fields": ["tokens"], "components": ["full"],
        "sampler": {"method": "sgld", "epsilon": 3e-4, "gamma": 1000.0, "nbeta": 30.0, "chains": chains,
                    "draws": draws, "burn_in": burn_in, "steps_per_draw": steps_per_draw, "batch_size": 16, "seed": 0}})
    return _prepare(cfg, progress=False, log=lambda *_: None)


def test_linear_response_on_builtin_tiny_fast():
    """A transformer: one per-domain and one per-token field, full model, one δ; every entry's
    difference FD − χ within its paired error (|z| < 4)."""
    from spectro.models import next_token_loss

    torch.set_num_threads(1)
    prep = _tiny(chains=4, draws=30, per_domain=1, base=4, burn_in=40, steps_per_draw=1)
    obs = [MeanLoss("base")] + [MeanLoss(d) for d in prep.domains]
    fields = [SubsetFields({"code": "code"}, base="base"), TokenPointMasses(("math", [0]), base="base", positions=[7])]
    rows, meta = linear_response(prep.model, next_token_loss, prep.train, prep.probe, obs, fields, prep.sampler,
                                 ResponseConfig(c=(0.1,)))
    z = np.array([r.z for r in rows])
    assert len(rows) == 2 * len(obs)
    assert np.abs(z).max() < 4, np.round(z, 2)
    assert all(np.isfinite(r.diff_se) and r.diff_se > 0 for r in rows)


@pytest.mark.slow
def test_linear_response_on_builtin_tiny_components():
    """Per-domain and per-token fields, the full model and two heads (each restricted posterior its
    own reweighting experiment), two δ: rms z ≤ 1.3 over all entries, no |z| > 4."""
    from spectro.models import head_restriction, next_token_loss

    torch.set_num_threads(1)
    prep = _tiny(chains=8, draws=100)
    obs = [MeanLoss("base")] + [MeanLoss(d) for d in prep.domains]
    fields = [SubsetFields({d: d for d in prep.domains}, base="base"),
              TokenPointMasses(("code", [0]), base="base", positions=[5, 20])]
    rows = []
    for name, r in {"full": None, "l0h1": head_restriction(prep.model, 0, 1), "l1h2": head_restriction(prep.model, 1, 2)}.items():
        rs, _ = linear_response(prep.model, next_token_loss, prep.train, prep.probe, obs, fields, prep.sampler,
                                ResponseConfig(fields=[0, 2, 4, 5], c=(0.05, 0.1)), restriction=r, component=name)
        rows += rs
    s = summarize(rows)["all"]
    assert s["max_abs_z"] < 4 and s["rms_z"] <= 1.3, s
