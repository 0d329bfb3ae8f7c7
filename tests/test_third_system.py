"""A third system written against docs/design.md §3 only gets χ with error bars, resume and torchrun."""

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from spectro.engine import Checkpointing, RunConfig, SystemBase, chain_seed, measure, measure_components
from spectro.engine.distributed import current_world

COV = torch.tensor([[2.0, 0.6, 0.3, 0.0], [0.6, 1.0, -0.4, 0.2], [0.3, -0.4, 1.5, 0.5], [0.0, 0.2, 0.5, 1.0]],
                   dtype=torch.float64)


class GaussianAR(SystemBase):
    """x ← ρ·x + √(1−ρ²)·L·ξ (Σ = L·Lᵀ): stationary N(0, Σ); φ = x[:2], ψ = x[2:]; chain c seeded by (seed, c)."""

    scale, observables, fields = 1.0, ["x0", "x1"], ["x2", "x3"]

    def __init__(self, chains: int, seed: int, rho: float = 0.9, offset: int = 0, stop_after: int | None = None):
        self.n_chains, self.seed, self.rho, self.offset, self.stop_after = chains, seed, rho, offset, stop_after
        self.L = torch.linalg.cholesky(COV)
        self.gens = [torch.Generator().manual_seed(chain_seed(seed, offset + c)) for c in range(chains)]
        self.x = self._noise()  # start in equilibrium

    def _noise(self) -> torch.Tensor:
        return torch.stack([torch.randn(4, generator=g, dtype=torch.float64) for g in self.gens]) @ self.L.T

    def advance(self, steps: int) -> None:
        for _ in range(steps):
            self.x = self.rho * self.x + math.sqrt(1 - self.rho**2) * self._noise()

    def draw(self, n: int, thin: int):
        if self.stop_after is not None:
            self.stop_after -= n
            if self.stop_after < 0:
                raise KeyboardInterrupt  # a killed run
        xs = []
        for _ in range(n):
            self.advance(thin)
            xs.append(self.x)
        return torch.stack(xs)[..., :2], torch.stack(xs)[..., 2:]

    def chain_block(self, start: int, stop: int) -> "GaussianAR":
        return GaussianAR(stop - start, self.seed, self.rho, self.offset + start)

    def state_dict(self) -> dict:
        return {"x": self.x.clone(), "rng": [g.get_state() for g in self.gens]}

    def load_state_dict(self, state: dict) -> None:
        self.x = state["x"].clone()
        for g, s in zip(self.gens, state["rng"]):
            g.set_state(s)


RUN = RunConfig(draws=100, burn_in=0, block=25)  # what users run: 4 chains x 100 draws, τ_int = 19 steps


def test_error_bars_are_calibrated_against_the_exact_covariance():
    exact = COV[:2, 2:].numpy()
    z, covered = [], []
    for s in (measure(GaussianAR(4, seed), RUN, progress=False) for seed in range(60)):
        (lo, hi), ok = s.interval(0.95), s.reliable
        z.append(s.z_scores(exact)[ok])
        covered.append(((lo <= exact) & (exact <= hi))[ok])
    z, covered = np.concatenate(z), np.concatenate(covered)
    assert len(z) >= 0.5 * 60 * 4  # enough unflagged entries to judge (at τ_int = 19 some are flagged unmixed)
    # tolerances: 3 standard errors with the 60 seeds as the independent units (entries of a seed are correlated)
    assert 0.95 - 3 * math.sqrt(0.95 * 0.05 / 60) <= covered.mean() <= 1.0
    assert abs(np.mean(z**2) - 1) <= 3 * math.sqrt(2 / 60)


def test_killed_run_resumes_bit_for_bit(tmp_path):
    reference = measure(GaussianAR(4, 7), RUN, progress=False)
    ck = Checkpointing(tmp_path / "snap.pt", every_seconds=0.0)
    with pytest.raises(KeyboardInterrupt):
        measure(GaussianAR(4, 7, stop_after=60), RUN, checkpoint=ck, progress=False)
    resumed = measure(GaussianAR(4, 7), RUN, checkpoint=Checkpointing(ck.path, 0.0, resume=True), progress=False)
    for key in ("chi", "stderr", "ess", "rhat", "dof"):
        np.testing.assert_array_equal(getattr(resumed, key), getattr(reference, key))


def _systems(stop_after: int | None = None, built: list | None = None):
    """A full system and components "a", "b" (other seeds) as factories; "b" is killed after ``stop_after`` draws."""
    def factory(seed: int, stop: int | None = None):
        def build() -> GaussianAR:
            if built is not None:
                built.append(seed)
            return GaussianAR(4, seed, stop_after=stop)
        return build
    return factory(1), {"a": factory(2), "b": factory(3, stop_after)}


def test_killed_component_run_resumes_bit_for_bit_from_small_finished_records(tmp_path):
    reference = measure_components(*_systems(), RUN, full_name="full", progress=False)
    ck, seen, built = Checkpointing(tmp_path / "snap", every_seconds=0.0), [], []
    with pytest.raises(KeyboardInterrupt):  # killed inside "b", after 50 of its 100 draws were snapshotted
        measure_components(*_systems(stop_after=60, built=built), RUN, full_name="full", checkpoint=ck, progress=False,
                           on_result=lambda name, result, sampled: seen.append(name))
    assert seen == ["full", "a"] and built == [1, 2, 3]  # each system built when its run starts
    finished = {name: torch.load(tmp_path / f"snap.{name}", weights_only=True) for name in ("full", "a", "b")}
    assert "finished" in finished["full"] and "finished" in finished["a"] and "finished" not in finished["b"]
    assert finished["a"]["accumulator"] is None and "system" not in finished["a"]  # a result, no chain state
    assert finished["full"]["accumulator"] is not None  # Baker's estimator of the next runs needs it
    resumed = measure_components(*_systems(), RUN, full_name="full", checkpoint=Checkpointing(ck.path, 0.0, resume=True),
                                 progress=False, on_result=lambda name, result, sampled: seen.append(name))
    assert seen == ["full", "a", "b"]  # finished runs are read back, not sampled
    assert list(resumed) == ["full", "a", "b"] and resumed["a"].estimator.kind == "baker2025"
    for name in resumed:
        for key in ("chi", "stderr", "stderr_chains", "ess", "rhat", "dof"):
            np.testing.assert_array_equal(getattr(resumed[name], key), getattr(reference[name], key))


def test_components_without_bakers_rows_are_plain_runs():
    _, comps = _systems()
    out = measure_components(None, comps, RUN, rows=[], progress=False)
    for name, seed in (("a", 2), ("b", 3)):
        alone = measure(GaussianAR(4, seed), RUN, progress=False)
        np.testing.assert_array_equal(out[name].chi, alone.chi)
        np.testing.assert_array_equal(out[name].stderr, alone.stderr)
    with pytest.raises(ValueError, match="needs the full system"):
        measure_components(None, comps, RUN, progress=False)


def _rank(rank: int, port: int, out: str) -> None:  # one torchrun process
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    s = measure(GaussianAR(5, 3), RUN, world=current_world("cpu"), progress=False)
    np.save(f"{out}.{rank}.npy", np.stack([s.chi, s.stderr, s.ess, s.rhat]))


def test_two_processes_equal_one(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(port, str(tmp_path / "r")), nprocs=2)
    one = measure(GaussianAR(5, 3), RUN, progress=False)
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"r.{rank}.npy"), np.stack([one.chi, one.stderr, one.ess, one.rhat]))
