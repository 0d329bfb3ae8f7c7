"""Markdown tables from a susceptibility study's results.json (for docs/results.md).

    python experiments/report_study.py runs/study-trained/results.json [--training runs/transformer]

Prints, per run: the per-layer PC1 fractions (χ, Baker's offset term, covariance part) against the
noise floor; r(χ, offset); token-class η² of the covariance-part PCs; the independent detector's
induction and previous-token scores; the dataset χ per (layer, domain) (mean ± spread over the
layer's heads); and whether a PC of layer 0 lines up with the detected previous-token heads
(Spearman ρ between a head's previous-token score and its loading). With several runs, the
stability table of the study (compare_runs). With ``--training``, the training summary per seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def spearman_p(a, b) -> float:
    """Exact two-sided permutation p-value of Spearman's ρ (all n! orderings; n ≤ 9)."""
    import itertools

    a, b = np.asarray(a), np.asarray(b)
    if len(a) > 9:
        raise ValueError("exact permutation p only for n <= 9")
    rho = abs(spearman(a, b))
    rb = np.argsort(np.argsort(b)).astype(float)
    ra = np.argsort(np.argsort(a)).astype(float)
    hits = total = 0
    for perm in itertools.permutations(range(len(a))):
        total += 1
        hits += abs(np.corrcoef(ra, rb[list(perm)])[0, 1]) >= rho - 1e-12
    return hits / total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--training", type=Path, default=None, help="train_transformer.py output folder")
    args = ap.parse_args(argv)
    r = json.loads(args.results.read_text())
    runs = r["runs"]

    if args.training:
        print("| seed | steps | tokens | train time (s) | tokens/s | code | prose | legal | math | mean |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for f in sorted(args.training.glob("seed_*/summary.json")):
            s = json.loads(f.read_text())
            v = s["final_validation"]
            print(f"| {f.parent.name} | {s['steps_done']} | {s['tokens_seen'] / 1e6:.1f}M | {s['train_seconds']:.0f} | "
                  f"{s['train_tokens_per_second']:.0f} | {v['code']:.3f} | {v['prose']:.3f} | {v['legal']:.3f} | {v['math']:.3f} | "
                  f"{s['final_validation_mean']:.3f} |")
        print()

    print("| run | layer | PC1 χ | PC1 offset | PC1 cov part | noise floor (97.5 %) χ / cov | median r(χ, offset) | η² cov-part PC1 (p) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, run in runs.items():
        v = run["verdicts"]
        for layer in ("layer0", "layer1"):
            d = v["dominant_pc1"][layer]
            o = v["pc1_is_offset"]["per_layer"][layer]
            sep = run["separation"]["cov_part"][layer]["class"] if "cov_part" in run["separation"] else None
            eta = f"{sep['eta2'][0]:.3f} ({sep['p_perm'][0]:.3f})" if sep else "–"
            print(f"| {label} | {layer[-1]} | {d['pc1']:.4f} ± {d['pc1_std']:.4f} | {o['pc1_offset']:.4f} | "
                  f"{o['pc1_cov_part']:.3f} ± {o['pc1_cov_part_std']:.3f} | {d['noise_floor_q975']:.3f} / "
                  f"{o['cov_part_noise_floor_q975']:.3f} | {v['pc1_is_offset']['median_r_chi_offset']:.5f} | {eta} |")
    print()

    print("| run | uniform score | max induction (head) | previous-token scores, layer 0 heads 0–7 | heads > 5× uniform (prev. token) |")
    print("|---|---|---|---|---|")
    for label, run in runs.items():
        det = run["detector"]
        ind = np.asarray(det["induction"])
        prev = np.asarray(det["previous_token"])
        uni = det["uniform_baseline"]
        l, h = np.unravel_index(np.argmax(ind), ind.shape)
        strong = [f"l{a}h{b}" for a, b in zip(*np.nonzero(prev > 5 * uni))]
        print(f"| {label} | {uni:.4f} | {ind.max():.4f} (l{l}h{h}) | {', '.join(f'{x:.3f}' for x in prev[0])} | "
              f"{', '.join(strong) or 'none'} |")
    print()

    print("Previous-token heads vs layer-0 PC loadings (Spearman ρ over the 8 heads, exact permutation p of |ρ|; "
          "PC signs are arbitrary, so |ρ| matters):")
    print()
    print("| run | ρ(prev, χ PC2) | ρ(prev, offset PC2) | ρ(prev, cov-part PC1) | ρ(prev, cov-part PC2) |")
    print("|---|---|---|---|---|")
    for label, run in runs.items():
        prev = np.asarray(run["detector"]["previous_token"])[0]
        p = run["pca"]
        cells = [spearman(prev, p["chi"]["layer0"]["loadings"][1]), spearman(prev, p["offset"]["layer0"]["loadings"][1]),
                 spearman(prev, p["cov_part"]["layer0"]["loadings"][0]), spearman(prev, p["cov_part"]["layer0"]["loadings"][1])]
        loads = [p["chi"]["layer0"]["loadings"][1], p["offset"]["layer0"]["loadings"][1],
                 p["cov_part"]["layer0"]["loadings"][0], p["cov_part"]["layer0"]["loadings"][1]]
        pvals = [spearman_p(prev, x) for x in loads]
        print(f"| {label} | " + " | ".join(f"{c:+.2f} (p {q:.3f})" for c, q in zip(cells, pvals)) + " |")
    print()

    print("Dataset χ per domain (χ of the dL:D field), mean ± sd over the heads of each layer:")
    print()
    doms = next(iter(runs.values()))["subsets"]["chi"]["domains"]
    print("| run | layer | " + " | ".join(doms) + " |")
    print("|---|---|" + "---|" * len(doms))
    for label, run in runs.items():
        s = run["subsets"]["chi"]
        chi = np.asarray(s["dataset_chi"])
        comps = s["components"]
        for layer in ("0", "1"):
            rows = [i for i, c in enumerate(comps) if c.startswith(f"l{layer}h")]
            m, sd = chi[rows].mean(0), chi[rows].std(0)
            med_se = np.median(np.asarray(s["dataset_stderr"])[rows], axis=0)
            print(f"| {label} | {layer} | " + " | ".join(f"{a:+.4f} ± {b:.4f} (se {c:.4f})" for a, b, c in zip(m, sd, med_se)) + " |")
    print()

    if "stability" in r and "pairs" in r["stability"]:
        print("Across runs (`compare_runs`; heads of different model seeds are not the same heads — only the "
              "layer-level and dataset-level rows compare like with like):")
        print()
        pairs = r["stability"]["pairs"]
        keys = [k for k in next(iter(pairs.values())) if isinstance(next(iter(pairs.values()))[k], (int, float))]
        print("| pair | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        for pair, e in pairs.items():
            print(f"| {pair} | " + " | ".join(f"{e[k]:.3f}" if e[k] is not None else "–" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
