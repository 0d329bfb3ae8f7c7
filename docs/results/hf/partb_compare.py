"""Part B (docs/results/smollm2/results.json: experiments/smollm2_susceptibilities.py, shared minibatches)
against the SmolLM2-135M job (spectro run, independent chains): the dataset χ of each (component, domain),
z = (job − Part B) / sqrt(se_job² + se_B²), and whether each 95 % interval excludes 0.

    python docs/results/hf/partb_compare.py docs/results/hf/smollm2_job_2026-12-06/summary.json \
        --json docs/results/hf/smollm2_job_2026-12-06/partb_comparison.json

Both are χ = −Cov_C(L̄(base), L(D) − L̄(base)) under the restricted posterior with the same sampler settings,
but not on the same windows (the job cuts its own, base from training windows), and a head ``lLhH`` is
not the same weights (Part B: query rows + output columns; the job: devinterp's, which adds the shared K/V head).
"""
import argparse
import json
import math
from pathlib import Path

PART_B = Path(__file__).resolve().parents[1] / "smollm2" / "results.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("summary", type=Path, help="the job's summary.json")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    job = json.loads(args.summary.read_text())["components"]
    old = json.loads(PART_B.read_text())
    rows = []
    for name, b in old["components"].items():
        if name not in job:
            continue
        j = job[name]
        for d in old["domains"]:
            x, y = j["domains"][d], b["domain_chi"][d]
            z = (x["chi"] - y["mean"]) / math.hypot(x["stderr"], y["stderr"])
            rows.append({"component": name, "domain": d, "n_free_job": j["n_free"], "n_free_part_b": b["n_free"],
                         "chi_job": x["chi"], "se_job": x["stderr"], "dof_job": x["dof"], "ci95_job": x["ci95"],
                         "reliable_job": x["reliable"], "chi_part_b": y["mean"], "se_part_b": y["stderr"],
                         "dof_part_b": y["dof"], "ci95_part_b": y["ci95"], "z": z,
                         "excludes_0_job": x["ci95"][0] > 0 or x["ci95"][1] < 0,
                         "excludes_0_part_b": y["ci95"][0] > 0 or y["ci95"][1] < 0,
                         "se_ratio_job_over_part_b": x["stderr"] / y["stderr"]})
    print("| component | domain | job χ ± se (dof) | Part B χ ± se (dof) | z | se job/B | 95 % excl. 0 job / B |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['component']} | {r['domain']} | {r['chi_job']:.3g} ± {r['se_job']:.2g} ({r['dof_job']:.1f})"
              f"{'' if r['reliable_job'] else '?'} | {r['chi_part_b']:.3g} ± {r['se_part_b']:.2g} ({r['dof_part_b']:.1f}) | "
              f"{r['z']:+.1f} | {r['se_ratio_job_over_part_b']:.2f} | "
              f"{'yes' if r['excludes_0_job'] else 'no'} / {'yes' if r['excludes_0_part_b'] else 'no'} |")
    if args.json:
        args.json.write_text(json.dumps({"part_b": str(PART_B.relative_to(PART_B.parents[2])), "job": str(args.summary),
                                         "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
