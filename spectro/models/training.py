"""Training the attention-only transformer on the mixed multi-domain corpus.

Pieces (each usable alone):

- :class:`TokenizedCorpus`: each domain's train / validation documents tokenized and
  concatenated into one id stream per (domain, split), documents separated by ``<|endoftext|>``.
  Training windows of ``n_ctx`` tokens start at uniformly random offsets; the domain of each
  window is drawn uniformly over domains (``mix="uniform"``) or in proportion to the domains'
  token counts (``"proportional"``). Held-out windows are a fixed, evenly spaced set per domain.
- :func:`lr_at`: linear warm-up from 0 to ``lr`` over ``warmup_steps``, then cosine decay to
  ``min_lr_ratio·lr`` at ``steps``.
- :func:`evaluate`: mean next-token loss per domain on fixed windows.
- :func:`train`: AdamW (weight decay on the ``W_*`` matrices only), gradient clipping, a tqdm
  bar, per-domain held-out losses at step 0, every ``eval_every`` steps and at every
  checkpoint, checkpoints at log-spaced steps, ``metrics.json`` and ``losses.png`` rewritten
  atomically after every evaluation, ``summary.json`` (throughput, final losses) at the end.

Randomness: the model initialisation uses ``seed``; the window sampler its own generator seeded
from ``seed`` (so two seeds differ in both). Same seed, corpus, tokenizer, config and thread
count ⇒ the same run on the same machine.

Run folder::

    RUN/config.json   RUN/tokenizer.json   RUN/metrics.json   RUN/losses.png   RUN/summary.json
    RUN/checkpoints/step_000000/ … step_{steps:06d}/   (model.safetensors, config.json, tokenizer.json)
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_path, write_json
from .attention_only import AttentionOnlyConfig, AttentionOnlyTransformer, next_token_loss, save_checkpoint

__all__ = [
    "TrainConfig",
    "TokenizedCorpus",
    "lr_at",
    "checkpoint_steps",
    "evaluate",
    "train",
    "plot_losses",
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping settings.

    Defaults: 2,000 steps × 32 windows × 128 tokens = 8.2M tokens, ≈15–17 min on 2 idle CPU
    cores for the default 2.7M-parameter model (≈9.4k tokens/s measured; ≈4k tokens/s when the
    cores are shared, see docs/training.md). lr 3e-3 beat 1e-3 in a 250-step comparison.
    """

    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    mix: str = "uniform"
    eval_every: int = 100
    eval_windows: int = 64
    n_checkpoints: int = 12
    max_seconds: float | None = None
    repeat_fraction: float = 0.0
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.eval_windows < 1:
            raise ValueError("steps, batch_size, eval_every and eval_windows must be positive")
        if self.mix not in ("uniform", "proportional"):
            raise ValueError(f"mix must be 'uniform' or 'proportional', got {self.mix!r}")
        if not 0 <= self.min_lr_ratio <= 1 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("need lr > 0, warmup_steps ≥ 0 and 0 ≤ min_lr_ratio ≤ 1")
        if self.n_checkpoints < 0:
            raise ValueError("n_checkpoints must be ≥ 0")
        if not 0.0 <= self.repeat_fraction <= 1.0:
            raise ValueError(f"repeat_fraction must lie in [0, 1], got {self.repeat_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up, then cosine to min_lr_ratio·lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr_ratio * cfg.lr
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """About ``n`` log-spaced steps in [0, steps], always with 0 and ``steps`` (empty if n = 0)."""
    if n <= 0:
        return []
    if n == 1:
        return [steps]
    pts = {0, steps} | {int(round(x)) for x in np.geomspace(1, steps, max(1, n - 1))}
    return sorted(p for p in pts if 0 <= p <= steps)


MIN_REPEAT_PERIOD = 8  # shortest repeated segment of sample_batch(repeat_fraction > 0)


@dataclass
class TokenizedCorpus:
    """Per-domain token streams: ``train[domain]`` and ``validation[domain]`` are 1-D int64 tensors."""

    train: dict[str, torch.Tensor]
    validation: dict[str, torch.Tensor]
    tokenizer_fingerprint: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_datasets(cls, datasets: Mapping[str, Any], tokenizer: Any, eos_id: int | None = None) -> "TokenizedCorpus":
        """Tokenize a ``DatasetDict`` {train, validation} with columns ``text`` and ``domain``
        (documents end with ``eos_id``, default ``<|endoftext|>``: :func:`spectro.data.tokenizer.encode_documents`)."""
        from ..data.tokenizer import encode_documents, fingerprint

        streams: dict[str, dict[str, torch.Tensor]] = {}
        for split in ("train", "validation"):
            ds = datasets[split]
            by_domain: dict[str, list[str]] = {}
            for text, dom in zip(ds["text"], ds["domain"]):
                by_domain.setdefault(dom, []).append(text)
            streams[split] = {
                dom: torch.from_numpy(np.concatenate([np.asarray(ids, dtype=np.int64) for ids in encode_documents(tokenizer, texts, eos_id=eos_id)]))
                for dom, texts in by_domain.items()
            }
        if set(streams["train"]) != set(streams["validation"]):
            raise ValueError(f"train domains {sorted(streams['train'])} != validation domains {sorted(streams['validation'])}")
        return cls(streams["train"], streams["validation"], fingerprint(tokenizer).to_dict())

    @property
    def domains(self) -> list[str]:
        return list(self.train)

    def n_tokens(self) -> dict[str, dict[str, int]]:
        return {s: {d: int(t.numel()) for d, t in getattr(self, s).items()} for s in ("train", "validation")}

    def check_fits(self, n_ctx: int) -> None:
        """Raise ValueError when some stream is shorter than one window."""
        for split in ("train", "validation"):
            for d, t in getattr(self, split).items():
                if t.numel() < n_ctx:
                    raise ValueError(f"{split} stream of domain {d!r} has {t.numel()} tokens, fewer than n_ctx={n_ctx}")

    def sample_batch(self, batch_size: int, n_ctx: int, generator: torch.Generator, mix: str = "uniform",
                     repeat_fraction: float = 0.0) -> torch.Tensor:
        """``[batch_size, n_ctx]`` training windows at random offsets (domains mixed by ``mix``).

        ``repeat_fraction``: each window is, with this probability, rewritten to contain a
        repeated segment: a period P is drawn uniformly from [``MIN_REPEAT_PERIOD``, ⌊n_ctx/2⌋]
        and a start s from [0, n_ctx − 2P]; the window becomes x[:s+P] + x[s:s+P] + x[s+P:]
        (cut to n_ctx), so tokens s..s+P−1 occur again at s+P..s+2P−1. On repeated text copying
        the earlier occurrence (an induction head) pays off at once — a standard way to make
        2-layer attention-only models form induction heads within a CPU budget. P and s vary
        on purpose: with a fixed offset (e.g. always [A, A] with |A| = n_ctx/2) a single
        *positional* head "attend to i − P + 1" solves the task and no induction head is
        needed. 0 (default) draws no extra random numbers, so batches equal those of earlier
        versions.
        """
        doms = self.domains
        if mix == "uniform":
            probs = torch.full((len(doms),), 1.0 / len(doms))
        else:
            sizes = torch.tensor([float(self.train[d].numel()) for d in doms])
            probs = sizes / sizes.sum()
        which = torch.multinomial(probs, batch_size, replacement=True, generator=generator)
        rows = []
        for i in range(batch_size):
            stream = self.train[doms[int(which[i])]]
            start = int(torch.randint(0, stream.numel() - n_ctx + 1, (1,), generator=generator))
            rows.append(stream[start : start + n_ctx])
        if repeat_fraction > 0:
            max_period = n_ctx // 2
            min_period = min(MIN_REPEAT_PERIOD, max_period)
            if max_period < 1:
                raise ValueError(f"repeat_fraction > 0 needs n_ctx >= 2, got n_ctx={n_ctx}")
            repeat = torch.rand(batch_size, generator=generator) < repeat_fraction
            for i in torch.nonzero(repeat).flatten().tolist():
                period = int(torch.randint(min_period, max_period + 1, (1,), generator=generator))
                s0 = int(torch.randint(0, n_ctx - 2 * period + 1, (1,), generator=generator))
                x = rows[i]
                rows[i] = torch.cat([x[: s0 + period], x[s0 : s0 + period], x[s0 + period :]])[:n_ctx]
        return torch.stack(rows)

    def eval_windows(self, n_ctx: int, n_windows: int, split: str = "validation") -> dict[str, torch.Tensor]:
        """Per domain, up to ``n_windows`` non-overlapping windows spread evenly over the stream."""
        out = {}
        for d, stream in getattr(self, split).items():
            total = stream.numel() // n_ctx
            if total < 1:
                raise ValueError(f"{split} stream of domain {d!r} is shorter than n_ctx={n_ctx}")
            idx = np.unique(np.linspace(0, total - 1, min(n_windows, total)).round().astype(int))
            out[d] = torch.stack([stream[i * n_ctx : (i + 1) * n_ctx] for i in idx])
        return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: Mapping[str, torch.Tensor], batch_size: int = 64) -> dict[str, float]:
    """Mean next-token loss (nats/token) per domain over the given windows."""
    was = model.training
    model.eval()
    try:
        out = {}
        for d, w in windows.items():
            total, count = 0.0, 0
            for i in range(0, w.shape[0], batch_size):
                chunk = w[i : i + batch_size]
                loss = next_token_loss(model(chunk), chunk)
                total += float(loss.sum())
                count += loss.numel()
            out[d] = total / count
        return out
    finally:
        model.train(was)


