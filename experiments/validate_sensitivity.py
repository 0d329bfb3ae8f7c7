"""Sensitivity to the sampler's settings (issue 24, item 3): one-at-a-time changes of γ, ε and nβ
around a centre setting (Part A: ε 3e-4, γ 1000, nβ 30), one ``spectro nn run`` job each, and how
the results move in units of their error bars:

* dataset χ (fields ``dL:<domain>``) of every component: z = (χ_setting − χ_centre)/√(se² + se²)
  (independent seeds per setting, so the errors add);
* the top principal components of the per-token χ (components × tokens, columns z-scored as in
  the studies): |cos| between each setting's PC1/PC2 loadings and the centre's, and the PC1
  explained-variance fraction;
* the LLC of every component: z of the difference;
* the **scale** of each component's per-token χ against the centre's, noise removed:
  √(Σ(χ² − se²)_setting / Σ(χ² − se²)_centre) over all tokens (the rms-z test above is blind to
  a common rescaling of many small entries); its ± is a bootstrap over tokens, which treats the
  tokens as independent and so understates it — the replicate's departure from 1 is the honest
  yardstick.

Plus the per-setting health of the run (loss-trace R-hat, divergence). Changing γ or nβ changes
the posterior (the estimand); changing ε should not, so an ε-shift beyond the error bars is bias.
The last setting is a **replicate** of the centre with its own seed: its z's show what pure noise
gives (rms ≈ 1) and its |cos| is the noise floor of the PC comparison.

    python experiments/validate_sensitivity.py --checkpoint builtin:tiny --out runs/validate-sens-tiny
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_error_bars import add_run_size, job_config, machine  # noqa: E402

CENTRE = {"epsilon": 3e-4, "gamma": 1000.0, "nbeta": 30.0}


def settings(gammas, eps_f, nbeta_f) -> list[dict]:
    out = [dict(CENTRE)]
    out += [{**CENTRE, "gamma": g} for g in gammas if g != CENTRE["gamma"]]
    out += [{**CENTRE, "epsilon": CENTRE["epsilon"] * f} for f in eps_f if f != 1]
    out += [{**CENTRE, "nbeta": CENTRE["nbeta"] * f} for f in nbeta_f if f != 1]
    return out + [{**CENTRE, "replicate": True}]


def label(s: dict) -> str:
    return f"eps{s['epsilon']:.3g}_gamma{s['gamma']:.3g}_nbeta{s['nbeta']:.3g}" + ("_replicate" if s.get("replicate") else "")


def read(folder: Path) -> dict:
    from spectro.engine import Susceptibility

    summary = json.loads((folder / "summary.json").read_text())
    out = {}
    for name, comp in summary["components"].items():
        sus = Susceptibility.load(folder / f"chi_{name}.npz")
        dom = [a for a, f in enumerate(sus.fields) if f.startswith("dL:")]
        tok = [a for a, f in enumerate(sus.fields) if f.startswith("tok:")]
        out[name] = {"dom": (sus.chi[0, dom], sus.stderr[0, dom]), "tok": sus.chi[0, tok], "tok_se": sus.stderr[0, tok],
                     "llc": (comp["llc"], comp["llc_stderr"]), "rhat": comp.get("loss_trace_rhat")}
    return out


def chi_scale(res: dict, centre: dict, rng: np.random.Generator, n_boot: int = 300) -> dict:
    """Per component: noise-debiased rms of the per-token χ over the centre's, with a bootstrap sd."""
    out = {}
    for c in centre:
        p1 = res[c]["tok"] ** 2 - res[c]["tok_se"] ** 2
        p0 = centre[c]["tok"] ** 2 - centre[c]["tok_se"] ** 2
        ratio = lambda i: float(np.sqrt(max(p1[i].sum(), 0.0) / p0[i].sum()))  # noqa: E731
        boot = [ratio(rng.integers(0, p0.size, p0.size)) for _ in range(n_boot)]
        out[c] = (ratio(np.arange(p0.size)), float(np.std(boot)))
    return out


