"""The ``spectro`` command line.

    spectro [--debug] ising chi  --height H --width W [--wall-depth D] --beta B --probe R0:R1,C0:C1 [--json] ...
    spectro [--debug] ising map  --height H --width W --beta B --probe-size P --out DIR ...
    spectro [--debug] ising demo [--out DIR] [--overwrite]   (the README's main job)
    spectro [--debug] nn run  --config FILE --out DIR [--overwrite]   (see spectro.jobs.nn_config for the schema)
    spectro [--debug] nn demo [--out DIR] [--overwrite]
    spectro [--debug] run CONFIG --out DIR [--overwrite] [--resume] ...   (system = "ising" | "nn" in CONFIG;
                      ising map and nn run are its aliases: spectro.jobs.ising_job, spectro.jobs.nn_config)
    spectro [--debug] report DIR [DIR2 | --compare DIR2] [--out FILE]   (the HTML report: spectro.jobs.report_cli)

Every failure the user can cause (bad geometry, probe or numbers, a corrupt or foreign file, an
output folder that is not spectro's or is in use, too little memory, an unavailable device)
prints one line ``spectro: error: ...`` and exits with status 2, leaving nothing half-written;
Ctrl-C exits with status 130 and one line. ``--debug`` (or SPECTRO_DEBUG=1) shows the traceback
instead. Python warnings are printed as one line ``spectro: warning: ...``. What spectro may
write, replace or delete is governed by :mod:`spectro.outputs`; JSON output is strict
(:func:`spectro.io.strict_json`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .ising_job import (map_folder, map_run_id, probe_count, remove_snapshots, run_map,
                        warn_unreliable)

__all__ = ["main", "UserError"]


class UserError(ValueError):
    """An error in what the user asked for (printed without a traceback)."""


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that clean-up runs (exit status 143)."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by subprocess tests
    raise Terminated()


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``spectro: error: <subcommand>: <problem>`` and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        where = self.prog.removeprefix("spectro").strip()
        text = " ".join(f"{where + ': ' if where else ''}{message}".split())
        self.exit(2, f"spectro: error: {text} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------- parsing helpers
def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return v


def _add_lattice_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--height", type=_positive_int, required=True, help="lattice rows H")
    p.add_argument("--width", type=_positive_int, required=True, help="lattice columns W (even)")
    p.add_argument("--wall-depth", type=int, default=None, help="rows of the internal wall from the top (default round(2H/3))")
    p.add_argument("--beta", type=_finite_float, required=True, help="inverse temperature β (J = 1); β_c ≈ 0.4406868")


def _add_sampler_args(p: argparse.ArgumentParser, sweeps: int, chains: int) -> None:
    p.add_argument("--sweeps", type=_positive_int, default=sweeps, help=f"measured sweeps per chain (default {sweeps})")
    p.add_argument("--thin", type=_positive_int, default=1, help="sweeps between recorded draws (default 1)")
    p.add_argument("--burn-in", type=int, default=None, help="burn-in sweeps (default: sweeps/10)")
    p.add_argument("--chains", type=int, default=chains, help=f"independent chains (default {chains})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default="metropolis", choices=["metropolis", "heatbath", "swendsen-wang"])
    p.add_argument("--backend", default="auto", choices=["auto", "numba", "torch"])
    p.add_argument("--device", default="cpu", help="torch device for the torch backend (cpu, cuda, ...)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="snapshot file for resuming (map: default OUT/checkpoint.pt); an existing file must be a "
                        "spectro snapshot")
    p.add_argument("--checkpoint-every", type=_finite_float, default=60.0, help="seconds between snapshots (default 60)")
    p.add_argument("--resume", action="store_true", help="continue from the snapshot if it exists")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spectro", description="Susceptibilities of trained networks and of the walled Ising model.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and warnings in full (also SPECTRO_DEBUG=1)")
    sub = parser.add_subparsers(dest="system", required=True)
    ising = sub.add_parser("ising", help="walled Ising model: ground truth for the method")
    isub = ising.add_subparsers(dest="command", required=True)

    chi = isub.add_parser("chi", help="χ vector (left, right, lower) of one probe rectangle, with the exact value when available")
    _add_lattice_args(chi)
    chi.add_argument("--probe", required=True, help="probe rectangle R0:R1,C0:C1 (half-open rows and columns)")
    _add_sampler_args(chi, sweeps=20_000, chains=8)
    chi.add_argument("--json", action="store_true", help="print one JSON object (strict: non-finite numbers are null)")

    mp = isub.add_parser("map", help="scan probe rectangles over the lattice; write χ-vector maps (PNG) and numbers")
    _add_lattice_args(mp)
    mp.add_argument("--probe-size", type=_positive_int, required=True, help="probe squares of this side")
    mp.add_argument("--stride", type=_positive_int, default=None, help="distance between probes (default: probe size)")
    mp.add_argument("--out", type=Path, required=True, help="output folder (new, empty, or one spectro made)")
    mp.add_argument("--overwrite", action="store_true", help="replace spectro's results in an existing output folder")
    _add_sampler_args(mp, sweeps=5_000, chains=8)

    demo = isub.add_parser("demo", help="the main job: walled-lattice χ maps + an exact cross-check (about a minute)")
    demo.add_argument("--out", type=Path, default=Path("runs/ising-demo"))
    demo.add_argument("--overwrite", action="store_true", help="replace spectro's results of an earlier run in --out")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true")

    from .nn_cli import add_nn_commands

    add_nn_commands(sub)
    from .report_cli import add_report_command

    add_report_command(sub)

    run = sub.add_parser("run", help="run the job a config file describes (system = \"ising\" or \"nn\"); write a "
                                     "results folder (config.json, summary.json, chi_*.npz, a figure)")
    run.add_argument("config", type=Path, help="job config (.json or .toml) with a top-level system key")
    run.add_argument("--out", type=Path, required=True, help="results folder (new, empty, or one spectro made)")
    run.add_argument("--overwrite", action="store_true", help="replace spectro's results in an existing results folder")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--checkpoint", type=Path, default=None,
                     help="snapshots: a file for ising (default OUT/checkpoint.pt), a folder for nn (default OUT.checkpoint)")
    run.add_argument("--checkpoint-every", type=_finite_float, default=60.0, help="seconds between snapshots (default 60)")
    run.add_argument("--no-checkpoint", action="store_true", help="nn: do not snapshot (a killed run starts over)")
    run.add_argument("--resume", action="store_true", help="continue from the snapshots if there are any")
    return parser


# ---------------------------------------------------------------------------- ising commands

def _lattice(args):
    from ..devices import check_memory
    from ..ising import walled_lattice

    check_memory(args.height * args.width * 64.0, f"a {args.height}x{args.width} lattice")
    return walled_lattice(args.height, args.width, args.wall_depth)


def _configs(args):
    from ..devices import check_device
    from ..ising.samplers import SamplerConfig
    from ..ising.susceptibility import RunConfig

    name = lambda key: _option_name(args, key)  # noqa: E731
    if args.chains < 1:
        raise UserError(f"{name('chains')} must be >= 1, got {args.chains}")
    if args.beta < 0:
        raise UserError(f"{name('beta')} must be >= 0, got {args.beta}")
    if args.sweeps < args.thin * 4:
        raise UserError(f"{name('sweeps')} {args.sweeps} gives fewer than 4 draws at {name('thin')} {args.thin}")
    sampler = SamplerConfig(sampler=args.sampler, chains=args.chains, seed=args.seed, backend=args.backend, device=args.device)
    sampler.resolved_backend()  # the numba-on-GPU message comes before the device check
    check_device(args.device)
    run = RunConfig(draws=args.sweeps // args.thin, thin=args.thin, burn_in=args.burn_in)
    return sampler, run


#: The config key of each ``ising map`` setting (``spectro run CONFIG`` names these, not the flags).
_CONFIG_KEYS = {"chains": "sampler.chains", "beta": "beta", "sweeps": "run.sweeps", "thin": "run.thin",
                "burn_in": "run.burn_in", "seed": "sampler.seed", "probe_size": "probes.size"}


def _option_name(args, key: str) -> str:
    """How the user spelled a setting: the config key under ``spectro run CONFIG``, else the flag."""
    if getattr(args, "from_config", None) is not None:
        return f"{args.from_config}: {_CONFIG_KEYS.get(key, key)}"
    return "--" + key.replace("_", "-")


def _check_sampling_memory(args, sampler, run, n_probes: int) -> None:
    """Refuse chains × lattice × probes that cannot fit in this machine's memory (before allocating)."""
    from ..devices import check_memory

    sites = args.height * args.width
    per_site_chain = 16 if sampler.resolved_backend() == "numba" else 48
    m, k = 3, n_probes
    accumulator = args.chains * m * k * 8 * 16  # a few [C, m, k] float64 moments; the error series has its own budget
    masks = (m + k) * sites * 9
    check_memory(args.chains * sites * per_site_chain + accumulator + masks,
                 f"{args.chains} chains of a {args.height}x{args.width} lattice with {n_probes} probe(s)")


