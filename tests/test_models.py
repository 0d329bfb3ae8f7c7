"""The attention-only transformer, its checkpoints, training loop and the induction-head detector."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.func import functional_call, vmap

from spectro.data.corpus import load_corpus
from spectro.data.tokenizer import TokenizerMismatchError, fingerprint, train_tokenizer
from spectro.models.attention_only import (
    AttentionOnlyConfig,
    AttentionOnlyTransformer,
    CheckpointError,
    head_masks,
    head_parameter_slices,
    head_restriction,
    load_checkpoint,
    next_token_loss,
    save_checkpoint,
)
from spectro.models.induction import (
    induction_report,
    induction_scores_from_patterns,
    repeated_random_tokens,
)
from spectro.models.training import TokenizedCorpus, TrainConfig, checkpoint_steps, lr_at, train

SMALL = AttentionOnlyConfig(vocab_size=97, n_ctx=16, d_model=24, n_layers=2, n_heads=3, d_head=5)


@pytest.fixture
def model():
    return AttentionOnlyTransformer(SMALL, seed=0)


def test_forward_shapes_and_param_count(model):
    tokens = torch.randint(0, SMALL.vocab_size, (4, 10))
    assert model(tokens).shape == (4, 10, SMALL.vocab_size)
    assert model(tokens[0]).shape == (10, SMALL.vocab_size)
    assert model.attention_patterns(tokens).shape == (2, 4, 3, 10, 10)
    assert next_token_loss(model(tokens), tokens).shape == (4, 9)
    assert sum(p.numel() for p in model.parameters()) == SMALL.n_params()
    assert AttentionOnlyConfig().n_params() == pytest.approx(2.66e6, rel=0.01)
    with pytest.raises(ValueError, match="exceeds the model's context n_ctx=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(1, 4))


def test_causal_and_untrained_loss_near_uniform(model):
    a = torch.randint(0, SMALL.vocab_size, (2, 12))
    b = a.clone()
    b[:, 8:] = (b[:, 8:] + 1) % SMALL.vocab_size
    torch.testing.assert_close(model(a)[:, :8], model(b)[:, :8])  # future tokens do not leak
    with torch.no_grad():
        loss = next_token_loss(model(a), a).mean()
    assert abs(float(loss) - math.log(SMALL.vocab_size)) < 0.1


def test_head_slices_select_exactly_one_head(model):
    params = dict(model.named_parameters())
    for layer in range(SMALL.n_layers):
        covered = {}
        for head in range(SMALL.n_heads):
            sl = head_parameter_slices(model, layer, head)
            assert set(sl) == {f"blocks.{layer}.attn.{p}" for p in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")}
            masks = head_masks(model, layer, head)
            for name, idx in sl.items():
                p = params[name]
                assert p[idx].shape == p.shape[1:]
                assert int(masks[name].sum()) == p[idx].numel() == p.numel() // SMALL.n_heads
                covered[name] = covered.get(name, torch.zeros_like(masks[name], dtype=torch.int)) + masks[name].int()
        assert all(bool((c == 1).all()) for c in covered.values())  # heads partition the per-head params
    with pytest.raises(ValueError, match="head 3 out of range"):
        head_parameter_slices(model, 0, 3)
    with pytest.raises(ValueError, match="layer 2 out of range"):
        head_parameter_slices(model, 2, 0)


def test_perturbing_a_head_slice_changes_only_that_head(model):
    tokens = torch.randint(0, SMALL.vocab_size, (2, 12))
    before = model.attention_patterns(tokens)
    with torch.no_grad():
        for name, idx in head_parameter_slices(model, 0, 1).items():
            if name.endswith(("W_Q", "W_K")):
                p = dict(model.named_parameters())[name]
                p[idx] += 0.5 * torch.randn_like(p[idx])
    after = model.attention_patterns(tokens)
    changed = (after[0] - before[0]).abs().amax(dim=(0, 2, 3))
    assert changed[1] > 1e-3 and changed[0] == 0 and changed[2] == 0


def test_functional_call_vmap_over_stacked_params(model):
    tokens = torch.randint(0, SMALL.vocab_size, (3, 8))
    name = "blocks.1.attn.W_V"
    base = dict(model.named_parameters())[name].detach()
    stacked = torch.stack([base, base + 0.1, base - 0.1])

    def loss(w):
        return next_token_loss(functional_call(model, {name: w}, (tokens,)), tokens).mean()

    batched = vmap(loss)(stacked)
    for c in range(3):
        torch.testing.assert_close(batched[c], loss(stacked[c]))
    g = vmap(torch.func.grad(loss))(stacked)
    assert g.shape == stacked.shape and torch.isfinite(g).all()


def test_head_restriction_fits_sampler_restrictions(model):
    pytest.importorskip("spectro.nn.restrictions")
    r = head_restriction(model, 1, 2)
    assert r.name == "l1h2"
    assert r.n_free(model) == 4 * SMALL.d_model * SMALL.d_head + 3 * SMALL.d_head


def test_checkpoint_roundtrip_is_bit_identical(model, tmp_path):
    texts = ["alpha beta gamma delta " * 20, "def f(x): return x\n" * 20]
    tok = train_tokenizer(texts, 300)
    cfg = AttentionOnlyConfig(vocab_size=tok.get_vocab_size(), n_ctx=16, d_model=24, n_layers=2, n_heads=3, d_head=5)
    m = AttentionOnlyTransformer(cfg, seed=1)
    folder = save_checkpoint(tmp_path / "ckpt", m, tok, {"step": 7})
    save_checkpoint(folder, m, tok, {"step": 7})  # overwriting an existing checkpoint works
    m2, tok2, meta = load_checkpoint(folder)
    assert m2.cfg == cfg and meta["metadata"] == {"step": 7}
    p1, p2 = dict(m.named_parameters()), dict(m2.named_parameters())
    assert p1.keys() == p2.keys()
    assert all(torch.equal(p1[n], p2[n]) and p1[n].dtype == p2[n].dtype for n in p1)
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    assert torch.equal(m(x), m2(x))
    assert fingerprint(tok2) == fingerprint(tok)
    assert not list(tmp_path.glob(".ckpt*"))  # no temporary folders left behind
    with pytest.raises(CheckpointError, match="tokenizer vocabulary size"):
        save_checkpoint(tmp_path / "bad", model, tok)
    # a tokenizer swapped in after saving is caught
    meta_file = folder / "config.json"
    meta_json = json.loads(meta_file.read_text())
    meta_json["tokenizer"]["sha256"] = "0" * 64
    meta_file.write_text(json.dumps(meta_json))
    with pytest.raises(TokenizerMismatchError, match="different vocabulary"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_checkpoint(tmp_path)


def test_schedule_and_checkpoint_steps():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 100))
    steps = checkpoint_steps(2000, 12)
    assert steps[0] == 0 and steps[-1] == 2000 and steps == sorted(set(steps)) and 8 <= len(steps) <= 13
    assert checkpoint_steps(10, 0) == []


def test_training_a_few_steps_lowers_the_loss(tmp_path):
    ds = load_corpus(cache_dir=tmp_path / "hf")
    tok = train_tokenizer(ds["train"]["text"], 300)
    corpus = TokenizedCorpus.from_datasets(ds, tok)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(corpus.sample_batch(4, 32, g1), corpus.sample_batch(4, 32, g2))
    # repeated-segment windows for about repeat_fraction of the rows, at varying periods and starts;
    # fraction 0 changes nothing
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    plain, same = corpus.sample_batch(64, 33, g1), corpus.sample_batch(64, 33, g2, repeat_fraction=0.0)
    assert torch.equal(plain, same)
    rep = corpus.sample_batch(400, 33, torch.Generator().manual_seed(2), repeat_fraction=0.5)

    def repeat_spans(row):  # (start, period) of every repeated segment of length ≥ 8 (P ∈ [8, 16])
        return [(s0, p) for p in range(8, 17) for s0 in range(0, 33 - 2 * p + 1)
                if torch.equal(row[s0 : s0 + p], row[s0 + p : s0 + 2 * p])]

    spans = [repeat_spans(r) for r in rep]
    is_rep = torch.tensor([bool(s) for s in spans])
    # natural text almost never repeats 8+ tokens in a row, so "has a span" ≈ "was rewritten"
    assert 0.5 - 4 * 0.025 < is_rep.float().mean() < 0.5 + 4 * 0.025  # binomial sd √(0.25/400) = 0.025
    periods = {s[0][1] for s in spans if s}
    starts = {s[0][0] for s in spans if s}
    assert len(periods) >= 5 and len(starts) >= 5  # not one fixed offset: a positional head cannot solve it
    with pytest.raises(ValueError, match="repeat_fraction"):
        TrainConfig(repeat_fraction=1.5)
    mcfg = AttentionOnlyConfig(vocab_size=tok.get_vocab_size(), n_ctx=32, d_model=32, n_layers=2, n_heads=2, d_head=16)
    tcfg = TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=20, eval_windows=8, n_checkpoints=3, seed=0)
    _, summary = train(mcfg, tcfg, corpus, tok, tmp_path / "run", progress=False)
    assert summary["final_validation_mean"] < min(summary["initial_validation"].values()) - 0.5
    assert set(summary["final_validation"]) == {"code", "prose", "legal", "math"}
    for f in ("config.json", "metrics.json", "losses.png", "summary.json", "tokenizer.json"):
        assert (tmp_path / "run" / f).is_file()
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts[0] == "step_000000" and ckpts[-1] == "step_000040"
    m, _, meta = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_000040")
    assert meta["metadata"]["step"] == 40 and m.cfg == mcfg
    # continued training: the new run's step-0 checkpoint is the source checkpoint, bit for bit
    src = tmp_path / "run" / "checkpoints" / "step_000040"
    cont = TrainConfig(steps=2, batch_size=4, eval_windows=2, n_checkpoints=2, init_from=str(src))
    train(mcfg, cont, corpus, tok, tmp_path / "cont", progress=False)
    m0, _, meta0 = load_checkpoint(tmp_path / "cont" / "checkpoints" / "step_000000")
    assert all(torch.equal(a, b) for a, b in zip(m0.parameters(), m.parameters()))
    assert meta0["metadata"]["train"]["init_from"] == str(src)
    other = AttentionOnlyConfig(vocab_size=tok.get_vocab_size(), n_ctx=32, d_model=32, n_layers=2, n_heads=4, d_head=8)
    with pytest.raises(ValueError, match="model config"):
        train(other, cont, corpus, tok, tmp_path / "bad", progress=False)


# ---------------------------------------------------------------------------- induction detector
def _hand_built_induction_model(V: int = 16, T: int = 8) -> AttentionOnlyTransformer:
    """Layer 0 head 0: previous-token head; layer 1 head 0: induction head (K-composition).

    Residual stream (no LayerNorm): [token one-hot (V) | position one-hot (n_ctx) | previous token (V)].
    """
    n_ctx = 2 * T + 1  # room for a first (BOS) token
    d_model, d_head, c = V + n_ctx + V, max(V, n_ctx), 40.0
    cfg = AttentionOnlyConfig(vocab_size=V, n_ctx=n_ctx, d_model=d_model, n_layers=2, n_heads=2, d_head=d_head, layer_norm=False)
    m = AttentionOnlyTransformer(cfg, seed=0)
    tok, pos, prev = slice(0, V), slice(V, V + n_ctx), slice(V + n_ctx, d_model)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.embed.W_E[:, tok] = torch.eye(V)
        m.pos_embed.W_pos[:, pos] = torch.eye(n_ctx)
        a0, a1 = m.blocks[0].attn, m.blocks[1].attn
        a0.W_Q[0, pos, :n_ctx] = torch.eye(n_ctx)  # q_i = e_i
        a0.W_K[0, pos, :n_ctx] = c * torch.eye(n_ctx, n_ctx).roll(1, dims=1).triu(1)  # k_j = c·e_{j+1}
        a0.W_V[0, tok, :V] = torch.eye(V)  # v_j = e_{tok_j}
        a0.W_O[0, :V, prev] = torch.eye(V)  # written to the previous-token subspace
        a1.W_Q[0, tok, :V] = torch.eye(V)  # q_i = e_{tok_i}
        a1.W_K[0, prev, :V] = c * torch.eye(V)  # k_j = c·e_{tok_{j-1}}
    return m


def test_induction_detector_finds_the_hand_built_head():
    m = _hand_built_induction_model()
    # The BOS token 0 keeps position 0 out of the match: without it, position 0's previous-token
    # slot holds its own token (it can only attend to itself) and the first second-copy query
    # splits its attention between keys 0 and 1.
    rep = induction_report(m, 16, seq_len=8, n_seqs=16, low=1, prefix_token=0)
    assert rep.previous_token[0, 0] > 0.95
    assert rep.induction[1, 0] > 0.95
    others = rep.induction.clone()
    others[1, 0] = 0
    assert float(others.max()) < 0.2
    assert rep.top_heads(1)[0][:2] == (1, 0)
    assert json.dumps(rep.to_dict())


def test_induction_scores_on_synthetic_patterns_and_random_model():
    T = 5
    S = 2 * T
    uniform = torch.tril(torch.ones(S, S)) / torch.arange(1, S + 1).unsqueeze(1)
    perfect = torch.zeros(S, S)
    perfect[0:T, 0] = 1
    q = torch.arange(T, S)
    perfect[q, q - T + 1] = 1
    pats = torch.stack([uniform, perfect]).reshape(1, 1, 2, S, S)
    scores = induction_scores_from_patterns(pats, T)
    assert scores[0, 1] == 1.0
    assert scores[0, 0] == pytest.approx(float(torch.mean(1.0 / (q + 1).float())))
    from spectro.models.induction import InductionReport

    for prefix in (0, 1):  # the report's baseline = the score a uniform-attention head actually gets
        Sp = prefix + S
        uni = (torch.tril(torch.ones(Sp, Sp)) / torch.arange(1, Sp + 1).unsqueeze(1)).reshape(1, 1, 1, Sp, Sp)
        rep = InductionReport(induction=scores, previous_token=scores, seq_len=T, n_seqs=1, prefix=prefix)
        assert rep.uniform_baseline == pytest.approx(float(induction_scores_from_patterns(uni, T, prefix)[0, 0]))
    seqs = repeated_random_tokens(4, T, 50, low=1, prefix_token=0, seed=3)
    assert seqs.shape == (4, 1 + 2 * T) and torch.equal(seqs[:, 1 : T + 1], seqs[:, T + 1 :])
    assert all(len(set(r[1 : T + 1].tolist())) == T for r in seqs)
    with pytest.raises(ValueError, match="prefix 0"):
        induction_scores_from_patterns(pats, T + 1)
    rand = AttentionOnlyTransformer(AttentionOnlyConfig(vocab_size=200, n_ctx=64, d_model=32, n_heads=4, d_head=8), seed=0)
    assert float(induction_report(rand, 200, seq_len=30).induction.max()) < 0.2