def plot_losses(metrics: list[dict[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """Per-domain held-out loss (and smoothed training loss) against step, log-x, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = np.array([m["step"] for m in metrics])
    x = steps + 1
    domains = list(metrics[0]["validation"]) if metrics else []
    for d in domains:
        ax.plot(x, [m["validation"][d] for m in metrics], marker="o", ms=3, label=f"{d} (held out)")
    tr = [(m["step"] + 1, m["train_loss_ema"]) for m in metrics if m.get("train_loss_ema") is not None]
    if tr:
        ax.plot(*zip(*tr), "k--", lw=1, label="train (EMA)")
    ax.set_xscale("log")
    ax.set_xlabel("step + 1")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title(title or "held-out loss per domain")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if name.rsplit(".", 1)[-1].startswith("W_") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _load_initial_weights(model: AttentionOnlyTransformer, folder: str | os.PathLike, tokenizer: Any) -> None:
    """Copy the weights of checkpoint ``folder`` into ``model`` (continued training).

    The checkpoint must have the same model config and the same tokenizer (by fingerprint) as
    this run; anything else is a :class:`ValueError` naming the difference. The optimizer
    starts fresh (AdamW moments are not saved in checkpoints).
    """
    from ..data.tokenizer import check_tokenizer
    from .attention_only import load_checkpoint

    start, _, meta = load_checkpoint(folder)
    if start.cfg != model.cfg:
        raise ValueError(f"init_from {folder}: its model config {start.cfg} differs from this run's {model.cfg}")
    if meta.get("tokenizer"):
        check_tokenizer(tokenizer, meta["tokenizer"], what=f"checkpoint {folder}")
    with torch.no_grad():
        for p, q in zip(model.parameters(), start.parameters()):
            p.copy_(q)


def train(
    model_cfg: AttentionOnlyConfig,
    cfg: TrainConfig,
    corpus: TokenizedCorpus,
    tokenizer: Any,
    run_dir: str | os.PathLike,
    *,
    progress: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[AttentionOnlyTransformer, dict[str, Any]]:
    """Train a fresh model; write the run folder; return ``(model, summary)`` (summary.json too).

    ``tokenizer`` must have ``model_cfg.vocab_size`` tokens. ``cfg.max_seconds`` stops training
    early (the last step reached is then evaluated and checkpointed, and the summary says so).
    """
    from tqdm.auto import tqdm

    from ..data.tokenizer import check_tokenizer, fingerprint, save_tokenizer

    run = Path(run_dir)
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    if tokenizer.get_vocab_size() != model_cfg.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.get_vocab_size()} tokens but model vocab_size={model_cfg.vocab_size}")
    if corpus.tokenizer_fingerprint:
        check_tokenizer(tokenizer, corpus.tokenizer_fingerprint, what="the tokenized corpus")
    corpus.check_fits(model_cfg.n_ctx)

    model = AttentionOnlyTransformer(model_cfg, seed=cfg.seed)
    if cfg.init_from is not None:
        _load_initial_weights(model, cfg.init_from, tokenizer)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    gen = torch.Generator().manual_seed(1_000_003 * cfg.seed + 17)
    val_windows = corpus.eval_windows(model_cfg.n_ctx, cfg.eval_windows, "validation")
    ckpt_steps = set(checkpoint_steps(cfg.steps, cfg.n_checkpoints))
    meta = {
        "model": model_cfg.to_dict(),
        "train": cfg.to_dict(),
        "n_params": sum(p.numel() for p in model.parameters()),
        "tokenizer": fingerprint(tokenizer).to_dict(),
        "corpus_tokens": corpus.n_tokens(),
        "eval_tokens_per_domain": {d: int(w.numel()) for d, w in val_windows.items()},
        "checkpoint_steps": sorted(ckpt_steps),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''} ({os.cpu_count()} logical CPUs)".strip(),
        **(dict(metadata) if metadata else {}),
    }
    write_json(run / "config.json", meta)
    save_tokenizer(tokenizer, run / "tokenizer.json")

    metrics: list[dict[str, Any]] = []
    ema: float | None = None
    train_time = 0.0
    tokens_per_step = cfg.batch_size * model_cfg.n_ctx
    t_start = time.perf_counter()

    def record(step: int) -> None:
        val = evaluate(model, val_windows)
        metrics.append({
            "step": step, "tokens": step * tokens_per_step, "lr": lr_at(min(step, cfg.steps - 1), cfg),
            "train_loss_ema": ema, "validation": val, "validation_mean": float(np.mean(list(val.values()))),
            "train_seconds": train_time, "wall_seconds": time.perf_counter() - t_start,
        })
        write_json(run / "metrics.json", metrics)
        plot_losses(metrics, run / "losses.png", title=f"{run.name}: held-out loss per domain")

    def checkpoint(step: int) -> None:
        save_checkpoint(run / "checkpoints" / f"step_{step:06d}", model, tokenizer,
                        {"step": step, "tokens": step * tokens_per_step, "seed": cfg.seed, "train": cfg.to_dict()})

    record(0)
    if 0 in ckpt_steps:
        checkpoint(0)
    step = 0
    stopped_early = False
    bar = tqdm(total=cfg.steps, disable=not progress, desc=f"train seed {cfg.seed}", unit="step", dynamic_ncols=True)
    model.train()
    while step < cfg.steps:
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = corpus.sample_batch(cfg.batch_size, model_cfg.n_ctx, gen, cfg.mix, cfg.repeat_fraction)
        loss = next_token_loss(model(batch), batch).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip and cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        train_time += time.perf_counter() - t0
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise FloatingPointError(f"training loss became {lv} at step {step} (lr {lr:.2e}); lower --lr")
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{step * tokens_per_step / train_time:,.0f}", lr=f"{lr:.1e}")
        out_of_time = cfg.max_seconds is not None and time.perf_counter() - t_start > cfg.max_seconds
        if step % cfg.eval_every == 0 or step in ckpt_steps or step == cfg.steps or out_of_time:
            record(step)
        if step in ckpt_steps or out_of_time:
            checkpoint(step)
        if out_of_time and step < cfg.steps:
            stopped_early = True
            break
    bar.close()
    summary = {
        "steps_done": step,
        "steps_planned": cfg.steps,
        "stopped_early": stopped_early,
        "tokens_seen": step * tokens_per_step,
        "train_seconds": train_time,
        "wall_seconds": time.perf_counter() - t_start,
        "train_tokens_per_second": step * tokens_per_step / train_time if train_time else None,
        "final_validation": metrics[-1]["validation"],
        "final_validation_mean": metrics[-1]["validation_mean"],
        "initial_validation": metrics[0]["validation"],
        "final_checkpoint": str(run / "checkpoints" / f"step_{step:06d}") if (step in ckpt_steps or stopped_early) else None,
    }
    if summary["final_checkpoint"] is None:
        checkpoint(step)
        summary["final_checkpoint"] = str(run / "checkpoints" / f"step_{step:06d}")
    write_json(run / "summary.json", summary)
    return model, summary