def cmd_ising_chi(args) -> int:
    from ..io import dumps
    from ..ising import Rect
    from ..ising.susceptibility import chamber_susceptibility, exact_chamber_susceptibility

    lattice = _lattice(args)
    rect = Rect.parse(args.probe)
    probes = {str(rect): lattice.rect(rect)}
    sampler, run = _configs(args)
    _check_sampling_memory(args, sampler, run, 1)
    world = _world(args)
    checkpoint = _checkpointing(args, args.checkpoint)
    t0 = time.perf_counter()
    with _locked_if_main(world, [] if checkpoint is None else [checkpoint.path], args.resume), \
            _interrupt_hint(checkpoint):
        res = chamber_susceptibility(lattice, args.beta, probes, sampler, run, progress=not args.no_progress,
                                     checkpoint=checkpoint, world=world)
    seconds = time.perf_counter() - t0
    if not world.is_main:
        return 0
    exact = exact_chamber_susceptibility(lattice, args.beta, probes)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = None if exact is None else res.z_scores(exact)
    out = {
        "system": "ising",
        "height": lattice.height,
        "width": lattice.width,
        "wall_depth": int(np.sum(lattice.regions["left"][:, 0])),
        "beta": args.beta,
        "probe": str(rect),
        "sampler": args.sampler,
        "chains": args.chains,
        "sweeps": args.sweeps,
        "thin": args.thin,
        "seed": args.seed,
        "chi": {name: res.entry(name, str(rect)) for name in res.observables},
        "exact": None if exact is None else {name: float(exact[i, 0]) for i, name in enumerate(res.observables)},
        "z": None if z is None else {name: float(z[i, 0]) for i, name in enumerate(res.observables)},
        "seconds": round(seconds, 3),
        "convention": "chi[C] = d<M_C>/dh = beta*Cov(M_C, M_probe), H_h = H - h*M_probe",
    }
    warn_unreliable(res)
    if args.json:
        print(dumps(out))
        return 0
    print(f"walled Ising {lattice.height}x{lattice.width}, β = {args.beta}, probe {rect}, "
          f"{args.chains} chains × {run.draws} draws ({args.sampler}, {seconds:.1f} s)")
    print(f"{'chamber':>8} {'χ':>12} {'± stderr':>10} {'95% interval':>25} {'dof':>6} {'ESS':>8} {'R-hat':>7} "
          f"{'exact':>12} {'z':>6}  reliable")
    for name in res.observables:
        e = out["chi"][name]
        ex = "" if exact is None else _fmt(out["exact"][name], "12.5f")
        zz = "" if z is None else _fmt(out["z"][name], "6.2f")
        ci = f"[{_fmt(e['ci95'][0], '.5f')}, {_fmt(e['ci95'][1], '.5f')}]"
        print(f"{name:>8} {_fmt(e['mean'], '12.5f')} {_fmt(e['stderr'], '10.5f')} {ci:>25} {_fmt(e['dof'], '6.1f')} "
              f"{_fmt(e['ess'], '8.0f')} {_fmt(e['rhat'], '7.3f')} {ex:>12} {zz:>6}  {'yes' if e['reliable'] else 'NO'}")
    return 0


