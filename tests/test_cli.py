"""The `spectro ising` command line: the JSON contract, files written, and bad input (exit 2, no traceback)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from spectro.jobs.cli import main
from spectro.engine import Susceptibility


def test_chi_json_contract_and_exact_agreement(capsys):
    rc = main(["ising", "chi", "--height", "8", "--width", "8", "--beta", "0.4", "--probe", "5:8,0:8",
               "--sweeps", "20000", "--chains", "8", "--seed", "1", "--json", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["chi"]) == {"left", "right", "lower"}
    for name in ("left", "right", "lower"):
        e = out["chi"][name]
        assert set(e) >= {"mean", "stderr", "dof", "ci95", "reliable", "why"}
        z = (e["mean"] - out["exact"][name]) / e["stderr"]
        assert abs(z) < 4 and abs(z - out["z"][name]) < 1e-9
        # long mixed chains: reliable, and the t interval is χ ± t_dof·stderr around the estimate
        assert e["reliable"] is True and e["why"] == [] and e["dof"] > 30
        assert e["ci95"][0] < e["mean"] < e["ci95"][1]
        assert (e["ci95"][1] - e["ci95"][0]) / 2 == pytest.approx(stats.t.ppf(0.975, e["dof"]) * e["stderr"], rel=1e-9)
    # docs/design.md §5 reference: walled 8x8, β = 0.4; the probe is the lower chamber, so χ_{A,C} = β·Cov[A, C]
    assert out["exact"]["left"] == pytest.approx(0.4 * 36.81437903, rel=1e-8)
    assert out["exact"]["lower"] == pytest.approx(0.4 * 141.25634747, rel=1e-8)
    assert out["wall_depth"] == 5 and out["probe"] == "5:8,0:8"


def test_chi_exact_is_null_for_large_lattices(capsys):
    rc = main(["ising", "chi", "--height", "20", "--width", "20", "--beta", "0.3", "--probe", "0:2,0:2",
               "--sweeps", "400", "--chains", "2", "--json", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exact"] is None and out["z"] is None


def test_chi_table_output(capsys):
    assert main(["ising", "chi", "--height", "6", "--width", "6", "--beta", "0.3", "--probe", "0:2,0:2",
                 "--sweeps", "400", "--chains", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "chamber" in text and "left" in text and "exact" in text


def test_map_writes_png_npz_json(tmp_path, capsys):
    out = tmp_path / "map"
    assert main(["ising", "map", "--height", "12", "--width", "12", "--beta", "0.4", "--probe-size", "4",
                 "--sweeps", "1000", "--chains", "4", "--out", str(out), "--no-progress"]) == 0
    assert {p.name for p in out.iterdir()} == {"chi_map.png", "chi_map.npz", "summary.json", "config.json", "report.html", ".spectro-run.json"}
    marker = json.loads((out / ".spectro-run.json").read_text())  # the folder is recognisably spectro's
    assert marker["kind"] == "ising-map" and marker["results"] and "chi_map.npz" in marker["files"]
    res = Susceptibility.load(out / "chi_map.npz")
    assert res.chi.shape == (3, 9) and np.all(np.isfinite(res.stderr))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_probes"] == 9 and summary["system"] == "ising"
    assert list(res.field_axis.column("row0")) == [0, 0, 0, 4, 4, 4, 8, 8, 8]  # typed probe coordinates
    # an existing folder is not overwritten silently
    assert main(["ising", "map", "--height", "12", "--width", "12", "--beta", "0.4", "--probe-size", "4",
                 "--sweeps", "1000", "--out", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_run_config_equals_the_map_alias(tmp_path, capsys):
    """`spectro run CONFIG` (system = "ising") is the job `ising map` runs: same numbers, same layout;
    the folder's config.json runs it again."""
    alias = tmp_path / "alias"
    assert main(["ising", "map", "--height", "12", "--width", "12", "--beta", "0.4", "--probe-size", "4",
                 "--sweeps", "600", "--chains", "3", "--seed", "5", "--out", str(alias), "--no-progress"]) == 0
    toml = tmp_path / "job.toml"
    toml.write_text('system = "ising"\nbeta = 0.4\n[lattice]\nheight = 12\nwidth = 12\n[probes]\nsize = 4\n'
                    '[sampler]\nchains = 3\nseed = 5\n[run]\nsweeps = 600\n')
    out = tmp_path / "run"
    assert main(["run", str(toml), "--out", str(out), "--no-progress"]) == 0
    a, b = Susceptibility.load(alias / "chi_map.npz"), Susceptibility.load(out / "chi_map.npz")
    np.testing.assert_array_equal(a.chi, b.chi)
    assert json.loads((alias / "config.json").read_text()) == json.loads((out / "config.json").read_text())
    again = tmp_path / "again"
    assert main(["run", str(out / "config.json"), "--out", str(again), "--no-progress"]) == 0
    np.testing.assert_array_equal(Susceptibility.load(again / "chi_map.npz").chi, a.chi)
    capsys.readouterr()
    for text, message in (('system = "potts"\n', 'expected "ising" or "nn"'),
                          ('system = "ising"\nbeta = 0.4\n[lattice]\nheight = 12\nwidth = 12\n[probes]\nsize = 4\n'
                           '[run]\nsweps = 10\n', "run: unknown key 'sweps'")):
        toml.write_text(text)
        assert main(["run", str(toml), "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_console_script_exit_code_and_no_traceback():
    p = subprocess.run([sys.executable, "-m", "spectro", "ising", "chi", "--height", "8", "--width", "7", "--beta", "0.4",
                        "--probe", "0:2,0:2"], capture_output=True, text=True)
    assert p.returncode == 2
    assert "even width" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "spectro", "ising", "chi", "--height", "x"], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr
