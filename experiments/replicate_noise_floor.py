"""PCA noise floor from replicate runs: PC1 fraction of (χ_a − χ_b)/√2 per layer (and of the covariance part).

    python experiments/replicate_noise_floor.py runs/susceptibility-study/seeds \\
        tiny-steps500-sgld0 tiny-steps500-sgld1 tiny-steps500-sgld2 --json OUT.json

Reads ``<folder>/<label>_tokens.csv`` (written by susceptibility_study.py) for two or more runs of
the same checkpoint on the same probe tokens with different SGLD seeds. For every pair, the
difference (χ_a − χ_b)/√2 is one realisation of the Monte Carlo noise of χ with its real
correlation across tokens and heads, including the full run's error that Baker's estimator shares
between all heads. Its per-layer standardised PC1 fraction (token bootstrap, 200 resamples:
:func:`spectro.analysis.susceptibility_vectors.replicate_noise_floor`) is the floor that a PC1 of
χ must clear to be more than noise. The same is done for the covariance part (``cov_*`` columns).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from spectro.analysis.susceptibility_vectors import replicate_noise_floor


def load(path: Path, prefix: str) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    heads = [k[len(prefix):] for k in rows[0] if k.startswith(prefix)]
    return heads, np.array([[float(r[prefix + h]) for h in heads] for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("labels", nargs="+")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if len(args.labels) < 2:
        raise SystemExit("replicate_noise_floor: need at least two runs")
    out: dict = {"command": "python experiments/replicate_noise_floor.py " + " ".join(sys.argv[1:] if argv is None else argv),
                 "pairs": {}}
    for which, prefix in (("chi", "chi_"), ("cov_part", "cov_")):
        data = {lab: load(args.folder / f"{lab}_tokens.csv", prefix) for lab in args.labels}
        heads = data[args.labels[0]][0]
        layers = sorted({h.split("h")[0] for h in heads})
        for i, a in enumerate(args.labels):
            for b in args.labels[i + 1:]:
                noise = (data[a][1] - data[b][1]) / np.sqrt(2.0)
                for layer in layers:
                    cols = [k for k, h in enumerate(heads) if h.split("h")[0] == layer]
                    f = replicate_noise_floor(noise[:, cols])["pc1"]
                    key = f"{a} vs {b}"
                    out["pairs"].setdefault(key, {}).setdefault(which, {})[f"layer{layer[1:]}"] = {
                        "mean": f["mean"], "q975": f["q975"]}
                    print(f"{which:8s} {key} layer{layer[1:]}: replicate-noise PC1 {f['mean']:.3f} (97.5 % {f['q975']:.3f})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
