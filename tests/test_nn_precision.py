"""Compute precision (SamplerConfig.precision): bf16/fp16 forward and backward on fp32 master weights.

What is checked here (docs/design.md §2, "Precision"): the option and its bad inputs; which
tensors are low precision and which stay in the master dtype; devinterp's lost-update problem
(an in-place bf16 SGLD step at ε = 1e-5 rounds most O(1) weights back to themselves) against the
fp32-master update; fp16 loss scaling (small gradients do not underflow, overflow backs off,
scales grow); and a same-seed fp32 vs bf16 comparison whose χ and LLC differences are
compared with their paired Monte Carlo error. The exact linear-Gaussian oracle and the
finite-difference test in bf16 and fp16 are in tests/test_nn_linear_gaussian.py.
"""

import functools
import math
import warnings

import numpy as np
import pytest
import torch

from spectro import devices
from spectro.nn import LocalizedPosterior, Restriction, SamplerConfig
from spectro.nn import precision as precision_mod
from spectro.nn.precision import lost_update_fraction
from toy_regression import TwoLayer, mse, regression_data


def _data(n=64, seed=0):
    return regression_data(n, seed)


@functools.lru_cache(maxsize=1)
def _trained_state(seed=0, steps=300):
    torch.manual_seed(seed)
    model, (X, y) = TwoLayer(hidden=16), _data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        mse(model(X), (X, y)).mean().backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _trained():
    model = TwoLayer(hidden=16)
    model.load_state_dict(_trained_state())
    return model


# ---------------------------------------------------------------------------- the option
def test_precision_option_default_and_bad_values():
    assert SamplerConfig().precision == "fp32" and SamplerConfig().compute_dtype is None
    assert SamplerConfig(precision="bf16").to_dict()["precision"] == "bf16"
    assert SamplerConfig(precision="fp16").compute_dtype == torch.float16
    for bad in ("bfloat16", "FP32", "int8", None, 16):
        with pytest.raises(ValueError, match=r"precision must be one of \['fp32', 'bf16', 'fp16'\]"):
            SamplerConfig(precision=bad)


def test_bf16_runs_forward_backward_low_and_keeps_everything_else_in_the_master_dtype():
    model, data = _trained(), _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    model.a.register_forward_hook(lambda m, i, out: seen.append((i[0].dtype, out.dtype)))
    for md in (torch.float32, torch.float64):
        cfg = SamplerConfig(chains=3, draws=4, batch_size=16, nbeta=20.0, precision="bf16", master_dtype=md)
        post = LocalizedPosterior(model, mse, data, cfg, restriction=None)
        res = post.sample()
        assert post.w_star.dtype == md and res.final_weights.dtype == md
        assert post.param_dtypes == [torch.bfloat16] * 4
        loss, grad = post.loss_and_grad(res.final_weights, data, shared_batch=True)
        assert loss.dtype == md and grad.dtype == md and torch.isfinite(grad).all()
        probe = post.evaluate_losses(res.final_weights, data)
        assert probe.dtype == md and probe.shape == (3, 64, 1)
    assert seen and set(seen) == {(torch.bfloat16, torch.bfloat16)}  # inputs cast, layer runs in bf16
    # frozen weights: one bf16 copy; the model itself is never touched
    frozen = LocalizedPosterior(model, mse, data, SamplerConfig(precision="bf16", chains=1),
                                restriction=Restriction.from_globs(model, "b.*"))
    assert {t.dtype for t in frozen.constants.values()} == {torch.bfloat16}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == torch.float32


