"""Ising jobs: χ maps of the walled lattice from a config file.

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

from dataclasses import dataclass
from typing import Any

from .nn_config import ConfigError, _check_finite, _Table

__all__ = ["IsingJobConfig", "SUMMARY_FORMAT"]

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
