#!/usr/bin/env python
"""Train 2-layer attention-only transformers (Baker et al. family) on the mixed multi-domain corpus.

    python experiments/build_corpus.py runs/corpus                 # once: ~16 MB, 4 domains
    python experiments/train_transformer.py --seeds 0 1 2          # ≈15 min per seed on 2 cores
    python experiments/train_transformer.py --corpus fixture --steps 50 --vocab-size 512 \\
        --d-model 64 --out runs/smoke                              # seconds: smoke test

Output folder (``--out``, default runs/transformer)::

    OUT/tokenizer.json            byte-level BPE trained on the corpus' train split (deterministic), shared by
                                  all seeds; an existing different one is an error (never mixed vocabularies)
    OUT/seed_{s}/                 run folder of seed s (see spectro.models.training): config.json,
                                  metrics.json, losses.png, summary.json, checkpoints/step_*/
    OUT/summary.json              all seeds: final per-domain held-out losses, throughput,
                                  induction / previous-token scores of trained vs initial model

Every file is written atomically; re-running with the same arguments reproduces the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from spectro.data.corpus import FIXTURE_DIR, CorpusError, load_corpus, read_manifest
from spectro.data.tokenizer import TokenizerMismatchError, check_tokenizer, fingerprint, load_tokenizer, save_tokenizer, train_tokenizer
from spectro.io import write_json
from spectro.models.attention_only import AttentionOnlyConfig, AttentionOnlyTransformer
from spectro.models.induction import induction_report
from spectro.models.training import TokenizedCorpus, TrainConfig, train

M = AttentionOnlyConfig()
T = TrainConfig()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="runs/corpus", help="corpus folder from build_corpus.py, or 'fixture' (tiny, shipped)")
    p.add_argument("--out", type=Path, default=Path("runs/transformer"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")
    tok = p.add_argument_group("tokenizer")
    tok.add_argument("--vocab-size", type=int, default=M.vocab_size)
    tok.add_argument("--tokenizer", type=Path, default=None, help="use this tokenizer.json instead of training one")
    mod = p.add_argument_group("model")
    mod.add_argument("--n-ctx", type=int, default=M.n_ctx)
    mod.add_argument("--d-model", type=int, default=M.d_model)
    mod.add_argument("--n-layers", type=int, default=M.n_layers)
    mod.add_argument("--n-heads", type=int, default=M.n_heads)
    mod.add_argument("--d-head", type=int, default=None, help="default d_model // n_heads")
    mod.add_argument("--no-layer-norm", action="store_true")
    tr = p.add_argument_group("training")
    tr.add_argument("--steps", type=int, default=T.steps)
    tr.add_argument("--batch-size", type=int, default=T.batch_size)
    tr.add_argument("--lr", type=float, default=T.lr)
    tr.add_argument("--warmup-steps", type=int, default=T.warmup_steps)
    tr.add_argument("--min-lr-ratio", type=float, default=T.min_lr_ratio)
    tr.add_argument("--weight-decay", type=float, default=T.weight_decay)
    tr.add_argument("--grad-clip", type=float, default=T.grad_clip)
    tr.add_argument("--mix", choices=["uniform", "proportional"], default=T.mix)
    tr.add_argument("--repeat-fraction", type=float, default=T.repeat_fraction,
                    help="fraction of training windows replaced by a repeated half window [A, A] (induction-friendly)")
    tr.add_argument("--init-from", type=Path, default=None,
                    help="start from this checkpoint's weights (same model config and tokenizer; fresh optimizer)")
    tr.add_argument("--eval-every", type=int, default=T.eval_every)
    tr.add_argument("--eval-windows", type=int, default=T.eval_windows, help="held-out windows per domain")
    tr.add_argument("--n-checkpoints", type=int, default=T.n_checkpoints, help="log-spaced checkpoints (0 and last included)")
    tr.add_argument("--max-minutes", type=float, default=None, help="stop each seed after this long (checkpointed)")
    return p


def get_tokenizer(args: argparse.Namespace, datasets) -> "object":
    """--tokenizer if given; else train one on the train split (deterministic, ≈5 s) and save it
    as OUT/tokenizer.json. Refuses an OUT whose existing tokenizer.json differs, so the seeds of
    one output folder never mix vocabularies."""
    if args.tokenizer is not None:
        return load_tokenizer(args.tokenizer)
    t0 = time.perf_counter()
    tok = train_tokenizer(datasets["train"]["text"], args.vocab_size)
    print(f"trained BPE tokenizer: {tok.get_vocab_size()} tokens in {time.perf_counter() - t0:.1f}s")
    path = args.out / "tokenizer.json"
    if path.is_file():
        check_tokenizer(tok, fingerprint(load_tokenizer(path)), what=f"{args.out} (existing runs)")
    else:
        save_tokenizer(tok, path)
    return tok


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus_dir = FIXTURE_DIR if args.corpus == "fixture" else Path(args.corpus)
    try:
        manifest = read_manifest(corpus_dir)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = load_corpus(corpus_dir)
    try:
        tokenizer = get_tokenizer(args, datasets)
    except TokenizerMismatchError as e:
        print(f"error: {e}; use another --out or pass --tokenizer", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    corpus = TokenizedCorpus.from_datasets(datasets, tokenizer)
    print(f"tokenized corpus in {time.perf_counter() - t0:.1f}s: {corpus.n_tokens()}")

    d_head = args.d_head or args.d_model // args.n_heads
    model_cfg = AttentionOnlyConfig(
        vocab_size=tokenizer.get_vocab_size(), n_ctx=args.n_ctx, d_model=args.d_model, n_layers=args.n_layers,
        n_heads=args.n_heads, d_head=d_head, layer_norm=not args.no_layer_norm,
    )
    print(f"model: {model_cfg.n_params():,} parameters, {model_cfg}")
    results = {}
    for seed in args.seeds:
        cfg = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
            min_lr_ratio=args.min_lr_ratio, weight_decay=args.weight_decay, grad_clip=args.grad_clip, seed=seed,
            mix=args.mix, repeat_fraction=args.repeat_fraction,
            init_from=None if args.init_from is None else str(args.init_from), eval_every=args.eval_every, eval_windows=args.eval_windows,
            n_checkpoints=args.n_checkpoints, max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
        )
        run_dir = args.out / f"seed_{seed}"
        try:
            model, summary = train(
                model_cfg, cfg, corpus, tokenizer, run_dir, progress=not args.no_progress,
                metadata={"corpus": str(corpus_dir), "corpus_config": manifest["config"], "command": sys.argv},
            )
        except ValueError as e:  # CheckpointError, TokenizerMismatchError, bad --init-from
            print(f"error: {e}", file=sys.stderr)
            return 2
        seq_len = min(50, (args.n_ctx - 1) // 2)
        ind = {
            "trained": induction_report(model, model_cfg.vocab_size, seq_len=seq_len, seed=seed).to_dict(),
            "initial": induction_report(AttentionOnlyTransformer(model_cfg, seed=seed), model_cfg.vocab_size,
                                        seq_len=seq_len, seed=seed).to_dict(),
        }
        summary["induction"] = ind
        write_json(run_dir / "summary.json", summary)
        results[f"seed_{seed}"] = summary
        top = ind["trained"]["top_heads"][0]
        print(
            f"seed {seed}: {summary['steps_done']} steps, {summary['train_tokens_per_second']:,.0f} tok/s, "
            f"{summary['wall_seconds'] / 60:.1f} min; held-out loss "
            + ", ".join(f"{d} {v:.3f}" for d, v in summary["final_validation"].items())
            + f"; best induction head l{top['layer']}h{top['head']} score {top['score']:.3f}"
            f" (initial model max {max(max(r) for r in ind['initial']['induction']):.3f})"
        )
    overall = {"tokenizer": fingerprint(tokenizer).to_dict(), "model": model_cfg.to_dict(), "runs": results}
    write_json(args.out / "summary.json", _merged_with_earlier_seeds(args.out / "summary.json", overall))
    return 0


def _merged_with_earlier_seeds(path: Path, overall: dict) -> dict:
    """Keep the other seeds of an earlier ``OUT/summary.json`` (same tokenizer and model config), so
    ``--seeds 0`` then ``--seeds 1 2`` into one OUT gives the same file as ``--seeds 0 1 2``."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return overall
    if earlier.get("tokenizer") != overall["tokenizer"] or earlier.get("model") != overall["model"]:
        return overall
    runs = {**earlier.get("runs", {}), **overall["runs"]}
    return {**overall, "runs": dict(sorted(runs.items(), key=lambda kv: int(kv[0].split("_")[-1])))}


if __name__ == "__main__":
    raise SystemExit(main())
