"""``spectro nn`` commands: a whole neural-network susceptibility job from a config file.

    spectro nn run  --config FILE --out DIR [--overwrite] [--no-progress]
                    [--checkpoint DIR] [--checkpoint-every SECONDS | --no-checkpoint] [--resume]
    spectro nn demo [--out DIR] [--overwrite] [--no-progress]     (builtin:tiny, every head + full, ≈3 min on 2 cores)
    spectro nn check CONFIG [--out DIR] [--chains C] [--draws N] [--no-progress]
                    (pilot chains on a grid of ε, γ, nβ around the config's; recommends a setting)

    torchrun --nproc-per-node P -m spectro nn run ...   chains split over P processes, same result

The config schema and the results folder are documented in :mod:`spectro.jobs.nn_config`. User errors
(bad config, missing checkpoint, mismatched tokenizer, existing output folder, a chain that
diverges) print one line ``spectro: error: ...`` and exit with status 2. ``--out`` and
``--checkpoint`` must be new, empty or spectro's own folders, and are locked while the job runs
(:mod:`spectro.outputs`); ``--overwrite`` replaces only the files spectro wrote.

``nn run`` snapshots itself every 60 s into ``OUT.checkpoint/`` (:mod:`spectro.jobs.resume`);
after a kill (SIGKILL, SIGTERM, Ctrl-C) the same command with ``--resume`` continues from the
last snapshot and writes exactly the results of an uninterrupted run. SIGTERM and Ctrl-C exit
with status 143 / 130 and say how to resume.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

__all__ = ["add_nn_commands", "NN_COMMANDS", "cmd_nn_run", "cmd_nn_demo", "cmd_nn_check"]


def add_nn_commands(subparsers) -> None:
    """Register ``nn run`` and ``nn demo`` on the top-level ``spectro`` subparsers."""
    nn = subparsers.add_parser("nn", help="neural networks: component / per-token susceptibilities from a config file")
    nsub = nn.add_subparsers(dest="command", required=True)

    run = nsub.add_parser("run", help="run the job described by a config file (JSON or TOML); write a results folder",
                          description="Run a job: checkpoint + data + observables + fields + sampler → results folder "
                                      "(chi_<component>.npz, summary.json, traces.png, config.json, devinterp/). "
                                      "Schema: spectro.jobs.nn_config (python -c 'import spectro.jobs.nn_config as j; help(j)').")
    run.add_argument("--config", type=Path, required=True, help="job config (.json or .toml)")
    run.add_argument("--out", type=Path, required=True, help="results folder")
    run.add_argument("--overwrite", action="store_true", help="replace an existing non-empty results folder")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--checkpoint", type=Path, default=None, help="snapshot folder (default: OUT.checkpoint)")
    run.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds between snapshots (default 60)")
    run.add_argument("--no-checkpoint", action="store_true", help="do not snapshot (a killed run starts over)")
    run.add_argument("--resume", action="store_true",
                     help="continue from the snapshots in the checkpoint folder if there are any (else start afresh)")

    demo = nsub.add_parser("demo", help="builtin:tiny model (trained on the fixture corpus, cached), every head + full, "
                                        "per-token susceptibilities on four domains (≈3 min on 2 cores)")
    demo.add_argument("--out", type=Path, default=Path("runs/nn-demo"))
    demo.add_argument("--overwrite", action="store_true", help="replace spectro's results of an earlier run in --out")
    demo.add_argument("--no-progress", action="store_true")
    _add_check_parser(nsub)


def _run(config, out: Path, overwrite: bool, progress: bool, checkpoint=None) -> int:
    from ..engine.distributed import current_world
    from .nn_job import ConfigError, run_job, summary_table
    from ..nn.posterior import DivergenceError
    from .cli import Terminated

    t0 = time.perf_counter()
    try:  # SIGTERM arrives as cli.Terminated (spectro.jobs.cli.main installs the handler)
        path = run_job(config, out, overwrite=overwrite, progress=progress, checkpoint=checkpoint)
    except DivergenceError as e:
        raise ConfigError(f"sampling diverged ({e}); nothing was written") from e
    except (KeyboardInterrupt, Terminated) as e:
        code = 130 if isinstance(e, KeyboardInterrupt) else 143
        if checkpoint is not None and (Path(checkpoint.folder) / "job.json").is_file():
            how = f"snapshots are in {checkpoint.folder}; run the same command with --resume to continue"
        else:
            how = "nothing was written" + ("" if checkpoint is not None else " (checkpointing was off)")
        print(f"spectro: interrupted; {how}", file=sys.stderr)
        return code
    if not current_world().is_main:
        return 0
    print(summary_table(path))
    from ..outputs import read_marker

    names = (read_marker(path) or {}).get("files") or []
    print(f"wrote {path}/: {', '.join(names)}  ({time.perf_counter() - t0:.0f} s)")
    return 0


def _checkpointing(args: argparse.Namespace):
    from .nn_job import ConfigError
    from .resume import JobCheckpointing

    if args.no_checkpoint:
        if args.resume:
            raise ConfigError("--resume needs checkpointing; drop --no-checkpoint")
        return None
    if not math.isfinite(args.checkpoint_every) or args.checkpoint_every <= 0:
        raise ConfigError(f"--checkpoint-every must be a number of seconds > 0, got {args.checkpoint_every}")
    folder = args.checkpoint or args.out.with_name(args.out.name + ".checkpoint")
    if folder.resolve() == args.out.resolve():
        raise ConfigError("--checkpoint must differ from --out")
    return JobCheckpointing(folder, args.checkpoint_every, args.resume)


def cmd_nn_run(args: argparse.Namespace) -> int:
    return _run(args.config, args.out, args.overwrite, not args.no_progress, _checkpointing(args))


def cmd_nn_demo(args: argparse.Namespace) -> int:
    from .nn_job import DEMO_CONFIG, _check_output

    _check_output(args.out, args.overwrite, None)  # a foreign or finished --out fails before the banner
    print("spectro nn demo: builtin:tiny (d_model 64, 2 layers x 4 heads, vocab 1024, context 32; trained on the fixture "
          "corpus once and cached), per-token susceptibilities of every head and of the full model", file=sys.stderr)
    return _run(DEMO_CONFIG, args.out, args.overwrite, not args.no_progress)


def _add_check_parser(nsub) -> None:
    check = nsub.add_parser("check", help="pilot chains on a small grid of epsilon, gamma, nbeta around a config's; "
                                          "diagnostics per setting and a recommended setting (spectro.jobs.nn_check)")
    check.add_argument("config", type=Path, help="job config (.json or .toml)")
    check.add_argument("--out", type=Path, default=None, help="folder for check.json and check.png (default: none)")
    check.add_argument("--chains", type=int, default=4, help="pilot chains per setting (default 4)")
    check.add_argument("--draws", type=int, default=40, help="pilot draws per chain (default 40)")
    check.add_argument("--burn-in", type=int, default=None, help="pilot burn-in steps (default: the config's)")
    check.add_argument("--no-progress", action="store_true")


def cmd_nn_check(args: argparse.Namespace) -> int:
    from .nn_check import CheckGrid, run_check
    from .nn_config import ConfigError

    if not args.config.is_file():
        raise ConfigError(f"{args.config}: no such config file")
    try:
        grid = CheckGrid(chains=args.chains, draws=args.draws, burn_in=args.burn_in)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file, not a folder")
    rec = run_check(args.config, args.out, grid, progress=not args.no_progress)
    print(rec["table"])
    r = rec["recommended"]
    print("recommended: " + ("none" if r is None else f"epsilon {r['epsilon']:.3g}, gamma {r['gamma']:.3g}, "
                                                       f"nbeta {r['nbeta']:.3g}") + f" — {rec['reason']}")
    if args.out is not None:
        print(f"wrote {args.out}/check.json and check.png")
    return 0


NN_COMMANDS = {("nn", "run"): cmd_nn_run, ("nn", "demo"): cmd_nn_demo, ("nn", "check"): cmd_nn_check}
