"""The fused sampling step (SamplerConfig.step, spectro/nn/kernels.py).

``step="fused"`` (hand-fused, in place) and ``step="compiled"`` (torch.compile of
``kernels.fused_update``) must give the eager path's draws up to float rounding. The tolerance is
derived, not tuned: one evaluation of the update rounds at most K times along any chain of
operations (counted below), each time by at most u = 2⁻²⁴ relative to the magnitude of what it
rounds, so to first order it is within K·u·M of the exact value, M = |W| + (ε_i/2)·(|nβ·G| +
|γ·(W − w*)|)·|mask| + √ε_i·|η|·|mask| (the sum of the magnitudes of the terms); two evaluations
differ by at most 2·K·u·M. K counts the roundings of the longest chain: SGLD 8 (drift 3, mask 1,
the scalar −ε/2 cast to fp32 and the product 2, the two additions 2), RMSProp-SGLD 13 (v 3, ε_i
from v: √ and +δ and 1/x and ×ε ≈ 1.5 + 3, drift 3, mask 1, ×(ε_i/2) 1, two additions 2, rounded
up). v_new: 4 roundings relative to α·|v| + (1 − α)·G².

The sampler-level tests step the eager and the fused/compiled posterior side by side from equal
states (the fused side is reset to the eager weights after every step, so the comparison of each
step is not blurred by the chaos of many), with the same minibatches and noise; the inputs of each
fused update are recorded to evaluate the bound. Tests that compile (a few seconds of gcc each
on a cold inductor cache, plus the dynamo import) are marked slow.
"""

import warnings

import pytest
import torch

from spectro.jobs.nn_config import ConfigError, JobConfig
from spectro.nn import LocalizedPosterior, Restriction, SamplerConfig, kernels, samplers
from spectro.nn import posterior as posterior_mod
from toy_regression import TwoLayer, mse, regression_data

U = 2.0**-24  # fp32 unit roundoff
K = {"sgld": 8, "rmsprop_sgld": 13}
EPS, NBETA, GAMMA, ALPHA, DELTA = 1e-3, 30.0, 300.0, 0.99, 0.1


def _eager(W, G, v, noise, w_star, mask, eps, nbeta, gamma, alpha, delta):
    """The eager path: the registered method's pure kernel, as LocalizedPosterior._step runs it with step="eager"."""
    pot = samplers.Potential(w_star, mask, nbeta, gamma)
    if v is None:
        return samplers.sgld.step(samplers.sgld.State(W), G, noise, samplers.sgld.Hyper(pot, eps)).w, None
    rms = samplers.rmsprop
    new = rms.step(rms.State(W, v), G, noise, rms.Hyper(pot, eps, alpha, delta))
    return new.w, new.v


def _bounds(W, G, v, noise, w_star, mask, eps, nbeta, gamma, alpha, delta):
    """(bound on |ΔW_new|, bound on |Δv_new|) elementwise between two roundings of one update."""
    d = lambda t: None if t is None else t.double()  # noqa: E731
    W, G, v, noise, w_star, mask = map(d, (W, G, v, noise, w_star, mask))
    m = 1.0 if mask is None else mask.abs()
    if v is None:
        eps_i, k, bv = torch.full_like(W, eps), K["sgld"], None
    else:
        v_mag = alpha * v.abs() + (1 - alpha) * G * G
        eps_i, k, bv = eps / (v_mag.sqrt() + delta), K["rmsprop_sgld"], 2 * 4 * U * v_mag
    M = W.abs() + 0.5 * eps_i * ((nbeta * G).abs() + (gamma * (W - w_star)).abs()) * m + eps_i.sqrt() * noise.abs() * m
    return 2 * k * U * M, bv


