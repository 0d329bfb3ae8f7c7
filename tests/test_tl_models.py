"""TransformerLens models in `spectro run` (spectro.models.tl): tiny random HookedTransformers saved
as tl_config.json + a state dict (no downloads). Per-head components are checked against TL's own
parameter layout written out by hand (W_Q/W_K/W_V [n_heads, d_model, d_head], b_Q/b_K/b_V
[n_heads, d_head], W_O [n_heads, d_head, d_model]; under GQA the shared _W_K/_W_V head), against
the attention patterns and against what the sampler moves; a whole job runs; every bad input is a
one-line error. Needs transformer_lens 3.x (the optional `tl` extra); skipped without it, except the
tests of the missing-dependency messages."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))
from hf_tiny import (HEAD_DIM, HEADS, HIDDEN, check_head_patterns, check_sampler_moves_only_the_slice,  # noqa: E402
                     folder_cache, job_config, one_line_error, prepare, tok)

from spectro.jobs.nn_config import ConfigError  # noqa: E402
from spectro.jobs.nn_job import run_job  # noqa: E402
from spectro.models.hf import HFModelError  # noqa: E402
from spectro.models.tl import load_tl_model, save_tl_model  # noqa: E402

needs_tl = pytest.mark.skipif(importlib.util.find_spec("transformer_lens") is None,
                              reason="transformer_lens is not installed (pip install -e '.[tl]')")


def _tl():
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:
        pytest.skip("this transformer_lens has no HookedTransformer (4.0 removed it)")
    return HookedTransformer, HookedTransformerConfig


def tiny_tl(vocab: int, *, seed: int = 0, **kw):
    import warnings

    HookedTransformer, HookedTransformerConfig = _tl()
    cfg = dict(n_layers=2, d_model=HIDDEN, n_ctx=64, d_head=HEAD_DIM, n_heads=HEADS, d_mlp=64, d_vocab=vocab, act_fn="gelu",
               normalization_type="LN", device="cpu", seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(HookedTransformerConfig(**{**cfg, **kw}))
    with torch.no_grad():  # TL initialises the biases to 0: give every parameter a generic value
        g = torch.Generator().manual_seed(seed)
        for n, p in model.named_parameters():
            if n.split(".")[-1].startswith(("b_", "_b_")):
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tok):
    from spectro.data.tokenizer import load_tokenizer

    vocab = load_tokenizer(tok).get_vocab_size()
    return folder_cache(tmp_path_factory.mktemp("tl"),
                        lambda folder, **kw: save_tl_model(tiny_tl(vocab, **kw), folder, tok, eos_token="<|endoftext|>"))


def _copy(folder: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, dst))


# ---------------------------------------------------------------------------- loading
@needs_tl
def test_saved_and_hand_written_folders_load_the_same_model(tmp_path, tok):
    from spectro.data.tokenizer import load_tokenizer

    model = tiny_tl(load_tokenizer(tok).get_vocab_size(), seed=3)
    ids = torch.randint(0, model.cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(ids)
    loaded, tokenizer, info = load_tl_model(save_tl_model(model, tmp_path / "saved", tok, eos_token="<|endoftext|>"))
    with torch.no_grad():
        assert torch.equal(loaded(ids), want)
    assert (info.family, info.model_type, info.n_layers, info.n_heads, info.eos_token_id) == ("transformer_lens", "hooked_transformer", 2, HEADS, 0)
    assert tokenizer is not None and tokenizer.get_vocab_size() == model.cfg.d_vocab
    # by hand: the few config fields the model needs and torch.save(state_dict) (buffers included)
    hand = tmp_path / "hand"
    hand.mkdir()
    keys = ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_mlp", "d_vocab", "act_fn", "normalization_type")
    (hand / "tl_config.json").write_text(json.dumps({k: getattr(model.cfg, k) for k in keys}))
    torch.save(model.state_dict(), hand / "model.pt")
    loaded2, tokenizer2, _ = load_tl_model(hand)
    with torch.no_grad():
        assert torch.equal(loaded2(ids), want)
    assert tokenizer2 is None


# ---------------------------------------------------------------------------- components
def _expected_head_masks(model, layer: int, head: int) -> dict[str, torch.Tensor]:
    """TL's layout written out by hand: index `head` (its key/value head under GQA) of the first axis."""
    n_kv = model.cfg.n_key_value_heads or model.cfg.n_heads
    kv = head * n_kv // model.cfg.n_heads
    params = dict(model.named_parameters())
    out = {}
    for short in ("W_Q", "b_Q", "W_O", "W_K", "b_K", "W_V", "b_V", "_W_K", "_b_K", "_W_V", "_b_V"):
        name = f"blocks.{layer}.attn.{short}"
        if name in params:
            m = torch.zeros_like(params[name], dtype=torch.bool)
            m[head if short.endswith(("Q", "O")) else kv] = True
            out[name] = m
    assert len(out) == 7
    return out


def _patterns(model, layer: int):
    ids = torch.randint(0, model.cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(0))
    hook = f"blocks.{layer}.attn.hook_pattern"

    def run():
        with torch.no_grad():
            _, cache = model.run_with_cache(ids, names_filter=hook)
        return cache[hook]  # [batch, heads, T, T]
    return run


@needs_tl
@pytest.mark.parametrize("kv", [None, 2])
def test_head_components_are_tls_own_slices_and_the_only_coordinates_moved(folders, kv):
    folder = folders(**({"n_key_value_heads": kv} if kv else {}))
    prep = prepare(job_config(folder, ["l1h3", "l0h1", "l0.attn"]))
    for (layer, head), name in (((1, 3), "l1h3"), ((0, 1), "l0h1")):
        got = prep.components[name].masks
        want = _expected_head_masks(prep.model, layer, head)
        assert set(got) == set(want)
        for n in want:
            assert torch.equal(torch.as_tensor(got[n]).bool(), want[n]), n
    check_head_patterns(prep.model, _patterns(prep.model, 1), prep.components["l1h3"].masks, 3, kv or HEADS, HEADS)
    for name in ("l1h3", "l0.attn"):
        check_sampler_moves_only_the_slice(prep, name)


