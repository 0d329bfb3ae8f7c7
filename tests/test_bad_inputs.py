"""The bad-input catalogue: every user mistake gets a clear message naming the problem.

CLI cases must exit with status 2, print one `spectro: error:` line and no traceback, and write
nothing. API cases must raise a ValueError subclass whose message names the problem.
"""

import numpy as np
import pytest
import torch

from spectro.jobs.cli import main
from spectro.engine import MomentAccumulator, Susceptibility
from spectro.ising import Lattice, open_lattice, periodic_lattice, walled_lattice
from spectro.ising.samplers import IsingSampler, SamplerConfig
from spectro.ising.susceptibility import RunConfig, probe_grid
from spectro.nn import SamplerConfig as NNSamplerConfig

W8 = ["--height", "8", "--width", "8"]
CHI = ["ising", "chi"]
CLI_CASES = [
    ("wall deeper than lattice", CHI + W8 + ["--wall-depth", "9", "--beta", "0.4", "--probe", "0:2,0:2"], "wall depth 9"),
    ("wall depth zero", CHI + W8 + ["--wall-depth", "0", "--beta", "0.4", "--probe", "0:2,0:2"], "wall depth must be >= 1"),
    ("odd width", CHI + ["--height", "8", "--width", "7", "--beta", "0.4", "--probe", "0:2,0:2"], "even width"),
    ("probe outside lattice", CHI + W8 + ["--beta", "0.4", "--probe", "0:9,0:2"], "outside the 8x8 lattice"),
    ("probe with negative corner", CHI + W8 + ["--beta", "0.4", "--probe=-1:2,0:2"], "outside"),
    ("empty probe", CHI + W8 + ["--beta", "0.4", "--probe", "3:3,0:2"], "empty"),
    ("malformed probe", CHI + W8 + ["--beta", "0.4", "--probe", "abc"], "R0:R1,C0:C1"),
    ("negative beta", CHI + W8 + ["--beta", "-0.4", "--probe", "0:2,0:2"], "beta"),
    ("non-finite beta", CHI + W8 + ["--beta", "nan", "--probe", "0:2,0:2"], "finite"),
    ("zero chains", CHI + W8 + ["--beta", "0.4", "--probe", "0:2,0:2", "--chains", "0"], "chains"),
    ("too few sweeps", CHI + W8 + ["--beta", "0.4", "--probe", "0:2,0:2", "--sweeps", "2"], "sweeps"),
    ("non-integer height", CHI + ["--height", "x", "--width", "8", "--beta", "0.4", "--probe", "0:2,0:2"], "not an integer"),
    ("unknown sampler", CHI + W8 + ["--beta", "0.4", "--probe", "0:2,0:2", "--sampler", "gibbs"], "invalid choice"),
    ("resume without snapshot path", CHI + W8 + ["--beta", "0.4", "--probe", "0:2,0:2", "--resume"], "--checkpoint"),
    ("non-positive snapshot interval", CHI + W8 + ["--beta", "0.4", "--probe", "0:2,0:2", "--checkpoint", "x.pt",
                                                   "--checkpoint-every", "0"], "checkpoint-every"),
    ("nn: resume without checkpointing", ["nn", "run", "--config", "c.json", "--out", "o", "--resume", "--no-checkpoint"],
     "--resume needs checkpointing"),
    ("nn: non-positive snapshot interval", ["nn", "run", "--config", "c.json", "--out", "o", "--checkpoint-every", "-1"],
     "--checkpoint-every"),
    ("nn: checkpoint folder is the results folder", ["nn", "run", "--config", "c.json", "--out", "o", "--checkpoint", "o"],
     "--checkpoint must differ"),
    ("numba backend on cuda", CHI + W8 + ["--beta", "0.4", "--probe", "0:2,0:2", "--backend", "numba", "--device", "cuda"], "CPU only"),
]


@pytest.mark.parametrize("args, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main([*args, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_existing_results_folder_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    rc = main(["ising", "map", *W8, "--beta", "0.4", "--probe-size", "4", "--out", str(out), "--no-progress"])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "{}"  # the earlier result is untouched


def test_cli_output_path_not_writable(tmp_path, capsys):
    """An output folder that cannot be created (its parent is a file): works even as root."""
    f = tmp_path / "file"
    f.write_text("x")
    rc = main(["ising", "map", *W8, "--beta", "0.4", "--probe-size", "4", "--out", str(f / "sub"), "--no-progress"])
    assert rc == 2 and "cannot create output folder" in capsys.readouterr().err


def test_cli_resume_from_another_runs_snapshot(tmp_path, capsys):
    snap = tmp_path / "snap.pt"
    base = CHI + W8 + ["--probe", "0:2,0:2", "--sweeps", "400", "--chains", "2", "--json", "--no-progress",
                       "--checkpoint", str(snap), "--checkpoint-every", "0.0001"]
    assert main(base + ["--beta", "0.4"]) == 0
    capsys.readouterr()
    assert main(base + ["--beta", "0.3", "--resume"]) == 2
    assert "different run" in capsys.readouterr().err


API_CASES = [
    ("periodic odd lattice, checkerboard", lambda: IsingSampler(periodic_lattice(5, 6), 0.4, SamplerConfig()), "odd"),
    ("negative lattice size", lambda: open_lattice(-2, 4), "height"),
    ("NaN coupling", lambda: Lattice(np.full((2, 2), np.nan), np.zeros((2, 2)), np.zeros((2, 2)), periodic=True), "NaN"),
    ("mismatched coupling shapes", lambda: Lattice(np.zeros((2, 2)), np.zeros((3, 2)), np.zeros((2, 2))), "j_down has shape"),
    ("swendsen-wang with a field", lambda: IsingSampler(open_lattice(4, 4).with_field(0.1), 0.4, SamplerConfig(sampler="swendsen-wang")), "zero site fields"),
    ("zero chains (API)", lambda: SamplerConfig(chains=0), "chains"),
    ("negative beta (API)", lambda: IsingSampler(open_lattice(4, 4), -1.0, SamplerConfig()), "beta"),
    ("probe larger than lattice", lambda: probe_grid(walled_lattice(6, 6), 7), "does not fit"),
    ("zero draws", lambda: RunConfig(draws=0), "draws"),
    ("accumulator with zero chains", lambda: MomentAccumulator(0, 1, 1, 10), "n_chains"),
    ("accumulator wrong shape", lambda: MomentAccumulator(2, 1, 1, 10).update(torch.zeros(3, 1), torch.zeros(3, 1)), "shape"),
    ("negative gamma", lambda: NNSamplerConfig(gamma=-1.0), "gamma"),
    ("zero epsilon", lambda: NNSamplerConfig(epsilon=0.0), "epsilon"),
    ("negative nbeta", lambda: NNSamplerConfig(nbeta=-3.0), "nbeta"),
    ("infinite epsilon", lambda: NNSamplerConfig(epsilon=float("inf")), "epsilon"),
    ("zero NN chains", lambda: NNSamplerConfig(chains=0), "chains"),
    ("zero NN draws", lambda: NNSamplerConfig(draws=0), "draws"),
]


@pytest.mark.parametrize("make, message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_loading_a_foreign_file_as_result(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, header=np.asarray('{"format": "something-else"}'))
    with pytest.raises(ValueError, match="not a spectro susceptibility file"):
        Susceptibility.load(p)
