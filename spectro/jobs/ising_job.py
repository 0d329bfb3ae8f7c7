"""Ising jobs: χ maps of the walled lattice from a config file — the config
(:class:`IsingJobConfig`) and the run that writes the results folder (:func:`run_map`).

``spectro run CONFIG --out DIR`` with ``system = "ising"``; ``spectro ising map`` is the same job
with the config given as flags. Config (JSON or TOML; strict: an unknown key, a wrong type or a
non-finite number is a one-line :class:`~spectro.jobs.nn_config.ConfigError` naming the key)::

    system = "ising"
    name = "walled-64"        # optional
    beta = 0.43               # inverse temperature (J = 1); β_c ≈ 0.4406868

    [lattice]
    height = 64
    width = 64                # even
    wall_depth = 43           # optional: rows of the internal wall from the top (default round(2H/3))

    [probes]
    size = 4                  # probe squares of this side
    stride = 4                # optional (default: size)

    [sampler]                 # all optional
    sampler = "metropolis"    # or "heatbath", "swendsen-wang"
    chains = 8
    seed = 0
    backend = "auto"          # "numba" (CPU) or "torch"
    device = "cpu"

    [run]                     # all optional
    sweeps = 5000             # measured sweeps per chain
    thin = 1                  # sweeps between recorded draws
    burn_in = 500             # default: sweeps / 10

Results folder — the layout every job writes (``config.json``, ``summary.json``, ``chi_*.npz``,
a figure): ``config.json`` (the resolved config; ``spectro run`` reads it back), ``summary.json``
(format ``spectro.ising_job/1``: every χ entry with its interval, dof and reliability),
``chi_map.npz`` (the :class:`~spectro.engine.Susceptibility`, typed probe coordinates included)
and ``chi_map.png``.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .nn_config import ConfigError, _check_depth, _check_finite, _Table

__all__ = ["IsingJobConfig", "SUMMARY_FORMAT", "MAP_KIND", "MAP_FILES", "run_map", "map_run_id", "map_folder",
           "remove_snapshots", "probe_count", "warn_unreliable"]

SUMMARY_FORMAT = "spectro.ising_job/1"
_SAMPLERS = ("metropolis", "heatbath", "swendsen-wang")
_BACKENDS = ("auto", "numba", "torch")


@dataclass(frozen=True)
class IsingJobConfig:
    """A validated Ising job (see the module docstring for the schema)."""

    height: int
    width: int
    beta: float
    probe_size: int
    stride: int | None = None
    wall_depth: int | None = None
    sampler: str = "metropolis"
    chains: int = 8
    seed: int = 0
    backend: str = "auto"
    device: str = "cpu"
    sweeps: int = 5000
    thin: int = 1
    burn_in: int | None = None
    name: str = ""

    @classmethod
    def from_dict(cls, obj: Any) -> "IsingJobConfig":
        _check_depth(obj, "config")
        _check_finite(obj, "")
        top = _Table(obj, "")
        top.allow("system", "name", "beta", "lattice", "probes", "sampler", "run")
        if top.get("system") != "ising":
            raise ConfigError(f"system: this is the Ising job schema; got system = {top.get('system')!r}")
        lat = _Table(top.required("lattice"), "lattice")
        lat.allow("height", "width", "wall_depth")
        probes = _Table(top.required("probes"), "probes")
        probes.allow("size", "stride")
        smp = _Table(top.get("sampler", {}), "sampler")
        smp.allow("sampler", "chains", "seed", "backend", "device")
        run = _Table(top.get("run", {}), "run")
        run.allow("sweeps", "thin", "burn_in")
        beta = top.number("beta", required=True)
        if beta < 0:
            raise ConfigError(f"beta must be >= 0, got {beta}")
        cfg = cls(
            height=lat.integer("height", required=True, minimum=1),
            width=lat.integer("width", required=True, minimum=1),
            wall_depth=lat.integer("wall_depth", minimum=0),
            beta=float(beta),
            probe_size=probes.integer("size", required=True, minimum=1),
            stride=probes.integer("stride", minimum=1),
            sampler=smp.string("sampler", default="metropolis"),
            chains=smp.integer("chains", default=8, minimum=1),
            seed=smp.integer("seed", default=0, minimum=0),
            backend=smp.string("backend", default="auto"),
            device=smp.string("device", default="cpu"),
            sweeps=run.integer("sweeps", default=5000, minimum=1),
            thin=run.integer("thin", default=1, minimum=1),
            burn_in=run.integer("burn_in", minimum=0),
            name=top.string("name", default="") or "",
        )
        if cfg.sampler not in _SAMPLERS:
            raise ConfigError(f"sampler.sampler must be one of {', '.join(_SAMPLERS)}, got {cfg.sampler!r}")
        if cfg.backend not in _BACKENDS:
            raise ConfigError(f"sampler.backend must be one of {', '.join(_BACKENDS)}, got {cfg.backend!r}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The config in the file schema (what ``config.json`` holds; :meth:`from_dict` reads it back)."""
        drop_none = lambda d: {k: v for k, v in d.items() if v is not None}  # noqa: E731
        return {
            "system": "ising",
            **({"name": self.name} if self.name else {}),
            "beta": self.beta,
            "lattice": drop_none({"height": self.height, "width": self.width, "wall_depth": self.wall_depth}),
            "probes": drop_none({"size": self.probe_size, "stride": self.stride}),
            "sampler": {"sampler": self.sampler, "chains": self.chains, "seed": self.seed, "backend": self.backend,
                        "device": self.device},
            "run": drop_none({"sweeps": self.sweeps, "thin": self.thin, "burn_in": self.burn_in}),
        }

    @classmethod
    def from_args(cls, args) -> "IsingJobConfig":
        """The job that ``spectro ising map``'s flags describe."""
        return cls(height=args.height, width=args.width, beta=args.beta, probe_size=args.probe_size,
                   stride=args.stride, wall_depth=args.wall_depth, sampler=args.sampler, chains=args.chains,
                   seed=args.seed, backend=args.backend, device=args.device, sweeps=args.sweeps, thin=args.thin,
                   burn_in=args.burn_in, name=getattr(args, "name", "") or "")

    def apply_to(self, args) -> None:
        """Set the ``ising map`` flags on ``args`` (``spectro run`` then runs the map command)."""
        for key in ("height", "width", "beta", "probe_size", "stride", "wall_depth", "sampler", "chains", "seed",
                    "backend", "device", "sweeps", "thin", "burn_in", "name"):
            setattr(args, key, getattr(self, key))


