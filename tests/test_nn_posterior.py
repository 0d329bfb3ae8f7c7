"""The batched sampler: chain independence, restrictions, precision, health checks, bad input."""

import math
import warnings

import pytest
import torch
from torch import nn

from spectro.nn import (
    DivergenceError,
    LocalizedPosterior,
    LossShapeError,
    Restriction,
    SamplerConfig,
    attention_head,
    default_nbeta,
)
from toy_regression import TwoLayer, mse, regression_data


def _data(n=16, seed=0):
    return regression_data(n, seed)


def _model(seed=0):
    torch.manual_seed(seed)
    return TwoLayer()


def _record(post):
    traj = []
    res = post.sample(on_draw=lambda d: traj.append(d.weights.clone()))
    return res, torch.stack(traj, 1)  # [C, draws, D]


@pytest.mark.parametrize("method", ["sgld", "rmsprop_sgld"])
def test_vmapped_chains_equal_separately_run_chains(method):
    """Chain c of a C-chain run equals a 1-chain run with chain_offset=c: minibatch and noise
    streams depend only on (seed, c), and batching chains does not change the arithmetic."""
    model, data = _model(), _data()
    mask = torch.zeros(5, 3, dtype=torch.bool)
    mask[:, 0] = True
    restr = Restriction({"a.weight": mask, "b.weight": None, "b.bias": None})
    kw = dict(method=method, epsilon=1e-3, gamma=100.0, nbeta=20.0, draws=15, steps_per_draw=2, burn_in=3, batch_size=4, seed=7)
    res, traj = _record(LocalizedPosterior(model, mse, data, SamplerConfig(chains=3, **kw), restr))
    for c in range(3):
        r1, t1 = _record(LocalizedPosterior(model, mse, data, SamplerConfig(chains=1, chain_offset=c, **kw), restr))
        torch.testing.assert_close(t1[0], traj[c], rtol=1e-6, atol=1e-6)
        assert abs(r1.loss_trace[0] - res.loss_trace[c]).max() < 1e-6
    assert not torch.allclose(traj[0], traj[1])  # chains are distinct


def test_same_seed_reproduces_and_other_seed_differs():
    model, data = _model(), _data()
    cfg = SamplerConfig(chains=2, draws=5, batch_size=4, nbeta=10.0, seed=1)
    a = LocalizedPosterior(model, mse, data, cfg).sample().final_weights
    b = LocalizedPosterior(model, mse, data, cfg).sample().final_weights
    c = LocalizedPosterior(model, mse, data, SamplerConfig(chains=2, draws=5, batch_size=4, nbeta=10.0, seed=2)).sample().final_weights
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_restriction_moves_only_masked_coordinates_and_never_touches_the_model():
    model, data = _model(), _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = torch.zeros(5, 3)
    mask[2] = 1.0
    post = LocalizedPosterior(model, mse, data, SamplerConfig(chains=2, draws=20, nbeta=10.0, batch_size=8), Restriction({"a.weight": mask}))
    assert post.free_names == ["a.weight"] and post.n_free == 3
    W = post.sample().final_weights
    moved = (W != post.w_star).any(0).view(5, 3)
    assert moved[2].all() and not moved[torch.arange(5) != 2].any()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert model.training  # mode restored


def test_globs_and_union():
    model = _model()
    r = Restriction.from_globs(model, ["b.*"])
    assert list(r.masks) == ["b.weight", "b.bias"]
    u = r.union(Restriction.from_globs(model, "a.bias"))
    assert set(u.masks) == {"a.bias", "b.weight", "b.bias"}
    with pytest.raises(ValueError, match="matches no parameter"):
        Restriction.from_globs(model, "c.*")


def test_bf16_model_runs_on_fp32_master_weights():
    model = _model().to(torch.bfloat16)
    seen = []
    model.b.register_forward_hook(lambda m, i, out: seen.append(out.dtype))

    X, y = _data()
    cfg = SamplerConfig(chains=2, draws=10, batch_size=8, nbeta=10.0, epsilon=1e-8, precision="bf16")
    post = LocalizedPosterior(model, mse, (X.bfloat16(), y), cfg)
    res = post.sample()
    assert res.final_weights.dtype == torch.float32 and post.w_star.dtype == torch.float32
    assert set(seen) == {torch.bfloat16}  # the forward runs in the model's precision
    assert torch.isfinite(res.final_weights).all()
    # steps of ~1e-4 are far below a bf16 ulp: the fp32 masters accumulate them, bf16 weights could not
    assert (res.final_weights != post.w_star).all()
    assert (res.final_weights.bfloat16() != post.w_star.bfloat16()).float().mean() < 0.5