def test_bf16_upcasts_every_floating_tensor_of_a_hugging_face_model_output():
    """A GPT-2 returns a ModelOutput; the loss sees fp32 logits without casting them itself."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=11, n_positions=6, use_cache=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 11, (8, 6), generator=torch.Generator().manual_seed(1))
    seen = []

    def lm_loss(out, batch):
        seen.append(out.logits.dtype)
        logp = torch.log_softmax(out.logits[:, :-1], -1)
        return -logp.gather(-1, batch[:, 1:, None])[..., 0]

    post = LocalizedPosterior(model, lm_loss, ids, SamplerConfig(chains=2, draws=2, batch_size=4, precision="bf16"))
    assert post.sample().loss_trace.dtype == np.float64 and set(seen) == {torch.float32}


def test_model_stored_in_bf16_needs_the_matching_precision():
    model, data = _trained().to(torch.bfloat16), _data()
    with pytest.raises(ValueError, match=r"stored in bfloat16 but precision='fp32': pass precision='bf16'") as e:
        LocalizedPosterior(model, mse, data, SamplerConfig(chains=1))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="stored in bfloat16 but precision='fp16'"):
        LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, precision="fp16"))
    LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, draws=2, precision="bf16")).sample()


def test_fp16_on_cpu_runs_where_torch_can_and_is_refused_in_one_line_where_it_cannot(monkeypatch):
    """Decision: fp16 on the CPU is allowed when a tiny fp16 matmul and its backward run (torch
    2.x CPU builds do, slowly: no fp16 hardware path), refused with one line otherwise."""
    model, data = _trained(), _data()
    cfg = SamplerConfig(chains=2, draws=5, batch_size=16, nbeta=20.0, precision="fp16")
    assert precision_mod._cpu_runs_fp16()  # true on this torch build
    res = LocalizedPosterior(model, mse, data, cfg).sample()
    assert torch.isfinite(res.final_weights).all() and np.isfinite(res.llc)
    monkeypatch.setattr(precision_mod, "_cpu_runs_fp16", lambda: False)
    with pytest.raises(ValueError, match="torch cannot run an fp16 matmul on this CPU") as e:
        LocalizedPosterior(model, mse, data, cfg)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------- fp16 loss scaling
def _softmax_regression(N=2048, d=16, V=2048):
    """A linear softmax classifier whose mean cross-entropy has per-logit gradients p/N ≈ 2e-7:
    below fp16's normal range (6.1e-5) and near its smallest subnormal (6e-8). Inputs and weights
    are fp16-exact, so the fp16 forward sees exactly the weights of the fp64 reference."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, d, generator=g).half().float()
    y = torch.randint(0, V, (N,), generator=g)
    model = torch.nn.Linear(d, V, bias=False)
    with torch.no_grad():
        model.weight.copy_((0.3 * torch.randn(V, d, generator=g)).half().float())
    return model, X, y


def _cross_entropy(out, batch):
    return torch.nn.functional.cross_entropy(out.float(), batch[1], reduction="none")


def test_fp16_gradient_is_loss_scaled_so_small_gradients_do_not_underflow(monkeypatch):
    """In fp16 the backward runs on scale·L and the gradient is unscaled in fp32. Checked against
    the fp64 gradient G = Xᵀ(P − Y)/N with a first-order rounding bound per entry (u = 2⁻¹¹ fp16,
    u₃₂ = 2⁻²⁴ accumulation): |Ĝ − G| ≤ u|G| + |X|ᵀ(u|P − Y| + |δP|)/N + N·u₃₂·|X|ᵀ|P − Y|/N, where
    δP = 2P·max|δz| propagates the logits' error |δz| ≤ u|z| + d·u₃₂·|X||W|. Without the scale
    (LOSS_SCALE_INIT = 1) the logit gradients land in fp16's subnormals and lose their precision:
    the same bound fails for a few % of the entries (the test fails without the fix)."""
    from spectro.nn import chain_model

    model, X, y = _softmax_regression()
    N, d = X.shape
    cfg = SamplerConfig(chains=1, draws=1, batch_size=None, nbeta=10.0, precision="fp16")
    post = LocalizedPosterior(model, _cross_entropy, (X, y), cfg, model_input=lambda b: (b[0],))
    Xd, Wd = X.double(), model.weight.detach().double()
    Z = Xd @ Wd.T
    P = torch.softmax(Z, -1)
    R = P - torch.nn.functional.one_hot(y, Wd.shape[0]).double()
    G = (R.T @ Xd / N).reshape(-1)
    u, u32 = 2.0**-11, 2.0**-24
    dz = u * Z.abs() + d * u32 * (Xd.abs() @ Wd.abs().T)
    dP = 2 * P * dz.max(-1, keepdim=True).values
    bound = (u * G.abs() + (((u * R.abs() + dP).T @ Xd.abs()) / N + u32 * (R.abs().T @ Xd.abs())).reshape(-1))

    def error() -> torch.Tensor:
        with post.running():
            _, grad = post.loss_and_grad(post.w_star.unsqueeze(0), (X, y), shared_batch=True)
        return (grad[0].double() - G).abs()

    scaled = error()
    assert (scaled <= bound).all(), float((scaled / bound).max())
    monkeypatch.setattr(chain_model, "LOSS_SCALE_INIT", 1.0)
    unscaled = error()
    assert float((unscaled > bound).double().mean()) > 0.01
    assert unscaled.norm() > 4 * scaled.norm()


