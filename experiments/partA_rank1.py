"""Rank-1 structure of the dataset χ in susceptibility-study records (docs/results.md, Part A).

    python experiments/partA_rank1.py docs/results/trained_remeasure_2026-12-01/study-*.json \\
        --json docs/results/trained_remeasure_2026-12-01/partA_rank1.json

Reads only the ``results.json`` records of experiments/susceptibility_study.py (no sampling). For
each run, X is the heads × domains matrix of dataset χ (χ of the field "up-weight domain D",
``subsets.chi.dataset_chi``) and u the heads' E_C[φ] (``decomposition.components.*.e_phi``).
Baker's estimator (docs/design.md §2) splits χ^C = −Cov_C(φ, ψ) − E_C[φ]·(E_C[ψ] − E_full[ψ]); when
the second factor of the offset is nearly the same for every head, X ≈ u ⊗ v with one domain
profile v. Reported per run:

* ``share_offset_rank1`` = 1 − ‖X − u vᵀ‖²_F / ‖X‖²_F with v = Xᵀu / uᵀu (least squares given u),
  and ``share_svd_rank1`` = σ₁² / Σσ² (the best rank 1; uncentred, as the outer product is);
* ``cos_u_left_singular``: |cos| between u and X's first left singular vector;
* ``residual_rms_z``: rms of (X − u vᵀ) / stderr over the entries — the head-specific part of X in
  units of its stderr (≲ 1: nothing beyond the outer product is resolved; the stderrs share the full
  run's error between heads, so this is indicative, not a test);
* ``profile_cos_min``: the smallest cos between a head's domain profile X_i and v (every head's
  unit-norm profile is ±v/‖v‖ when X is rank 1, so profile-shape correlations are ≈ 1 by construction);
* the same for the covariance part X_cov (``subsets.cov_part``, the offset removed): its share of
  ‖X‖², its rank-1 share and the rms of X_cov / stderr (is it resolved at all?).

For every pair of runs in one record: r(X_a, X_b), the correlation of their rank-1 reconstructions
u_a v_aᵀ and u_b v_bᵀ, and cos(v_a, v_b).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np


def rank1_offset(x: np.ndarray, u: np.ndarray) -> dict:
    """Fit X ≈ u vᵀ for a fixed u (v by least squares) and compare with X's best rank 1."""
    x = np.asarray(x, float)
    u = np.asarray(u, float)
    if x.ndim != 2 or u.shape != (x.shape[0],):
        raise ValueError(f"need X [heads, domains] and u [heads], got {x.shape} and {u.shape}")
    norm2 = float((x**2).sum())
    if norm2 == 0.0 or float(u @ u) == 0.0:
        raise ValueError("X or u is all zero: no rank-1 structure to measure")
    v = x.T @ u / float(u @ u)
    resid = x - np.outer(u, v)
    s = np.linalg.svd(x, compute_uv=False)
    left = np.linalg.svd(x)[0][:, 0]
    rows = np.linalg.norm(x, axis=1)
    prof = (x @ v) / (np.where(rows > 0, rows, 1.0) * np.linalg.norm(v))
    return {
        "v": v.tolist(),
        "share_offset_rank1": 1.0 - float((resid**2).sum()) / norm2,
        "share_svd_rank1": float(s[0] ** 2 / (s**2).sum()),
        "cos_u_left_singular": float(abs(left @ u) / np.linalg.norm(u)),
        "profile_cos_min": float(prof.min()),
        "residual": resid,
    }


