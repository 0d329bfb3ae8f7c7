"""Scale-out and resume: torchrun with 2 processes equals 1 process; a SIGKILLed run resumes bit-identically."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHI = ["ising", "chi", "--height", "12", "--width", "12", "--beta", "0.4", "--probe", "0:4,0:3",
       "--sweeps", "3000", "--chains", "5", "--seed", "3", "--json", "--no-progress"]


def _env():
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=240, **kw)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_torchrun_two_processes_equal_one_process():
    one = json.loads(_run([sys.executable, "-m", "spectro", *CHI]))
    out = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "spectro", *CHI])
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only rank 0 prints
    two = json.loads(lines[0])
    for name in ("left", "right", "lower"):
        for key in ("mean", "stderr", "ess", "rhat"):
            np.testing.assert_allclose(two["chi"][name][key], one["chi"][name][key], rtol=1e-12)


def test_sigkill_then_resume_gives_identical_result(tmp_path):
    args = ["ising", "chi", "--height", "40", "--width", "40", "--beta", "0.4", "--probe", "0:8,0:8",
            "--sweeps", "60000", "--chains", "4", "--seed", "9", "--json", "--no-progress"]
    reference = json.loads(_run([sys.executable, "-m", "spectro", *args]))
    snap = tmp_path / "snap.pt"
    cmd = [sys.executable, "-m", "spectro", *args, "--checkpoint", str(snap), "--checkpoint-every", "0.05"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    deadline = time.time() + 120
    while not snap.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # let it get further than the first snapshot
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed and snap.exists(), "the run finished before it could be killed; make it longer"
    resumed = json.loads(_run(cmd + ["--resume"]))
    for name in ("left", "right", "lower"):
        assert resumed["chi"][name] == reference["chi"][name]


# ---------------------------------------------------------------- the NN job (spectro nn run)
import pytest  # noqa: E402

from spectro.engine import Susceptibility  # noqa: E402
from spectro.jobs.builtin import builtin_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def nn_ckpt(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return builtin_checkpoint("tiny", cache, steps=8, progress=False, log=lambda m: None)


def _nn_config(ckpt, tmp_path, draws: int, chains: int = 4) -> Path:
    cfg = {
        "system": "nn",
        "name": "scale-out",
        "model": {"checkpoint": str(ckpt)},
        "data": {"corpus": "fixture", "domains": ["code", "prose"], "context": 12, "train_sequences": 32},
        "probes": {"base": 4, "per_domain": 2},
        "observables": ["component_loss", {"type": "mean_loss", "domain": "code"}],
        "fields": ["tokens", "subset"],
        "components": ["full", "l0h1", "l1h2"],
        "sampler": {"chains": chains, "draws": draws, "batch_size": 8, "nbeta": 10.0, "gamma": 1000.0,
                    "epsilon": 1e-4, "n_batches": 4, "seed": 5},
        "threads": 1,
    }
    path = tmp_path / f"job_{draws}_{chains}.json"
    path.write_text(json.dumps(cfg))
    return path


def _chi_files(out: Path) -> dict[str, Susceptibility]:
    return {p.name: Susceptibility.load(p) for p in sorted(out.glob("chi_*.npz"))}


def _assert_same_results(a: Path, b: Path, rtol: float = 0.0) -> None:
    ra, rb = _chi_files(a), _chi_files(b)
    assert sorted(ra) == sorted(rb) == ["chi_full.npz", "chi_l0h1.npz", "chi_l1h2.npz"]
    for name in ra:
        for key in ("chi", "stderr", "stderr_chains", "ess", "rhat"):
            x, y = getattr(ra[name], key), getattr(rb[name], key)
            if rtol == 0.0:
                np.testing.assert_array_equal(x, y, err_msg=f"{name} {key}")
            else:
                np.testing.assert_allclose(x, y, rtol=rtol, err_msg=f"{name} {key}")
        assert ra[name].meta["loss_trace"] == rb[name].meta["loss_trace"]
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for comp in sa["components"]:
        assert sa["components"][comp]["llc"] == sb["components"][comp]["llc"]


def test_nn_job_torchrun_two_processes_equal_one_process(nn_ckpt, tmp_path):
    """`torchrun --nproc-per-node 2 -m spectro run` writes the χ files of `spectro nn run` in one process:
    each process samples 2 of the 4 chains with their global seeds, the merge adds zeros, so the
    numbers are identical (the contract asks for 1e-9 relative; we get equality)."""
    config = _nn_config(nn_ckpt, tmp_path, draws=12)
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, "-m", "spectro", "nn", "run", "--config", str(config), "--out", str(one), "--no-progress"])
    out = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "spectro",
                "run", str(config), "--out", str(two), "--no-progress"])
    assert out.count("wrote ") == 1  # only rank 0 writes and prints
    _assert_same_results(one, two)
    assert json.loads((two / "summary.json").read_text())["run"]["processes"] == 2
    assert not list(tmp_path.glob(".two*")) and not (tmp_path / "two.checkpoint").exists()


def test_nn_job_sigkill_then_resume_is_bit_identical(nn_ckpt, tmp_path):
    """Kill a real `spectro nn run` with SIGKILL after its first snapshot; the same command with
    --resume writes χ files, loss traces and LLCs identical to an uninterrupted run."""
    config = _nn_config(nn_ckpt, tmp_path, draws=250, chains=2)
    reference, out = tmp_path / "reference", tmp_path / "out"
    _run([sys.executable, "-m", "spectro", "nn", "run", "--config", str(config), "--out", str(reference), "--no-progress",
          "--no-checkpoint"])
    cmd = [sys.executable, "-m", "spectro", "nn", "run", "--config", str(config), "--out", str(out), "--no-progress",
           "--checkpoint-every", "0.05"]
    ck = tmp_path / "out.checkpoint"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    deadline = time.time() + 120
    # wait until the first component is done (its snapshot became a finished record) and the second
    # has a snapshot: the kill then lands mid-component with a completed component behind it
    while time.time() < deadline and proc.poll() is None and not (ck / "snapshot.l0h1").exists():
        time.sleep(0.02)
    time.sleep(0.3)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the run finished before it could be killed; make it longer"
    # the results folder is made and locked before sampling (spectro.outputs): it holds no results yet
    assert not (out.exists() and (out / "summary.json").exists())
    if out.exists():
        assert not list(out.glob("chi_*.npz"))
    load = __import__("torch").load
    assert "finished" in load(ck / "snapshot.full", weights_only=True)
    assert any("finished" not in load(p, weights_only=True) for p in ck.glob("snapshot.*"))  # one in progress
    stdout = _run(cmd + ["--resume"])
    assert "wrote " in stdout
    _assert_same_results(reference, out)
    assert not ck.exists() and not list(tmp_path.glob(".out.partial*"))


def test_nn_job_sigterm_exits_143_and_resume_finishes(nn_ckpt, tmp_path):
    config = _nn_config(nn_ckpt, tmp_path, draws=150, chains=2)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "spectro", "nn", "run", "--config", str(config), "--out", str(out), "--no-progress",
           "--checkpoint-every", "0.05"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), text=True)
    deadline = time.time() + 120
    while not (tmp_path / "out.checkpoint" / "snapshot.full").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    _run(cmd + ["--resume"])
    assert len(_chi_files(out)) == 3


def test_nn_job_resume_refuses_a_different_config(nn_ckpt, tmp_path):
    config = _nn_config(nn_ckpt, tmp_path, draws=150, chains=2)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "spectro", "nn", "run", "--config", str(config), "--out", str(out), "--no-progress",
           "--checkpoint-every", "0.05"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    deadline = time.time() + 120
    while not (tmp_path / "out.checkpoint" / "snapshot.full").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    other = _nn_config(nn_ckpt, tmp_path, draws=151, chains=2)
    p = subprocess.run([sys.executable, "-m", "spectro", "nn", "run", "--config", str(other), "--out", str(out),
                        "--no-progress", "--resume"], capture_output=True, text=True, env=_env(), timeout=240)
    assert p.returncode == 2 and "belongs to a different job" in p.stderr and "Traceback" not in p.stderr
