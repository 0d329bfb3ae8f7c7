"""What the speed work in ``spectro.nn.chain_model`` (and the posterior using it) relies on, and agreement with devinterp.

* The execution strategies (vmap, per-chain loop, worker threads, frozen-module memo) are the
  same arithmetic: trajectories, losses and probe evaluations agree to float rounding.
* The memo never serves a stale value: inputs that change (or are modified in place) recompute.
* ``shared_batches``: every chain sees the same minibatch sequence, still independent of the
  number of chains and of ``chain_offset``.
* L_n(w*) is computed once per (model, data, loss) and recomputed when the weights change.
* devinterp's ``susceptibilities`` and spectro's ``component_susceptibility`` compute the same
  estimand on a small GPT-2 job (slow; the benchmark runs the full-size version).
"""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from spectro.nn import (
    LocalizedPosterior,
    ProbeSet,
    Restriction,
    SamplerConfig,
)
from spectro.nn.memo import _FrozenMemo, _frozen_modules

transformers = pytest.importorskip("transformers")


def _gpt2(seed=0, n_layer=2, d=16, heads=2, vocab=23, ctx=8):
    cfg = transformers.GPT2Config(
        n_layer=n_layer, n_head=heads, n_embd=d, vocab_size=vocab, n_positions=ctx, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg).eval()


def lm_loss(out, ids):
    logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
    return -logp.gather(-1, ids[:, 1:, None])[..., 0]


def _ids(n, seed, vocab=23, ctx=8):
    return torch.randint(0, vocab, (n, ctx), generator=torch.Generator().manual_seed(seed))


def _record(post, probe):
    traj, losses = [], []

    def on_draw(d):
        traj.append(d.weights.clone())
        losses.append(probe.evaluate(post, d.weights))

    res = post.sample(on_draw)
    return torch.stack(traj, 1), torch.stack(losses, 1), res


@pytest.mark.parametrize("shared", [True, False])
def test_vmap_loop_workers_and_memo_are_the_same_arithmetic(shared):
    model = _gpt2()
    train = _ids(64, 0)
    probe = ProbeSet({"base": _ids(6, 1), "p": _ids(5, 2)})
    cfg = SamplerConfig(chains=4, draws=6, batch_size=8, nbeta=20.0, gamma=200.0, epsilon=1e-3, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        restr = Restriction.from_devinterp(model, "l1h0")
    runs = {}
    for mode, memo, workers in [("vmap", False, 1), ("loop", False, 1), ("loop", True, 1), ("loop", True, 2), ("loop", True, 3)]:
        post = LocalizedPosterior(model, lm_loss, train, cfg, restr, shared_batches=shared, chain_mode=mode,
                                  memoize_frozen=memo, workers=workers)
        runs[(mode, memo, workers)] = _record(post, probe)
        if memo and shared:  # layer 0 is frozen for a layer-1 head: its outputs are reused
            assert runs[(mode, memo, workers)][2].execution["memo_hits"] > 0
    ref_traj, ref_loss, ref_res = runs[("vmap", False, 1)]
    for key, (traj, loss, res) in runs.items():
        torch.testing.assert_close(traj, ref_traj, rtol=0, atol=1e-6, msg=lambda m: f"{key}: {m}")
        torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-5, msg=lambda m: f"{key}: {m}")
        assert np.abs(res.loss_trace - ref_res.loss_trace).max() < 1e-5
    assert not torch.allclose(ref_traj[0], ref_traj[1])  # distinct chains
    # the user's model is untouched: no memo wrapper left behind, parameters unchanged
    assert all("forward" not in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("workers", [1, 2])
def test_memo_keeps_the_probes_cached_when_the_minibatches_never_repeat(monkeypatch, workers):
    """Independent chains: the training step's frozen layer 0 misses 4 × 9 times (its minibatches never
    repeat), which must switch off its cache for the step only: on the probes, evaluated on every
    draw with the same inputs, layer 0 (frozen for a layer-1 head) is computed once at w* and once per
    worker, and layer 1 (free) on every draw of every chain. (The memo used to switch a module off
    for every context after 8 misses in any, so layer 0 ran on the probes on every draw too.)"""
    from transformers.models.gpt2 import modeling_gpt2

    calls = []
    forward = modeling_gpt2.GPT2Block.forward

    def counting(self, *args, **kwargs):
        if not torch.is_grad_enabled():  # probe evaluations (the training step runs with grad)
            calls.append(self.attn.layer_idx)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(modeling_gpt2.GPT2Block, "forward", counting)
    model = _gpt2()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        restr = Restriction.from_devinterp(model, "l1h0")
    cfg = SamplerConfig(chains=4, draws=6, burn_in=3, batch_size=8, nbeta=20.0, gamma=200.0, epsilon=1e-3, seed=3)
    post = LocalizedPosterior(model, lm_loss, _ids(64, 0), cfg, restr, shared_batches=False, chain_mode="loop",
                              memoize_frozen=True, workers=workers)
    _record(post, ProbeSet({"base": _ids(6, 1), "p": _ids(5, 2)}))
    assert calls.count(1) == 1 + cfg.draws * cfg.chains  # the free layer: at w*, then every chain on every draw
    assert calls.count(0) == 1 + workers


def test_memo_recomputes_on_new_or_modified_inputs():
    calls = []

    class Counting(nn.Linear):
        def forward(self, x):
            calls.append(1)
            return super().forward(x)

    lin = nn.Sequential(Counting(3, 4), nn.Tanh(), nn.Linear(4, 2))
    free = {id(p) for p in lin[2].parameters()}
    assert [n for n, _ in _frozen_modules(lin, free)] == ["0"]
    memo = _FrozenMemo(lin, free)
    memo.context = ("eval",)
    x = torch.randn(5, 3)
    with torch.no_grad():
        y1 = lin(x)
        y2 = lin(x.clone())  # equal values: reused
        assert len(calls) == 1 and torch.equal(y1, y2)
        x2 = x.clone()
        x2[0, 0] += 1.0  # different input: recomputed
        y3 = lin(x2)
        assert len(calls) == 2 and not torch.equal(y3, y1)
        x2[1, 1] += 1.0  # the cached input was modified in place: its version changed, recompute
        y4 = lin(x2)
        assert len(calls) == 3
        torch.testing.assert_close(y4, lin[2](lin[1](nn.functional.linear(x2, lin[0].weight, lin[0].bias))))
    memo.context = None
    with torch.no_grad():
        lin(x2)
    assert len(calls) == 4  # context None: memo off
    memo.close()
    assert "forward" not in lin[0].__dict__


def test_memo_treats_weights_tied_to_free_ones_as_free():
    model = _gpt2()
    free = {id(model.transformer.wte.weight)}  # tied to lm_head.weight
    names = [n for n, _ in _frozen_modules(model, free)]
    assert "lm_head" not in names and "transformer.wte" not in names
    assert "transformer.wpe" in names and "transformer.h.0" in names


def test_shared_batches_are_common_to_chains_and_independent_of_chain_count():
    model = _gpt2()
    train = _ids(40, 0)
    seen = []

    def loss(out, ids):
        seen.append(ids.clone())
        return lm_loss(out, ids)

    kw = dict(draws=3, batch_size=8, nbeta=10.0, gamma=100.0, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        restr = Restriction.from_devinterp(model, "l0h1")
    post = LocalizedPosterior(model, loss, train, SamplerConfig(chains=3, **kw), restr, shared_batches=True, chain_mode="loop", workers=1, init_loss=1.0)
    post.sample()
    # 3 steps × 3 chains, each chain of a step with the same minibatch
    assert len(seen) == 9
    for s in range(3):
        assert torch.equal(seen[3 * s], seen[3 * s + 1]) and torch.equal(seen[3 * s], seen[3 * s + 2])
    assert not torch.equal(seen[0], seen[3])
    first = [seen[3 * s] for s in range(3)]
    seen.clear()
    LocalizedPosterior(model, loss, train, SamplerConfig(chains=1, chain_offset=2, **kw), restr, shared_batches=True, init_loss=1.0).sample()
    assert len(seen) == 3 and all(torch.equal(a, b) for a, b in zip(seen, first))


def test_memo_use_is_reported_through_the_driver():
    """component_susceptibility samples through the driver, whose summary is read after the run's
    memos closed: the reported memo hits must survive that (they once read 0/0)."""
    from spectro.nn import TokenPointMasses, component_susceptibility

    model = _gpt2()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        restr = {"l1h0": Restriction.from_devinterp(model, "l1h0")}
    probe = ProbeSet({"base": _ids(4, 1), "p": _ids(3, 2)})
    cfg = SamplerConfig(chains=2, draws=3, batch_size=8, nbeta=10.0, gamma=100.0, seed=1)
    out = component_susceptibility(model, lm_loss, _ids(32, 0), probe, restr, TokenPointMasses("p", base="base"), cfg,
                                   shared_batches=True, posterior_options={"chain_mode": "loop", "workers": 1},
                                   progress=False)
    execution = out["l1h0"].meta["sampling"]["execution"]
    assert execution["memo_hits"] > 0 and execution["memo_misses"] > 0


def test_init_loss_is_shared_and_follows_the_weights():
    model = _gpt2()
    train = _ids(32, 0)
    cfg = SamplerConfig(chains=2, draws=2, batch_size=8, nbeta=10.0)
    calls = []

    def loss(out, ids):
        calls.append(1)
        return lm_loss(out, ids)

    a = LocalizedPosterior(model, loss, train, cfg).init_loss
    n = len(calls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = LocalizedPosterior(model, loss, train, cfg, Restriction.from_devinterp(model, "l1h1")).init_loss
    assert a == b and len(calls) == n  # cached: same model, data and loss
    with torch.no_grad():
        model.transformer.ln_f.bias.add_(0.5)  # new w*: recomputed
    c = LocalizedPosterior(model, loss, train, cfg).init_loss
    assert len(calls) > n and c != a and math.isfinite(c)


@pytest.mark.slow
def test_devinterp_and_spectro_compute_the_same_component_susceptibility(tmp_path):
    """The benchmark's job, small: devinterp's draws through spectro's estimator reproduce
    devinterp's ``sus``; spectro's independent run agrees with it within the error bars."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_vs_devinterp as bench

    torch.set_num_threads(2)
    job = bench.Job(components=["l0h1", "l1h0"], draws=40, n_train=512, train_steps=40)
    setup = bench.Setup(job)
    chi_native, _, paths = bench.run_devinterp(setup, job, tmp_path)
    chi_d, se_d, ref, _ = bench.devinterp_with_errors(paths, job.components, job.n_batches)
    np.testing.assert_allclose(chi_d, chi_native, rtol=1e-4, atol=1e-5 * np.abs(chi_native).max())
    chi_s, se_s, _, out = bench.run_spectro(setup, job, ref)
    assert out["l0h1"].meta["phi_reference_loss"] == ref
    for i in range(len(job.components)):
        r = np.corrcoef(chi_s[i], chi_d[i])[0, 1]
        assert r > 0.5, (job.components[i], r)
