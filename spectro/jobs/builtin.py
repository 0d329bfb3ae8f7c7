"""Built-in models that need no download: trained on the shipped fixture corpus, cached on disk.

``builtin:tiny`` — an attention-only transformer (d_model 64, 2 layers × 4 heads of 16,
context 32, pre-LayerNorm) with a byte-level BPE tokenizer of 1024 tokens, both trained on the
fixture corpus (:func:`spectro.data.load_corpus` without a path) with fixed seeds:
500 AdamW steps × 32 windows × 32 tokens (lr 1e-3, weight decay 0.1, 30 warm-up steps, cosine
decay), about 15–25 s on one CPU thread. The fixture is small (≈30k training tokens per
domain), so the model ends at ≈3.8 nats/token on its training windows and ≈4.9 held out (more
steps only memorise: 800 steps at lr 3e-3 reach 2.1 train / 5.5 held out). Same torch build and thread count ⇒ the same weights.

Cache: ``{cache_dir}/builtin-tiny-{key}/`` where ``key`` hashes the recipe (model, training,
tokenizer settings, fixture manifest) — the training run folder of
:func:`spectro.models.training.train`, with its final checkpoint under
``checkpoints/step_*/`` and a ``ready.json`` naming it, written last. The folder is trained in
a temporary sibling and renamed into place, so a crash never leaves a half cache.
``cache_dir`` defaults to ``$SPECTRO_CACHE_DIR`` or ``runs/cache`` (relative to the working
directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUILTIN_MODELS", "BuiltinRecipe", "default_cache_dir", "builtin_checkpoint"]


@dataclass(frozen=True)
class BuiltinRecipe:
    """How a built-in model is made (every number that changes the weights)."""

    name: str
    vocab_size: int = 1024
    n_ctx: int = 32
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_head: int = 16
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 30
    seed: int = 0
    threads: int = 1
    max_seconds: float = 150.0

    def key(self) -> str:
        from ..data.corpus import read_manifest

        manifest = read_manifest()
        fixture_id = {d: {s: manifest["domains"][d][s]["sha256"] for s in ("train", "validation")} for d in manifest["domains"]}
        blob = json.dumps({"recipe": self.__dict__, "fixture": fixture_id, "format": 1}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


BUILTIN_MODELS = {"tiny": BuiltinRecipe("tiny")}


def default_cache_dir() -> Path:
    """``$SPECTRO_CACHE_DIR`` or ``runs/cache`` (relative to the working directory)."""
    return Path(os.environ.get("SPECTRO_CACHE_DIR") or "runs/cache")


def builtin_checkpoint(name: str, cache_dir: str | os.PathLike | None = None, *, steps: int | None = None,
                       progress: bool = True, log=print) -> Path:
    """The checkpoint folder of built-in model ``name``, training it first when not cached.

    ``steps`` overrides the recipe's number of training steps (a different cache entry).
    Raises KeyError for an unknown name.
    """
    import torch

    if name not in BUILTIN_MODELS:
        raise KeyError(name)
    recipe = BUILTIN_MODELS[name]
    if steps is not None:
        recipe = BuiltinRecipe(**{**recipe.__dict__, "steps": int(steps), "warmup_steps": min(recipe.warmup_steps, max(1, int(steps) // 4))})
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"builtin-{name}-{recipe.key()}"
    ready = folder / "ready.json"
    if ready.is_file():
        ckpt = folder / json.loads(ready.read_text())["checkpoint"]
        if ckpt.is_dir():
            return ckpt

    from ..data import load_corpus, train_tokenizer
    from ..io import write_json
    from ..models import AttentionOnlyConfig
    from ..models.training import TokenizedCorpus, TrainConfig, train

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder.name}.tmp-"))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(recipe.threads)
        log(f"training builtin:{name} ({recipe.steps} steps on the fixture corpus, ≈{recipe.steps * 0.04:.0f} s; cached in {folder})")
        datasets = load_corpus()
        tokenizer = train_tokenizer(datasets["train"]["text"], recipe.vocab_size)
        corpus = TokenizedCorpus.from_datasets(datasets, tokenizer)
        model_cfg = AttentionOnlyConfig(vocab_size=tokenizer.get_vocab_size(), n_ctx=recipe.n_ctx, d_model=recipe.d_model,
                                        n_layers=recipe.n_layers, n_heads=recipe.n_heads, d_head=recipe.d_head)
        train_cfg = TrainConfig(steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
                                weight_decay=recipe.weight_decay,
                                seed=recipe.seed, eval_every=recipe.steps, eval_windows=16, n_checkpoints=0,
                                max_seconds=recipe.max_seconds)
        _, summary = train(model_cfg, train_cfg, corpus, tokenizer, tmp, progress=progress,
                           metadata={"builtin": name, "recipe": recipe.__dict__})
        ckpt_rel = Path(summary["final_checkpoint"]).relative_to(tmp)
        write_json(tmp / "ready.json", {"checkpoint": str(ckpt_rel), "recipe": recipe.__dict__,
                                        "stopped_early": summary["stopped_early"],
                                        "final_validation": summary["final_validation"]})
        if folder.exists():  # a concurrent or stale entry: replace it
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    return folder / ckpt_rel
