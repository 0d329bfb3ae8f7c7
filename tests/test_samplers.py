"""The method registry and each method's kernel against the linear-Gaussian oracle's laws.

Kernel tests run the pure ``step`` of a method on C independent chains with the exact
full-batch gradient of the oracle's model (ℓ_i = (y_i − x_i·w)²), and compare the covariance of the
chains' final states with the law derived for that method: independent states, so the sample
covariance S of C draws has Var(S_ij) = (Σ_ij² + Σ_ii·Σ_jj)/C, and |z| < 4 is the bound.
Whole-sampler tests (``LocalizedPosterior`` / ``run_susceptibility``) are in the second half.
"""

import dataclasses

import numpy as np
import pytest
import torch

from spectro.nn import samplers
from spectro.nn.config import SamplerConfig
from spectro.nn.oracles import LinearGaussianOracle
from spectro.nn.samplers import Potential

N, D = 20, 3
NBETA, GAMMA = 5.0, 2.0


def _oracle() -> tuple[LinearGaussianOracle, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)  # the problem of tests/test_nn_linear_gaussian.py
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.5 * torch.randn(N, generator=g, dtype=torch.float64)
    w_star = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    return LinearGaussianOracle(X.numpy(), y.numpy(), w_star.numpy(), NBETA, GAMMA), X, y, w_star


def _run_kernel(name: str, eps: float, steps: int, chains: int, seed: int, burn_in: int = 0, **options):
    """Final states of ``chains`` independent chains of method ``name`` from w*, full-batch gradient."""
    oracle, X, y, w_star = _oracle()
    cfg = SamplerConfig(method=name, epsilon=eps, gamma=GAMMA, nbeta=NBETA, burn_in=burn_in, options=options)
    method = samplers.get(name)
    hyper = method.hyper(Potential(w_star, None, NBETA, GAMMA), cfg)
    state = method.init(w_star.repeat(chains, 1), hyper)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        grad = (state.w @ X.T - y) @ X * (2.0 / N)  # ∇L_n(w), [C, D]
        state = method.step(state, grad, torch.randn(chains, D, generator=gen, dtype=torch.float64), hyper)
    return oracle, state


def _cov_z(samples: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    S = np.cov(samples.T)
    se = np.sqrt((sigma**2 + np.outer(np.diag(sigma), np.diag(sigma))) / samples.shape[0])
    return (S - sigma) / se


# ---------------------------------------------------------------------------- registry and validation
def test_registry_lists_the_methods_and_config_validation_reads_it():
    assert {"sgld", "rmsprop_sgld", "rmsprop_sgld_warmup", "sghmc"} <= set(samplers.METHODS)
    assert samplers.get("rmsprop_sgld").biased and samplers.get("sgld").biased is None
    with pytest.raises(ValueError, match=r"method must be one of \['sgld', 'rmsprop_sgld'.*got 'hmc'"):
        SamplerConfig(method="hmc")
    with pytest.raises(ValueError, match=r"friction must lie in \(0, inf\], got -1"):
        SamplerConfig(method="sghmc", options={"friction": -1})
    with pytest.raises(ValueError, match=r"options: 'friction' is not a hyperparameter of method 'sgld'"):
        SamplerConfig(method="sgld", options={"friction": 1.0})
    with pytest.raises(ValueError, match=r"options: 'rmsprop_alpha' is a SamplerConfig field"):
        SamplerConfig(method="rmsprop_sgld", options={"rmsprop_alpha": 0.5})
    with pytest.raises(ValueError, match=r"method 'sghmc' supports step \['eager'\], got step='fused'"):
        SamplerConfig(method="sghmc", step="fused")
    with pytest.raises(ValueError, match=r"burn_in must be >= 1"):
        SamplerConfig(method="rmsprop_sgld_warmup", burn_in=0)
    with pytest.raises(ValueError, match=r"control_variate does not support precision='fp16'"):
        SamplerConfig(control_variate=True, precision="fp16")
    assert SamplerConfig(method="sghmc", options={"friction": 2}).to_dict()["options"] == {"friction": 2}


def test_job_schema_takes_a_methods_own_settings_as_sampler_keys():
    from spectro.jobs.nn_config import DEMO_CONFIG, ConfigError, JobConfig

    base = {**DEMO_CONFIG, "sampler": {**DEMO_CONFIG["sampler"], "method": "sghmc", "friction": 3.0}}
    cfg = JobConfig.from_dict(base)
    assert cfg.sampler_config().options == {"friction": 3.0} and JobConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"sampler.friction is not a setting of method 'sgld'"):
        JobConfig.from_dict({**DEMO_CONFIG, "sampler": {**DEMO_CONFIG["sampler"], "friction": 3.0}})
    with pytest.raises(ConfigError, match=r"sampler: friction must lie in \(0, inf\], got 0"):
        JobConfig.from_dict({**base, "sampler": {**base["sampler"], "friction": 0}})
    with pytest.raises(ConfigError, match=r"sampler.method must be one of \[.*\], got 'nuts'"):
        JobConfig.from_dict({**DEMO_CONFIG, "sampler": {**DEMO_CONFIG["sampler"], "method": "nuts"}})


