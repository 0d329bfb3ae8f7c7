#!/usr/bin/env python
"""Per-token susceptibility vectors of every attention head: PCA, token classes, domains, induction heads.

    python experiments/susceptibility_study.py --out runs/susceptibility-study            # builtin:tiny, ≈1.5 min on 2 cores
    python experiments/susceptibility_study.py --sampler-seeds 0 1 --train-steps 250 500  # stability: SGLD seeds, checkpoints
    python experiments/susceptibility_study.py --checkpoint runs/transformer --seeds 0 1 2  # trained models (train_transformer.py)
    python experiments/susceptibility_study.py --job runs/nn-demo                         # analyse existing job folders only

For every run (checkpoint × SGLD seed) a job (:mod:`spectro.jobs.nn_job`: Baker et al.'s per-token
component susceptibility of every head and the full model on ``--per-domain`` probe sequences of
each domain, devinterp export on) is run into ``OUT/jobs/<label>/`` — or reused when that folder
already holds a finished job with the same config — and analysed with
:func:`spectro.analysis.study.analyse_job`: per-layer standardised PCA with token-bootstrap and
noise-perturbation spreads and the pure-noise floor; Baker's χ split into its covariance and offset
parts (from the per-draw losses); token-class and domain separation; dataset-level χ per
(component, domain); the independent induction-head detector against PC loadings. With two or more
runs on the same probe tokens it also compares them (:func:`compare_runs`).

``--checkpoint`` takes ``builtin:tiny`` (default; ``--train-steps`` picks checkpoints after that
many training steps), a checkpoint folder (``checkpoints/step_*``), a training run folder (its last
checkpoint), or a ``train_transformer.py`` output folder (``--seeds`` picks ``seed_<s>``; default
all). Output: ``OUT/results.json`` (every number, the command, the machine, timings),
``OUT/<label>_tokens.csv`` (one row per probe token: domain, sample, position, token, class, χ and
stderr per head), figures ``OUT/<label>_*.png``, and ``OUT/jobs/`` (or ``--jobs-dir``: several studies can
share their jobs). Labels: ``<model>-steps<N>-sgld<seed>`` for built-ins, ``<folder>-sgld<seed>`` otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path


from spectro.analysis.compare import compare_runs
from spectro.analysis.study import analyse_job, write_figures
from spectro.analysis.token_table import to_jsonable
from spectro.io import atomic_path, write_json


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/susceptibility-study"))
    p.add_argument("--checkpoint", nargs="+", default=["builtin:tiny"], help="builtin:tiny, checkpoint/run/train_transformer folders")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="model seeds inside a train_transformer.py output folder")
    p.add_argument("--sampler-seeds", type=int, nargs="+", default=[0], help="SGLD seeds: one job per seed and checkpoint")
    p.add_argument("--train-steps", type=int, nargs="+", default=None, help="builtin only: training steps of the checkpoint(s)")
    p.add_argument("--job", type=Path, nargs="+", default=None, help="analyse these existing results folders (no sampling)")
    p.add_argument("--jobs-dir", type=Path, default=None, help="where job folders live / are reused (default OUT/jobs)")
    p.add_argument("--per-domain", type=int, default=8, help="probe sequences per domain")
    p.add_argument("--context", type=int, default=32, help="tokens per probe sequence (≤ the model's n_ctx)")
    p.add_argument("--draws", type=int, default=50)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16, help="SGLD minibatch (sequences)")
    p.add_argument("--corpus", default="fixture", help="probe/training text: 'fixture' (shipped) or a build_corpus.py folder")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of the jobs")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap / noise resamples")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


# ------------------------------------------------------------------ runs
def _latest_step(folder: Path) -> Path:
    steps = sorted((folder / "checkpoints").glob("step_*"))
    if not steps:
        raise SystemExit(f"susceptibility_study: {folder} has no checkpoints/step_* folder")
    return steps[-1]


def resolve_checkpoints(specs: list[str], seeds: list[int] | None, train_steps: list[int] | None) -> list[tuple[str, dict]]:
    """(label, model spec of the job config) for every checkpoint asked for."""
    out = []
    for spec in specs:
        if spec.startswith("builtin:"):
            from spectro.jobs.builtin import BUILTIN_MODELS

            name = spec.split(":", 1)[1]
            if name not in BUILTIN_MODELS:
                raise SystemExit(f"susceptibility_study: unknown built-in {spec!r}; built-ins: {sorted(BUILTIN_MODELS)}")
            default = BUILTIN_MODELS[name].steps
            for steps in train_steps or [default]:
                out.append((f"{name}-steps{steps}", {"checkpoint": spec, **({"train_steps": steps} if steps != default else {})}))
            continue
        path = Path(spec)
        if (path / "model.safetensors").is_file():
            out.append((path.parent.parent.name + "-" + path.name if path.parent.name == "checkpoints" else path.name,
                        {"checkpoint": str(path.resolve())}))
        elif (path / "checkpoints").is_dir():
            out.append((path.name, {"checkpoint": str(_latest_step(path).resolve())}))
        else:
            found = sorted(path.glob("seed_*"), key=lambda p: int(p.name.split("_")[1]) if p.name.split("_")[1].isdigit() else 0)
            if seeds is not None:
                found = [path / f"seed_{s}" for s in seeds]
            if not found or any(not f.is_dir() for f in found):
                raise SystemExit(f"susceptibility_study: {path} is neither a checkpoint, a run folder nor a folder with seed_* runs")
            for f in found:
                out.append((f"{path.name}-{f.name}", {"checkpoint": str(_latest_step(f).resolve())}))
    return out


def job_config(model: dict, seed: int, args: argparse.Namespace, label: str) -> dict:
    from spectro.jobs.nn_job import DEMO_CONFIG

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["name"] = f"susceptibility-study/{label}"
    cfg["description"] = "per-token component susceptibilities of every head (experiments/susceptibility_study.py)"
    cfg["model"] = dict(model)
    cfg["data"]["context"] = args.context
    cfg["probes"]["per_domain"] = args.per_domain
    cfg["sampler"].update({"seed": seed, "draws": args.draws, "chains": args.chains, "batch_size": args.batch_size})
    cfg["data"]["corpus"] = args.corpus
    cfg["threads"] = args.threads
    cfg["export"] = {"devinterp": True, "max_mb": 512.0}
    return cfg


def _same_job(folder: Path, cfg: dict) -> bool:
    """A finished job whose config matches on everything that changes the numbers."""
    if not (folder / "summary.json").is_file() or not (folder / "config.json").is_file():
        return False
    have = json.loads((folder / "config.json").read_text())
    want_model = dict(cfg["model"])
    if not want_model["checkpoint"].startswith("builtin:"):
        want_model["checkpoint"] = str(Path(want_model["checkpoint"]).resolve())
    same_sampler = all(have.get("sampler", {}).get(k) == v for k, v in cfg["sampler"].items())
    return (have.get("model") == want_model and same_sampler and have["probes"]["per_domain"] == cfg["probes"]["per_domain"]
            and have["data"]["context"] == cfg["data"]["context"] and have.get("components") == cfg["components"]
            and have["data"].get("corpus", "fixture") == cfg["data"]["corpus"]
            and (folder / "devinterp").is_dir())


def ensure_job(folder: Path, cfg: dict, progress: bool) -> tuple[Path, float, bool]:
    from spectro.jobs.nn_job import run_job

    if _same_job(folder, cfg):
        return folder, 0.0, True
    t0 = time.perf_counter()
    run_job(cfg, folder, overwrite=True, progress=progress)
    return folder, time.perf_counter() - t0, False


# ------------------------------------------------------------------ output
def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def write_tokens_csv(table, path: Path) -> None:
    heads = table.heads()
    cols = table.columns(heads)
    lines = ["domain,sample,position,token_id,text,class,surface,induction," + ",".join(f"chi_{h},se_{h}" for h in heads)
             + ("," + ",".join(f"cov_{h}" for h in heads) if table.offset is not None else "")]
    for r in range(table.n_tokens):
        text = json.dumps(str(table.text[r]), ensure_ascii=False)
        cells = [table.domain[r], str(table.sample[r]), str(table.position[r]), str(table.token_id[r]), text, table.cls[r],
                 table.surface[r], str(int(table.induction[r]))]
        cells += [f"{table.chi[r, k]:.6g},{table.stderr[r, k]:.3g}" for k in cols]
        if table.offset is not None:
            cells += [f"{table.chi[r, k] - table.offset[r, k]:.6g}" for k in cols]
        lines.append(",".join(cells))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def headline(label: str, rep: dict) -> str:
    v = rep["verdicts"]
    lines = [f"== {label}: {rep['n_tokens']} probe tokens, components {', '.join(rep['components'])}"]
    for g, d in v["dominant_pc1"].items():
        lines.append(f"  {g}: PC1(χ) = {d['pc1']:.4f} ± {d['pc1_std']:.4f}  (noise floor 97.5% {d['noise_floor_q975']:.3f})")
    if "pc1_is_offset" in v:
        o = v["pc1_is_offset"]
        lines.append(f"  Baker offset: median r(χ, offset) = {o['median_r_chi_offset']:.6f}, var(cov)/var(χ) = {o['median_var_cov_over_var_chi']:.2e}")
        for g, d in o["per_layer"].items():
            lines.append(f"  {g}: PC1(offset) = {d['pc1_offset']:.4f}; PC1(cov part) = {d['pc1_cov_part']:.3f} ± {d['pc1_cov_part_std']:.3f} "
                         f"(floor {d['cov_part_noise_floor_q975']:.3f})")
    for k, c in v["classes_cluster"].items():
        lines.append(f"  classes {k}: η²(PC1) = {c['eta2_pc1']:.3f} (p {c['p_pc1']:.3g}), η²(PC2) = {c['eta2_pc2']:.3f} (p {c['p_pc2']:.3g})")
    if "induction_heads" in v:
        i = v["induction_heads"]
        lines.append(f"  induction detector: max score {i['max_induction_score']:.4f} vs uniform {i['uniform_baseline']:.4f}; "
                     f"heads > 2x uniform: {i['detector_heads'] or 'none'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    t_start = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[str, Path, float, bool]] = []
    if args.job:
        for j in args.job:
            if not (j / "summary.json").is_file():
                raise SystemExit(f"susceptibility_study: {j} is not a finished job results folder (no summary.json)")
            runs.append((j.name, j, 0.0, True))
    else:
        jobs_dir = args.jobs_dir or out / "jobs"
        jobs_dir.mkdir(parents=True, exist_ok=True)
        for label, model in resolve_checkpoints(args.checkpoint, args.seeds, args.train_steps):
            for s in args.sampler_seeds:
                lab = f"{label}-sgld{s}"
                print(f"job {lab} …", file=sys.stderr, flush=True)
                folder, secs, reused = ensure_job(jobs_dir / lab, job_config(model, s, args, lab), not args.no_progress)
                print(f"job {lab}: {'reused' if reused else f'{secs:.0f} s'}", file=sys.stderr, flush=True)
                runs.append((lab, folder, secs, reused))

    results: dict = {"command": " ".join(shlex.quote(a) for a in [sys.executable.split('/')[-1], *sys.argv]) if argv is None
                     else "susceptibility_study " + " ".join(map(shlex.quote, argv)),
                     "machine": machine(), "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "runs": {}}
    tables = {}
    for label, folder, secs, reused in runs:
        t0 = time.perf_counter()
        rep, table, pcas = analyse_job(folder, n_boot=args.n_boot)
        tables[label] = table
        rep["job_seconds"] = secs
        rep["job_reused"] = reused
        if not args.no_figures:
            rep["figures"] = [p.name for p in write_figures(rep, table, pcas, out, prefix=label, title=f"{label}")]
        write_tokens_csv(table, out / f"{label}_tokens.csv")
        rep["analysis_seconds"] = time.perf_counter() - t0
        results["runs"][label] = rep
        print(headline(label, rep), flush=True)
    if len(tables) > 1:
        try:
            results["stability"] = compare_runs(tables)
            for pair, e in results["stability"]["pairs"].items():
                print(f"  stability {pair}: r(χ) median {e['r_chi_per_component_median']:.4f}, r(cov part) "
                      f"{e.get('r_cov_part_per_component_median', float('nan')):.3f}, r(dataset χ) {e['r_dataset_chi']:.4f}, "
                      f"r(relative profile) {e['r_relative_profile']:.3f}, r(profile shape) {e['r_profile_shape']:.3f}", flush=True)
        except ValueError as e:
            results["stability"] = {"error": str(e)}
    results["seconds"] = time.perf_counter() - t_start
    from spectro.engine.susceptibility import environment_versions

    results["versions"] = environment_versions()
    write_json(out / "results.json", to_jsonable(results))
    print(f"wrote {out}/results.json ({results['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
