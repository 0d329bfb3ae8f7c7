"""Scale-out and resume: torchrun with 2 processes equals 1 process; a SIGKILLed run resumes bit-identically."""

import json
import os
import signal
import subprocess
import sys
import time

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
