"""Chamber susceptibilities of the Ising model through the shared engine.

Observables φ are region magnetizations M_A (the chambers), fields are probe regions B with
``H_h = H − h·M_B``; the generator of the field is ψ_B = M_B and

    χ_{A,B} = ∂⟨M_A⟩/∂h_B |_{h=0} = β·Cov(M_A, M_B)      (engine scale = β).

The exact counterpart (transfer matrix / enumeration) is :func:`exact_chamber_susceptibility`.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import asdict, replace

import numpy as np
import torch

from ..engine import Axis, EstimatorInfo, Susceptibility
from ..engine.distributed import World, current_world
from ..engine.driver import SNAPSHOT_KIND, Checkpointing, RunConfig, measure
from ..engine.system import SystemBase
from .lattice import CHAMBERS, Lattice, LatticeError, Rect
from .samplers import IsingSampler, SamplerConfig

__all__ = [
    "Checkpointing", "RunConfig", "IsingSystem", "SNAPSHOT_KIND", "chamber_susceptibility", "exact_chamber_susceptibility", "probe_grid",
    "TRANSFER_MATRIX_MAX_WIDTH", "ENUMERATION_MAX_SITES",
]

_CONVENTION = "chi[A,B] = d<M_A>/dh_B = beta*Cov(M_A, M_B), H_h = H - h*M_B"
TRANSFER_MATRIX_MAX_WIDTH = 14
ENUMERATION_MAX_SITES = 20


class IsingSystem(SystemBase):
    """The Ising lattice as a :class:`~spectro.engine.system.System`: spins are the configuration,
    one step is one sweep, φ = chamber magnetizations M_A, ψ = probe magnetizations M_B, scale β.

    The chains' sampler is built on first use, so a process of a distributed run only ever
    builds its own block (:meth:`chain_block`)."""

    unit = "sweep"

    def __init__(self, lattice: Lattice, beta: float, probes: dict[str, np.ndarray],
                 sampler: SamplerConfig = SamplerConfig(), observables: tuple[str, ...] = CHAMBERS):
        _check_beta(beta)
        if not probes:
            raise LatticeError("no probe regions given")
        missing = [name for name in observables if name not in lattice.regions]
        if missing:
            raise LatticeError(f"lattice has no region(s) {missing}; it has {sorted(lattice.regions)}")
        probe_masks = []
        for name, m in probes.items():
            m = np.asarray(m)
            if m.shape != (lattice.height, lattice.width):
                raise LatticeError(f"probe {name!r} has shape {m.shape}, lattice is {lattice.height}x{lattice.width}")
            if not np.any(m):
                raise LatticeError(f"probe {name!r} is empty")
            probe_masks.append(m)
        self.lattice, self.beta, self.config = lattice, float(beta), sampler
        self.probes = dict(probes)
        self.masks = np.stack([lattice.regions[name] for name in observables] + probe_masks).astype(np.float64)
        # the whole lattice's magnetisation M rides along (last row) to count each chain's sign changes
        self._masks_m = np.concatenate([self.masks, np.ones((1, lattice.height, lattice.width))])
        self._last_sign = np.zeros(sampler.chains)  # sign of M at the last draw (0: none yet)
        self._sign_changes = np.zeros(sampler.chains, dtype=np.int64)
        self.observables, self.fields = list(observables), list(probes)
        self.n_chains, self.scale, self.device = sampler.chains, self.beta, "cpu"
        self.name = f"ising β={beta:g} {lattice.height}x{lattice.width} {sampler.sampler}"
        self._global = sampler  # the whole run's sampler settings (a chain block keeps them for its summary)
        self._sampler: IsingSampler | None = None

    @property
    def symmetric(self) -> bool:
        """Whether flipping every spin leaves the Hamiltonian unchanged (no site field), so that
        M and −M are equally likely and every chain must visit both signs of M."""
        return not bool(np.any(np.asarray(self.lattice.field) != 0))

    @property
    def sampler(self) -> IsingSampler:
        if self._sampler is None:
            self._sampler = IsingSampler(self.lattice, self.beta, self.config)
        return self._sampler

    def chain_block(self, start: int, stop: int) -> "IsingSystem":
        local = replace(self.config, chains=stop - start, chain_offset=self.config.chain_offset + start)
        block = IsingSystem(self.lattice, self.beta, self.probes, local, tuple(self.observables))
        block._global = self._global
        return block

    def advance(self, steps: int) -> None:
        _responsive(self.sampler.sweep, steps)

    def draw(self, n: int, thin: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw = _responsive(self.sampler.sample_regions, self._masks_m, n, thin)  # [n, C, m + k + 1]
        signs = np.sign(np.concatenate([self._last_sign[None, :], raw[..., -1]]))  # [n + 1, C]
        nonzero = [s[s != 0] for s in signs.T]  # M = 0 (even lattices) keeps the previous sign
        self._sign_changes += [int(np.count_nonzero(s[1:] != s[:-1])) for s in nonzero]
        self._last_sign = np.array([s[-1] if s.size else 0.0 for s in nonzero])
        mags = torch.from_numpy(np.ascontiguousarray(raw[..., :-1]))
        m = len(self.observables)
        return mags[..., :m], mags[..., m:]

    def state_dict(self) -> dict:
        return {**self.sampler.state_dict(), "sign_last": self._last_sign.copy(), "sign_changes": self._sign_changes.copy()}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        last, changes = state.pop("sign_last", None), state.pop("sign_changes", None)
        self.sampler.load_state_dict(state)
        if last is not None and changes is not None:
            self._last_sign = np.asarray(last, dtype=np.float64).copy()
            self._sign_changes = np.asarray(changes, dtype=np.int64).copy()

    def fingerprint(self) -> dict:
        lat = self.lattice
        return {"system": "ising", "beta": self.beta, "shape": [lat.height, lat.width], "periodic": lat.periodic,
                "hamiltonian": _digest(lat.j_right, lat.j_down, lat.field, self.masks),
                "observables": self.observables, "probes": self.fields, "sampler": asdict(self.config)}

    def axes(self) -> tuple[Axis, Axis]:
        """Observables: ``region`` names; probes: half-open rectangles ``row0, row1, col0, col1``
        when every probe is named as one (``probe_grid``), else names only."""
        obs = Axis.from_records("observable", self.observables, [{"region": r} for r in self.observables])
        try:
            rects = [Rect.parse(name) for name in self.fields]
        except (LatticeError, ValueError):
            return obs, Axis.from_labels("field", self.fields)
        return obs, Axis.from_records("field", self.fields, [
            {"row0": r.r0, "row1": r.r1, "col0": r.c0, "col1": r.c1} for r in rects])

    def estimator(self) -> EstimatorInfo:
        lat = self.lattice
        return EstimatorInfo(system="ising", convention=_CONVENTION, sampler=asdict(self._global),
                             run={"beta": self.beta, "height": lat.height, "width": lat.width, "periodic": lat.periodic})

    def summary(self, gather) -> dict:
        changes = gather(torch.as_tensor(self._sign_changes)[:, None])[:, 0]
        return {
            "magnetisation_sign_changes": [int(x) for x in changes.tolist()],
            "symmetric": self.symmetric,
            "system": "ising",
            "beta": self.beta,
            "height": self.lattice.height,
            "width": self.lattice.width,
            "periodic": self.lattice.periodic,
            "sampler": asdict(self._global),
            "convention": _CONVENTION,
        }


def _responsive(fn, *args):
    """``fn(*args)`` in a worker thread while the main thread waits in short joins.

    Python runs signal handlers only in the main thread, between bytecodes. A compiled kernel
    call (a block of sweeps, and on a fresh install the JIT compilation of the parallel kernels
    by LLVM) is one long native call; run in the main thread, Ctrl-C and SIGTERM wait for it to
    return — tens of seconds on a loaded machine (issue 21). Here the main thread stays in
    Python and raises KeyboardInterrupt / Terminated within ~50 ms; the kernels release the GIL
    (``nogil``), and the abandoned worker (a daemon) dies with the process. The state it was
    changing is never saved: snapshots are written only after a completed block.
    """
    if threading.current_thread() is not threading.main_thread():
        return fn(*args)
    box: dict = {}

    def work() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            box["error"] = e

    worker = threading.Thread(target=work, name="spectro-ising-kernel", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
    if "error" in box:
        raise box["error"]
    return box["value"]


def chamber_susceptibility(
    lattice: Lattice,
    beta: float,
    probes: dict[str, np.ndarray],
    sampler: SamplerConfig = SamplerConfig(),
    run: RunConfig = RunConfig(),
    observables: tuple[str, ...] = CHAMBERS,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
) -> Susceptibility:
    """χ[A, B] = β·Cov(M_A, M_B) for observables A (lattice regions) and probe masks B, sampled:
    :func:`spectro.engine.measure` on an :class:`IsingSystem` (resume, torchrun split and merge,
    error bars: docs/design.md §3–4)."""
    system = IsingSystem(lattice, beta, probes, sampler, observables)
    res = measure(system, run, checkpoint=checkpoint, world=world or current_world(sampler.device), progress=progress)
    flag_stuck_modes(res)
    return res


def flag_stuck_modes(res: Susceptibility) -> bool:
    """Set :attr:`Flags.STUCK` on every entry when the chains did not sample the two signs of M.

    At zero field M and −M are equally likely, so the share of time spent at each sign is part
    of what the chains must sample. Below T_c a single-spin sampler crosses between the modes
    rarely; chains that (nearly) never cross give χ from the modes they started in, with an
    error bar and R-hat blind to it (all chains in one mode agree with each other). The run is
    flagged when some chain changed the sign of M fewer than ``MIN_POINTS_PER_CHAIN`` (8)
    times: the mode weights then rest on fewer independent excursions than the engine needs to
    estimate any error bar (the same minimum as :attr:`Flags.FEW_POINTS`); checked below T_c
    against the transfer matrix in tests/test_stuck_modes.py (a per-chain rule: a total of 21
    crossings all in one chain still gave |z| ≈ 4). Over-dispersed starts (half up, half down, the default) keep the
    pooled estimate symmetric meanwhile. Returns whether it flagged.
    """
    from ..engine.diagnostics import MIN_POINTS_PER_CHAIN
    from ..engine.susceptibility import Flags

    changes = res.meta.get("magnetisation_sign_changes")
    if changes is None or not res.meta.get("symmetric", False):
        return False
    stuck = min(changes) < MIN_POINTS_PER_CHAIN
    if stuck:
        res.flags = res.flags | int(Flags.STUCK)
    return stuck


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(repr(a.shape).encode() + a.tobytes())
    return h.hexdigest()


def exact_chamber_susceptibility(
    lattice: Lattice,
    beta: float,
    probes: dict[str, np.ndarray],
    observables: tuple[str, ...] = CHAMBERS,
) -> np.ndarray | None:
    """Exact β·Cov(M_A, M_B) [len(observables), len(probes)], or None if the lattice is too large.

    Uses the transfer matrix for open lattices of width ≤ ``TRANSFER_MATRIX_MAX_WIDTH`` and
    exhaustive enumeration for any lattice of at most ``ENUMERATION_MAX_SITES`` spins.
    """
    from .exact import enumerate_moments, transfer_matrix_moments

    _check_beta(beta)
    regions = [lattice.regions[name] for name in observables] + [np.asarray(p) for p in probes.values()]
    if lattice.n_sites <= ENUMERATION_MAX_SITES:
        moments = enumerate_moments(lattice, beta, regions)
    elif not lattice.periodic and lattice.width <= TRANSFER_MATRIX_MAX_WIDTH:
        moments = transfer_matrix_moments(lattice, beta, regions)
    else:
        return None
    m = len(observables)
    return beta * np.asarray(moments.cov)[:m, m:]


def probe_grid(lattice: Lattice, size: int | tuple[int, int], stride: int | tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Probe rectangles of ``size`` (rows, cols) tiled over the lattice with ``stride`` (default: size).

    Names are the rectangles in ``R0:R1,C0:C1`` form, in row-major order of their corners.
    """
    sh, sw = (size, size) if isinstance(size, int) else size
    stride = stride if stride is not None else (sh, sw)
    th, tw = (stride, stride) if isinstance(stride, int) else stride
    if min(sh, sw, th, tw) < 1:
        raise LatticeError(f"probe size {size} and stride {stride} must be positive")
    if sh > lattice.height or sw > lattice.width:
        raise LatticeError(f"probe size {sh}x{sw} does not fit the {lattice.height}x{lattice.width} lattice")
    probes = {}
    for r0 in range(0, lattice.height - sh + 1, th):
        for c0 in range(0, lattice.width - sw + 1, tw):
            rect = Rect(r0, r0 + sh, c0, c0 + sw)
            probes[str(rect)] = lattice.rect(rect)
    return probes


def _check_beta(beta: float) -> None:
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise LatticeError(f"beta must be a finite number >= 0, got {beta!r}")