def _fmt(x, spec: str) -> str:
    """A number in ``spec``, or a dash (right-aligned to the width) when it is missing or not finite."""
    width = int(spec.split(".")[0] or 0)
    if x is None or not math.isfinite(x):
        return f"{'—':>{width}}"
    return format(x, spec)


def _world(args):
    from ..engine.distributed import current_world

    return current_world(args.device)


def _checkpointing(args, path: Path | None):
    from ..ising.susceptibility import SNAPSHOT_KIND, Checkpointing
    from ..engine.snapshots import check_snapshot_target

    if path is None:
        if args.resume:
            raise UserError("--resume needs --checkpoint PATH (the snapshot file to continue from)")
        return None
    if args.checkpoint_every <= 0:
        raise UserError(f"--checkpoint-every must be > 0 seconds, got {args.checkpoint_every}")
    if path.parent.is_dir():  # the map's default OUT/checkpoint.pt is checked once OUT exists
        check_snapshot_target(path, SNAPSHOT_KIND)
    elif args.checkpoint is not None:
        raise UserError(f"--checkpoint {path}: folder {path.parent} does not exist")
    return Checkpointing(path=path, every_seconds=args.checkpoint_every, resume=args.resume)


@contextmanager
def _locked_if_main(world, targets: list[Path], resume: bool):
    """Lock ``targets`` for the block (process 0 of a distributed run holds the locks; ``resume``
    takes over the stale lock of a killed run)."""
    from ..outputs import locked

    if not world.is_main:
        yield
        return
    with locked(*targets, take_over_stale=resume):
        yield