def test_divergence_is_located_to_its_step_and_explained():
    model, data = _model(), _data()
    cfg = SamplerConfig(chains=3, draws=200, epsilon=5.0, nbeta=1e3, gamma=1.0, health_every=50, batch_size=None)
    with pytest.raises(DivergenceError) as info:
        LocalizedPosterior(model, mse, data, cfg).sample()
    err = info.value
    assert 0 <= err.chain < 3
    assert err.step < 50  # found at the first check, located to the earlier step where it happened
    assert "reduce epsilon, increase gamma or reduce nbeta" in str(err).lower()
    assert err.culprit in ("gradient", "localization", "noise")


def test_loss_threshold_flags_runaway_chain():
    model, data = _model(), _data()
    cfg = SamplerConfig(chains=2, draws=50, epsilon=1e-2, nbeta=1.0, gamma=0.0, max_loss_increase=1e-6, batch_size=None)
    with pytest.raises(DivergenceError, match="blew up"):
        LocalizedPosterior(model, mse, data, cfg).sample()


def test_default_nbeta_is_n_over_log_n():
    model, data = _model(), _data(n=16)
    post = LocalizedPosterior(model, mse, data, SamplerConfig(nbeta=None, batch_size=None))
    assert post.nbeta == pytest.approx(16 / math.log(16)) == default_nbeta(16)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "field, value",
    [
        ("epsilon", 0.0), ("epsilon", -1e-3), ("epsilon", float("nan")),
        ("gamma", -1.0), ("gamma", float("inf")),
        ("nbeta", 0.0), ("nbeta", -2.0), ("nbeta", float("nan")),
        ("chains", 0), ("draws", 0), ("steps_per_draw", 0), ("batch_size", 0),
        ("burn_in", -1), ("rmsprop_alpha", 1.0), ("rmsprop_delta", 0.0), ("method", "adam"),
    ],
)
def test_config_rejects_bad_values_naming_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        SamplerConfig(**{field: value})


@pytest.mark.parametrize(
    "loss, message",
    [
        (lambda out, b: ((out - b[1]) ** 2).mean(), r"returned shape \(\) for a batch of 16 samples"),
        (lambda out, b: torch.cat([out, out]), r"returned shape \(32,\) for a batch of 16 samples"),
        (lambda out, b: out[:, None, None].expand(-1, 2, 2), r"expected \[16\] or \[16, tokens\]"),
    ],
)
def test_loss_shape_mismatch_is_reported(loss, message):
    post = LocalizedPosterior(_model(), loss, _data(), SamplerConfig(chains=2, draws=2, batch_size=4, nbeta=1.0))
    with pytest.raises(LossShapeError, match=message):
        post.sample()


def test_bad_data_and_restrictions_are_rejected():
    model, (X, y) = _model(), _data()
    cfg = SamplerConfig(batch_size=4, nbeta=1.0)
    with pytest.raises(ValueError, match="disagree"):
        LocalizedPosterior(model, mse, (X, y[:-1]), cfg)
    with pytest.raises(ValueError, match="batch_size"):
        LocalizedPosterior(model, mse, (X, y), SamplerConfig(batch_size=100, nbeta=1.0))
    with pytest.raises(ValueError, match="sample_weights"):
        LocalizedPosterior(model, mse, (X, y), cfg, sample_weights=torch.ones(3))
    with pytest.raises(ValueError, match="unknown parameters"):
        LocalizedPosterior(model, mse, (X, y), cfg, Restriction({"nope": None}))
    with pytest.raises(ValueError, match="shape"):
        LocalizedPosterior(model, mse, (X, y), cfg, Restriction({"a.weight": torch.ones(3, 5)}))
    with pytest.raises(ValueError, match="frees no coordinate"):
        LocalizedPosterior(model, mse, (X, y), cfg, Restriction({"a.weight": torch.zeros(5, 3)}))
    with pytest.raises(ValueError, match="frees no parameter"):
        LocalizedPosterior(model, mse, (X, y), cfg, Restriction({}))


# ---------------------------------------------------------------------- attention heads
class Block(nn.Module):
    """GPT-2-style attention with nn.Linear layout (c_attn: [3d, d], c_proj: [d, d])."""

    def __init__(self, d=8, n_heads=2):
        super().__init__()
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(d, 3 * d)
        self.attn.c_proj = nn.Linear(d, d)


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.h = nn.ModuleList([Block(), Block()])