def _inputs(method, masked, C=4, D=3001, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(C, D, generator=g)
    w_star = W[0] + 1e-2 * torch.randn(D, generator=g)
    G = torch.randn(C, D, generator=g)
    v = 1e-2 * torch.rand(C, D, generator=g) if method == "rmsprop_sgld" else None
    noise = torch.randn(C, D, generator=g)
    mask = (torch.rand(D, generator=g) > 0.6).float() if masked else None
    return W, G, v, noise, w_star, mask, EPS, NBETA, GAMMA, ALPHA, DELTA


def _assert_within(got, want, bound, what):
    err = (got.double() - want.double()).abs()
    worst = float((err / bound.clamp_min(1e-300)).max())
    assert bool((err <= bound).all()), f"{what}: deviation {worst:.2f}x the fp32 rounding bound"


# ---------------------------------------------------------------------------- kernel level
@pytest.mark.parametrize("method", ["sgld", "rmsprop_sgld"])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_update_run_eagerly_is_the_eager_composition_bit_for_bit(method, masked):
    args = _inputs(method, masked)
    W_e, v_e = _eager(*args)
    W_f, v_f = kernels.fused_update(*args)
    assert torch.equal(W_f, W_e)
    assert (v_f is None and v_e is None) or torch.equal(v_f, v_e)


@pytest.mark.parametrize("method", ["sgld", "rmsprop_sgld"])
@pytest.mark.parametrize("masked", [False, True])
def test_hand_fused_update_agrees_with_eager_to_fp32_rounding(method, masked):
    args = _inputs(method, masked)
    W_e, v_e = _eager(*args)
    out_W = torch.empty_like(W_e)
    out_v = torch.empty_like(W_e) if v_e is not None else None
    kernels.fused_update_(*args, out_W, out_v)
    bW, bv = _bounds(*args)
    _assert_within(out_W, W_e, bW, "W")
    if v_e is not None:
        _assert_within(out_v, v_e, bv, "v")
    if masked:  # coordinates outside the restriction do not move, exactly
        frozen = args[5] == 0
        assert torch.equal(out_W[:, frozen], args[0][:, frozen])


def test_hand_fused_rmsprop_needs_out_v():
    args = _inputs("rmsprop_sgld", False)
    with pytest.raises(ValueError, match="out_v is required"):
        kernels.fused_update_(*args, torch.empty_like(args[0]))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sgld", "rmsprop_sgld"])
@pytest.mark.parametrize("masked", [False, True])
def test_compiled_update_agrees_with_eager_to_fp32_rounding(method, masked):
    args = _inputs(method, masked)
    W_e, v_e = _eager(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to uncompiled would pass vacuously
        W_c, v_c = kernels.compiled_update(*args)
    bW, bv = _bounds(*args)
    _assert_within(W_c, W_e, bW, "W")
    if v_e is not None:
        _assert_within(v_c, v_e, bv, "v")
    key = ("cpu", torch.float32, tuple(args[0].shape), method == "rmsprop_sgld", masked)
    assert kernels._COMPILED[key] is not kernels.fused_update  # really compiled
    # other scalars reuse the graph (ε, nβ, γ are inputs, not constants)
    n = len(kernels.compile_seconds())
    args2 = args[:6] + (2e-3, 10.0, 50.0, 0.9, 0.2)
    _assert_within(kernels.compiled_update(*args2)[0], _eager(*args2)[0], _bounds(*args2)[0], "W (new scalars)")
    assert len(kernels.compile_seconds()) == n


# ---------------------------------------------------------------------------- compile failure
@pytest.mark.parametrize("where", ["wrap", "first call"])
def test_compile_failure_falls_back_to_the_uncompiled_update_with_one_warning(monkeypatch, where):
    def broken_compile(fn, **kw):
        if where == "wrap":
            raise RuntimeError("Dynamo is not supported on this Python")

        def call(*a, **k):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
        return call

    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_COMPILE_SECONDS", {})
    monkeypatch.setattr(torch, "compile", broken_compile)
    args = _inputs("sgld", True)
    with pytest.warns(RuntimeWarning, match=r"step='compiled': torch.compile failed on this platform \(RuntimeError") as rec:
        W, _ = kernels.compiled_update(*args)
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    assert torch.equal(W, kernels.fused_update(*args)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per key: later calls run the fallback silently
        assert torch.equal(kernels.compiled_update(*args)[0], W)


def test_compile_failure_inside_the_sampler_still_samples_the_same_draws(monkeypatch):
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_COMPILE_SECONDS", {})
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: (_ for _ in ()).throw(RuntimeError("no compiler")))
    model, data = _model_and_data()
    runs = {}
    for step in ("eager", "compiled"):
        cfg = SamplerConfig(chains=2, draws=3, batch_size=16, nbeta=10.0, epsilon=1e-3, gamma=50.0, step=step)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            runs[step] = LocalizedPosterior(model, mse, data, cfg).sample()
        assert len([w for w in rec if "torch.compile failed" in str(w.message)]) == (step == "compiled")
    assert torch.equal(runs["compiled"].final_weights, runs["eager"].final_weights)  # the fallback is fused_update: bitwise


# ---------------------------------------------------------------------------- the sampler
def _model_and_data(n=64):
    torch.manual_seed(0)
    return TwoLayer(hidden=16), regression_data(n, seed=1)


def _restriction(model, masked):
    if not masked:
        return None
    mask = torch.zeros(16, 3, dtype=torch.bool)
    mask[4:9] = True
    return Restriction({"a.weight": mask, "b.weight": None}, name="rows")


def _side_by_side(step, method, masked, chain_mode, monkeypatch, steps=6):
    """Step eager and ``step`` posteriors from equal states; check each step against the bound."""
    model, data = _model_and_data()
    kw = dict(method=method, chains=4, draws=steps, batch_size=16, nbeta=NBETA, epsilon=EPS, gamma=GAMMA,
              rmsprop_alpha=ALPHA, rmsprop_delta=DELTA)
    opts = dict(chain_mode=chain_mode, workers=2 if chain_mode == "loop" else None)
    eager = LocalizedPosterior(model, mse, data, SamplerConfig(**kw), _restriction(model, masked), **opts)
    fused = LocalizedPosterior(model, mse, data, SamplerConfig(**kw, step=step), _restriction(model, masked), **opts)
    calls = []
    fn_name = "fused_update_" if step == "fused" else "compiled_update"
    original = getattr(posterior_mod, fn_name)

    def recording(*args):
        row = args[0].storage_offset() // args[0].shape[1]  # W[block] is a view of the state's [C, D] weights
        calls.append((row, [a.clone() if isinstance(a, torch.Tensor) else a for a in args[:11]]))
        return original(*args)

    monkeypatch.setattr(posterior_mod, fn_name, recording)
    with eager.running(), fused.running():
        se, sf = eager.start(), fused.start()
        for _ in range(steps):
            calls.clear()
            W0 = se.W.clone()
            loss_e, loss_f = eager._step(se), fused._step(sf)
            assert torch.equal(loss_e, loss_f)  # same weights, same minibatch: the same loss, bit for bit
            assert sorted(r for r, _ in calls) == [0, 2][: len(calls)] and sum(c[0].shape[0] for _, c in calls) == 4
            for row, c in calls:  # one call per chain block (worker threads: in any order)
                sl = slice(row, row + c[0].shape[0])
                assert torch.equal(c[0], W0[sl])
                bW, bv = _bounds(*c)
                _assert_within(sf.W[sl], se.W[sl], bW, f"W, step {se.step}")
                if method == "rmsprop_sgld":
                    _assert_within(sf.v[sl], se.v[sl], bv, f"v, step {se.step}")
            assert not torch.equal(se.W, W0)
            sf.W = se.W.clone()  # continue from equal states
            if se.v is not None:
                sf.v = se.v.clone()


@pytest.mark.parametrize("method", ["sgld", "rmsprop_sgld"])
@pytest.mark.parametrize("masked", [False, True])
def test_sampler_hand_fused_step_gives_the_eager_draws_to_fp32_rounding(method, masked, monkeypatch):
    _side_by_side("fused", method, masked, "loop", monkeypatch)


def test_sampler_hand_fused_step_vmap_mode(monkeypatch):
    _side_by_side("fused", "rmsprop_sgld", True, "vmap", monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sgld", "rmsprop_sgld"])
@pytest.mark.parametrize("masked", [False, True])
def test_sampler_compiled_step_gives_the_eager_draws_to_fp32_rounding(method, masked, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent fallback
        _side_by_side("compiled", method, masked, "loop", monkeypatch)


@pytest.mark.slow
def test_compiled_graphs_are_shared_across_restrictions_and_runs():
    model, data = _model_and_data()
    cfg = SamplerConfig(chains=2, draws=2, batch_size=16, nbeta=10.0, epsilon=1e-3, gamma=50.0, step="compiled")
    rows = Restriction({"a.weight": torch.eye(16, 3, dtype=torch.bool), "b.weight": None}, name="rows")
    cols = Restriction({"a.weight": torch.ones(16, 3, dtype=torch.bool).tril(), "b.weight": None}, name="cols")
    LocalizedPosterior(model, mse, data, cfg, rows).sample()
    n = len(kernels.compile_seconds())
    for restriction in (cols, rows):  # the same (shape, masked) key: no new graph
        LocalizedPosterior(model, mse, data, cfg, restriction).sample()
    assert len(kernels.compile_seconds()) == n


# ---------------------------------------------------------------------------- the option
def test_step_option_default_and_bad_values():
    assert SamplerConfig().step == "eager"
    assert kernels.STEPS == ("eager", "fused", "compiled")
    for bad in ("jit", "Compiled", "", None, True):
        with pytest.raises(ValueError, match=r"step must be one of \['eager', 'fused', 'compiled'\]") as e:
            SamplerConfig(step=bad)
        assert "\n" not in str(e.value)


def test_step_in_the_job_schema():
    base = {"model": {"checkpoint": "builtin:tiny"}, "components": ["full"]}
    cfg = JobConfig.from_dict({**base, "sampler": {"step": "fused"}})
    assert cfg.sampler["step"] == "fused" and JobConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"sampler: step must be one of \['eager', 'fused', 'compiled'\], got 'jit'"):
        JobConfig.from_dict({**base, "sampler": {"step": "jit"}})
    with pytest.raises(ConfigError, match="sampler.step: expected a string"):
        JobConfig.from_dict({**base, "sampler": {"step": 1}})


def test_snapshot_fingerprint_names_a_non_default_step_only():
    model, data = _model_and_data()
    fp = {s: LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, step=s))._state_fingerprint()["config"]
          for s in ("eager", "fused")}
    assert "step" not in fp["eager"]  # snapshots written before the option existed stay resumable
    assert fp["fused"]["step"] == "fused"