@contextmanager
def _interrupt_hint(checkpoint):
    """On Ctrl-C or SIGTERM, note on the exception (``hint``) whether and how the run can be resumed."""
    try:
        yield
    except (KeyboardInterrupt, Terminated) as e:
        if checkpoint is not None and Path(checkpoint.path).is_file():
            e.hint = f"the last snapshot is {checkpoint.path}; run the same command with --resume to continue"
        else:
            e.hint = "nothing was written"
        raise


def cmd_ising_map(args) -> int:
    from .ising_job import IsingJobConfig

    lattice = _lattice(args)
    sampler, run = _configs(args)
    _check_sampling_memory(args, sampler, run, probe_count(lattice, args.probe_size, args.stride))
    world = _world(args)
    rid = map_run_id(lattice, args.beta, args.probe_size, args.stride, sampler, run)
    outside = args.checkpoint is not None and args.out.resolve() not in args.checkpoint.resolve().parents
    if outside:
        _checkpointing(args, args.checkpoint)  # checked (and locked) apart from the output folder
    with map_folder(args.out, args.overwrite, args.resume, rid, world, [args.checkpoint] if outside else []) as folder:
        out = folder.path
        checkpoint = _checkpointing(args, args.checkpoint or out / "checkpoint.pt")
        with _interrupt_hint(checkpoint):
            s = run_map(lattice, args.beta, args.probe_size, args.stride, sampler, run, folder.stage(),
                        not args.no_progress, checkpoint=checkpoint, world=world,
                        config=IsingJobConfig.from_args(args).to_dict())
        if s is None:
            return 0
        from ..report import report_for_job

        report_for_job(folder.stage(), shown_as=out)  # report.html (a failure is a warning, never a lost run)
        snapshots = [os.path.relpath(checkpoint.file(r), out) for r in range(max(world.size, 1))]
        folder.commit(quiet=snapshots)
        remove_snapshots(checkpoint, world.size)
    print(f"wrote {out}/chi_map.png, chi_map.npz, summary.json, config.json  ({s['n_probes']} probes, "
          f"{s['seconds']:.1f} s, max R-hat {_fmt(s['max_rhat'], '.3f')}, min ESS {_fmt(s['min_ess'], '.0f')})")
    return 0


