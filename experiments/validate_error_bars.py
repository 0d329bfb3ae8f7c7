"""Error bars on a network (issue 24, item 2): S independent SGLD seeds of one checkpoint, then
for every reported quantity — per-domain χ of each component (fields ``dL:<domain>``), per-token χ
(``tok:…``), the LLC — compare the seed-to-seed scatter with the reported stderr.

Per quantity class and component:

* ``scatter/se``: sd over seeds of the estimate / rms of the reported stderr, pooled over entries
  (a ratio of rms's), with its uncertainty from a delete-one-seed jackknife (entries stay paired);
  1 means calibrated, > 1 under-reported error.
* pairwise coverage: over all seed pairs (s, t) and unflagged entries, the share with
  |x_s − x_t| ≤ t_{0.975, ν}·√(se_s² + se_t²), ν by Welch–Satterthwaite from the entries' dof
  (the dof rule and the flag policy are the engine's, frozen: nothing here is tuned); nominal 95 %.
* share flagged.

The jobs are ordinary ``spectro nn run`` jobs (:func:`spectro.jobs.nn_job.run_job`) with the
Part A settings (docs/results.md, ``experiments/susceptibility_study.py``) unless overridden;
finished job folders are reused, so the script can be cut into pieces (``--seeds 0 1 2``, later
``--seeds 3 4 5``, then ``--analyse-only``).

    python experiments/validate_error_bars.py --checkpoint builtin:tiny --out runs/validate-errors-tiny \\
        --seeds 0 1 2 3 4 5 6 7 8 9 --chains 4 --draws 40
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats


def add_run_size(p: argparse.ArgumentParser) -> None:
    """The run-size options shared by the validation scripts (Part A's size by default)."""
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--draws", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--per-domain", type=int, default=4)
    p.add_argument("--context", type=int, default=32)
    p.add_argument("--components", nargs="+", default=["full", "l0h0", "l1h0"])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="builtin:tiny")
    p.add_argument("--corpus", default="fixture")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    add_run_size(p)
    p.add_argument("--epsilon", type=float, default=None)
    p.add_argument("--gamma", type=float, default=None)
    p.add_argument("--nbeta", type=float, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--analyse-only", action="store_true", help="only read the finished job folders")
    return p


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "logical_cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "Flags"):
                info[k.strip()] = v.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def job_config(args: argparse.Namespace, seed: int) -> dict:
    from spectro.jobs.nn_job import DEMO_CONFIG

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["name"] = f"validate-error-bars/seed{seed}"
    cfg["model"] = {"checkpoint": args.checkpoint if args.checkpoint.startswith("builtin:") else str(Path(args.checkpoint).resolve())}
    cfg["data"].update({"corpus": args.corpus, "context": args.context})
    cfg["probes"]["per_domain"] = args.per_domain
    cfg["components"] = list(args.components)
    cfg["sampler"].update({"seed": seed, "chains": args.chains, "draws": args.draws, "batch_size": args.batch_size})
    for k in ("epsilon", "gamma", "nbeta"):
        if getattr(args, k) is not None:
            cfg["sampler"][k] = getattr(args, k)
    cfg["threads"] = args.threads
    cfg["export"] = {"devinterp": False}
    return cfg


def load_seed(folder: Path) -> dict:
    """component → {"domain": (x, se, dof, flagged), "token": (...), "llc": (x, se, dof)}."""
    from spectro.engine import Susceptibility

    summary = json.loads((folder / "summary.json").read_text())
    out = {}
    for name, comp in summary["components"].items():
        sus = Susceptibility.load(folder / f"chi_{name}.npz")
        kinds = {"domain": [a for a, f in enumerate(sus.fields) if f.startswith("dL:")],
                 "token": [a for a, f in enumerate(sus.fields) if f.startswith("tok:")]}
        rec = {}
        for kind, cols in kinds.items():
            rec[kind] = tuple(np.asarray(getattr(sus, k))[:, cols].ravel() for k in ("chi", "stderr", "dof")) + \
                (np.asarray(sus.flags)[:, cols].ravel() != 0,)
        rec["llc"] = (np.array([comp["llc"]]), np.array([comp["llc_stderr"]]), np.array([comp.get("llc_dof") or np.inf]),
                      np.array([False]))
        out[name] = rec
    return out


def analyse(per_seed: list[dict]) -> tuple[dict, dict]:
    """The report per "component|kind", and the pairwise z's (unflagged, flagged) for the figure."""
    report, pair_z = {}, {}
    for comp in per_seed[0]:
        for kind in per_seed[0][comp]:
            x = np.stack([s[comp][kind][0] for s in per_seed])  # [S, E]
            se = np.stack([s[comp][kind][1] for s in per_seed])
            dof = np.stack([s[comp][kind][2] for s in per_seed])
            flag = np.stack([s[comp][kind][3] for s in per_seed])
            S = x.shape[0]

            def ratio(idx: np.ndarray) -> float:
                xs, ss = x[idx], se[idx]
                return float(np.sqrt(np.mean(xs.var(axis=0, ddof=1)) / np.mean(ss**2)))

            r = ratio(np.arange(S))
            # delete-one-seed jackknife (a bootstrap with replacement duplicates seeds, which biases a
            # spread low: at S = 10 by ≈ √0.9)
            jk = np.array([ratio(np.delete(np.arange(S), j)) for j in range(S)]) if S > 2 else np.full(1, np.nan)
            jk_sd = float(np.sqrt((S - 1) / S * np.sum((jk - jk.mean()) ** 2)))
            z_ok, z_flag = [], []  # pairwise differences on the normal scale: t_ν quantile → Φ⁻¹
            for s, t in itertools.combinations(range(S), 2):
                ok = ~(flag[s] | flag[t])
                v_s, v_t = se[s] ** 2, se[t] ** 2
                nu = (v_s + v_t) ** 2 / (v_s**2 / dof[s] + v_t**2 / dof[t])
                nu = np.where(np.isfinite(nu), nu, 1e9)
                z = stats.norm.ppf(stats.t.cdf((x[s] - x[t]) / np.sqrt(v_s + v_t), nu))
                z_ok.append(z[ok])
                z_flag.append(z[~ok])
            z_ok, z_flag = np.concatenate(z_ok), np.concatenate(z_flag)
            z_ok, z_flag = z_ok[np.isfinite(z_ok)], z_flag[np.isfinite(z_flag)]
            q95 = stats.norm.ppf(0.975)  # |t| ≤ t_0.975,ν  ⇔  |z| ≤ 1.96
            report[f"{comp}|{kind}"] = {
                "entries": int(x.shape[1]), "seeds": S, "scatter_over_se": r,
                "scatter_over_se_jackknife_sd": jk_sd,
                "pairwise_coverage_95": float(np.mean(np.abs(z_ok) <= q95)) if z_ok.size else float("nan"),
                "pairs_x_entries": int(z_ok.size),
                "pairwise_rms_z": float(np.sqrt(np.mean(z_ok**2))) if z_ok.size else float("nan"),
                "pairwise_share_abs_z_over_3": float(np.mean(np.abs(z_ok) > 3)) if z_ok.size else float("nan"),
                # the same for pairs where either seed flags the entry: do the flagged error bars cover?
                "flagged_pairwise_coverage_95": float(np.mean(np.abs(z_flag) <= q95)) if z_flag.size else float("nan"),
                "flagged_pairs_x_entries": int(z_flag.size),
                "flagged_pairwise_rms_z": float(np.sqrt(np.mean(z_flag**2))) if z_flag.size else float("nan"),
                "share_flagged": float(flag.mean()), "median_dof": float(np.median(dof)),
            }
            pair_z[f"{comp}|{kind}"] = (z_ok, z_flag)
    return report, pair_z


def plot(report: dict, pair_z: dict, path: Path, title: str) -> None:
    """Per component × kind: the pairwise-difference z histogram (unflagged and flagged pairs)
    against N(0, 1), with scatter/se, coverage and the flagged share in the panel title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in report if not k.endswith("|llc")]
    comps = sorted({k.split("|")[0] for k in keys}, key=[k.split("|")[0] for k in keys].index)
    kinds = sorted({k.split("|")[1] for k in keys})
    fig, axes = plt.subplots(len(kinds), len(comps), figsize=(4.2 * len(comps), 3.4 * len(kinds)), squeeze=False)
    grid = np.linspace(-5, 5, 201)
    for i, kind in enumerate(kinds):
        for j, comp in enumerate(comps):
            ax, r = axes[i, j], report[f"{comp}|{kind}"]
            z_ok, z_flag = pair_z[f"{comp}|{kind}"]
            bins = np.linspace(-5, 5, 41)
            if z_ok.size:
                ax.hist(np.clip(z_ok, -5, 5), bins=bins, density=True, alpha=0.6, label=f"unflagged ({z_ok.size})")
            if z_flag.size:
                ax.hist(np.clip(z_flag, -5, 5), bins=bins, density=True, histtype="step", color="k",
                        label=f"flagged ({z_flag.size})")
            ax.plot(grid, stats.norm.pdf(grid), "r-", lw=1, label="N(0, 1)")
            ax.set_title(f"{comp} {kind}: scatter/se {r['scatter_over_se']:.2f}, cov {100 * r['pairwise_coverage_95']:.0f} %"
                         f"\nflagged {100 * r['share_flagged']:.0f} %"
                         + (f" (cov {100 * r['flagged_pairwise_coverage_95']:.0f} %)" if z_flag.size else ""),
                         fontsize=9)
            ax.set_xlabel("z of x_s − x_t (pairs of seeds)")
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from spectro.jobs.nn_job import run_job

    args.out.mkdir(parents=True, exist_ok=True)
    timings = {}
    for seed in args.seeds:
        folder = args.out / "jobs" / f"seed{seed}"
        if (folder / "summary.json").is_file() or args.analyse_only:
            continue
        t0 = time.perf_counter()
        run_job(job_config(args, seed), folder, overwrite=True, progress=False)
        timings[seed] = time.perf_counter() - t0
        print(f"seed {seed}: {timings[seed]:.0f} s", file=sys.stderr, flush=True)
    done = [s for s in args.seeds if (args.out / "jobs" / f"seed{s}" / "summary.json").is_file()]
    if len(done) < 2:
        print(f"validate_error_bars: {len(done)} finished seeds; need at least 2 to analyse", file=sys.stderr)
        return 0
    per_seed = [load_seed(args.out / "jobs" / f"seed{s}") for s in done]
    report, pair_z = analyse(per_seed)
    record = {"command": " ".join([sys.executable, *sys.argv]), "seeds": done, "config": job_config(args, done[0]),
              "job_seconds": timings, "machine": machine(), "report": report}
    (args.out / "error_bars.json").write_text(json.dumps(record, indent=1))
    cfg = record["config"]["sampler"]
    plot(report, pair_z, args.out / "error_bars.png",
         f"{len(done)} SGLD seeds of {Path(args.checkpoint).name}, {cfg['chains']} chains × {cfg['draws']} draws "
         f"(ε {cfg['epsilon']:g}, γ {cfg['gamma']:g}, nβ {cfg['nbeta']:g}, batch {cfg['batch_size']})")
    print(f"{'component|kind':>16} {'entries':>7} {'scatter/se':>16} {'pair cov':>8} {'rms z':>6} {'flagged':>7} "
          f"{'flagged cov':>11}")
    for key, r in report.items():
        print(f"{key:>16} {r['entries']:7d} {r['scatter_over_se']:8.2f} ± {r['scatter_over_se_jackknife_sd']:.2f} "
              f"{100 * r['pairwise_coverage_95']:7.1f}% {r['pairwise_rms_z']:6.2f} {100 * r['share_flagged']:6.1f}% "
              f"{100 * r['flagged_pairwise_coverage_95']:10.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
