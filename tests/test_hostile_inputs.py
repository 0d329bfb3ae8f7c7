"""Hostile inputs: every failure a user can cause is one line, exit status 2, and loses nothing.

Each case walks a CLI option, a config key or a file with a hostile value (non-finite, huge,
zero, negative, wrong type, corrupt, foreign, busy) and checks the contract of issue 11:

* exit status 2 and exactly one line on stderr, ``spectro: error: ...``, no traceback;
* the user's files are untouched (a checksum of the user's folder before and after);
* no partial output (no results folder, no hidden stage, no lock file left behind).

Most cases call ``spectro.jobs.cli.main`` in-process; Ctrl-C and SIGKILL need subprocesses. Also
here: strict JSON output, result file permissions, snapshots read with ``weights_only``, locks,
``--overwrite`` keeping the user's files, one-line warnings and ``--debug``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spectro.outputs
from spectro.engine.snapshots import load_snapshot, save_snapshot
from spectro.jobs.cli import main
from spectro.jobs.builtin import builtin_checkpoint
from spectro.jobs.nn_job import ConfigError, JobConfig
from spectro.outputs import Lock, OutputError

REPO = Path(__file__).resolve().parents[1]
W8 = ["--height", "8", "--width", "8"]
CHI = ["ising", "chi", *W8, "--beta", "0.4", "--probe", "0:2,0:2", "--sweeps", "400", "--chains", "2", "--no-progress"]
MAP = ["ising", "map", *W8, "--beta", "0.4", "--probe-size", "4", "--sweeps", "400", "--chains", "2", "--no-progress"]


# ---------------------------------------------------------------------------- helpers
def digest(folder: Path) -> str:
    """Checksum of every path, file content and mode under ``folder`` (the user's data)."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        h.update(oct(p.stat().st_mode).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def user_error(capsys, argv: list[str], contains: str | None = None) -> str:
    """Run ``spectro argv`` in-process; assert the one-line user-error contract; return the line."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("spectro: error: "), err
    assert "Traceback" not in err
    if contains is not None:
        assert contains in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A working folder holding a user's files (``mine/``), the current directory of the test."""
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes\n")
    (mine / "sub" / "data.bin").write_bytes(os.urandom(64))
    return tmp_path


def unchanged(home: Path, before: str, extra: tuple[str, ...] = ()) -> None:
    """The user's folder is bit-identical and nothing but ``mine`` (and ``extra``) is in ``home``."""
    assert digest(home / "mine") == before
    assert sorted(p.name for p in home.iterdir()) == sorted(["mine", *extra]), "partial output left behind"


# ---------------------------------------------------------------------------- CLI options
ISING_OPTIONS = [
    ("height zero", ["ising", "chi", "--height", "0", "--width", "8", "--beta", "0.4", "--probe", "0:1,0:1"], "--height"),
    ("height negative", ["ising", "chi", "--height", "-3", "--width", "8", "--beta", "0.4", "--probe", "0:1,0:1"], "--height"),
    ("height text", ["ising", "chi", "--height", "ten", "--width", "8", "--beta", "0.4", "--probe", "0:1,0:1"], "integer"),
    ("height float", ["ising", "chi", "--height", "8.5", "--width", "8", "--beta", "0.4", "--probe", "0:1,0:1"], "integer"),
    ("lattice too large for memory", ["ising", "chi", "--height", "2000000", "--width", "2000000", "--beta", "0.4",
                                      "--probe", "0:1,0:1"], "memory"),
    ("beta nan", ["ising", "chi", *W8, "--beta", "nan", "--probe", "0:2,0:2"], "finite"),
    ("beta inf", ["ising", "chi", *W8, "--beta", "inf", "--probe", "0:2,0:2"], "finite"),
    ("beta overflowing", ["ising", "chi", *W8, "--beta", "1e400", "--probe", "0:2,0:2"], "finite"),
    ("beta negative", ["ising", "chi", *W8, "--beta", "-1", "--probe", "0:2,0:2"], "beta"),
    ("beta text", ["ising", "chi", *W8, "--beta", "hot", "--probe", "0:2,0:2"], "not a number"),
    ("missing beta", ["ising", "chi", *W8, "--probe", "0:2,0:2"], "--beta"),
    ("wall depth negative", CHI + ["--wall-depth", "-2"], "wall depth"),
    ("wall depth huge", CHI + ["--wall-depth", str(10**12)], "wall depth"),
    ("probe reversed", ["ising", "chi", *W8, "--beta", "0.4", "--probe", "4:2,0:2"], "probe"),
    ("probe huge", ["ising", "chi", *W8, "--beta", "0.4", "--probe", f"0:{10**20},0:2"], "outside"),
    ("probe garbage", ["ising", "chi", *W8, "--beta", "0.4", "--probe", "🙂"], "R0:R1,C0:C1"),
    ("chains zero", CHI + ["--chains", "0"], "chains"),
    ("chains negative", CHI + ["--chains", "-4"], "chains"),
    ("chains beyond memory", CHI + ["--chains", str(10**12)], "memory"),
    ("sweeps zero", CHI + ["--sweeps", "0"], "--sweeps"),
    ("sweeps fewer than 4 draws", CHI + ["--sweeps", "3"], "sweeps"),
    ("thin zero", CHI + ["--thin", "0"], "--thin"),
    ("thin larger than sweeps", CHI + ["--thin", "1000"], "sweeps"),
    ("burn-in negative", CHI + ["--burn-in", "-1"], "burn_in"),
    ("seed negative", CHI + ["--seed", "-1"], "seed"),
    ("seed beyond 64 bits", CHI + ["--seed", str(2**70)], "seed"),
    ("unknown device", CHI + ["--device", "quantum"], "unknown device"),
    ("unavailable device", CHI + ["--backend", "torch", "--device", "cuda:7"], "not available"),
    ("empty device", CHI + ["--device", ""], "device"),
    ("checkpoint interval zero", CHI + ["--checkpoint", "s.pt", "--checkpoint-every", "0"], "checkpoint-every"),
    ("checkpoint interval nan", CHI + ["--checkpoint", "s.pt", "--checkpoint-every", "nan"], "finite"),
    ("checkpoint interval negative", CHI + ["--checkpoint", "s.pt", "--checkpoint-every", "-5"], "checkpoint-every"),
    ("resume without a snapshot path", CHI + ["--resume"], "--checkpoint"),
    ("unknown option", CHI + ["--frobnicate"], "unrecognized"),
    ("unknown command", ["ising", "chirp"], "invalid choice"),
    ("map probe size zero", ["ising", "map", *W8, "--beta", "0.4", "--probe-size", "0", "--out", "o"], "--probe-size"),
    ("map probe larger than lattice", ["ising", "map", *W8, "--beta", "0.4", "--probe-size", "9", "--out", "o"], "does not fit"),
    ("map stride zero", ["ising", "map", *W8, "--beta", "0.4", "--probe-size", "2", "--stride", "0", "--out", "o"], "--stride"),
    ("map probes beyond memory", ["ising", "map", "--height", "4000", "--width", "4000", "--beta", "0.4",
                                  "--probe-size", "1", "--out", "o"], "probe(s) needs"),
    ("nn run without config", ["nn", "run", "--out", "o"], "--config"),
    ("nn snapshot interval nan", ["nn", "run", "--config", "c.json", "--out", "o", "--checkpoint-every", "nan"],
     "--checkpoint-every"),
]


@pytest.mark.parametrize("argv, contains", [c[1:] for c in ISING_OPTIONS], ids=[c[0] for c in ISING_OPTIONS])
def test_hostile_cli_option(argv, contains, home, capsys):
    before = digest(home / "mine")
    user_error(capsys, argv, contains)
    unchanged(home, before)


# ---------------------------------------------------------------------------- files and folders (ising)
def _good_snapshot(path: Path) -> None:
    assert main(CHI + ["--json", "--checkpoint", str(path), "--checkpoint-every", "0.0001"]) == 0


FILE_CASES = ["user file as chi checkpoint", "folder as chi checkpoint", "checkpoint in a missing folder",
              "random bytes resumed", "truncated snapshot resumed", "foreign torch file", "pickled code",
              "map out is a user file", "map out is a user folder", "map out under a file", "map checkpoint is a user file",
              "map out is a user folder with overwrite", "map checkpoint in a missing folder inside out"]


@pytest.mark.parametrize("case", FILE_CASES)
def test_hostile_files(case, home, capsys):
    mine = home / "mine"
    extra: tuple[str, ...] = ()
    if case == "user file as chi checkpoint":
        argv, contains = CHI + ["--checkpoint", str(mine / "notes.txt")], "not a readable spectro snapshot"
    elif case == "folder as chi checkpoint":
        argv, contains = CHI + ["--checkpoint", str(mine / "sub")], "is a folder"
    elif case == "checkpoint in a missing folder":
        argv, contains = CHI + ["--checkpoint", str(home / "nowhere" / "s.pt")], "does not exist"
    elif case == "random bytes resumed":
        (mine / "snap.pt").write_bytes(os.urandom(3000))
        argv, contains = CHI + ["--checkpoint", str(mine / "snap.pt"), "--resume"], "snap.pt"
    elif case == "truncated snapshot resumed":
        _good_snapshot(home / "good.pt")
        capsys.readouterr()
        (mine / "snap.pt").write_bytes((home / "good.pt").read_bytes()[:4000])
        (home / "good.pt").unlink()
        argv, contains = CHI + ["--checkpoint", str(mine / "snap.pt"), "--resume"], "snap.pt"
    elif case == "foreign torch file":
        torch.save({"weights": torch.zeros(3)}, mine / "model.pt")
        argv, contains = CHI + ["--checkpoint", str(mine / "model.pt")], "not a spectro"
    elif case == "pickled code":  # weights_only: loading the file must not run its code
        torch.save({"format": "spectro.snapshot/1", "kind": "ising-chains", "evil": _Evil(str(home / "pwned"))},
                   mine / "evil.pt")
        argv, contains = CHI + ["--checkpoint", str(mine / "evil.pt"), "--resume"], "evil.pt"
    elif case == "map out is a user file":
        argv, contains = MAP + ["--out", str(mine / "notes.txt")], "is a file"
    elif case == "map out is a user folder":
        argv, contains = MAP + ["--out", str(mine)], "not created by spectro"
    elif case == "map out is a user folder with overwrite":
        argv, contains = MAP + ["--out", str(mine), "--overwrite"], "not created by spectro"
    elif case == "map out under a file":
        argv, contains = MAP + ["--out", str(mine / "notes.txt" / "out")], "is a file"
    elif case == "map checkpoint in a missing folder inside out":  # fails after the folder is made: it goes again
        argv, contains = MAP + ["--out", str(home / "o"), "--checkpoint", str(home / "o" / "sub" / "s.pt")], "does not exist"
    else:
        argv, contains = MAP + ["--out", str(home / "o"), "--checkpoint", str(mine / "notes.txt")], "snapshot"
    before = digest(mine)
    user_error(capsys, argv, contains)
    unchanged(home, before, extra)
    assert not (home / "pwned").exists()


class _Evil:
    """Pickles to a call that creates a file: proof that a snapshot's pickled code is not run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_map_resume_over_finished_results_of_another_run(home, capsys):
    out = home / "o"
    assert main(MAP + ["--out", str(out)]) == 0
    capsys.readouterr()
    (out / "my-notes.txt").write_text("keep")
    before = digest(out)
    user_error(capsys, MAP + ["--out", str(out), "--seed", "7", "--resume"], "different run")
    assert digest(out) == before
    user_error(capsys, MAP + ["--out", str(out)], "--overwrite")
    assert digest(out) == before
    # --overwrite replaces spectro's files only; the user's file stays
    assert main(MAP + ["--out", str(out), "--seed", "7", "--overwrite"]) == 0
    assert (out / "my-notes.txt").read_text() == "keep"
    assert json.loads((out / "summary.json").read_text())["n_probes"] == 4
    assert not [p for p in home.iterdir() if p.name.startswith(".")], "lock left behind"


def test_locked_output_is_refused(home, capsys):
    out = home / "o"
    # a live lock (this very process), a lock held through the API, a stale lock of a dead process
    (home / ".o.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    user_error(capsys, MAP + ["--out", str(out)], "in use by another spectro run")
    (home / ".o.lock").unlink()
    held = Lock(out).acquire()
    try:
        user_error(capsys, MAP + ["--out", str(out)], f"process {os.getpid()}")
        user_error(capsys, MAP + ["--out", str(out), "--resume"], "in use")  # a live run is never taken over
    finally:
        held.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (home / ".o.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    line = user_error(capsys, MAP + ["--out", str(out)], "stale lock")
    assert f"rm {home / '.o.lock'}" in line
    snap_lock = home / ".s.pt.lock"
    snap_lock.write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    user_error(capsys, CHI + ["--checkpoint", str(home / "s.pt")], "in use")
    snap_lock.unlink()
    (home / ".o.lock").unlink()
    assert not out.exists() and not (home / "s.pt").exists()


# ---------------------------------------------------------------------------- strict JSON, permissions, messages
def _strict(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict(home, capsys):
    # β = 0: χ and its standard error are exactly 0, so the z-scores are 0/0
    assert main(CHI + ["--beta", "0", "--json"]) == 0
    out = _strict(capsys.readouterr().out)
    assert out["z"]["left"] is None and out["z"]["why"] == "non-finite"
    assert main(MAP + ["--beta", "0", "--out", "o"]) == 0
    _strict((home / "o" / "summary.json").read_text())

    from spectro.io import write_json

    write_json(home / "x.json", {"mean": float("nan"), "v": np.array([1.0, np.inf]), "n": np.int64(3)})
    assert _strict((home / "x.json").read_text()) == {"mean": None, "v": [1.0, None], "n": 3, "why": "non-finite"}


def test_result_files_follow_the_umask(home):
    from spectro.io import write_text

    old = os.umask(0o022)
    try:
        write_text(home / "r.txt", "x")
    finally:
        os.umask(old)
    assert (home / "r.txt").stat().st_mode & 0o777 == 0o644


def test_snapshot_reader_names_the_bad_file(home):
    save_snapshot(home / "ok.pt", "k", {"a": np.arange(3, dtype=np.uint64), "b": [1, (2, 3)], "t": torch.ones(2)})
    back = load_snapshot(home / "ok.pt", "k")
    assert back["a"].dtype == np.uint64 and back["a"].tolist() == [0, 1, 2] and back["b"] == [1, (2, 3)]
    with pytest.raises(OutputError, match="ok.pt is not a spectro other snapshot"):
        load_snapshot(home / "ok.pt", "other")


def test_warnings_are_one_line_and_debug_shows_the_traceback(home, capsys, monkeypatch):
    import warnings

    import spectro.jobs.cli as cli

    def noisy(args):
        warnings.warn("something odd\nacross lines", RuntimeWarning)
        np.log(np.zeros(1))  # numpy's own RuntimeWarning
        return 0

    monkeypatch.setitem(cli.COMMANDS, ("ising", "chi"), noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(CHI) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "spectro: warning: something odd across lines" and len(err) == 2
    assert err[1].startswith("spectro: warning: divide by zero")

    def broken(args):
        raise ValueError("bad thing")

    monkeypatch.setitem(cli.COMMANDS, ("ising", "chi"), broken)
    user_error(capsys, CHI, "bad thing")
    with pytest.raises(ValueError, match="bad thing"):
        main(["--debug", *CHI])
    monkeypatch.setenv("SPECTRO_DEBUG", "1")
    with pytest.raises(ValueError, match="bad thing"):
        main(CHI)


def test_ctrl_c_on_ising_chi_is_one_line(tmp_path):
    cmd = [sys.executable, "-m", "spectro", "ising", "chi", "--height", "40", "--width", "40", "--beta", "0.4",
           "--probe", "0:2,0:2", "--sweeps", "10000000", "--no-progress", "--checkpoint", str(tmp_path / "s.pt"),
           "--checkpoint-every", "0.2"]
    # a test run started in the background by a non-interactive shell (`pytest ... &`) inherits
    # SIGINT = ignored, and Python keeps it ignored: give the child the default disposition, as a
    # terminal's Ctrl-C would find it (this, not the load, made the test fail in background runs)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # start-up (imports, and on a fresh install the JIT compilation) takes minutes on a loaded
    # 2-core machine: wait for the first snapshot; the bound under test is the interrupt's latency
    deadline = time.time() + 600
    while not (tmp_path / "s.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)  # the kernels run off the main thread: Ctrl-C is seen within ~50 ms
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [f"spectro: interrupted; the last snapshot is {tmp_path / 's.pt'}; "
                                        "run the same command with --resume to continue"]
    assert not (tmp_path / ".s.pt.lock").exists() and not list(tmp_path.glob(".s.pt.*.tmp*"))


# ---------------------------------------------------------------------------- the NN job
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return builtin_checkpoint("tiny", tmp_path_factory.mktemp("cache"), steps=8, progress=False, log=lambda m: None)


def nn_config(ckpt) -> dict:
    return {
        "name": "hostile",
        "model": {"checkpoint": str(ckpt)},
        "data": {"corpus": "fixture", "domains": ["code", "prose"], "context": 12, "train_sequences": 32},
        "probes": {"base": 4, "per_domain": 2},
        "observables": ["component_loss"],
        "fields": ["subset"],
        "components": ["l0h1"],
        "sampler": {"chains": 2, "draws": 8, "batch_size": 8, "nbeta": 10.0, "gamma": 1000.0, "epsilon": 1e-4, "seed": 3},
        "threads": 1,
        "export": {"devinterp": False},
    }


def _copy_ckpt(ckpt, home, mutate) -> str:
    bad = home / "mine" / "ckpt"
    shutil.copytree(ckpt, bad)
    mutate(bad)
    return str(bad)


def _nan_weights(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    next(iter(tensors.values()))[:] = float("nan")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "spectro.attention_only/1"})


def _bad_corpus(home: Path) -> str:
    from spectro.data.corpus import FIXTURE_DIR

    root = home / "mine" / "corpus"
    shutil.copytree(FIXTURE_DIR, root)
    f = root / "code" / "train.jsonl"
    lines = f.read_text().splitlines()
    lines[2] = '{"text": "unterminated'
    f.write_text("\n".join(lines) + "\n")
    return str(root)


NN_CASES = [
    ("epsilon overflows float32", lambda c, h, k: c["sampler"].update(epsilon=1e39), "overflows"),
    ("gamma overflows float32", lambda c, h, k: c["sampler"].update(gamma=1e300), "overflows"),
    ("chains beyond memory", lambda c, h, k: c["sampler"].update(chains=10**11), "chains"),
    ("unknown device", lambda c, h, k: c["sampler"].update(device="tpu9"), "unknown device"),
    ("unavailable device", lambda c, h, k: c["sampler"].update(device="cuda:3"), "not available"),
    ("corrupt safetensors header", lambda c, h, k: c["model"].update(checkpoint=_copy_ckpt(
        k, h, lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64))), "model.safetensors"),
    ("truncated safetensors", lambda c, h, k: c["model"].update(checkpoint=_copy_ckpt(
        k, h, lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:3000]))),
     "model.safetensors"),
    ("tokenizer of random bytes", lambda c, h, k: c["model"].update(checkpoint=_copy_ckpt(
        k, h, lambda d: (d / "tokenizer.json").write_bytes(os.urandom(256)))), "tokenizer.json"),
    ("checkpoint config not JSON", lambda c, h, k: c["model"].update(checkpoint=_copy_ckpt(
        k, h, lambda d: (d / "config.json").write_text("{oops"))), "config.json"),
    ("NaN weights: loss already NaN at w*", lambda c, h, k: c["model"].update(checkpoint=_copy_ckpt(k, h, _nan_weights)),
     "loss at w*"),
    ("malformed corpus line", lambda c, h, k: c["data"].update(corpus=_bad_corpus(h)), "line 3"),
    ("checkpoint is a file", lambda c, h, k: c["model"].update(checkpoint=str(h / "mine" / "notes.txt")), "not a folder"),
]


@pytest.mark.parametrize("mutate, contains", [c[1:] for c in NN_CASES], ids=[c[0] for c in NN_CASES])
def test_hostile_nn_inputs(mutate, contains, ckpt, home, capsys):
    cfg = nn_config(ckpt)
    mutate(cfg, home, ckpt)
    path = home / "mine" / "job.json"
    path.write_text(json.dumps(cfg))
    before = digest(home / "mine")
    user_error(capsys, ["nn", "run", "--config", str(path), "--out", str(home / "out"), "--no-progress"], contains)
    unchanged(home, before)


NN_FOLDER_CASES = ["checkpoint is the parent of out", "checkpoint is a user folder", "out is a user folder",
                   "out is a user file", "out is locked", "checkpoint is locked", "demo into a user folder"]


@pytest.mark.parametrize("case", NN_FOLDER_CASES)
def test_hostile_nn_folders(case, ckpt, home, capsys):
    path = home / "job.json"
    path.write_text(json.dumps(nn_config(ckpt)))
    run = ["nn", "run", "--config", str(path), "--no-progress"]
    mine = home / "mine"
    live = json.dumps({"pid": os.getpid(), "host": os.uname().nodename})
    if case == "checkpoint is the parent of out":  # the reported data loss: DIR and its results deleted
        argv, contains = run + ["--checkpoint", str(mine), "--out", str(mine / "out")], "not created by spectro"
    elif case == "checkpoint is a user folder":
        argv, contains = run + ["--checkpoint", str(mine), "--out", str(home / "out")], "checkpoint folder"
    elif case == "out is a user folder":
        argv, contains = run + ["--out", str(mine), "--overwrite"], "not created by spectro"
    elif case == "out is a user file":
        argv, contains = run + ["--out", str(mine / "notes.txt"), "--overwrite"], "is a file"
    elif case == "out is locked":
        (home / ".out.lock").write_text(live)
        argv, contains = run + ["--out", str(home / "out")], "in use"
    elif case == "checkpoint is locked":
        (home / ".out.checkpoint.lock").write_text(live)
        argv, contains = run + ["--out", str(home / "out")], "in use"
    else:
        argv, contains = ["nn", "demo", "--out", str(mine), "--no-progress"], "not created by spectro"
    before = digest(mine)
    user_error(capsys, argv, contains)
    lock = [p.name for p in home.iterdir() if p.name.endswith(".lock")]
    unchanged(home, before, ("job.json", *lock))


def test_nn_overwrite_keeps_user_files_and_snapshot_damage_is_one_line(ckpt, home, capsys, monkeypatch):
    """--overwrite replaces spectro's files only; an interrupted run's damaged snapshot files are
    reported by name; the resumed run is refused for a different config; nothing is lost."""

    path = home / "job.json"
    path.write_text(json.dumps(nn_config(ckpt)))
    out = home / "out"
    run = ["nn", "run", "--config", str(path), "--out", str(out), "--no-progress"]
    assert main(run) == 0
    (out / "mine.txt").write_text("keep")
    marker = json.loads((out / ".spectro-run.json").read_text())  # a forged list cannot make the user's file spectro's
    marker["files"].update({"*": {"size": 0, "sha256": ""}, "mine.txt": spectro.outputs.file_record(out / "mine.txt")})
    (out / ".spectro-run.json").write_text(json.dumps(marker))
    before = (out / "chi_l0h1.npz").read_bytes()
    user_error(capsys, run, "--overwrite")
    assert (out / "chi_l0h1.npz").read_bytes() == before
    assert main(run + ["--overwrite"]) == 0
    assert (out / "mine.txt").read_text() == "keep"
    capsys.readouterr()

    # interrupt a checkpointed run right after its first snapshot (Ctrl-C: exit 130, one line)
    from spectro.engine import driver

    original = driver.save_snapshot

    def save_then_interrupt(*a, **kw):
        original(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "save_snapshot", save_then_interrupt)
    out2, ck = home / "out2", home / "out2.checkpoint"
    run2 = ["nn", "run", "--config", str(path), "--out", str(out2), "--no-progress", "--checkpoint-every", "0.000001"]
    assert main(run2) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        f"spectro: interrupted; snapshots are in {ck}; run the same command with --resume to continue"]
    monkeypatch.setattr(driver, "save_snapshot", original)
    assert (ck / "snapshot.full").is_file() and not (home / ".out2.lock").exists()

    for name, damage in (("snapshot.full", lambda b: b[: len(b) // 2]), ("job.json", lambda b: b"{")):
        good = (ck / name).read_bytes()
        (ck / name).write_bytes(damage(good))
        user_error(capsys, run2 + ["--resume"], str(ck / name))
        (ck / name).write_bytes(good)
    other = nn_config(ckpt)
    other["sampler"]["seed"] = 4
    (home / "other.json").write_text(json.dumps(other))
    user_error(capsys, ["nn", "run", "--config", str(home / "other.json"), "--out", str(out2), "--no-progress",
                        "--resume"], "different job")
    assert (ck / "snapshot.full").is_file()  # the other job's snapshots are not deleted
    assert main(run2 + ["--resume"]) == 0
    assert not ck.exists() and (out2 / "chi_l0h1.npz").is_file()
    assert not [p for p in home.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------- the job schema, generated
_KEYS = [("sampler", k) for k in ("epsilon", "gamma", "nbeta", "chains", "draws", "burn_in", "steps_per_draw",
                                   "batch_size", "seed", "n_batches", "rmsprop_alpha", "rmsprop_delta",
                                   "max_loss_increase", "device", "master_dtype", "method", "eval_batch_size",
                                   "precision")]
_KEYS += [("data", k) for k in ("context", "train_sequences", "domains", "corpus")]
_KEYS += [("probes", k) for k in ("base", "per_domain", "split")] + [("model", "dtype"), ("model", "train_steps"),
                                                                       ("export", "max_mb"), ("export", "devinterp")]
_KEYS += [(None, "threads"), (None, "components"), (None, "fields"), (None, "observables")]
_HOSTILE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1e308, -1e-320, 2**63, 10**400, True, "", "nan", None, [], {}, [None], {"x": 1}]),
    st.text(max_size=5),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(_KEYS), value=_HOSTILE)
def test_generated_config_values_fail_cleanly(key, value, tmp_path_factory):
    """A hostile value for any key is accepted by the schema or rejected with a one-line
    ConfigError naming the key; rejected ones exit 2 from the CLI with one line, writing nothing."""
    cfg = nn_config("builtin:tiny")
    table, name = key
    (cfg if table is None else cfg[table])[name] = value
    try:
        JobConfig.from_dict(copy.deepcopy(cfg))
    except ConfigError as e:
        assert "\n" not in str(e) and name in str(e), str(e)
    else:
        return  # a valid config: running it is the job tests' business
    work = tmp_path_factory.mktemp("gen")
    path = work / "job.json"
    path.write_text(json.dumps(cfg))  # Python's json writes NaN/Infinity: the loader must refuse them
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["nn", "run", "--config", str(path), "--out", str(work / "out"), "--no-progress"])
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("spectro: error: "), err.getvalue()
    assert sorted(p.name for p in work.iterdir()) == ["job.json"]
