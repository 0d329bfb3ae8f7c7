"""``spectro nn`` commands: a whole neural-network susceptibility job from a config file.

    spectro nn run  --config FILE --out DIR [--overwrite] [--no-progress]
    spectro nn demo [--out DIR] [--no-progress]     (builtin:tiny, every head + full, ≈3 min on 2 cores)

The config schema and the results folder are documented in :mod:`spectro.nn.job`. User errors
(bad config, missing checkpoint, mismatched tokenizer, existing output folder, a chain that
diverges) print one line ``spectro: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["add_nn_commands", "NN_COMMANDS", "cmd_nn_run", "cmd_nn_demo"]


def add_nn_commands(subparsers) -> None:
    """Register ``nn run`` and ``nn demo`` on the top-level ``spectro`` subparsers."""
    nn = subparsers.add_parser("nn", help="neural networks: component / per-token susceptibilities from a config file")
    nsub = nn.add_subparsers(dest="command", required=True)

    run = nsub.add_parser("run", help="run the job described by a config file (JSON or TOML); write a results folder",
                          description="Run a job: checkpoint + data + observables + fields + sampler → results folder "
                                      "(chi_<component>.npz, summary.json, traces.png, config.json, devinterp/). "
                                      "Schema: spectro.nn.job (python -c 'import spectro.nn.job as j; help(j)').")
    run.add_argument("--config", type=Path, required=True, help="job config (.json or .toml)")
    run.add_argument("--out", type=Path, required=True, help="results folder")
    run.add_argument("--overwrite", action="store_true", help="replace an existing non-empty results folder")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    demo = nsub.add_parser("demo", help="builtin:tiny model (trained on the fixture corpus, cached), every head + full, "
                                        "per-token susceptibilities on four domains (≈3 min on 2 cores)")
    demo.add_argument("--out", type=Path, default=Path("runs/nn-demo"))
    demo.add_argument("--no-progress", action="store_true")


def _run(config, out: Path, overwrite: bool, progress: bool) -> int:
    from .job import ConfigError, run_job, summary_table
    from .posterior import DivergenceError

    t0 = time.perf_counter()
    try:
        path = run_job(config, out, overwrite=overwrite, progress=progress)
    except DivergenceError as e:
        if os.environ.get("SPECTRO_DEBUG"):
            raise
        raise ConfigError(f"sampling diverged ({e}); nothing was written") from None
    print(summary_table(path))
    names = sorted(p.name for p in path.iterdir())
    print(f"wrote {path}/: {', '.join(names)}  ({time.perf_counter() - t0:.0f} s)")
    return 0


def cmd_nn_run(args: argparse.Namespace) -> int:
    return _run(args.config, args.out, args.overwrite, not args.no_progress)


def cmd_nn_demo(args: argparse.Namespace) -> int:
    from .job import DEMO_CONFIG

    print("spectro nn demo: builtin:tiny (d_model 64, 2 layers x 4 heads, vocab 1024, context 32; trained on the fixture "
          "corpus once and cached), per-token susceptibilities of every head and of the full model", file=sys.stderr)
    return _run(DEMO_CONFIG, args.out, True, not args.no_progress)


NN_COMMANDS = {("nn", "run"): cmd_nn_run, ("nn", "demo"): cmd_nn_demo}
