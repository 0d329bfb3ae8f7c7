"""Your files are safe (issue 21): ownership by content, one-step commits tested by killing the
process at every step, locks on the real folder, folders the user made, demos that ask before
replacing, full disks and deep configs as one-line errors.

Most cases drive :mod:`spectro.outputs` directly (no sampling) or ``spectro.jobs.cli.main`` on an
8x8 lattice (seconds).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import spectro.outputs as outputs
from spectro.engine.snapshots import save_snapshot
from spectro.jobs.cli import main
from spectro.outputs import (JOURNAL, MARKER, CommitRefused, KeptFilesWarning, Lock, OutputError, RunFolder,
                             claim_folder, commit_results, file_record, new_stage, owned_files, recover, remove_owned)

REPO = Path(__file__).resolve().parents[1]
W8 = ["--height", "8", "--width", "8"]
MAP = ["ising", "map", *W8, "--beta", "0.4", "--probe-size", "4", "--sweeps", "400", "--chains", "2", "--no-progress"]


def one_line_error(capsys, argv, contains=None) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("spectro: error: "), err
    if contains is not None:
        assert contains in err[0], err[0]
    return err[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) → its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- a results folder built by hand
def results_folder(out: Path, files: dict[str, bytes], run: str = "r1", kind: str = "nn-run") -> None:
    """Commit ``files`` (relative path → bytes) as spectro's results into ``out`` (made if needed)."""
    claim_folder(out, kind, "output folder", outputs.KINDS[kind])
    stage = new_stage(out.parent, f".{out.name}.tmp-", "nn-stage")
    for rel, data in files.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeptFilesWarning)
        commit_results(out, stage, kind, run)
    assert not stage.exists()


OLD = {"summary.json": b'{"run": 1}', "chi_full.npz": b"old chi", "devinterp/samples_full.zarr/zarr.json": b"old z",
       "chi_l0h0.npz": b"a component the new run does not have"}
NEW = {"summary.json": b'{"run": 2}', "chi_full.npz": b"new chi", "devinterp/samples_full.zarr/zarr.json": b"new z",
       "traces.png": b"png"}


def test_ownership_is_by_content_not_by_name(tmp_path):
    out = tmp_path / "out"
    results_folder(out, OLD)
    marker = json.loads((out / MARKER).read_text())
    assert marker["files"]["chi_full.npz"] == {"size": 7, "sha256": hashlib.sha256(b"old chi").hexdigest()}
    # the user's files: a note inside spectro's devinterp/, hidden files named like temporary files,
    # and a result file the user edited after spectro wrote it
    (out / "devinterp" / "my-note.txt").write_text("mine")
    (out / ".notes.tmp").write_text("mine too")
    (out / ".summary.json.abc.tmp").write_text("and this")
    (out / "chi_l0h0.npz").write_bytes(b"edited by the user")
    owned = owned_files(out)
    assert set(owned) == {"summary.json", "chi_full.npz", "devinterp/samples_full.zarr/zarr.json"}
    with pytest.warns(KeptFilesWarning, match="kept 4 file"):
        kept = remove_owned(out)
    assert sorted(kept) == [".notes.tmp", ".summary.json.abc.tmp", "chi_l0h0.npz", "devinterp/my-note.txt"]
    assert snapshot(out) == {".notes.tmp": b"mine too", ".summary.json.abc.tmp": b"and this",
                             "chi_l0h0.npz": b"edited by the user", "devinterp/my-note.txt": b"mine"}


def test_overwrite_replaces_only_unchanged_files_and_reports_the_rest(tmp_path):
    out = tmp_path / "out"
    results_folder(out, OLD)
    (out / "devinterp" / "my-note.txt").write_text("mine")
    (out / ".cache.tmp").write_text("hidden, mine")
    stage = new_stage(tmp_path, ".out.tmp-", "nn-stage")
    for rel, data in NEW.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
    with pytest.warns(KeptFilesWarning, match=r"kept 2 file\(s\) in .*\.cache\.tmp, devinterp/my-note\.txt"):
        commit_results(out, stage, "nn-run", "r2")
    assert snapshot(out) == {MARKER: (out / MARKER).read_bytes(), ".cache.tmp": b"hidden, mine",
                             "devinterp/my-note.txt": b"mine", **NEW}  # chi_l0h0.npz (spectro's, old run) is gone
    assert set(owned_files(out)) == set(NEW)


