"""Tiny random Hugging Face causal LMs saved as model folders, for tests (no downloads).

:func:`tiny_config` follows devinterp's ``_tiny_configs.make_tiny`` (4 heads × 8 dims, hidden
32) but builds the config in one call, so families whose configs validate per-layer lists
(``layer_types``) or need consistent multi-query settings build too, with ``layers`` layers.
"""

from __future__ import annotations

import json
from pathlib import Path

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