def cmd_ising_demo(args) -> int:
    """Walled 64x64 lattice at β = 0.43: χ maps over 4x4 probes, and a 12x12 exact cross-check."""
    from ..engine.distributed import World
    from ..io import write_json
    from ..ising import walled_lattice
    from ..ising.samplers import SamplerConfig
    from ..ising.susceptibility import RunConfig, chamber_susceptibility, exact_chamber_susceptibility, probe_grid
    from .ising_job import IsingJobConfig

    progress = not args.no_progress
    big, sampler, run = walled_lattice(64, 64), SamplerConfig(chains=8, seed=args.seed), RunConfig(draws=50_000)
    rid = map_run_id(big, 0.43, 4, None, sampler, run)
    with map_folder(args.out, args.overwrite, False, rid, World()) as folder, _interrupt_hint(None):
        out = folder.path
        print("1/2  exact cross-check: walled 12x12 lattice, β = 0.4, 3x3 probes, vs the transfer matrix")
        small = walled_lattice(12, 12)
        probes = probe_grid(small, 3, 3)
        res = chamber_susceptibility(small, 0.4, probes, SamplerConfig(sampler="metropolis", chains=8, seed=args.seed),
                                     RunConfig(draws=20_000), progress=progress)
        exact = exact_chamber_susceptibility(small, 0.4, probes)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = res.z_scores(exact)
        lo, hi = res.interval(0.95)
        covered = (lo <= exact) & (exact <= hi)
        check = {
            "lattice": "walled 12x12, wall depth 8",
            "beta": 0.4,
            "n_probes": len(probes),
            "max_abs_z": float(np.max(np.abs(z))),
            "rms_z": float(np.sqrt(np.mean(z**2))),
            "covered_by_95_interval": int(covered.sum()),
            "n_reliable": int(res.reliable.sum()),
            "entries": {f"{o}|{f}": {"mc": float(res.chi[i, a]), "stderr": float(res.stderr[i, a]), "exact": float(exact[i, a]),
                                    "ci95": [float(lo[i, a]), float(hi[i, a])], "reliable": bool(res.reliable[i, a])}
                        for i, o in enumerate(res.observables) for a, f in enumerate(res.fields)},
        }
        print(f"     {z.size} χ entries: {check['covered_by_95_interval']} inside their 95 % interval (expected ≈ "
              f"{0.95 * z.size:.0f}), rms z = {check['rms_z']:.2f} (expected ≈ 1), {check['n_reliable']} reliable")
        print("2/2  χ maps: walled 64x64 lattice, β = 0.43, 4x4 probes")
        config = IsingJobConfig(height=64, width=64, beta=0.43, probe_size=4, chains=sampler.chains, seed=args.seed,
                                sweeps=run.draws, name="ising-demo").to_dict()
        s = run_map(big, 0.43, 4, None, sampler, run, folder.stage(), progress, config=config,
                    title="walled Ising 64x64, β = 0.43: χ(chamber, 4x4 probe) — the wall is visible")
        write_json(folder.stage() / "exact_check.json", check)
        from ..report import report_for_job

        report_for_job(folder.stage(), shown_as=out)
        folder.commit()
    print(f"wrote {out}/chi_map.png, chi_map.npz, summary.json, config.json, exact_check.json "
          f"(max R-hat {_fmt(s['max_rhat'], '.3f')}, min ESS {_fmt(s['min_ess'], '.0f')})")
    return 0


