"""Tiny random Hugging Face causal LMs saved as model folders, for tests (no downloads), and the
checks the model tests share (a job config, the gradient-mask and attention-pattern oracles).

:func:`tiny_config` follows devinterp's ``_tiny_configs.make_tiny`` (4 heads × 8 dims, hidden
32) but builds the config in one call, so families whose configs validate per-layer lists
(``layer_types``) or need consistent multi-query settings build too, with ``layers`` layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

HEADS, HEAD_DIM = 4, 8
HIDDEN = HEADS * HEAD_DIM


def tiny_config(model_type: str, vocab_size: int, *, layers: int = 2, kv_heads: int | None = None, n_ctx: int = 64,
                multi_query: bool = False):
    from devinterp.slt._tiny_configs import _ATTR_TABLE
    from transformers import AutoConfig

    d = AutoConfig.for_model(model_type).to_dict()
    for value, attrs in _ATTR_TABLE:
        for a in attrs:
            if d.get(a) is not None:
                d[a] = value
    for a in ("num_hidden_layers", "n_layer", "num_layers", "decoder_layers"):
        if d.get(a) is not None:
            d[a] = layers
    for a in ("head_dim", "d_head", "kv_channels", "rotary_dim", "dim_head"):
        if a in d:
            d[a] = HEAD_DIM
    if "num_key_value_heads" in d:
        d["num_key_value_heads"] = kv_heads or HEADS
    for k in list(d):
        if "vocab_size" in k and isinstance(d[k], int):
            d[k] = vocab_size
        elif "hidden_size" in k and isinstance(d[k], int):
            d[k] = HIDDEN
    for a in ("max_position_embeddings", "n_positions", "max_seq_len"):
        if isinstance(d.get(a), int):
            d[a] = n_ctx
    for a in ("layer_types", "mlp_layer_types"):
        if isinstance(d.get(a), list):
            d[a] = d[a][:layers]
    if model_type == "gpt_bigcode":  # multi_query=False: c_attn fused per head; True: [Q | K | V], one K/V head
        d["multi_query"] = multi_query
        d["num_key_value_heads"] = 1 if multi_query else HEADS
    for k in ("model_type", "transformers_version", "architectures"):
        d.pop(k, None)
    d.update(pad_token_id=0, bos_token_id=0, eos_token_id=0, is_decoder=True, use_cache=False)
    return AutoConfig.for_model(model_type, **d)


def save_tiny_model(folder: Path, model_type: str, tokenizer_file: Path, *, seed: int = 0, dtype=None, **kw) -> Path:
    """A random tiny ``model_type`` model + the given tokenizer.json saved to ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM

    from spectro.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_file)
    cfg = tiny_config(model_type, tok.get_vocab_size(), **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    if dtype is not None:
        model = model.to(dtype)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(Path(tokenizer_file).read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return folder


def fixture_tokenizer(path: Path, vocab_size: int = 300) -> Path:
    """A byte-level BPE tokenizer trained on the shipped fixture corpus (``<|endoftext|>`` = id 0)."""
    from spectro.data import load_corpus
    from spectro.data.tokenizer import save_tokenizer, train_tokenizer

    texts = load_corpus()["train"]["text"]
    return save_tokenizer(train_tokenizer(texts, vocab_size=vocab_size), path)


# ---------------------------------------------------------------------------- shared by the model tests
@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A test module's tokenizer.json (import this fixture into the module)."""
    return fixture_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def folder_cache(root: Path, build):
    """``get(*args, **kw)``: ``build(folder, *args, **kw)`` into a new folder under ``root``, once per arguments."""
    made: dict = {}

    def get(*args, **kw) -> Path:
        key = (args, tuple(sorted(kw.items())))
        if key not in made:
            made[key] = build(root / f"m{len(made)}", *args, **kw)
        return made[key]

    return get


def job_config(folder: Path, components, **over) -> dict:
    cfg = {
        "system": "nn",
        "name": "hf-test",
        "model": {"checkpoint": str(folder)},
        "data": {"corpus": "fixture", "domains": ["code", "prose"], "context": 12, "train_sequences": 16},
        "probes": {"base": 4, "per_domain": 2},
        "observables": [{"type": "mean_loss", "domain": "base"}],
        "fields": ["tokens"],
        "components": list(components),
        "sampler": {"chains": 2, "draws": 5, "burn_in": 2, "steps_per_draw": 1, "batch_size": 4, "nbeta": 10.0,
                    "gamma": 1000.0, "epsilon": 1e-4, "seed": 1},
        "threads": 1,
        "export": {"devinterp": False},
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


def _prep(cfg: dict):
    return _prepare(JobConfig.from_dict(cfg), False, lambda m: None)


def prepare(cfg: dict):
    """The job's resolved inputs (model, data, components), as `spectro run` builds them."""
    from spectro.jobs.nn_config import JobConfig
    from spectro.jobs.nn_prepare import _prepare

    return _prepare(JobConfig.from_dict(cfg), False, lambda m: None)


def check_head_patterns(model, patterns, masks: dict, head: int, n_kv: int, n_heads: int) -> None:
    """Oracle for Q/K: perturbing the component's coordinates changes exactly the attention patterns
    (``patterns()``: ``[batch, heads, T, T]`` of the component's layer) of the heads that read its
    query/key slices (the head, plus the heads sharing its key under GQA); perturbing the other
    coordinates of those tensors leaves the head's pattern unchanged."""
    import torch

    base = patterns()
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(1)

    def perturbed(inside: bool) -> torch.Tensor:
        saved = {n: params[n].detach().clone() for n in masks}
        with torch.no_grad():
            for n, m in masks.items():
                m = torch.ones_like(params[n], dtype=torch.bool) if m is None else torch.as_tensor(m).bool()
                sel = m if inside else ~m
                params[n].add_(0.5 * torch.randn(params[n].shape, generator=g) * sel)
            new = patterns()
            for n, t in saved.items():
                params[n].copy_(t)
        return new

    changed = (perturbed(True) - base).abs().flatten(2).amax(dim=(0, 2)) > 0  # [heads]
    group = {h for h in range(n_heads) if h * n_kv // n_heads == head * n_kv // n_heads}
    assert changed[head]
    assert set(torch.nonzero(changed).flatten().tolist()) <= group, changed
    outside = (perturbed(False) - base).abs().flatten(2).amax(dim=(0, 2))
    assert outside[head] == 0, outside


def check_sampler_moves_only_the_slice(prep, name: str) -> None:
    """Three SGLD steps of the job's restricted posterior: exactly the mask's coordinates move."""
    from dataclasses import replace

    import torch

    from spectro.models import next_token_loss
    from spectro.nn.posterior import LocalizedPosterior

    s = replace(prep.sampler, chains=2, draws=1, burn_in=2, steps_per_draw=1)
    post = LocalizedPosterior(prep.model, next_token_loss, prep.train, s, prep.components[name])
    seen = []
    post.sample(on_draw=lambda d: seen.append(d.weights.clone()))
    moved = seen[-1] != post.w_star  # [C, D] over the parameters the restriction names
    mask = post.mask > 0 if post.mask is not None else torch.ones_like(post.w_star, dtype=torch.bool)
    assert torch.equal(moved, mask.expand_as(moved)), name
    frozen = set(dict(prep.model.named_parameters())) - set(post.free_names)
    assert frozen and set(post.constants) >= frozen  # every other parameter is a constant of the forward pass


def one_line_error(cfg: dict, tmp_path: Path, capsys, *needles: str) -> str:
    """`spectro run` on ``cfg`` exits 2 with one line naming every needle, and writes nothing."""
    from spectro.jobs.cli import main

    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "out"
    capsys.readouterr()  # drop what building the model printed
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spectro: error: "), err
    for n in needles:
        assert n in err[0], err[0]
    assert not out.exists()
    return err[0]