def run_summary(run: dict) -> dict:
    sub = run["subsets"]
    comps = sub["chi"]["components"]
    dec = run["decomposition"]["components"]
    u = np.array([dec[c]["e_phi"] for c in comps])
    x = np.array(sub["chi"]["dataset_chi"])
    se = np.array(sub["chi"]["dataset_stderr"])
    fit = rank1_offset(x, u)
    resid = fit.pop("residual")
    out = {"components": comps, "domains": sub["chi"]["domains"], "e_phi": u.tolist(), **fit,
           "residual_rms_z": float(np.sqrt(np.mean((resid / se) ** 2))),
           "residual_max_abs_z": float(np.max(np.abs(resid / se)))}
    if "cov_part" in sub:
        xc = np.array(sub["cov_part"]["dataset_chi"])
        sec = np.array(sub["cov_part"]["dataset_stderr"])
        sc = np.linalg.svd(xc, compute_uv=False)
        out["cov_part"] = {
            "share_of_chi_norm2": float((xc**2).sum() / (x**2).sum()),
            "share_svd_rank1": float(sc[0] ** 2 / (sc**2).sum()),
            "rms_z": float(np.sqrt(np.mean((xc / sec) ** 2))),
            "frac_abs_z_gt_2": float(np.mean(np.abs(xc / sec) > 2)),
            "frac_positive": float(np.mean(xc > 0)),
        }
    return out


def pair_summary(a: dict, b: dict, xa: np.ndarray, xb: np.ndarray) -> dict:
    ra = np.outer(a["e_phi"], a["v"])
    rb = np.outer(b["e_phi"], b["v"])
    va, vb = np.array(a["v"]), np.array(b["v"])
    return {"r_dataset_chi": float(np.corrcoef(xa.ravel(), xb.ravel())[0, 1]),
            "r_rank1_reconstructions": float(np.corrcoef(ra.ravel(), rb.ravel())[0, 1]),
            "cos_v": float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))}


def study_summary(path: Path) -> dict:
    r = json.loads(path.read_text())
    runs = {label: run_summary(run) for label, run in r["runs"].items()}
    xs = {label: np.array(run["subsets"]["chi"]["dataset_chi"]) for label, run in r["runs"].items()}
    labels = list(runs)
    pairs = {f"{a} vs {b}": pair_summary(runs[a], runs[b], xs[a], xs[b])
             for i, a in enumerate(labels) for b in labels[i + 1:]}
    return {"record": str(path), "runs": runs, "pairs": pairs}


def machine() -> dict:
    from spectro.devices import cpu_isa

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "isa": cpu_isa(), "python": platform.python_version(),
            "numpy": np.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", nargs="+", type=Path, help="results.json of susceptibility_study.py")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    args = ap.parse_args(argv)
    studies = {}
    for p in args.records:
        try:
            studies[p.name] = study_summary(p)
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"partA_rank1: {p}: not a readable study record with dataset χ ({type(e).__name__}: {e})",
                  file=sys.stderr)
            return 2
    out = {"command": "python experiments/partA_rank1.py " + " ".join(str(p) for p in args.records)
           + (f" --json {args.json}" if args.json else ""), "machine": machine(), "studies": studies}
    print("| record | run | share u⊗v | share best rank 1 | rms z of the rest | min profile cos | "
          "cov part: share of ‖X‖² | cov part: rank-1 share | cov part: rms z |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in studies.items():
        for label, run in s["runs"].items():
            c = run.get("cov_part", {})
            print(f"| {name} | {label} | {run['share_offset_rank1']:.5f} | {run['share_svd_rank1']:.5f} | "
                  f"{run['residual_rms_z']:.2f} | {run['profile_cos_min']:.4f} | "
                  f"{c.get('share_of_chi_norm2', float('nan')):.2e} | {c.get('share_svd_rank1', float('nan')):.3f} | "
                  f"{c.get('rms_z', float('nan')):.2f} |")
    for name, s in studies.items():
        for pair, p in s["pairs"].items():
            print(f"{name}: {pair}: r(X) {p['r_dataset_chi']:.3f}, r(rank-1 parts) {p['r_rank1_reconstructions']:.3f}, "
                  f"cos(v) {p['cos_v']:.4f}")
    if args.json:
        try:
            args.json.write_text(json.dumps(out, indent=1) + "\n")
        except OSError as e:
            print(f"partA_rank1: cannot write {args.json}: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