def test_devinterp_export_names_the_method_from_the_registry():
    from spectro.jobs.export import devinterp_sampler_dict

    d = devinterp_sampler_dict(SamplerConfig(method="rmsprop_sgld", rmsprop_delta=0.2), 10.0, 64)
    assert d["sampling_method"] == "rmsprop_sgld" and d["sampling_method_kwargs"] == {"alpha": 0.99, "eps": 0.2}
    assert devinterp_sampler_dict(SamplerConfig(), 10.0, 64)["sampling_method"] == "sgmcmc_sgld"
    d = devinterp_sampler_dict(SamplerConfig(method="sghmc", options={"friction": 2.0}), 10.0, 64)
    assert d["sampling_method"] == "spectro:sghmc" and d["sampling_method_kwargs"] == {"friction": 2.0}
    d = devinterp_sampler_dict(SamplerConfig(control_variate=True), 10.0, 64)
    assert d["sampling_method"] == "spectro:sgld" and d["sampling_method_kwargs"] == {"control_variate": True}


# ---------------------------------------------------------------------------- laws of the kernels
def test_sgld_kernel_is_stationary_at_the_discretised_law():
    """Full-batch SGLD: N(μ, Σ_ε) exactly (the oracle's closed form), resolved away from Σ."""
    eps = 0.1
    oracle, state = _run_kernel("sgld", eps, steps=80, chains=4000, seed=1)
    z = _cov_z(state.w.numpy(), oracle.covariance(eps))
    assert np.abs(z).max() < 4, np.round(z, 2)
    assert np.abs(_cov_z(state.w.numpy(), oracle.covariance())).max() > 10  # the O(ε) bias is resolved here


def test_sghmc_baoab_kernel_samples_the_exact_gaussian_at_a_large_step():
    """BAOAB's position marginal on a Gaussian target is N(μ, Σ) at any stable step: at the ε where
    SGLD's variance is 1.7× too large along the stiffest direction, BAOAB is exact (two frictions)."""
    eps = 0.1
    for friction, seed in ((1.0, 2), (5.0, 3)):
        oracle, state = _run_kernel("sghmc", eps, steps=150, chains=4000, seed=seed, friction=friction)
        w = state.w.numpy()
        z = _cov_z(w, oracle.covariance())
        assert np.abs(z).max() < 4, (friction, np.round(z, 2))
        mean_se = np.sqrt(np.diag(oracle.covariance()) / w.shape[0])
        assert np.abs((w.mean(0) - oracle.mean) / mean_se).max() < 4


