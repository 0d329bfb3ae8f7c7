"""experiments/replication.py: the mean-ablation forward and the decision helpers (docs/preregistration.md)."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spectro.models.attention_only import AttentionOnlyConfig, AttentionOnlyTransformer

SPEC = importlib.util.spec_from_file_location("replication", Path(__file__).resolve().parent.parent / "experiments" / "replication.py")
rep = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(rep)


@pytest.fixture(scope="module")
def model():
    cfg = AttentionOnlyConfig(vocab_size=64, n_ctx=16, d_model=32, n_layers=2, n_heads=4, d_head=8)
    m = AttentionOnlyTransformer(cfg, seed=3).eval()
    with torch.no_grad():  # non-trivial biases, so that b_O is exercised
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_head_outputs_reproduce_the_model(model):
    tokens = torch.randint(0, 64, (5, 16), generator=torch.Generator().manual_seed(0))
    logits, outs = rep.head_outputs(model, tokens)
    torch.testing.assert_close(logits, model(tokens), rtol=1e-5, atol=1e-5)
    assert [tuple(o.shape) for o in outs] == [(5, 4, 16, 32)] * 2


def test_ablation_by_a_heads_own_output_is_a_no_op_and_a_real_ablation_is_not(model):
    tokens = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    base, outs = rep.head_outputs(model, tokens)
    # replacing head (1, 2) by a constant equal to its output at every position changes nothing only if it was constant
    same, _ = rep.head_outputs(model, tokens, {(1, 2): outs[1][:, 2]})
    torch.testing.assert_close(same, base)
    ablated, _ = rep.head_outputs(model, tokens, {(1, 2): outs[1][:, 2].mean(dim=(0, 1))})
    assert (ablated - base).abs().max() > 1e-4
    # a layer-1 ablation leaves layer 0's head outputs untouched
    _, outs_ablated = rep.head_outputs(model, tokens, {(1, 2): torch.zeros(32)})
    torch.testing.assert_close(outs_ablated[0], outs[0])


def test_topk_auc_and_floor():
    names = ["a", "b", "c", "d"]
    assert rep._topk(np.array([0.1, 0.9, 0.5, 0.2]), names, 2) == ["b", "c"]
    assert rep._auc(np.array([0.1, 0.9, 0.5, 0.2]), np.array([False, True, True, False])) == 1.0
    assert rep._auc(np.array([0.1, 0.9, 0.5, 0.2]), np.array([True, False, False, True])) == 0.0
    # pure independent noise of 8 columns and 400 rows: PC1's 95th percentile sits a little above 1/8
    noise = np.random.default_rng(0).standard_normal((400, 8))
    from spectro.analysis.principal_components import replicate_noise_floor

    floor = replicate_noise_floor(noise, n=100)["pc1"]["q95"]
    assert 1 / 8 < floor < 1 / 8 + 4 * math.sqrt(8 / 400) / 8 + 0.05


HEADS = [f"l{l}h{h}" for l in range(2) for h in range(8)]


def _fake_records(tmp: Path, *, planted: bool, ablation_finds: bool, seed0: int = 0) -> None:
    """Three models' detector entries and per-token records with a known answer (docs/preregistration.md §4-§7).

    Model m's induction heads are l1h{m}, l1h{m+1}. With ``planted`` the covariance part of those two
    heads carries a strong shared token profile (PC1 loads on them) on top of noise; E_C[φ] ranks two
    other heads highest (baseline (a) fails); the ablation increase is largest on the induction heads
    only when ``ablation_finds``.
    """
    import json

    rng = np.random.default_rng(seed0)
    T, doms = 240, ["code", "legal", "math", "prose"]
    domain = np.repeat(doms, T // 4)
    models = {}
    for m in range(3):
        ind = [f"l1h{m}", f"l1h{m + 1}"]
        abl = rng.uniform(0.0, 0.1, 16)
        if ablation_finds:
            for h in ind:
                abl[HEADS.index(h)] = 1.0
        models[f"seed_{101 + m}"] = {"heads": HEADS, "induction": [0.3 if h in ind else 0.02 for h in HEADS],
                                     "ablation_increase": abl.tolist(), "induction_heads": ind, "training_failure": False}
        profile = rng.standard_normal(T)
        for s in (0, 1):
            cov = 0.3 * rng.standard_normal((T, 17))
            if planted:
                for h in ind:
                    cov[:, 1 + HEADS.index(h)] += 2.0 * profile
            e_phi = rng.uniform(0.1, 0.2, 17)
            e_phi[1 + HEADS.index(f"l1h{(m + 4) % 8}")] = e_phi[1 + HEADS.index(f"l1h{(m + 5) % 8}")] = 1.0
            offset = np.zeros((T, 17))
            offset[:, 1:] = -e_phi[1:] * rng.standard_normal((T, 1))
            label = f"seed_{101 + m}-tokens-sgld{s}"
            np.savez(tmp / f"{label}_tokens.npz", chi=cov + offset, offset=offset, e_phi=e_phi, domain=domain,
                     sample=np.tile(np.repeat(np.arange(4), T // 16), 4), position=np.tile(np.arange(T // 16), 16),
                     induction=np.zeros(T, bool), components=np.asarray(["full", *HEADS]))
            (tmp / f"{label}.json").write_text(json.dumps({
                "flagged_share": {h: 0.05 for h in HEADS}, "base_loss_at_w_star": 3.5,
                "per_component": {"full": {"init_loss": 3.4, "llc": 10.0, "llc_stderr": 1.0}}}))
            if s == 0:  # §7 compares with seed 0's per-token aggregate
                agg = np.stack([(cov + offset)[domain == d].mean(axis=0) for d in doms], axis=1)
                (tmp / f"seed_{101 + m}-dataset-sgld100.json").write_text(json.dumps({
                    "components": ["full", *HEADS], "fields": [f"dL:{d}" for d in doms], "chi": agg.tolist(),
                    "covariance_part": np.stack([cov[domain == d].mean(axis=0) for d in doms], axis=1).tolist(),
                    "flagged": np.zeros_like(agg, bool).tolist()}))
    (tmp / "detector.json").write_text(json.dumps({"models": models}))


@pytest.mark.parametrize("planted, ablation_finds, verdict, s1", [
    (True, False, "H1 replicated", 6), (True, True, "H1 not replicated", 6), (False, False, "H1 not replicated", None)])
def test_decide_applies_the_preregistered_rule(tmp_path, planted, ablation_finds, verdict, s1):
    import json

    _fake_records(tmp_path, planted=planted, ablation_finds=ablation_finds)
    rep.main(["--records", str(tmp_path), "decide"])
    d = json.loads((tmp_path / "decision.json").read_text())
    assert d["verdict"] == verdict
    assert d["counts"]["baseline_b_ablation"] == [3 if ablation_finds else 0, 3]
    assert d["counts"]["baseline_a_e_phi"] == [0, 6]
    if s1 is not None:
        assert d["counts"]["S1"] == [s1, 6]
        for m in d["models"].values():  # the planted mode is far above the replicate floor
            assert all(e["S1"]["pc1_ratio"] > m["replicate_floor_pc1_95"] for e in m["seeds"].values())
    else:  # pure noise: PC1 of the covariance part is not above its own replicate floor in most cases
        assert d["counts"]["S1"][0] <= 2
    # §7: the fake dataset record is exactly the per-token aggregate of seed 0
    for m in d["dataset_level_section7"].values():
        assert m["chi"]["r"] == pytest.approx(1.0) and m["covariance_part"]["r"] == pytest.approx(1.0)
    assert set(d["figures"]) == {"fig_loadings.png", "fig_detector_vs_loading.png", "fig_tokens.png"}