def test_attention_head_masks_linear_layout():
    model = Stack()
    r = attention_head(model, layer=1, head=1, n_heads=2, block_prefix="h")
    qkv = r.masks["h.1.attn.c_attn.weight"]
    rows = qkv.any(1).nonzero().flatten().tolist()
    assert rows == [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23] and qkv[rows].all()
    assert r.masks["h.1.attn.c_attn.bias"].nonzero().flatten().tolist() == rows
    proj = r.masks["h.1.attn.c_proj.weight"]
    assert proj.any(0).nonzero().flatten().tolist() == [4, 5, 6, 7] and proj[:, 4:].all()
    assert "h.1.attn.c_proj.bias" not in r.masks
    assert r.n_free(model) == 12 * 8 + 12 + 8 * 4


def _tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=8, vocab_size=11, n_positions=6, bos_token_id=0, eos_token_id=0)
    cfg._attn_implementation = "eager"  # vmappable attention (SDPA kernels fall back to a slow loop)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


def lm_loss(out, ids):
    logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
    return -logp.gather(-1, ids[:, 1:, None])[..., 0]  # [batch, tokens]


def test_attention_head_matches_devinterp_on_hf_gpt2_and_samples():
    model = _tiny_gpt2()
    ours = attention_head(model, layer=0, head=1, n_heads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = Restriction.from_devinterp(model, "l0h1")
    assert set(ours.masks) == set(theirs.masks)
    for name, m in theirs.masks.items():
        assert torch.equal(ours.masks[name], m), name
    ids = torch.randint(0, 11, (12, 6), generator=torch.Generator().manual_seed(0))
    post = LocalizedPosterior(model, lm_loss, ids, SamplerConfig(chains=2, draws=3, batch_size=4, nbeta=10.0, gamma=100.0), ours, model_input=lambda b: (b,))
    W = post.sample().final_weights
    moved = (W != post.w_star).any(0)
    assert int(moved.sum()) == ours.n_free(model)


@pytest.mark.parametrize("method,shared,precision", [("sgld", False, "fp32"), ("rmsprop_sgld", True, "fp32"),
                                                     ("sgld", False, "fp16"), ("sghmc", False, "fp32"),
                                                     ("rmsprop_sgld_warmup", True, "fp32")])
def test_state_snapshot_resumes_bit_identically(method, shared, precision, tmp_path, monkeypatch):
    """Snapshot the pull-style state after 15 steps (what PosteriorSystem.state_dict and the
    driver's checkpoints hold), save/load it through torch.save, restore it in a fresh sampler and
    step on: weights and losses equal the uninterrupted run exactly. In fp16 the per-chain loss
    scales are part of the state (their growth interval shortened to 2 steps so they move)."""
    from spectro.nn import precision as precision_mod

    monkeypatch.setattr(precision_mod, "LOSS_SCALE_GROWTH_INTERVAL", 2)
    model, data = _model(), _data()
    cfg = SamplerConfig(method=method, epsilon=1e-3, gamma=100.0, nbeta=20.0, chains=3, draws=14, steps_per_draw=2,
                        burn_in=3, batch_size=5, seed=11, health_every=4, precision=precision)

    def run(post, state, steps):
        with post.running():
            return [(post.advance(state, 1), state.W.clone()) for _ in range(steps)]

    full_post = LocalizedPosterior(model, mse, data, cfg, shared_batches=shared)
    full = run(full_post, full_post.start(), 31)
    first = LocalizedPosterior(model, mse, data, cfg, shared_batches=shared)
    state = first.start()
    run(first, state, 15)
    torch.save(state.snapshot(first), tmp_path / "s.pt")
    snap = torch.load(tmp_path / "s.pt", weights_only=True)
    second = LocalizedPosterior(model, mse, data, cfg, shared_batches=shared)
    resumed = second.start()
    resumed.restore(snap, second)
    if precision == "fp16":
        assert torch.equal(resumed.loss_scale, state.loss_scale) and (state.loss_scale != 2.0**16).any()
        assert torch.equal(resumed.scale_streak, state.scale_streak)
    rest = run(second, resumed, 16)
    for (loss_a, w_a), (loss_b, w_b) in zip(full[15:], rest):
        assert torch.equal(loss_a, loss_b) and torch.equal(w_a, w_b)

    other = SamplerConfig(**{**cfg.to_dict(), "master_dtype": torch.float32, "seed": 12})
    stranger = LocalizedPosterior(model, mse, data, other, shared_batches=shared)
    with pytest.raises(ValueError, match="different run.*config"):
        stranger.start().restore(snap, stranger)
