"""experiments/induction_progress.py: detector + copying gain through (chained) training runs."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from spectro.data.corpus import load_corpus
from spectro.data.tokenizer import train_tokenizer
from spectro.models.attention_only import AttentionOnlyConfig
from spectro.models.induction import repeated_random_tokens
from spectro.models.training import TokenizedCorpus, TrainConfig, checkpoint_steps, train

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("induction_progress", ROOT / "experiments" / "induction_progress.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Copier(nn.Module):
    """Logits of a perfect in-context copier on [r, r] (T known), uniform everywhere else."""

    def __init__(self, V: int, T: int):
        super().__init__()
        self.V, self.T = V, T

    def forward(self, tokens):
        B, S = tokens.shape
        logits = torch.zeros(B, S, self.V)
        for i in range(self.T, S - 1):  # second-copy position i predicts token i+1 = token i+1−T
            logits[torch.arange(B), i, tokens[:, i + 1 - self.T]] = 50.0
        return logits


def test_copying_gain_is_log_vocab_for_a_copier_and_zero_for_uniform():
    ip = _script()
    V, T = 40, 10
    first, second, se = ip.copying_gain(_Copier(V, T), V, T, n_seqs=8, seed=0)
    assert first == pytest.approx(math.log(V), abs=1e-5) and second < 1e-6 and se < 1e-5
    first, second, se = ip.copying_gain(lambda t: torch.zeros(*t.shape, V), V, T, n_seqs=8, seed=0)
    assert first == pytest.approx(second, abs=1e-6)
    # the gain uses the detector's tokens (ids ≥ 1, so <|endoftext|> = 0 never appears)
    assert int(repeated_random_tokens(8, T, V, low=1, seed=0).min()) >= 1


def test_chained_runs_are_counted_cumulatively(tmp_path):
    ds = load_corpus(cache_dir=tmp_path / "hf")
    tok = train_tokenizer(ds["train"]["text"], 300)
    corpus = TokenizedCorpus.from_datasets(ds, tok)
    mcfg = AttentionOnlyConfig(vocab_size=tok.get_vocab_size(), n_ctx=32, d_model=16, n_layers=2, n_heads=2, d_head=8)
    base = dict(batch_size=4, warmup_steps=1, eval_every=10, eval_windows=2, seed=0)
    train(mcfg, TrainConfig(steps=4, n_checkpoints=2, **base), corpus, tok, tmp_path / "a", progress=False)
    train(mcfg, TrainConfig(steps=3, n_checkpoints=2, init_from=str(tmp_path / "a" / "checkpoints" / "step_000004"),
                            repeat_fraction=1.0, **base), corpus, tok, tmp_path / "b", progress=False)
    ip = _script()
    assert ip.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out"), "--seq-len", "12",
                    "--n-seqs", "4"]) == 0
    rows = json.loads((tmp_path / "out" / "induction_progress.json").read_text())["rows"]
    # run b's step 0 is run a's last checkpoint (skipped); its steps are counted after a's last step
    a_steps, b_steps = checkpoint_steps(4, 2), checkpoint_steps(3, 2)
    assert [r["cumulative_step"] for r in rows] == a_steps + [4 + s for s in b_steps if s > 0]
    assert all(0 <= r["max_induction"] <= 1 and math.isfinite(r["copying_gain"]) and r["copying_gain_stderr"] > 0
               for r in rows)
    assert (tmp_path / "out" / "induction_progress.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="no checkpoints"):
        ip.main([str(tmp_path), "--out", str(tmp_path / "out2")])
