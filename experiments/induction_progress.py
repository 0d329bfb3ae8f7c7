#!/usr/bin/env python
"""Induction and previous-token scores through training, from a run's checkpoints.

    python experiments/induction_progress.py runs/transformer/seed_0 --out runs/induction_progress
    python experiments/induction_progress.py runs/transformer/seed_0 runs/transformer_induction/seed_0 \\
        runs/transformer_induction2/seed_0 --out runs/induction_progress      # continued runs, chained

For every ``checkpoints/step_*`` of every run folder (runs given in training order; a later run's
steps are counted after the earlier run's last step, as with ``train_transformer.py --init-from``)
it reports

* the attention-based detector of :mod:`spectro.models.induction` (repeated random sequences of
  ``--seq-len`` distinct tokens): the best induction score and head, the best previous-token score;
* the **copying gain** on the same sequences: mean next-token loss on the first copy minus the
  second copy (nats), ± its standard error over sequences. A model that copies from context predicts the second copy far better
  (gain → the loss of the first copy); no in-context copying gives gain ≈ 0.

Writes ``OUT/induction_progress.json`` and ``OUT/induction_progress.png`` (scores and gain against
the cumulative step, uniform-attention baseline dashed). Uses no susceptibility code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from spectro.io import write_json
from spectro.models.attention_only import load_checkpoint, next_token_loss
from spectro.models.induction import induction_report, repeated_random_tokens


def checkpoint_folders(run: Path) -> list[Path]:
    folders = sorted((run / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    if not folders:
        raise SystemExit(f"induction_progress: {run} has no checkpoints/step_* folders")
    return folders


@torch.no_grad()
def copying_gain(model, vocab_size: int, seq_len: int, n_seqs: int, seed: int) -> tuple[float, float, float]:
    """(loss on the first copy, loss on the second copy, standard error of their difference) in nats,
    on the detector's sequences (``induction_report``'s tokens: ids ≥ 1, distinct within a copy).

    The stderr is over sequences: std of the per-sequence differences / √n_seqs."""
    tokens = repeated_random_tokens(n_seqs, seq_len, vocab_size, low=1, seed=seed)
    loss = next_token_loss(model(tokens), tokens)  # [B, 2T-1]: position t predicts token t+1
    first, second = loss[:, : seq_len - 1].mean(dim=1), loss[:, seq_len:].mean(dim=1)
    diff = first - second
    se = float(diff.std(unbiased=True) / n_seqs**0.5) if n_seqs > 1 else float("nan")
    return first.mean().item(), second.mean().item(), se


def progress(runs: list[Path], seq_len: int, n_seqs: int, seed: int) -> list[dict]:
    rows, offset = [], 0
    for run in runs:
        last = 0
        for folder in checkpoint_folders(run):
            step = int(folder.name.split("_")[1])
            if offset and step == 0:
                continue  # a continued run's step 0 is the previous run's last checkpoint
            model, _, _ = load_checkpoint(folder)
            model.eval()
            rep = induction_report(model, model.cfg.vocab_size, seq_len=seq_len, n_seqs=n_seqs, seed=seed)
            ind, prev = rep.induction, rep.previous_token
            flat = int(ind.argmax())
            first, second, gain_se = copying_gain(model, model.cfg.vocab_size, seq_len, n_seqs, seed)
            rows.append({
                "run": str(run), "step": step, "cumulative_step": offset + step,
                "max_induction": float(ind.max()), "induction_head": f"l{flat // ind.shape[1]}h{flat % ind.shape[1]}",
                "max_previous_token": float(prev.max()), "uniform": rep.uniform_baseline,
                "loss_first_copy": first, "loss_second_copy": second, "copying_gain": first - second,
                "copying_gain_stderr": gain_se,
            })
            last = step
            print(f"{run.name} step {step:6d} (cum. {offset + step:6d}): induction {ind.max():.4f} "
                  f"({rows[-1]['induction_head']}), previous-token {prev.max():.3f}, "
                  f"copying gain {first - second:+.3f} ± {gain_se:.3f} nats", flush=True)
        offset += last
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spectro.io import atomic_path

    steps = [max(r["cumulative_step"], 1) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(steps, [r["max_induction"] for r in rows], "o-", label="max induction score")
    a.plot(steps, [r["max_previous_token"] for r in rows], "s-", label="max previous-token score")
    a.axhline(rows[0]["uniform"], ls="--", c="grey", label="uniform causal attention")
    b.errorbar(steps, [r["copying_gain"] for r in rows], yerr=[r["copying_gain_stderr"] for r in rows],
               fmt="o-", c="C2", capsize=2)
    b.axhline(0, ls="--", c="grey")
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_xlabel("training step (cumulative over continued runs)")
        for r0, r1 in zip(rows, rows[1:]):
            if r1["run"] != r0["run"]:
                ax.axvline(max(r0["cumulative_step"], 1), c="k", lw=0.6, alpha=0.5)
    a.set_ylabel("attention score")
    a.legend(fontsize=8)
    b.set_ylabel("loss(1st copy) − loss(2nd copy), nats")
    b.set_title("in-context copying gain")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="training run folders (seed_S), in training order")
    p.add_argument("--out", type=Path, default=Path("runs/induction_progress"))
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--n-seqs", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = progress(args.runs, args.seq_len, args.n_seqs, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "induction_progress.json", {"command": sys.argv, "seq_len": args.seq_len,
                                                     "n_seqs": args.n_seqs, "seed": args.seed, "rows": rows})
    plot(rows, args.out / "induction_progress.png")
    print(f"wrote {args.out / 'induction_progress.json'} and induction_progress.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