def pcs(res: dict, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    M = np.stack([res[c]["tok"] for c in sorted(res)])  # components × tokens
    M = (M - M.mean(axis=0)) / np.where(M.std(axis=0) > 0, M.std(axis=0), 1)
    U, S, Vt = np.linalg.svd(M - M.mean(axis=0), full_matrices=False)
    return Vt[:k], S[:k] ** 2 / np.sum(S**2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="builtin:tiny")
    p.add_argument("--corpus", default="fixture")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gammas", type=float, nargs="+", default=[300.0, 1000.0, 3000.0])
    p.add_argument("--eps-factors", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    p.add_argument("--nbeta-factors", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    p.add_argument("--only", type=int, nargs="+", default=None, help="run only these setting indices (pieces)")
    p.add_argument("--seed", type=int, default=0)
    add_run_size(p)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.epsilon = args.gamma = args.nbeta = None
    from spectro.jobs.nn_job import run_job
    from spectro.nn.posterior import DivergenceError

    grid = settings(args.gammas, args.eps_factors, args.nbeta_factors)
    args.out.mkdir(parents=True, exist_ok=True)
    status = {}
    for i, s in enumerate(grid):
        folder = args.out / "jobs" / label(s)
        if (folder / "summary.json").is_file() or (args.only is not None and i not in args.only):
            continue
        cfg = job_config(args, args.seed + i)  # independent seeds: the differences' errors add
        cfg["sampler"].update({k: s[k] for k in CENTRE})
        t0 = time.perf_counter()
        try:
            run_job(cfg, folder, overwrite=True, progress=False)
            status[label(s)] = {"seconds": time.perf_counter() - t0}
        except DivergenceError as e:
            status[label(s)] = {"diverged": " ".join(str(e).split())}
            (args.out / "jobs").mkdir(exist_ok=True)
            (args.out / "jobs" / f"{label(s)}.diverged.txt").write_text(str(e))
        print(f"{label(s)}: {status[label(s)]}", file=sys.stderr, flush=True)
    centre_dir = args.out / "jobs" / label(grid[0])
    if not (centre_dir / "summary.json").is_file():
        print("validate_sensitivity: the centre setting has not run yet", file=sys.stderr)
        return 0
    centre = read(centre_dir)
    V0, f0 = pcs(centre)
    rows = []
    rng = np.random.default_rng(0)
    for s in grid[1:]:
        folder = args.out / "jobs" / label(s)
        if not (folder / "summary.json").is_file():
            rows.append({"setting": s, "diverged": (args.out / "jobs" / f"{label(s)}.diverged.txt").is_file()})
            continue
        res = read(folder)
        V, f = pcs(res)
        zd = np.concatenate([(res[c]["dom"][0] - centre[c]["dom"][0]) / np.hypot(res[c]["dom"][1], centre[c]["dom"][1])
                             for c in centre])
        zl = {c: (res[c]["llc"][0] - centre[c]["llc"][0]) / np.hypot(res[c]["llc"][1], centre[c]["llc"][1]) for c in centre}
        rows.append({"setting": s, "dataset_chi_z": zd.tolist(), "dataset_chi_rms_z": float(np.sqrt(np.mean(zd**2))),
                     "dataset_chi_mean_z": float(np.mean(zd)),
                     "llc": {c: res[c]["llc"] for c in res}, "llc_z": zl,
                     "token_chi_scale": chi_scale(res, centre, rng),
                     "pc_cos_with_centre": [float(abs(V[j] @ V0[j])) for j in range(len(V0))],
                     "pc1_fraction": float(f[0]), "rhat": {c: res[c]["rhat"] for c in res}})
    record = {"command": " ".join([sys.executable, *sys.argv]), "centre": grid[0],
              "centre_llc": {c: centre[c]["llc"] for c in centre}, "centre_pc1_fraction": float(f0[0]),
              "rows": rows, "status": status, "machine": machine()}
    (args.out / "sensitivity.json").write_text(json.dumps(record, indent=1, default=float))
    try:
        plot(record, args.out / "sensitivity.png")
    except Exception as e:  # noqa: BLE001 - the record matters more than the figure
        print(f"figure not written: {e}", file=sys.stderr)
    for r in rows:
        if "dataset_chi_rms_z" in r:
            print(label(r["setting"]), f"dataset χ rms z {r['dataset_chi_rms_z']:.2f}",
                  "LLC z " + " ".join(f"{c} {z:+.1f}" for c, z in r["llc_z"].items()),
                  "PC |cos| " + " ".join(f"{x:.2f}" for x in r["pc_cos_with_centre"]),
                  "token χ scale " + " ".join(f"{c} {v:.2f}±{e:.2f}" for c, (v, e) in r["token_chi_scale"].items()))
        else:
            print(label(r["setting"]), "diverged" if r.get("diverged") else "not run")
    return 0


def plot(record: dict, path: Path) -> None:
    """Left: every dataset-χ entry's signed z against the centre (dots) and each component's LLC z
    (crosses), per setting; the replicate column is what noise alone gives. Right: |cos| of the
    per-token PC1/PC2 with the centre's, the replicate's as the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in record["rows"] if "dataset_chi_z" in r]
    names = [label(r["setting"]).replace("_", "\n") for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    rng = np.random.default_rng(0)
    for i, r in enumerate(rows):
        z = np.asarray(r["dataset_chi_z"])
        ax[0].plot(i + rng.uniform(-0.15, 0.15, z.size), z, ".", color="C0", alpha=0.6,
                   label="dataset χ entries" if i == 0 else None)
        for j, (c, zl) in enumerate(r["llc_z"].items()):
            ax[0].plot(i + 0.25, zl, "x", color=f"C{j + 1}", label=f"LLC {c}" if i == 0 else None)
    for y in (-2, 2):
        ax[0].axhline(y, color="k", lw=0.5, ls="--")
    ax[0].axhline(0, color="k", lw=0.5)
    ax[0].set_xticks(range(len(rows)), names, fontsize=6)
    ax[0].set_ylabel("(setting − centre) / combined stderr")
    ax[0].legend(fontsize=7)
    ax[1].bar(range(len(rows)), [r["pc_cos_with_centre"][0] for r in rows], label="|cos| PC1")
    ax[1].plot(range(len(rows)), [r["pc_cos_with_centre"][1] for r in rows], "o", color="C1", label="|cos| PC2")
    ax[1].set_xticks(range(len(rows)), names, fontsize=6)
    ax[1].set_ylim(0, 1.05)
    ax[1].legend(fontsize=7)
    fig.suptitle(f"sensitivity around {label(record['centre'])} (γ, nβ change the posterior; ε should not)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