@pytest.mark.parametrize("chain_mode, workers", [("vmap", 1), ("loop", 1), ("loop", 2)])
def test_fp16_loss_scale_backs_off_on_overflow_and_the_step_goes_on(chain_mode, workers):
    """ℓ(w) = (w·x)² at w = 1, x = 100: ∂ℓ/∂w = 2wx² = 2·10⁴, so scale·2·10⁴ overflows fp16
    (max 65504) for every scale ≥ 4: from 2¹⁶ the scale is halved (and the gradient recomputed)
    down to 2, where the gradient is exact (20000 is an fp16 number). The step proceeds, no chain
    diverges, and a chain's scale is its own (both chains end at 2 whatever the worker count)."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    X, y = torch.full((1, 1), 100.0), torch.zeros(1)
    sq = lambda out, batch: (out[:, 0] - batch[1]) ** 2  # noqa: E731
    cfg = SamplerConfig(chains=2, draws=1, batch_size=None, nbeta=1.0, gamma=1.0, epsilon=1e-12, precision="fp16")
    post = LocalizedPosterior(model, sq, (X, y), cfg, model_input=lambda b: (b[0],), init_loss=1e4,
                              chain_mode=chain_mode, workers=workers)
    state = post.start()
    assert state.loss_scale.tolist() == [2.0**16] * 2
    with post.running():
        post.advance(state, 1)
        loss, grad = post.loss_and_grad(state.W, (X, y), shared_batch=True)
    assert state.loss_scale.tolist() == [2.0, 2.0] and state.scale_streak.tolist() == [0, 0]
    assert grad[:, 0].tolist() == pytest.approx([2e4, 2e4], rel=1e-6) and torch.isfinite(state.W).all()
    post.check(state)  # no divergence reported


def test_fp16_loss_scale_grows_after_an_interval_of_finite_steps(monkeypatch):
    """GradScaler's growth rule, per chain: a scale doubles after LOSS_SCALE_GROWTH_INTERVAL finite
    steps in a row (the interval shortened to 3 here); an overflow restarts the count."""
    from spectro.nn.precision import grow_loss_scales

    monkeypatch.setattr(precision_mod, "LOSS_SCALE_GROWTH_INTERVAL", 3)
    scale, streak = torch.tensor([4.0, 4.0]), torch.tensor([0, 0])
    for overflowed in ([False, False], [False, True], [False, False], [False, False]):
        grow_loss_scales(scale, streak, torch.tensor(overflowed))
    assert scale.tolist() == [8.0, 4.0] and streak.tolist() == [1, 2]


def test_step_below_the_master_resolution_warns_with_the_fraction(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_bf16_fast", lambda: True)  # no slow-bf16 warning on any CPU
    model, data = _trained(), _data()
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    eps = 1e-17  # √ε ≈ 3e-9: below half an fp32 ulp for |w| ≳ 0.05
    frac = lost_update_fraction(w, math.sqrt(eps), torch.float32)
    assert 0.5 < frac < 1
    with pytest.warns(UserWarning, match=rf"below half an ulp of float32 for {100 * frac:.1f}% of the free weights"):
        LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, epsilon=eps))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the precision of the forward does not matter: no warning
        LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, epsilon=1e-5, precision="bf16"))
        LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, epsilon=eps, master_dtype=torch.float64))


# ---------------------------------------------------------------------------- lost updates
def test_inplace_bf16_sgld_loses_most_updates_fp32_master_keeps_them():
    """devinterp's SGLD step applied in place to a bf16 model at ε = 1e-5 rounds most O(1) weights
    back to themselves (|√ε·η| < ½ ulp_bf16(w) ≈ 3.9e-3 for |w| ∈ [1, 2)); spectro's update with
    bf16 compute is applied to fp32 masters and moves all of them."""
    eps, nbeta, gamma = 1e-5, 20.0, 100.0
    torch.manual_seed(0)
    model = TwoLayer(hidden=64)
    with torch.no_grad():  # weights of magnitude [1, 2) (LayerNorm gains, large weights), bf16-representable
        for p in model.parameters():
            p.copy_((torch.sign(torch.randn_like(p)) * (1 + torch.rand_like(p))).bfloat16().float())
    X, y = _data()
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    half_ulp = 0.5 * (torch.nextafter(w0.abs().bfloat16(), torch.tensor(float("inf"), dtype=torch.bfloat16)).float()
                      - w0.abs())
    predicted_lost = torch.erf(half_ulp / math.sqrt(2 * eps)).mean().item()  # P(|√ε·η| < ½ ulp), noise only

    sgmcmc = pytest.importorskip("devinterp.optim.sgmcmc")
    m16 = TwoLayer(hidden=64)
    m16.load_state_dict(model.state_dict())
    m16 = m16.to(torch.bfloat16)
    opt = sgmcmc.SGMCMC.sgld(m16.parameters(), lr=eps, nbeta=nbeta, localization=gamma)
    mse(m16(X.bfloat16()).float(), (X, y)).mean().backward()
    opt.step()
    w16 = torch.cat([p.detach().float().reshape(-1) for p in m16.parameters()])
    changed_inplace = (w16 != w0).float().mean().item()

    cfg = SamplerConfig(chains=1, draws=1, batch_size=None, epsilon=eps, nbeta=nbeta, gamma=gamma, precision="bf16")
    post = LocalizedPosterior(model, mse, (X, y), cfg)
    with post.running():
        state = post.start()
        post.advance(state, 1)
    changed_master = (state.W[0] != post.w_star).float().mean().item()

    assert changed_inplace < 0.5, changed_inplace  # most updates rounded away
    assert abs((1 - changed_inplace) - predicted_lost) < 0.05, (changed_inplace, predicted_lost)
    assert changed_master > 0.999, changed_master
    # the helper says the same about an in-place bf16 update of the typical noise size
    assert lost_update_fraction(w0, math.sqrt(eps), torch.bfloat16) > 0.5
    assert lost_update_fraction(w0, math.sqrt(eps), torch.float32) == 0.0


# ---------------------------------------------------------------------------- fp32 vs bf16, paired
def _per_chain_chi_and_llc(precision):
    model, data = _trained(), _data()
    X, y = data
    probe = (X[:32], y[:32])
    cfg = SamplerConfig(chains=16, draws=80, steps_per_draw=2, burn_in=40, batch_size=16, epsilon=1e-3,
                        nbeta=20.0, gamma=100.0, seed=5, precision=precision)
    post = LocalizedPosterior(model, mse, data, cfg)
    phi, psi = [], []

    def on_draw(d):
        ell = post.evaluate_losses(d.weights, probe)[:, :, 0].double()  # [C, 32]
        phi.append(ell[:, [0, 4, 5, 12]])  # φ: per-sample losses (two of them inside the first subset)
        psi.append(torch.stack([ell[:, 4:12].mean(1), ell[:, 12:32].mean(1)], 1) - ell.mean(1, keepdim=True))  # ΔL

    res = post.sample(on_draw)
    phi, psi = torch.stack(phi, 1), torch.stack(psi, 1)  # [C, T, m], [C, T, k]
    a, b = phi - phi.mean(1, keepdim=True), psi - psi.mean(1, keepdim=True)
    chi = -torch.einsum("ctm,ctk->cmk", a, b) / (phi.shape[1] - 1)  # per-chain χ = −Cov(φ, ψ)
    return chi.numpy(), res.llc_per_chain


def test_same_seed_fp32_and_bf16_differ_by_far_less_than_the_monte_carlo_error():
    """Common random numbers: chain c of the fp32 and of the bf16 run share minibatches and noise,
    so the per-chain difference d_c of χ (and of the LLC) isolates the effect of bf16 compute.

    Measured (docs/design.md §2, "Precision"): the pairing shrinks the error of the difference to
    a few % of a run's own Monte Carlo error, sharp enough to resolve a small bf16 bias in some
    entries (paired |z| up to ~4 for χ and ~7 for the LLC with 32 chains × 150 draws; the LLC
    moves by 0.1 %). So "below the paired error" does not hold in general. What holds, and is
    asserted: the bias is below ¼ of the unpaired standard error of the estimate itself, so it
    adds < 3 % to its RMS error (√(1 + 1/16)); the paired error is itself < ½ the unpaired one."""
    chi32, llc32 = _per_chain_chi_and_llc("fp32")
    chi16, llc16 = _per_chain_chi_and_llc("bf16")
    C = chi32.shape[0]
    for name, x32, x16 in (("chi", chi32, chi16), ("llc", llc32, llc16)):
        d = x16 - x32
        paired_se = d.std(0, ddof=1) / math.sqrt(C)
        unpaired_se = np.hypot(x32.std(0, ddof=1), x16.std(0, ddof=1)) / math.sqrt(C)
        assert np.all(paired_se < 0.5 * unpaired_se), (name, paired_se / unpaired_se)
        assert np.all(np.abs(d.mean(0)) < 0.25 * unpaired_se), (name, np.round(d.mean(0) / unpaired_se, 3))
    resolved = np.abs(chi32.mean(0)) > 4 * chi32.std(0, ddof=1) / math.sqrt(C)
    assert resolved.any() and llc32.mean() > 4 * llc32.std(ddof=1) / math.sqrt(C)  # not a trivial 0 ≈ 0 comparison


# ---------------------------------------------------------------------------- bf16 on a CPU without bf16 matmuls
# (spectro.devices.cpu_bf16_fast, read from /proc/cpuinfo; monkeypatched to the ISA of each case)
def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16\n")
    assert devices._cpu_flags(x86) == {"fpu", "sse", "avx2", "fma", "avx512f", "avx512_bf16"}
    assert "bf16" in devices._cpu_flags(arm)
    assert devices._cpu_flags(tmp_path / "missing") is None
    isa = devices.cpu_isa()
    assert set(isa) == {"amx_bf16", "avx512_bf16", "avx512f"} and all(isinstance(b, bool) for b in isa.values())


@pytest.mark.parametrize("flags, fast", [({"avx2", "fma"}, False), ({"avx2", "avx512_bf16"}, True),
                                         ({"avx2", "amx_bf16"}, True), ({"asimd", "bf16"}, True), (None, None)])
def test_cpu_bf16_fast(monkeypatch, flags, fast):
    monkeypatch.setattr(devices, "_cpu_flags", lambda path=None: flags)
    assert devices.cpu_bf16_fast() is fast


def test_bf16_on_a_cpu_without_bf16_matmuls_warns_once(monkeypatch):
    monkeypatch.setattr(devices, "_cpu_flags", lambda path=None: {"fpu", "avx2", "fma"})  # AVX2 only, as AMD EPYC Zen 2/3
    monkeypatch.setattr(precision_mod, "_BF16_WARNED", False)
    model, data = TwoLayer(hidden=16), _data()
    with pytest.warns(UserWarning, match=r"precision='bf16': this CPU has no bf16 matmul instructions .* slower than "
                                         r"fp32 .* buys no speed") as rec:
        LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, precision="bf16"))
        LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, precision="bf16"))  # a second restriction: silent
    slow = [w for w in rec if "bf16 matmul" in str(w.message)]
    assert len(slow) == 1 and "\n" not in str(slow[0].message)
    assert slow[0].filename == __file__  # points at the caller


@pytest.mark.parametrize("flags, precision", [({"avx2", "avx512_bf16"}, "bf16"), (None, "bf16"), ({"avx2"}, "fp32")])
def test_no_bf16_warning_where_bf16_is_fast_unknown_or_unused(monkeypatch, flags, precision):
    monkeypatch.setattr(devices, "_cpu_flags", lambda path=None: flags)
    monkeypatch.setattr(precision_mod, "_BF16_WARNED", False)
    model, data = TwoLayer(hidden=16), _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, precision=precision))


# ---------------------------------------------------------------------------- fp16 on a CPU without fp16 arithmetic
@pytest.mark.parametrize("flags, fast", [({"avx2", "avx512f", "avx512_bf16"}, False), ({"avx512f", "avx512_fp16"}, True),
                                         ({"amx_fp16"}, True), ({"asimd", "asimdhp"}, True), (None, None)])
def test_cpu_fp16_fast(monkeypatch, flags, fast):
    monkeypatch.setattr(devices, "_cpu_flags", lambda path=None: flags)
    assert devices.cpu_fp16_fast() is fast


def test_fp16_on_a_cpu_without_fp16_arithmetic_warns_once(monkeypatch):
    """Measured here (AMD EPYC, AVX-512 with avx512_bf16, no avx512_fp16): a 1024² fp16 matmul runs at
    1 GFLOP/s against 184 in fp32, so fp16 on such a CPU warns (once per process), in one line."""
    monkeypatch.setattr(devices, "_cpu_flags", lambda path=None: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(precision_mod, "_FP16_WARNED", False)
    model, data = TwoLayer(hidden=16), _data()
    with pytest.warns(UserWarning, match=r"precision='fp16': this CPU has no fp16 arithmetic instructions .* far "
                                         r"slower than fp32") as rec:
        LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, precision="fp16"))
        LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, precision="fp16"))
    slow = [w for w in rec if "fp16 arithmetic" in str(w.message)]
    assert len(slow) == 1 and "\n" not in str(slow[0].message) and slow[0].filename == __file__


@pytest.mark.parametrize("flags, precision", [({"avx512f", "avx512_fp16"}, "fp16"), (None, "fp16"), ({"avx2"}, "bf16")])
def test_no_fp16_warning_where_fp16_is_fast_unknown_or_unused(monkeypatch, flags, precision):
    monkeypatch.setattr(devices, "_cpu_flags", lambda path=None: flags)
    monkeypatch.setattr(precision_mod, "_FP16_WARNED", False)
    monkeypatch.setattr(precision_mod, "_BF16_WARNED", True)  # the bf16 case here is about fp16's warning only
    model, data = TwoLayer(hidden=16), _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, precision=precision))