def _lyapunov(A: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """S = A S Aᵀ + Q for a batch of [.., d, d] (vec(S) = (I − A⊗A)⁻¹ vec(Q))."""
    d = A.shape[-1]
    kron = np.einsum("...ij,...kl->...ikjl", A, A).reshape(*A.shape[:-2], d * d, d * d)
    vec = np.linalg.solve(np.eye(d * d) - kron, Q.reshape(*Q.shape[:-2], d * d, 1))
    return vec.reshape(Q.shape)


@pytest.mark.slow
def test_rmsprop_warmup_kernel_is_unbiased_and_devinterps_is_not():
    """rmsprop_sgld_warmup adapts G = 1/(√v + δ) during burn-in, then holds it: chain c is the linear
    recursion w' − μ = (I − (ε/2)G_cP)(w − μ) + √(εG_c)η, stationary at N(μ, S_c) with
    S_c = A S_c Aᵀ + ε·diag(G_c) (exact), so the chains' covariance is the mean of S_c. devinterp's
    rmsprop_sgld (adapting at every step, no Γ) is measurably too wide at the same settings."""
    eps, burn = 2e-3, 400
    oracle, state = _run_kernel("rmsprop_sgld_warmup", eps, steps=burn + 1500, chains=3000, seed=4, burn_in=burn)
    G = 1.0 / (np.sqrt(state.v.numpy()) + 0.1)  # [C, D], fixed since burn-in
    P = oracle.precision
    A = np.eye(D) - 0.5 * eps * G[:, :, None] * P[None]
    S = _lyapunov(A, eps * np.einsum("ci,ij->cij", G, np.eye(D))).mean(0)
    z = _cov_z(state.w.numpy(), S)
    assert np.abs(z).max() < 4, np.round(z, 2)
    assert np.abs(S / oracle.covariance() - 1).max() < 0.05  # and S is Σ up to the small O(ε) term
    _, biased = _run_kernel("rmsprop_sgld", eps, steps=burn + 1500, chains=3000, seed=4)
    ratio = np.diag(np.cov(biased.w.numpy().T)) / np.diag(oracle.covariance())
    assert np.all(ratio > 1.1), ratio  # measured ≈ 1.18 (docs/results/samplers/rmsprop_gamma.txt)


# ---------------------------------------------------------------------------- control variates
def test_control_variate_gradient_is_exact_and_quieter():
    """With control_variate the kernel receives ∇L_m(w) − ∇L_m(w*) + ∇L_n(w*), checked in float64
    against the minibatch indices the sampler drew (w* off the minimum, so ∇L_n(w*) ≠ 0). Its
    minibatch noise E‖ĝ − ∇L_n(w)‖² at the visited states matches the finite-population formula
    (m draws without replacement from N: (N−m)/(m(N−1))·mean_i‖a_i − ā‖², a_i the per-sample
    gradient, minus its value at w* with the control variate), and under a strong localization
    (γ = 200: ‖w − w*‖ ~ 0.1) the control variate removes most of it (here 5/6)."""
    from torch import nn

    from spectro.nn.posterior import LocalizedPosterior

    _, X, y, w_star = _oracle()
    model = nn.Linear(D, 1, bias=False).double()
    ws = w_star + 0.05
    with torch.no_grad():
        model.weight.copy_(ws[None])
    m, steps, gamma = 5, 60, 200.0

    def loss(out, batch):
        return (out[:, 0] - batch[1]) ** 2

    def per_sample(w, idx):  # ∇ℓ_i(w) [len(idx), D]
        return 2.0 * (X[idx] @ w - y[idx])[:, None] * X[idx]

    def expected_noise(w, cv):
        a = per_sample(w, torch.arange(N)) - (per_sample(ws, torch.arange(N)) if cv else 0.0)
        return float((N - m) / (m * (N - 1)) * (a - a.mean(0)).square().sum(1).mean())

    noise, expected = {}, {}
    for cv in (False, True):
        cfg = SamplerConfig(chains=4, batch_size=m, epsilon=3e-3, gamma=gamma, nbeta=NBETA, seed=7,
                            master_dtype=torch.float64, control_variate=cv)
        post = LocalizedPosterior(model, loss, (X, y), cfg)
        seen = []
        kernel_step = post.method.step
        post.method = dataclasses.replace(
            post.method, step=lambda s, g, e, h: (seen.append((s.w.clone(), g.clone())), kernel_step(s, g, e, h))[1])
        spread, exp = [], []
        with post.running():
            state = post.start()
            for _ in range(steps):
                post._step(state)
                idx = state.perm[:, state.pos - m:state.pos]
                w, g = seen[-1]
                for c in range(4):
                    expect = per_sample(w[c], idx[c]).mean(0)
                    if cv:
                        expect = expect - per_sample(ws, idx[c]).mean(0) + per_sample(ws, torch.arange(N)).mean(0)
                    torch.testing.assert_close(g[c], expect, rtol=1e-12, atol=1e-12)
                    spread.append((g[c] - per_sample(w[c], torch.arange(N)).mean(0)).square().sum().item())
                    exp.append(expected_noise(w[c], cv))
        noise[cv], expected[cv] = float(np.mean(spread)), float(np.mean(exp))
        # 240 draws of a ~3-dof squared norm: relative error ≈ 0.8/√240 ≈ 0.05; 5σ
        assert abs(noise[cv] / expected[cv] - 1) < 0.25, (cv, noise[cv], expected[cv])
    print(f"minibatch gradient noise E|g - grad L_n(w)|^2: plain {noise[False]:.4f} (formula {expected[False]:.4f}), "
          f"control variate {noise[True]:.4f} (formula {expected[True]:.4f})")
    assert expected[True] < 0.5 * expected[False], expected  # measured 0.048 vs 0.291: 6× less noise variance


# ---------------------------------------------------------------------------- a new method in a test
@pytest.mark.slow  # two whole jobs: 592 s on the shared 2-core machine at load average ~15
def test_a_method_added_in_a_test_runs_through_a_whole_spectro_run_job(tmp_path):
    """A method in a few lines: SGLD at a step ε·scale. Registered, it is a valid sampler.method with
    its own key; `spectro run` samples with it, bit for bit SGLD at ε·scale."""
    import json

    from spectro.engine.susceptibility import Susceptibility
    from spectro.jobs.cli import main
    from spectro.jobs.nn_config import DEMO_CONFIG
    from spectro.nn.samplers import Hyper, Method, sgld

    def make_hyper(pot, eps, values, burn_in):
        return sgld.Hyper(pot, eps * values["scale"])

    samplers.register(Method(name="test_scaled_sgld", init=sgld.init, step=sgld.step, make_hyper=make_hyper,
                             hypers=(Hyper("scale", 1.0, 0.0, low_open=True),),
                             step_size=lambda s, h: h.eps))
    try:
        job = json.loads(json.dumps(DEMO_CONFIG))
        job.update(components=["l0h1"], export={"devinterp": False})
        job["model"] = {"checkpoint": "builtin:tiny", "train_steps": 8, "cache_dir": str(tmp_path / "cache")}
        job["data"]["train_sequences"] = 16
        job["probes"] = {"base": 4, "per_domain": 2}
        job["sampler"].update(chains=2, draws=6, n_batches=4, batch_size=8, burn_in=0)
        eps = job["sampler"]["epsilon"]
        ours = {**job, "sampler": {**job["sampler"], "method": "test_scaled_sgld", "scale": 0.5}}
        ref = {**job, "sampler": {**job["sampler"], "method": "sgld", "epsilon": eps * 0.5}}
        for name, cfg in (("ours", ours), ("ref", ref)):
            (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
            assert main(["run", str(tmp_path / f"{name}.json"), "--out", str(tmp_path / name), "--no-progress"]) == 0
        a = Susceptibility.load(next((tmp_path / "ours").glob("chi_*.npz")))
        b = Susceptibility.load(next((tmp_path / "ref").glob("chi_*.npz")))
        np.testing.assert_array_equal(a.chi, b.chi)
        assert json.loads((tmp_path / "ours" / "config.json").read_text())["sampler"]["scale"] == 0.5
    finally:
        samplers.unregister("test_scaled_sgld")


# ---------------------------------------------------------------------------- whole sampler vs the oracle
# (method, its settings, step size, steps per draw, burn-in, batch size, draws): each at a step where its
# own law is the exact posterior to well within the error bars (sghmc: exact at any stable step, run where
# SGLD's χ would be ~40 % too large; rmsprop_sgld_warmup: O(ε_i) bias ≈ 1 %; control variates: the
# minibatch law of tests/test_nn_linear_gaussian.py::test_minibatch_sgld_matches_gaussian). Draws: enough
# for the finite-difference test to resolve its response (|FD| > 4 se): rmsprop_sgld_warmup mixes slowest,
# and at 400 draws its FD of entry 3 was resolved to 3.4 se only (fp32 and bf16, 2026-12-06); 1000 draws
# give ≈ 3.4·√2.5 ≈ 5.3.
LAWS = {
    "sghmc": (dict(method="sghmc", options={"friction": 2.0}), 0.04, 2, 100, None, 400),
    "rmsprop_sgld_warmup": (dict(method="rmsprop_sgld_warmup"), 1e-3, 6, 500, None, 1000),
    "sgld_control_variate": (dict(control_variate=True), 2e-3, 10, 500, 5, 400),
}


def _oracle_run(case: str, precision: str, seed: int, weights=None):
    from test_nn_linear_gaussian import _problem, _specs, squared_loss

    from spectro.nn import ProbeSet, run_susceptibility

    kw, eps, thin, burn, batch, draws = LAWS[case]
    model, X, y, w_star = _problem()
    observables, fields, O, F = _specs()
    cfg = SamplerConfig(**kw, epsilon=eps, gamma=GAMMA, nbeta=NBETA, chains=64, draws=draws, steps_per_draw=thin,
                        burn_in=burn, batch_size=batch, seed=seed, n_batches=20, precision=precision,
                        master_dtype=torch.float64 if precision == "fp32" else torch.float32)
    sus = run_susceptibility(model, squared_loss, (X, y), ProbeSet({"train": (X, y)}), observables, fields, cfg,
                             sample_weights=weights)
    oracle = LinearGaussianOracle(X.numpy(), y.numpy(), w_star.numpy(), NBETA, GAMMA,
                                  None if weights is None else weights.numpy())
    return sus, oracle, O, F


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("case", list(LAWS))
def test_method_matches_the_exact_posterior(case, precision):
    sus, oracle, O, F = _oracle_run(case, precision, seed=11)
    exact = oracle.susceptibility(O, F)
    z = sus.z_scores(exact)
    assert np.abs(z).max() < 4, np.round(z, 2)
    assert np.median(sus.stderr / np.abs(exact)) < 0.15  # resolved, not 0 ≈ 0
    s = sus.meta["sampling"]
    assert abs(s["llc"] - oracle.llc()) < 4 * s["llc_stderr"], (s["llc"], s["llc_stderr"], oracle.llc())


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("case", list(LAWS))
def test_method_finite_difference_of_reweighted_data_matches_nbeta_chi(case, precision):
    """(⟨φ⟩_{+h} − ⟨φ⟩_{−h})/(2h) under actually reweighted data (q' uniform on subset A) matches
    nβ·χ(φ, ΔL_A) sampled by the same method (tests/test_nn_linear_gaussian.py's check)."""
    from test_nn_linear_gaussian import SUBSET_A

    h = 0.1
    base, _, _, _ = _oracle_run(case, precision, seed=21)
    q_prime = torch.zeros(N, dtype=torch.float64)
    q_prime[SUBSET_A] = 1 / len(SUBSET_A)
    means, ses = [], []
    for sign, seed in ((+1, 22), (-1, 23)):
        sus, _, _, _ = _oracle_run(case, precision, seed, weights=(1 - sign * h) / N + sign * h * q_prime)
        means.append(sus.observable_mean)
        ses.append(sus.observable_stderr)
    fd = (means[0] - means[1]) / (2 * h)
    fd_se = np.hypot(ses[0], ses[1]) / (2 * h)
    response, response_se = NBETA * base.chi[:, 0], NBETA * base.stderr[:, 0]
    z = (fd - response) / np.hypot(fd_se, response_se)
    assert np.abs(z).max() < 4, np.round(z, 2)
    assert np.all(np.abs(fd[[0, 3]]) > 4 * fd_se[[0, 3]])  # resolved
