"""Why few degrees of freedom are not a reliability flag: re-read a calibration record under both rules.

The first version of the engine also flagged entries whose stderr had dof < 3 (FEW_DOF). This
script takes a record of ``benchmarks/calibration.py`` (every seed's χ, stderr, dof and flags)
and prints, per regime, the share of entries kept and the coverage of their 95 % t intervals
(i) with the engine's flags and (ii) with dof < 3 flagged as well, together with the median of
stderr ÷ actual scatter over seeds for the entries each rule keeps and drops.

    python benchmarks/calibration_flag_policy.py docs/results/calibration/calibration.json
"""

from __future__ import annotations

import json
import sys

import numpy as np
from scipy import stats


def main(path: str) -> None:
    rec = json.load(open(path))
    print(f"# record {path}: {rec['date']}, {rec['machine'].get('cpu', '')}")
    print(f"{'regime':36s} {'engine: kept  cover':>20s} {'+dof<3: kept  cover':>21s}  {'se/scatter kept·dropped (dof rule)':>36s}")
    for suite in rec["suites"].values():
        for g in suite:
            ps = g["per_seed"]
            exact = np.asarray(g["exact"], float)
            chi, se = np.asarray(ps["chi"], float), np.asarray(ps["stderr"], float)
            dof = np.asarray([[np.inf if v is None else v for v in row] for row in ps["dof"]], float)
            flags = np.asarray(ps["flags"], int)
            z = (chi - exact) / se
            covered = np.abs(z) <= stats.t.ppf(0.975, dof)
            scatter = np.std(chi - exact, axis=0)  # per entry, over seeds
            ratio = se / scatter
            keep_engine = flags == 0
            keep_dof = keep_engine & (dof >= 3)

            def cell(keep):
                return f"{100 * keep.mean():5.0f}% {100 * covered[keep].mean():6.1f}%" if keep.any() else f"{'0%':>6s} {'-':>7s}"

            dropped = keep_engine & ~keep_dof
            r_kept = np.median(ratio[keep_dof]) if keep_dof.any() else np.nan
            r_drop = np.median(ratio[dropped]) if dropped.any() else np.nan
            print(f"{g['name'][:36]:36s} {cell(keep_engine):>20s} {cell(keep_dof):>21s}  {r_kept:17.2f} · {r_drop:.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/calibration/calibration.json")
