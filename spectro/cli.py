"""The ``spectro`` command line.

    spectro ising chi  --height H --width W [--wall-depth D] --beta B --probe R0:R1,C0:C1 [--json] ...
    spectro ising map  --height H --width W --beta B --probe-size P --out DIR ...
    spectro ising demo [--out DIR]       (the README's main job)
    spectro nn run  --config FILE --out DIR [--overwrite]   (see spectro.nn.job for the schema)
    spectro nn demo [--out DIR]

User errors (bad geometry, bad probe, bad numbers, existing output folder) print one line
``spectro: error: ...`` and exit with status 2; set SPECTRO_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]


class UserError(Exception):
    """An error in what the user asked for (printed without a traceback)."""


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
                   help="snapshot file for resuming (map: default OUT/checkpoint.pt)")
    p.add_argument("--checkpoint-every", type=_finite_float, default=60.0, help="seconds between snapshots (default 60)")
    p.add_argument("--resume", action="store_true", help="continue from the snapshot if it exists")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectro", description="Susceptibilities of trained networks and of the walled Ising model.")
    sub = parser.add_subparsers(dest="system", required=True)
    ising = sub.add_parser("ising", help="walled Ising model: ground truth for the method")
    isub = ising.add_subparsers(dest="command", required=True)

    chi = isub.add_parser("chi", help="χ vector (left, right, lower) of one probe rectangle, with the exact value when available")
    _add_lattice_args(chi)
    chi.add_argument("--probe", required=True, help="probe rectangle R0:R1,C0:C1 (half-open rows and columns)")
    _add_sampler_args(chi, sweeps=20_000, chains=8)
    chi.add_argument("--json", action="store_true", help="print one JSON object")

    mp = isub.add_parser("map", help="scan probe rectangles over the lattice; write χ-vector maps (PNG) and numbers")
    _add_lattice_args(mp)
    mp.add_argument("--probe-size", type=_positive_int, required=True, help="probe squares of this side")
    mp.add_argument("--stride", type=_positive_int, default=None, help="distance between probes (default: probe size)")
    mp.add_argument("--out", type=Path, required=True, help="output folder")
    mp.add_argument("--overwrite", action="store_true", help="replace results in an existing output folder")
    _add_sampler_args(mp, sweeps=5_000, chains=8)

    demo = isub.add_parser("demo", help="the main job: walled-lattice χ maps + an exact cross-check (about a minute)")
    demo.add_argument("--out", type=Path, default=Path("runs/ising-demo"))
    demo.add_argument("--overwrite", action="store_true", default=True, help=argparse.SUPPRESS)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true")

    from .nn.cli import add_nn_commands

    add_nn_commands(sub)
    return parser


# ---------------------------------------------------------------------------- ising commands
def _lattice(args):
    from .ising import walled_lattice

    return walled_lattice(args.height, args.width, args.wall_depth)


def _configs(args):
    from .ising.samplers import SamplerConfig
    from .ising.susceptibility import RunConfig

    if args.chains < 1:
        raise UserError(f"--chains must be >= 1, got {args.chains}")
    if args.beta < 0:
        raise UserError(f"--beta must be >= 0, got {args.beta}")
    if args.sweeps < args.thin * 4:
        raise UserError(f"--sweeps {args.sweeps} gives fewer than 4 draws at --thin {args.thin}")
    sampler = SamplerConfig(sampler=args.sampler, chains=args.chains, seed=args.seed, backend=args.backend, device=args.device)
    run = RunConfig(draws=args.sweeps // args.thin, thin=args.thin, burn_in=args.burn_in)
    return sampler, run


def cmd_ising_chi(args) -> int:
    from .ising import Rect
    from .ising.susceptibility import chamber_susceptibility, exact_chamber_susceptibility

    lattice = _lattice(args)
    rect = Rect.parse(args.probe)
    probes = {str(rect): lattice.rect(rect)}
    sampler, run = _configs(args)
    world = _world(args)
    t0 = time.perf_counter()
    res = chamber_susceptibility(lattice, args.beta, probes, sampler, run, progress=not args.no_progress,
                                 checkpoint=_checkpointing(args, args.checkpoint), world=world)
    seconds = time.perf_counter() - t0
    if not world.is_main:
        return 0
    exact = exact_chamber_susceptibility(lattice, args.beta, probes)
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
        "chi": {name: _entry(res, name, str(rect)) for name in res.observables},
        "exact": None if exact is None else {name: float(exact[i, 0]) for i, name in enumerate(res.observables)},
        "z": None if exact is None else {name: float(res.z_scores(exact)[i, 0]) for i, name in enumerate(res.observables)},
        "seconds": round(seconds, 3),
        "convention": "chi[C] = d<M_C>/dh = beta*Cov(M_C, M_probe), H_h = H - h*M_probe",
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"walled Ising {lattice.height}x{lattice.width}, β = {args.beta}, probe {rect}, "
              f"{args.chains} chains × {run.draws} draws ({args.sampler}, {seconds:.1f} s)")
        print(f"{'chamber':>8} {'χ':>12} {'± stderr':>10} {'ESS':>8} {'R-hat':>7} {'exact':>12} {'z':>6}")
        for i, name in enumerate(res.observables):
            e = out["chi"][name]
            ex = "" if exact is None else f"{out['exact'][name]:12.5f}"
            z = "" if exact is None else f"{out['z'][name]:6.2f}"
            print(f"{name:>8} {e['mean']:12.5f} {e['stderr']:10.5f} {e['ess']:8.0f} {e['rhat']:7.3f} {ex:>12} {z:>6}")
    return 0


def _world(args):
    from .engine.distributed import current_world

    return current_world(args.device)


def _checkpointing(args, path: Path | None):
    from .ising.susceptibility import Checkpointing

    if path is None:
        if args.resume:
            raise UserError("--resume needs --checkpoint PATH (the snapshot file to continue from)")
        return None
    if args.checkpoint_every <= 0:
        raise UserError(f"--checkpoint-every must be > 0 seconds, got {args.checkpoint_every}")
    return Checkpointing(path=path, every_seconds=args.checkpoint_every, resume=args.resume)


def _entry(res, obs: str, field: str) -> dict:
    e = res.entry(obs, field)
    return {k: (None if not math.isfinite(v) else v) for k, v in e.items()}


def _prepare_out(out: Path, overwrite: bool, check: bool = True) -> Path:
    if check and out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} exists and is not empty; pass --overwrite to replace its results")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {out}: {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"output folder {out} is not writable")
    return out


def run_map(lattice, beta, probe_size, stride, sampler, run, out: Path, progress: bool, title: str = "",
            checkpoint=None, world=None) -> dict | None:
    """χ maps for a probe grid; writes chi_map.npz, chi_map.json, chi_map.png into ``out`` (rank 0)."""
    from .analysis.ising_maps import plot_chi_maps
    from .io import write_json
    from .ising.susceptibility import chamber_susceptibility, probe_grid

    probes = probe_grid(lattice, probe_size, stride)
    t0 = time.perf_counter()
    res = chamber_susceptibility(lattice, beta, probes, sampler, run, progress=progress, checkpoint=checkpoint, world=world)
    seconds = time.perf_counter() - t0
    if world is not None and not world.is_main:
        return None
    res.meta["seconds"] = seconds
    res.save(out / "chi_map.npz")
    plot_chi_maps(res, lattice, out / "chi_map.png", title=title)
    summary = {
        "beta": beta,
        "height": lattice.height,
        "width": lattice.width,
        "probe_size": probe_size,
        "n_probes": len(probes),
        "chains": res.n_chains,
        "draws": res.n_draws,
        "seconds": seconds,
        "max_rhat": float(np.nanmax(res.rhat)),
        "min_ess": float(np.nanmin(res.ess)),
        "chi": {obs: {f: _entry(res, obs, f) for f in res.fields} for obs in res.observables},
    }
    write_json(out / "chi_map.json", summary)
    return summary


def cmd_ising_map(args) -> int:
    lattice = _lattice(args)
    sampler, run = _configs(args)
    world = _world(args)
    out = _prepare_out(args.out, args.overwrite or args.resume, check=world.is_main)
    checkpoint = _checkpointing(args, args.checkpoint or out / "checkpoint.pt")
    s = run_map(lattice, args.beta, args.probe_size, args.stride, sampler, run, out, not args.no_progress,
                checkpoint=checkpoint, world=world)
    if s is None:
        return 0
    for snap in out.glob(checkpoint.file(0).name + "*"):  # the result is written; snapshots are no longer needed
        snap.unlink(missing_ok=True)
    print(f"wrote {out}/chi_map.png, chi_map.npz, chi_map.json  ({s['n_probes']} probes, "
          f"{s['seconds']:.1f} s, max R-hat {s['max_rhat']:.3f}, min ESS {s['min_ess']:.0f})")
    return 0


def cmd_ising_demo(args) -> int:
    """Walled 64x64 lattice at β = 0.43: χ maps over 4x4 probes, and a 12x12 exact cross-check."""
    from .io import write_json
    from .ising import walled_lattice
    from .ising.samplers import SamplerConfig
    from .ising.susceptibility import RunConfig, chamber_susceptibility, exact_chamber_susceptibility, probe_grid

    out = _prepare_out(args.out, True)
    progress = not args.no_progress
    print("1/2  exact cross-check: walled 12x12 lattice, β = 0.4, 3x3 probes, vs the transfer matrix")
    small = walled_lattice(12, 12)
    probes = probe_grid(small, 3, 3)
    sampler = SamplerConfig(sampler="metropolis", chains=8, seed=args.seed)
    res = chamber_susceptibility(small, 0.4, probes, sampler, RunConfig(draws=20_000), progress=progress)
    exact = exact_chamber_susceptibility(small, 0.4, probes)
    z = res.z_scores(exact)
    check = {
        "lattice": "walled 12x12, wall depth 8",
        "beta": 0.4,
        "n_probes": len(probes),
        "max_abs_z": float(np.max(np.abs(z))),
        "rms_z": float(np.sqrt(np.mean(z**2))),
        "entries": {f"{o}|{f}": {"mc": float(res.chi[i, a]), "stderr": float(res.stderr[i, a]), "exact": float(exact[i, a])}
                    for i, o in enumerate(res.observables) for a, f in enumerate(res.fields)},
    }
    write_json(out / "exact_check.json", check)
    print(f"     {3 * len(probes)} χ entries: max |z| = {check['max_abs_z']:.2f}, rms z = {check['rms_z']:.2f} "
          f"(expected ~1 if the sampler and error bars are right)")
    print("2/2  χ maps: walled 64x64 lattice, β = 0.43, 4x4 probes")
    big = walled_lattice(64, 64)
    s = run_map(big, 0.43, 4, None, SamplerConfig(chains=8, seed=args.seed), RunConfig(draws=50_000), out, progress,
                title="walled Ising 64x64, β = 0.43: χ(chamber, 4x4 probe) — the wall is visible")
    print(f"wrote {out}/chi_map.png, chi_map.npz, chi_map.json, exact_check.json "
          f"(max R-hat {s['max_rhat']:.3f}, min ESS {s['min_ess']:.0f})")
    return 0


COMMANDS = {("ising", "chi"): cmd_ising_chi, ("ising", "map"): cmd_ising_map, ("ising", "demo"): cmd_ising_demo}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed usage and the error
        return int(e.code or 0)
    if args.system == "nn":
        from .nn.cli import NN_COMMANDS

        handler = NN_COMMANDS[(args.system, args.command)]
    else:
        handler = COMMANDS[(args.system, args.command)]
    from .engine import MomentError
    from .ising.lattice import LatticeError

    try:
        return handler(args)
    except (UserError, LatticeError, MomentError, ValueError, FileExistsError, PermissionError) as e:
        if os.environ.get("SPECTRO_DEBUG"):
            raise
        print(f"spectro: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