def cmd_run(args) -> int:
    """``spectro run CONFIG``: the config's ``system`` picks the job (ising: :mod:`spectro.jobs.ising_job`,
    nn: :mod:`spectro.jobs.nn_config`); ``spectro ising map`` and ``spectro nn run`` are its aliases."""
    from .ising_job import IsingJobConfig
    from .nn_config import ConfigError, read_config_file

    raw = read_config_file(args.config)
    system = raw.get("system") if isinstance(raw, dict) else None
    if system == "ising":
        if args.no_checkpoint:
            raise ConfigError("--no-checkpoint is for nn jobs; an ising job snapshots only with --checkpoint or --resume")
        IsingJobConfig.from_dict(raw).apply_to(args)
        args.from_config = args.config  # errors name the config's keys (run.thin), not the flags (--thin)
        return cmd_ising_map(args)
    if system == "nn":
        from .nn_cli import _checkpointing, _run

        return _run(raw, args.out, args.overwrite, not args.no_progress, _checkpointing(args))
    raise ConfigError(f"{args.config}: system: expected \"ising\" or \"nn\", got {system!r}")


COMMANDS = {("ising", "chi"): cmd_ising_chi, ("ising", "map"): cmd_ising_map, ("ising", "demo"): cmd_ising_demo,
            ("run", None): cmd_run}


def _cmd_report(args) -> int:
    from .report_cli import cmd_report

    return cmd_report(args)


COMMANDS[("report", None)] = _cmd_report


# ---------------------------------------------------------------------------- errors, warnings, main
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def _user_message(e: BaseException) -> str | None:
    """The one-line message of an error the user caused, or None for an internal error (a bug)."""
    from ..nn.posterior import DivergenceError

    if _is_out_of_memory(e):
        return f"not enough memory for this run ({_one_line(e) or type(e).__name__}); use fewer chains or a smaller problem"
    if isinstance(e, OSError):
        what = f"{e.filename}: " if getattr(e, "filename", None) else ""
        return f"{what}{e.strerror or _one_line(e)}"
    if isinstance(e, (ValueError, DivergenceError)):
        return _one_line(e)
    return None


@contextmanager
def _one_line_warnings(debug: bool):
    """Print Python warnings as ``spectro: warning: ...`` (no source line) while the command runs."""
    if debug:
        yield
        return
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"spectro: warning: {_one_line(message)}", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


@contextmanager
def _sigterm_raises():
    """SIGTERM raises :class:`Terminated` while the command runs (main thread only)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the exit status (0 ok, 2 user error, 130 Ctrl-C, 143 SIGTERM, 1 internal error)."""
    from ..outputs import set_command

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed the one-line error (or the help)
        return int(e.code or 0)
    debug = args.debug or os.environ.get("SPECTRO_DEBUG", "") not in ("", "0")
    if args.system == "nn":
        from .nn_cli import NN_COMMANDS

        handler = NN_COMMANDS[(args.system, args.command)]
    else:
        handler = COMMANDS[(args.system, getattr(args, "command", None))]
    set_command(argv)
    with _one_line_warnings(debug), _sigterm_raises():
        try:
            return handler(args)
        except (KeyboardInterrupt, Terminated) as e:
            if debug:
                raise
            what, code = ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)
            print(f"spectro: {what}; {getattr(e, 'hint', 'stopped')}", file=sys.stderr)
            return code
        except Exception as e:  # noqa: BLE001 - the single place that turns exceptions into exit codes
            if debug:
                raise
            message = _user_message(e)
            if message is None:
                print(f"spectro: error: internal error ({type(e).__name__}: {_one_line(e)}); "
                      "run with --debug for the traceback and report it", file=sys.stderr)
                return 1
            print(f"spectro: error: {message}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
