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
    floor = rep._pc1_floor95(noise, n=100)
    assert 1 / 8 < floor < 1 / 8 + 4 * math.sqrt(8 / 400) / 8 + 0.05
