"""Stuck modes (issue 21): below T_c every chain can sit in one sign of the magnetisation and
R-hat cannot see it. The chains start over-dispersed (half all-up, half all-down) and a run
whose chains (nearly) never change the sign of M is flagged STUCK; checked against the
transfer matrix on walled lattices below T_c over 10 seeds. Also: results that carry no
flags (format /1 files, hand-built ones) are judged by what they hold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spectro.engine import Susceptibility
from spectro.engine.susceptibility import Flags
from spectro.ising import walled_lattice
from spectro.ising.samplers import IsingSampler, SamplerConfig
from spectro.ising.susceptibility import RunConfig, chamber_susceptibility, exact_chamber_susceptibility

Z_MAX = 5.0  # a reliable entry farther than 5 standard errors from the exact value is a wrong number (P ≈ 6e-7 each)


def _runs(height, width, beta, seeds, init="dispersed", chains=2, draws=2000):
    lattice = walled_lattice(height, width)
    probes = {"all": np.ones((height, width), dtype=bool)}  # the probe covers the lattice: χ ∝ Var(M)
    exact = exact_chamber_susceptibility(lattice, beta, probes)
    for seed in seeds:
        res = chamber_susceptibility(lattice, beta, probes, SamplerConfig(chains=chains, seed=seed, init=init),
                                     RunConfig(draws=draws), progress=False)
        yield res, (res.chi - exact) / res.stderr


def _check(height, width, beta, seeds, init="dispersed") -> int:
    """Every entry is flagged or within Z_MAX of the exact value; returns how many runs were flagged STUCK."""
    stuck = 0
    for res, z in _runs(height, width, beta, seeds, init):
        ok = ~res.reliable | (np.abs(z) < Z_MAX)
        assert ok.all(), (height, width, beta, init, res.meta["magnetisation_sign_changes"], z, res.flags)
        stuck += bool((res.flags & int(Flags.STUCK)).any())
    return stuck


def test_the_reported_case_is_flagged():
    """14x10 walled lattice at β = 0.7 (T_c: β ≈ 0.44), 2 chains started at random: both settle in
    one sign and never leave it; χ is hundreds of standard errors off with R-hat ≈ 1.0."""
    (res, z), = _runs(14, 10, 0.7, [0], init="random")
    assert res.meta["magnetisation_sign_changes"] == [0, 0] and np.nanmax(res.rhat) < 1.1
    assert np.abs(z).max() > 100  # the wrong number ...
    assert not res.reliable.any() and (res.flags & int(Flags.STUCK)).all()  # ... is no longer reported as reliable
    assert "swendsen-wang" in res.warning()


def test_below_tc_every_reliable_entry_matches_the_transfer_matrix_over_ten_seeds():
    assert _check(14, 10, 0.7, range(10)) >= 5  # most runs are stuck at this size and length


@pytest.mark.slow
@pytest.mark.parametrize("height, width, beta", [(12, 8, 0.8), (16, 6, 0.9), (12, 12, 0.6), (10, 12, 0.55)])
@pytest.mark.parametrize("init", ["dispersed", "random"])
def test_below_tc_on_several_lattices(height, width, beta, init):
    _check(height, width, beta, range(10), init)


def test_above_tc_chains_cross_and_are_not_flagged():
    for res, z in _runs(14, 10, 0.3, range(3), draws=1000):
        assert min(res.meta["magnetisation_sign_changes"]) > 50
        assert not (res.flags & int(Flags.STUCK)).any() and np.abs(z).max() < Z_MAX


def test_dispersed_starts_are_half_up_half_down_by_global_chain():
    lattice = walled_lattice(6, 6)
    for backend in ("numba", "torch"):
        for offset in (0, 3):
            s = IsingSampler(lattice, 0.5, SamplerConfig(chains=4, chain_offset=offset, backend=backend))
            spins = np.asarray(s.state_dict()["spins"]).reshape(4, -1)
            expected = [1 if (offset + c) % 2 == 0 else -1 for c in range(4)]
            assert [int(np.unique(row)[0]) for row in spins] == expected and all(len(np.unique(r)) == 1 for r in spins)


def test_a_field_breaks_the_symmetry_and_nothing_is_flagged_stuck():
    """With a field M and −M are not equally likely: staying in one sign is then no sign of trouble."""
    lattice = walled_lattice(14, 10).with_field(0.05)
    probes = {"all": np.ones((14, 10), dtype=bool)}
    res = chamber_susceptibility(lattice, 0.7, probes, SamplerConfig(chains=2, seed=0), RunConfig(draws=200),
                                 progress=False)
    assert res.meta["symmetric"] is False and min(res.meta["magnetisation_sign_changes"]) < 8
    assert not (res.flags & int(Flags.STUCK)).any()


# ---------------------------------------------------------------------------- results without flags
def _result(**over) -> Susceptibility:
    one = np.ones((2, 2))
    kw = dict(chi=one.copy(), stderr=0.1 * one, stderr_chains=0.1 * one, ess=100 * one, rhat=one.copy(),
              observable_mean=np.zeros(2), observable_stderr=np.ones(2), field_mean=np.zeros(2),
              field_stderr=np.ones(2), observables=["a", "b"], fields=["x", "y"], scale=1.0, n_chains=4, n_draws=100)
    kw.update(over)
    return Susceptibility(**kw)


def test_hand_built_results_are_judged_by_what_they_hold():
    assert _result().reliable.all() and _result().warning() is None
    chi = np.ones((2, 2))
    chi[0, 0] = np.nan
    rhat = np.ones((2, 2))
    rhat[1, 1] = 3.0
    ess = 100 * np.ones((2, 2))
    ess[0, 1] = np.nan
    res = _result(chi=chi, rhat=rhat, ess=ess)
    assert res.flags.tolist() == [[int(Flags.NONFINITE), int(Flags.FROZEN)], [0, int(Flags.UNMIXED)]]
    assert "R-hat > 1.1" in res.warning() and "3 of 4" in res.warning()
    assert (_result(n_draws=5).flags & int(Flags.FEW_POINTS)).all()
    explicit = _result(rhat=rhat, flags=np.zeros((2, 2), dtype=np.int64))  # flags given: kept as given
    assert explicit.reliable.all()


def test_format_1_files_get_flags_from_their_numbers(tmp_path):
    rhat = np.ones((2, 2))
    rhat[0, 1] = 3.0
    chi = np.ones((2, 2))
    chi[1, 0] = np.inf
    new = _result(chi=chi, rhat=rhat, flags=np.zeros((2, 2), dtype=np.int64))
    path = new.save(tmp_path / "r.npz")
    with np.load(path) as z:  # rewrite as format /1: no dof, no flags, no axes
        arrays = {k: z[k] for k in z.files if k not in ("dof", "flags", "noise", "header") and "_axis." not in k}
        header = json.loads(str(z["header"]))
    header = {k: header[k] for k in ("scale", "n_chains", "n_draws", "meta")} | {"format": "spectro.susceptibility/1"}
    old = tmp_path / "old.npz"
    np.savez(old, header=np.asarray(json.dumps(header)), **arrays)
    back = Susceptibility.load(old)
    assert back.flags[0, 1] & int(Flags.UNMIXED) and back.flags[1, 0] & int(Flags.NONFINITE)
    assert back.reliable.tolist() == [[True, False], [False, True]] and back.warning() is not None


# ---------------------------------------------------------------------------- Ctrl-C during a long kernel call
def test_ctrl_c_is_handled_while_a_kernel_call_runs(monkeypatch):
    """A kernel call (or the JIT compilation of the kernels) is one long native call: Python runs
    signal handlers only in the main thread between bytecodes, so Ctrl-C used to wait for it to
    return (tens of seconds on a loaded machine). The kernels now run in a worker thread."""
    import hashlib
    import signal
    import time

    from spectro.ising.susceptibility import IsingSystem

    blob = b"x" * (1 << 28)

    def native(*a):  # a long native call that releases the GIL and never returns to Python meanwhile
        for _ in range(8):
            hashlib.sha256(blob).digest()

    t0 = time.perf_counter()
    native()
    direct = time.perf_counter() - t0
    lattice = walled_lattice(6, 6)
    system = IsingSystem(lattice, 0.4, {"all": np.ones((6, 6), dtype=bool)}, SamplerConfig(chains=2))
    monkeypatch.setattr(IsingSampler, "sweep", native)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        t0 = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            system.advance(10)
        latency = time.perf_counter() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert latency < direct / 4, (latency, direct)  # without the worker thread: latency ≈ direct