def test_a_changed_file_at_a_name_the_new_results_need_stops_the_commit(tmp_path):
    out = tmp_path / "out"
    results_folder(out, OLD)
    (out / "summary.json").write_text("the user's edit")
    before = snapshot(out)
    stage = new_stage(tmp_path, ".out.tmp-", "nn-stage")
    (stage / "summary.json").write_text("new")
    with pytest.raises(CommitRefused, match=r"summary\.json was not written by spectro .*the results are in"):
        commit_results(out, stage, "nn-run", "r2")
    assert snapshot(out) == before and (stage / "summary.json").read_text() == "new"


def test_old_markers_verify_nothing(tmp_path):
    """A format /1 marker lists names only: none of its files is spectro's by content."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    (out / MARKER).write_text(json.dumps({"format": "spectro.run/1", "kind": "nn-run", "files": ["summary.json", "*"],
                                          "results": "x"}))
    assert owned_files(out) == {}
    with pytest.warns(KeptFilesWarning):
        remove_owned(out)
    assert (out / "summary.json").read_text() == "{}"


# ---------------------------------------------------------------------------- the commit, killed at every step
class Killed(BaseException):
    pass


def _steps(tmp_path) -> list[str]:
    seen: list[str] = []
    out = tmp_path / "count"
    results_folder(out, OLD)
    stage = new_stage(tmp_path, ".count.tmp-", "nn-stage")
    for rel, data in NEW.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
    original = outputs._step
    outputs._step = seen.append
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KeptFilesWarning)
            commit_results(out, stage, "nn-run", "r2")
    finally:
        outputs._step = original
    return seen


def _prepare_commit(root: Path) -> tuple[Path, Path]:
    out = root / "out"
    results_folder(out, OLD)
    (out / "devinterp" / "my-note.txt").write_text("mine")
    stage = new_stage(root, ".out.tmp-", "nn-stage")
    for rel, data in NEW.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
    return out, stage


def _check_after_recovery(out: Path, stage: Path, journal_written: bool) -> None:
    """After a kill and a recovery the folder holds exactly the old or exactly the new results
    (with the user's note), a marker that verifies every one of them, and nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeptFilesWarning)
        recover(out)
    files = snapshot(out)
    marker = files.pop(MARKER)
    assert files.pop("devinterp/my-note.txt") == b"mine"
    expected = NEW if journal_written else OLD
    assert files == expected, sorted(files)
    assert set(json.loads(marker)["files"]) == set(expected)
    assert set(owned_files(out)) == set(expected)
    assert not (out / JOURNAL).exists()
    if journal_written:
        assert not stage.exists()


def test_commit_killed_at_every_step_leaves_old_or_new_results_never_a_mix(tmp_path):
    steps = _steps(tmp_path)
    assert steps[0] == "journal" and "marker" in steps and len(steps) >= 8
    for k, name in enumerate(steps):
        root = tmp_path / f"k{k}"
        root.mkdir()
        out, stage = _prepare_commit(root)

        def kill(step, k=k, count=[0]):  # noqa: B006 - a counter per kill point
            if count[0] == k:
                raise Killed(step)
            count[0] += 1

        original = outputs._step
        outputs._step = kill
        try:
            with pytest.raises(Killed):
                commit_results(out, stage, "nn-run", "r2")
        finally:
            outputs._step = original
        _check_after_recovery(out, stage, journal_written=k > 0)
        # the next commit into the recovered folder works and the journal of a third run rolls forward
        assert json.loads((out / MARKER).read_text())["results"] == ("r2" if k > 0 else "r1")


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, warnings
    from pathlib import Path
    import spectro.outputs as o
    k, count = int(sys.argv[3]), [0]
    def step(name):
        if count[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        count[0] += 1
    o._step = step
    warnings.simplefilter("ignore")
    o.commit_results(Path(sys.argv[1]), Path(sys.argv[2]), "nn-run", "r2")
""")


@pytest.mark.slow
def test_commit_sigkilled_at_every_step_is_completed_by_the_next_run(tmp_path):
    """The same with a real SIGKILL of a separate process at each step of the commit."""
    steps = _steps(tmp_path)
    for k in range(len(steps) + 1):
        root = tmp_path / f"k{k}"
        root.mkdir()
        out, stage = _prepare_commit(root)
        proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(out), str(stage), str(k)],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
        if k < len(steps):
            assert proc.returncode == -signal.SIGKILL, proc.stderr
        else:
            assert proc.returncode == 0, proc.stderr
        _check_after_recovery(out, stage, journal_written=k > 0)


def test_a_run_completes_the_commit_a_killed_run_left(tmp_path, capsys):
    """A journal left in an ising map folder is completed by the next ``spectro`` run on it
    (before its own checks), so the refused run still sees one run's results."""
    out = tmp_path / "o"
    results_folder(out, {"summary.json": b"1", "chi_map.npz": b"1"}, kind="ising-map")
    stage = new_stage(out, ".spectro-stage-")
    (stage / "summary.json").write_bytes(b"2")
    (stage / "chi_map.npz").write_bytes(b"2")
    original = outputs._step
    outputs._step = lambda name: (_ for _ in ()).throw(Killed()) if name == "move summary.json" else None
    try:
        with pytest.raises(Killed):
            commit_results(out, stage, "ising-map", "r2")
    finally:
        outputs._step = original
    assert (out / "chi_map.npz").read_bytes() == b"2" and not (out / "summary.json").exists()  # mid-commit
    one_line_error(capsys, MAP + ["--out", str(out)], "--overwrite")
    assert snapshot(out).keys() == {MARKER, "summary.json", "chi_map.npz"}
    assert (out / "summary.json").read_bytes() == b"2" and (out / "chi_map.npz").read_bytes() == b"2"


# ---------------------------------------------------------------------------- locks follow the folder
def test_locks_hold_the_folder_under_any_spelling(tmp_path, capsys):
    out = tmp_path / "o"
    (out / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(out)
    held = Lock(out).acquire()
    try:
        for spelling in (tmp_path / "link", out / "sub" / "..", tmp_path / "link" / "sub" / ".."):
            with pytest.raises(OutputError, match="in use by another spectro run"):
                Lock(spelling).acquire()
        (out / "sub").rmdir()
        one_line_error(capsys, MAP + ["--out", str(tmp_path / "link")], "in use")
    finally:
        held.release()
    assert not list(tmp_path.glob(".*.lock"))


def test_a_lock_is_free_once_its_process_dies_and_a_foreign_host_lock_says_how_to_remove_it(tmp_path, capsys):
    out = tmp_path / "o"
    code = (f"import sys, time; sys.path.insert(0, {str(REPO)!r}); from spectro.outputs import Lock; "
            f"Lock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=f"process {proc.pid}"):
            Lock(out).acquire()
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(OutputError, match="stale lock"):  # the lock file stays, but no process holds it
        Lock(out).acquire()
    Lock(out, take_over_stale=True).acquire().release()
    lock = tmp_path / ".o.lock"
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    line = one_line_error(capsys, MAP + ["--out", str(out)], "another host")
    assert f"rm {lock}" in line


# ---------------------------------------------------------------------------- folders the user made
def test_an_empty_user_folder_keeps_its_inode_and_mode(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    os.chmod(out, 0o2750)  # setgid and a restrictive mode: lost if the folder were recreated
    before = os.stat(out)
    assert main(MAP + ["--out", str(out)]) == 0
    after = os.stat(out)
    assert (after.st_ino, after.st_mode, after.st_gid) == (before.st_ino, before.st_mode, before.st_gid)
    assert (out / "summary.json").is_file()
    # a failed run into an empty user folder leaves it as it was (empty, same inode and mode)
    empty = tmp_path / "empty"
    empty.mkdir()
    os.chmod(empty, 0o700)
    one_line_error(capsys, MAP + ["--out", str(empty), "--checkpoint", str(tmp_path / "nowhere" / "s.pt")])
    assert empty.is_dir() and not any(empty.iterdir()) and stat.S_IMODE(os.stat(empty).st_mode) == 0o700


def test_an_empty_user_checkpoint_folder_is_kept(tmp_path):
    from spectro.jobs.resume import CHECKPOINT_KIND

    mine, new = tmp_path / "mine", tmp_path / "new"
    mine.mkdir()
    for folder in (mine, new):
        claim_folder(folder, CHECKPOINT_KIND, "checkpoint folder", outputs.KINDS[CHECKPOINT_KIND])
        (folder / "rank0.pt").write_bytes(b"snapshot")
        remove_owned(folder)
    assert mine.is_dir() and not any(mine.iterdir())
    assert not new.exists()


def test_sigterm_before_the_first_snapshot_leaves_no_folder(tmp_path, capsys, monkeypatch):
    import spectro.ising.susceptibility as sus
    from spectro.jobs.cli import Terminated

    def terminated(*a, **kw):
        raise Terminated()

    monkeypatch.setattr(sus, "chamber_susceptibility", terminated)
    assert main(MAP + ["--out", str(tmp_path / "o")]) == 143
    assert "terminated" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- symlinks and other file systems
def test_a_symlinked_out_is_written_through_and_stays_a_symlink(tmp_path, capsys):
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    assert main(MAP + ["--out", str(link)]) == 0
    assert link.is_symlink() and (target / "summary.json").is_file()
    assert main(MAP + ["--out", str(link), "--overwrite", "--seed", "5"]) == 0
    assert link.is_symlink() and json.loads((target / "config.json").read_text())["sampler"]["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    one_line_error(capsys, MAP + ["--out", str(dangling)], "dangling symbolic link")


def test_an_out_on_another_file_system(tmp_path):
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev or not os.access(other, os.W_OK):
        pytest.skip("no second writable file system (/dev/shm)")
    target = Path(__import__("tempfile").mkdtemp(dir=other))
    try:
        (tmp_path / "link").symlink_to(target)
        assert main(MAP + ["--out", str(tmp_path / "link")]) == 0
        assert (target / "summary.json").is_file() and (tmp_path / "link").is_symlink()
    finally:
        import shutil

        shutil.rmtree(target, ignore_errors=True)


# ---------------------------------------------------------------------------- every writer asks before replacing
def test_the_ising_demo_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "o"
    results_folder(out, {"summary.json": b"an earlier run", "chi_map.npz": b"x"}, kind="ising-map")
    before = snapshot(out)
    one_line_error(capsys, ["ising", "demo", "--out", str(out), "--no-progress"], "--overwrite")
    assert snapshot(out) == before


def test_the_nn_demo_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "o"
    results_folder(out, {"summary.json": b"an earlier run", "chi_full.npz": b"x"})
    before = snapshot(out)
    one_line_error(capsys, ["nn", "demo", "--out", str(out), "--no-progress"], "--overwrite")
    assert snapshot(out) == before


def test_run_folder_refuses_a_user_file_at_a_result_name_before_sampling(tmp_path):
    out = tmp_path / "o"
    results_folder(out, {"summary.json": b"1", "chi_map.npz": b"1"}, kind="ising-map")
    (out / "chi_map.npz").write_bytes(b"the user replaced it")
    with pytest.raises(OutputError, match="chi_map.npz was not written by spectro"):
        with RunFolder(out, "ising-map", [], overwrite=True, result_files=["chi_map.npz", "summary.json"]):
            pass


# ---------------------------------------------------------------------------- full disks and deep configs
def _enospc(*a, **kw):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _writers(tmp_path):
    """One call per kind of file spectro writes: snapshot, npz, png, zarr, json."""
    import torch

    from spectro.engine import Susceptibility
    from spectro.io import write_json

    one = np.ones((1, 2))
    res = Susceptibility(chi=one, stderr=one, stderr_chains=one, ess=100 * one, rhat=one, observable_mean=np.ones(1),
                         observable_stderr=np.ones(1), field_mean=np.ones(2), field_stderr=np.ones(2),
                         observables=["a"], fields=["tok:base[0,0]", "tok:base[0,1]"], scale=1.0, n_chains=2,
                         n_draws=10)

    def png(path):
        import matplotlib.pyplot as plt

        from spectro.analysis.plots import save_figure

        fig = plt.figure()
        save_figure(fig, path)

    def zarr(path):
        from spectro.jobs.export import write_susceptibilities

        write_susceptibilities(path, {"full": res}, {"base": np.zeros((1, 3), dtype=np.int64)}, observable="a")

    return {
        "snapshot": (tmp_path / "s.pt", lambda p: save_snapshot(p, "k", {"t": torch.ones(2)})),
        "npz": (tmp_path / "chi.npz", res.save),
        "png": (tmp_path / "f.png", png),
        "json": (tmp_path / "x.json", lambda p: write_json(p, {"a": 1})),
        "zarr": (tmp_path / "s.zarr", zarr),
    }


@pytest.mark.parametrize("kind", ["snapshot", "npz", "png", "json", "zarr"])
def test_a_full_disk_is_one_line_naming_the_file(kind, tmp_path, monkeypatch):
    from spectro.io import DiskError

    path, write = _writers(tmp_path)[kind]
    if kind != "zarr":  # the previous file stays intact
        path.write_bytes(b"previous")
        monkeypatch.setattr(os, "fsync", _enospc)
    else:
        import zarr.storage

        monkeypatch.setattr(zarr.storage.LocalStore, "set", lambda *a, **kw: _enospc())
    with pytest.raises(DiskError) as info:
        write(path)
    assert str(info.value) == f"cannot write {path}: no space left on the device (free some space, or write elsewhere)"
    if kind != "zarr":
        assert path.read_bytes() == b"previous"
        assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_a_library_error_on_a_full_disk_says_no_space_left(tmp_path, monkeypatch):
    """torch.save reports a full disk as RuntimeError("... file write failed"): checked against the free space."""
    import torch

    from spectro.io import DiskError

    def failing_save(obj, f, *a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: "
                           "file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    full = os.statvfs_result((4096, 4096, 100, 0, 0, 100, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda p: full)
    with pytest.raises(DiskError, match="s.pt: no space left"):
        save_snapshot(tmp_path / "s.pt", "k", {})
    monkeypatch.setattr(os, "statvfs", lambda p: os.statvfs_result((4096, 4096, 10**9, 10**9, 10**9, 100, 0, 0, 0, 255)))
    with pytest.raises(RuntimeError, match="file write failed"):  # not a full disk: not claimed to be one
        save_snapshot(tmp_path / "s.pt", "k", {})


def test_a_full_disk_during_a_run_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    snap = tmp_path / "s.pt"
    monkeypatch.setattr(os, "fsync", _enospc)
    line = one_line_error(capsys, MAP + ["--out", str(tmp_path / "o"), "--checkpoint", str(snap)], "no space left")
    assert str(tmp_path / "o") in line or str(snap) in line


@pytest.mark.parametrize("suffix, text", [
    (".json", '{"system": "ising", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    (".json", '{"system": "nn", "x": ' + "[" * 200 + "]" * 200 + "}"),
    (".toml", "system = 'ising'\nx = " + "[" * 100_000 + "]" * 100_000 + "\n"),
])
def test_a_deeply_nested_config_is_one_line(suffix, text, tmp_path, capsys):
    cfg = tmp_path / f"c{suffix}"
    cfg.write_text(text)
    one_line_error(capsys, ["run", str(cfg), "--out", str(tmp_path / "o")], "too deeply")
    assert sorted(p.name for p in tmp_path.iterdir()) == [cfg.name]


def test_config_errors_name_the_file_and_keys(tmp_path, capsys):
    one_line_error(capsys, ["run", "/dev/null", "--out", str(tmp_path / "o")], "not a regular file")
    one_line_error(capsys, ["run", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")], "does not exist")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"system": "ising", "beta": 0.4, "lattice": {"height": 8, "width": 8},
                               "probes": {"size": 4}, "run": {"sweeps": 8, "thin": 4}}))
    line = one_line_error(capsys, ["run", str(cfg), "--out", str(tmp_path / "o")], "run.thin")
    assert "--thin" not in line and "run.sweeps" in line