@needs_tl
def test_component_names_expand_through_devinterp(folders):
    from devinterp.slt.weight_restrictions import create_param_masks

    prep = prepare(job_config(folders(), ["heads", "layers", "mlp", "attn", "embed", "unembed", "blocks.1.mlp.*", "full"]))
    names = list(prep.components)
    assert names[0] == "full" and names[1:9] == [f"l{l}h{h}" for l in range(2) for h in range(HEADS)]
    for name, spec in (("l0.mlp", "l0 mlp"), ("l1.attn", "l1 attn"), ("l1", "l1"), ("embed", "embed"), ("unembed", "unembed")):
        want = create_param_masks(prep.model, spec)
        got = prep.components[name].masks
        assert list(got) == list(want) and all(a is None and b is None for a, b in zip(got.values(), want.values()))
    assert list(prep.components["embed"].masks) == ["embed.W_E"]
    assert list(prep.components["blocks.1.mlp._"].masks) == [f"blocks.1.mlp.{p}" for p in ("W_in", "b_in", "W_out", "b_out")]


# ---------------------------------------------------------------------------- a whole job
@needs_tl
def test_whole_job_on_a_tiny_hooked_transformer(folders, tmp_path):
    out = run_job(job_config(folders(), ["l1h1", "full"]), tmp_path / "job", progress=False, log=lambda m: None)
    s = json.loads((out / "summary.json").read_text())
    assert s["run"]["model"]["family"] == "transformer_lens" and s["run"]["model"]["model_type"] == "hooked_transformer"
    for c in ("l1h1", "full"):
        assert np.isfinite(s["components"][c]["llc"]) and (out / f"chi_{c}.npz").is_file()


@needs_tl
def test_bf16_stored_model_needs_bf16_precision(folders):
    folder = folders(dtype=torch.bfloat16)
    assert json.loads((folder / "tl_config.json").read_text())["dtype"] == "bfloat16"
    with pytest.raises(ConfigError, match="sampler.precision: the model is stored in bfloat16"):
        prepare(job_config(folder, ["l0h0"]))
    up = prepare(job_config(folder, ["l0h0"], model={"dtype": "float32"}))
    assert next(up.model.parameters()).dtype == torch.float32


# ---------------------------------------------------------------------------- bad input
def _edit_config(folder: Path, **edit) -> None:
    c = json.loads((folder / "tl_config.json").read_text())
    (folder / "tl_config.json").write_text(json.dumps({**c, **edit}))


@needs_tl
@pytest.mark.parametrize("case,needles", [
    ("unknown field", ["['n_experts_typo'] are not HookedTransformerConfig fields"]),
    ("missing tensor", ["do not match its tl_config.json (missing keys: ['blocks.1.mlp.W_out']"]),
    ("wrong shape", ["do not match its tl_config.json (mismatched keys: ['blocks.0.mlp.W_in'"]),
    ("no weights", ["no weights", "model.safetensors, model.pt"]),
    ("dtype", ["stored in float32 but tl_config.json says dtype 'bfloat16'"]),
    ("not causal", ["not causal"]),
    ("no tokenizer", ["has no tokenizer.json", "data.tokenizer"]),
])
def test_bad_folders_are_one_line_errors(folders, tmp_path, capsys, case, needles):
    from safetensors.torch import load_file, save_file

    folder = _copy(folders(), tmp_path / "m")
    if case == "unknown field":
        _edit_config(folder, n_experts_typo=2)
    elif case == "missing tensor":
        sd = load_file(str(folder / "model.safetensors"))
        del sd["blocks.1.mlp.W_out"]
        save_file(sd, str(folder / "model.safetensors"))
    elif case == "wrong shape":
        _edit_config(folder, d_mlp=48)
    elif case == "no weights":
        (folder / "model.safetensors").unlink()
    elif case == "dtype":
        _edit_config(folder, dtype="bfloat16")
    elif case == "not causal":
        _edit_config(folder, attention_dir="bidirectional")
    elif case == "no tokenizer":
        (folder / "tokenizer.json").unlink()
    one_line_error(job_config(folder, ["full"]), tmp_path, capsys, *needles)


@needs_tl
@pytest.mark.parametrize("component,needles", [
    ("l2h0", ["layer 2 does not exist", "layers 0..1"]),
    ("l0h4", ["head 4 does not exist", "heads 0..3"]),
    ("transformer.h.*", ["matches no parameter", "blocks.", "'lLhH'", "spectro.nn.Restriction"]),
])
def test_component_not_in_this_model_is_one_line(folders, tmp_path, capsys, component, needles):
    one_line_error(job_config(folders(), [component]), tmp_path, capsys, *needles)


def test_missing_or_too_new_transformer_lens_names_the_way_out(tmp_path, monkeypatch):
    (tmp_path / "tl_config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformer_lens", None)
    with pytest.raises(HFModelError, match=r"transformer_lens 3\.x: pip install -e '\.\[tl\]'"):
        load_tl_model(tmp_path)
    v4 = types.ModuleType("transformer_lens")
    v4.__version__ = "4.3.0"
    monkeypatch.setitem(sys.modules, "transformer_lens", v4)
    with pytest.raises(HFModelError, match=r"transformer_lens 4\.3\.0 has no HookedTransformer \(removed in 4\.0\).*save_pretrained"):
        load_tl_model(tmp_path)
