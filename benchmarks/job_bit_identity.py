"""Bit-identity of `spectro nn run` outputs between two source trees (a refactoring check).

Runs the same small jobs (builtin:tiny, a few draws) with ``PYTHONPATH=<tree>`` for each tree and
compares every output exactly: each chi_*.npz array (bytes), the npz header's meta (less wall
seconds and versions), summary.json (less seconds), the devinterp zarr arrays. Cases: full +
heads with φ_C (Baker rows) and the devinterp export; heads only without φ_C; φ_C with one head
and no export; a job SIGKILLed after its first component and resumed (new tree, in one process
and under a 2-process torchrun) against an uninterrupted run (old tree, one process); a 2-process
torchrun (new tree) against the old tree's, and against one process (old tree).

    python benchmarks/job_bit_identity.py --old /tmp/old-tree --new . --work runs/identity

Prints one line per case and compared file; exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

BASE = {
    "system": "nn",
    "name": "identity",
    "data": {"corpus": "fixture", "domains": ["code", "prose"], "context": 12, "train_sequences": 32},
    "probes": {"base": 4, "per_domain": 2},
    "fields": ["tokens", "subset"],
    "sampler": {"chains": 4, "draws": 8, "batch_size": 8, "nbeta": 10.0, "gamma": 1000.0, "epsilon": 1e-4,
                "n_batches": 4, "seed": 5},
    "threads": 1,
}
PHI = ["component_loss", {"type": "mean_loss", "domain": "code"}]
CASES = {
    "full+heads, phi_C, devinterp": {"observables": PHI, "components": ["full", "l0h1", "l1h2"],
                                     "export": {"devinterp": True}},
    "heads only, no phi_C": {"observables": [{"type": "mean_loss", "domain": "prose"}], "components": ["l0h0", "l1h3"],
                             "export": {"devinterp": False}},
    "phi_C, one head, no export": {"observables": ["component_loss"], "components": ["l0h2"],
                                   "export": {"devinterp": False}},
}
# wall time, library versions, process count, and the per-process counters of the frozen-prefix
# memo cache (a resumed or torchrun process starts with its own empty cache; the old code counts the same)
UNSTABLE = {"seconds", "versions", "timing", "processes", "memo_hits", "memo_misses"}


def _env(tree: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    return env


def _job(tree: Path, config: Path, out: Path, *extra: str, torchrun: bool = False, wait: bool = True):
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "spectro", "run",
                str(config)] if torchrun else ["-m", "spectro", "nn", "run", "--config", str(config)]
    cmd = [sys.executable, *launcher, "--out", str(out), "--no-progress", *extra]
    if not wait:
        return subprocess.Popen(cmd, env=_env(tree), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p = subprocess.run(cmd, env=_env(tree), capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return p


def _process(pid: int):
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in UNSTABLE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def compare(a: Path, b: Path) -> list[str]:
    """Differences between two results folders (empty: identical up to wall seconds and versions)."""
    diffs = []
    names = sorted(p.name for p in a.glob("chi_*.npz"))
    if names != sorted(p.name for p in b.glob("chi_*.npz")) or not names:
        return [f"chi files differ: {names} vs {sorted(p.name for p in b.glob('chi_*.npz'))}"]
    for name in names:
        with np.load(a / name) as x, np.load(b / name) as y:
            if sorted(x.files) != sorted(y.files):
                diffs.append(f"{name}: arrays {sorted(x.files)} vs {sorted(y.files)}")
                continue
            for key in x.files:
                if key == "header":
                    hx, hy = json.loads(str(x[key])), json.loads(str(y[key]))
                    for part in hx:
                        if _strip(hx[part]) != _strip(hy.get(part)):
                            diffs.append(f"{name}: header[{part!r}] differs: {json.dumps(_strip(hx[part]))[:300]} vs "
                                         f"{json.dumps(_strip(hy.get(part)))[:300]}")
                elif x[key].dtype != y[key].dtype or x[key].shape != y[key].shape or x[key].tobytes() != y[key].tobytes():
                    diffs.append(f"{name}: array {key} differs")
    sx, sy = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    if _strip(sx) != _strip(sy):
        diffs.append("summary.json differs (beyond seconds and versions)")
    za, zb = a / "devinterp", b / "devinterp"
    if za.exists() or zb.exists():
        import zarr

        fa = sorted(str(p.relative_to(za)) for p in za.rglob("*") if p.is_file())
        fb = sorted(str(p.relative_to(zb)) for p in zb.rglob("*") if p.is_file())
        if fa != fb:
            diffs.append(f"devinterp files differ: {fa} vs {fb}")
        for store in sorted(za.glob("*.zarr")):
            ga, gb = zarr.open_group(str(store), mode="r"), zarr.open_group(str(zb / store.name), mode="r")
            if _strip(dict(ga.attrs)) != _strip(dict(gb.attrs)):
                diffs.append(f"{store.name}: attributes differ")
            for path, arr in ga.arrays():
                other = gb[path][...]
                if arr.dtype != other.dtype or arr[...].tobytes() != other.tobytes():
                    diffs.append(f"{store.name}/{path} differs")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--new", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--skip", nargs="*", default=[],
                    help="cases to skip: resume, torchrun-resume, torchrun, or a case name")
    args = ap.parse_args()
    old, new, work = args.old.resolve(), args.new.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(new))
    from spectro.jobs.builtin import builtin_checkpoint

    ckpt = builtin_checkpoint("tiny", work / "cache", steps=8, progress=False, log=lambda m: None)
    failed = False

    def config(i: int, case: dict, draws: int | None = None) -> Path:
        cfg = {**BASE, **case, "model": {"checkpoint": str(ckpt)}}
        if draws is not None:
            cfg["sampler"] = {**cfg["sampler"], "draws": draws, "chains": 2}
        path = work / f"case{i}_{draws}.json"
        path.write_text(json.dumps(cfg))
        return path

    def report(label: str, a: Path, b: Path) -> None:
        nonlocal failed
        diffs = compare(a, b)
        failed |= bool(diffs)
        print(f"{label}: {'identical' if not diffs else 'DIFFERENT'} "
              f"({len(list(a.glob('chi_*.npz')))} chi files{', devinterp' if (a / 'devinterp').exists() else ''})")
        for d in diffs:
            print("   ", d)

    for i, (label, case) in enumerate(CASES.items()):
        if label in args.skip:
            continue
        path = config(i, case)
        for tag, tree in (("old", old), ("new", new)):
            _job(tree, path, work / f"case{i}_{tag}", "--no-checkpoint", "--overwrite")
        report(label, work / f"case{i}_old", work / f"case{i}_new")

    resume_cfg = config(0, CASES["full+heads, phi_C, devinterp"], draws=250)
    for torchrun in (False, True):  # kill the new tree's job once its first component is finished, then --resume
        label = "torchrun-resume" if torchrun else "resume"
        if label in args.skip:
            continue
        ref, out = work / "resume_old", work / f"{label}_new"
        if not ref.exists():
            _job(old, resume_cfg, ref, "--no-checkpoint", "--overwrite")
        ck = Path(f"{out}.checkpoint")
        proc = _job(new, resume_cfg, out, "--checkpoint-every", "0.05", wait=False, torchrun=torchrun)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not (ck / "snapshot.l0h1").exists():
            time.sleep(0.02)
        time.sleep(0.3)
        killed = proc.poll() is None
        victims = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]  # torchrun's
        for pid in victims:  # workers run in sessions of their own
            os.kill(pid, signal.SIGKILL)
        proc.wait()
        psutil.wait_procs([p for p in map(_process, victims) if p is not None], timeout=60)
        if not killed:
            sys.exit(f"the {label} case finished before it was killed; raise its draws")
        import torch

        state = {p.name: "finished" if "finished" in torch.load(p, weights_only=True) else "in progress"
                 for p in sorted(ck.glob("snapshot.*"))}
        print(f"{label}: killed with {state}")
        _job(new, resume_cfg, out, "--checkpoint-every", "0.05", "--resume", torchrun=torchrun)
        report(f"SIGKILL after the first component, --resume ({'2-process torchrun, ' if torchrun else ''}new) "
               "vs uninterrupted (1 process, old)", ref, out)

    if "torchrun" not in args.skip:
        path = config(0, CASES["full+heads, phi_C, devinterp"])
        for tag, tree in (("old", old), ("new", new)):
            _job(tree, path, work / f"torchrun_{tag}", "--overwrite", torchrun=True)
        report("2-process torchrun: new vs old", work / "torchrun_old", work / "torchrun_new")
        report("2-process torchrun (new) vs 1 process (old)", work / "case0_old", work / "torchrun_new")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