# ---------------------------------------------------------------------------- running a map
MAP_KIND = "ising-map"
MAP_FILES = ("config.json", "summary.json", "chi_map.npz", "chi_map.png", "exact_check.json")


def warn_unreliable(res) -> None:
    """One ``spectro: warning:`` line on stderr when some χ entry has no trustworthy error bar."""
    message = res.warning()
    if message:
        print(f"spectro: warning: {message}", file=sys.stderr)


def map_run_id(lattice, beta, probe_size, stride, sampler, run) -> str:
    from dataclasses import asdict

    from ..outputs import run_id

    return run_id({"lattice": [lattice.height, lattice.width, int(np.sum(lattice.regions["left"][:, 0]))],
                   "beta": beta, "probe_size": probe_size, "stride": stride, "sampler": asdict(sampler),
                   "run": asdict(run)})


def run_map(lattice, beta, probe_size, stride, sampler, run, out: Path, progress: bool, title: str = "",
            checkpoint=None, world=None, config: dict | None = None) -> dict | None:
    """χ maps for a probe grid; writes config.json (``config``), summary.json, chi_map.npz and
    chi_map.png into ``out`` (rank 0): the job layout of :mod:`spectro.jobs.ising_job`.

    ``out`` is the stage of a :class:`~spectro.outputs.RunFolder` (``folder.stage()``), whose
    ``commit`` then moves the files into the results folder in one step, so a failure or a kill
    leaves the previous results (or none), never a mix.
    """
    from ..analysis.ising_maps import plot_chi_maps
    from ..io import write_json
    from ..ising.susceptibility import chamber_susceptibility, probe_grid

    probes = probe_grid(lattice, probe_size, stride)
    t0 = time.perf_counter()
    res = chamber_susceptibility(lattice, beta, probes, sampler, run, progress=progress, checkpoint=checkpoint, world=world)
    seconds = time.perf_counter() - t0
    if world is not None and not world.is_main:
        return None
    res.meta["seconds"] = seconds
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN diagnostics become null below
        max_rhat, min_ess = float(np.nanmax(res.rhat)), float(np.nanmin(res.ess))
    summary = {
        "format": SUMMARY_FORMAT,
        "system": "ising",
        "name": (config or {}).get("name", ""),
        "beta": beta,
        "height": lattice.height,
        "width": lattice.width,
        "probe_size": probe_size,
        "n_probes": len(probes),
        "chains": res.n_chains,
        "draws": res.n_draws,
        "seconds": seconds,
        "max_rhat": max_rhat,
        "min_ess": min_ess,
        "n_unreliable": int((~res.reliable).sum()),
        "warning": res.warning(),
        "chi": {obs: {f: res.entry(obs, f) for f in res.fields} for obs in res.observables},
    }
    warn_unreliable(res)
    res.save(out / "chi_map.npz")
    plot_chi_maps(res, lattice, out / "chi_map.png", title=title)
    write_json(out / "summary.json", summary)
    if config is not None:
        write_json(out / "config.json", config)
    return summary


def map_folder(out: Path, overwrite: bool, resume: bool, rid: str, world, extra_locks=()):
    """The output folder of ``ising map``/``ising demo`` (claimed and locked by process 0)."""
    from ..outputs import KINDS, RunFolder

    return RunFolder(out, MAP_KIND, KINDS[MAP_KIND], overwrite=overwrite, resume=resume, run=rid,
                     result_files=MAP_FILES[:3], extra_locks=extra_locks, active=world.is_main)


def remove_snapshots(checkpoint, world_size: int) -> None:
    """Delete the run's snapshot files (process 0 after the results are written)."""
    for r in range(max(world_size, 1)):
        checkpoint.file(r).unlink(missing_ok=True)
    stray = Path(checkpoint.path)
    for f in stray.parent.glob(stray.name + ".rank*"):  # snapshots of an earlier run with more processes
        if f.name[len(stray.name) + 5:].isdigit():
            f.unlink(missing_ok=True)


def probe_count(lattice, size: int, stride: int | None) -> int:
    """How many probes :func:`probe_grid` makes (without making them; its errors for a probe that does not fit)."""
    from ..ising.susceptibility import probe_grid

    if size > lattice.height or size > lattice.width:
        probe_grid(lattice, size, stride)  # raises, naming the problem
    step = stride or size
    return ((lattice.height - size) // step + 1) * ((lattice.width - size) // step + 1)
