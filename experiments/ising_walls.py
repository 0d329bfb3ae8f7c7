"""Seeing the wall: susceptibility vectors of the walled Ising model, and the wall inferred from them.

    python experiments/ising_walls.py --out docs/ising_walls [--quick]

1. χ maps: 80x80 walled lattice (wall depth 53), probe squares scanned over the lattice, the χ
   vector (left, right, lower) per probe with batch-means error bars (β = 0.40 and β = 0.43).
2. β sweep across β_c of ⟨|m|⟩ and χ = β·Var(|M|)/N on the same lattice (Swendsen–Wang).
3. Inference from χ alone: (a) each probe is assigned to the chamber whose normalised χ
   component is largest, compared with the true chamber of the probe; (b) the depth of the
   wall is estimated from a scan of 1x4 probes just left/right of the centre line: above the end
   of the wall the two sides respond to different chambers, below it they do not. A two-segment
   step fit of the cross-wall contrast gives the depth, compared with the truth.
Every number is written to ``results.json`` with its standard error; figures beside it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from spectro.analysis.ising_maps import plot_chi_maps  # noqa: E402
from spectro.engine import MomentAccumulator, estimate_susceptibility  # noqa: E402
from spectro.io import atomic_path, write_json  # noqa: E402
from spectro.ising import CHAMBERS, Rect, walled_lattice  # noqa: E402
from spectro.ising.exact import ONSAGER_BETA_C, yang_magnetization  # noqa: E402
from spectro.ising.samplers import IsingSampler, SamplerConfig  # noqa: E402
from spectro.ising.susceptibility import RunConfig, chamber_susceptibility, probe_grid  # noqa: E402


def chamber_of(lattice, rect: Rect) -> str | None:
    """The chamber that contains the whole rectangle, or None if it straddles two."""
    for name in CHAMBERS:
        if lattice.regions[name][rect.r0 : rect.r1, rect.c0 : rect.c1].all():
            return name
    return None


def classify_probes(res, lattice) -> dict:
    """Assign each probe to argmax_c χ[c, probe] / max_probes χ[c, :]; compare with the truth."""
    norm = res.chi / np.max(res.chi, axis=1, keepdims=True)
    guess = [CHAMBERS[i] for i in np.argmax(norm, axis=0)]
    truth = [chamber_of(lattice, Rect.parse(f)) for f in res.fields]
    inside = [(g, t) for g, t in zip(guess, truth) if t is not None]
    correct = sum(g == t for g, t in inside)
    wrong = [f for f, g, t in zip(res.fields, guess, truth) if t is not None and g != t]
    return {
        "n_probes_inside_one_chamber": len(inside),
        "n_correct": correct,
        "accuracy": correct / max(len(inside), 1),
        "misassigned": wrong,
        "guess": guess,
    }


def wall_depth_scan(lattice, beta, sampler, run, progress) -> tuple[dict, np.ndarray, np.ndarray]:
    """1x4 probes on both sides of the centre line, every row; locate where cross-talk switches on.

    Cross-talk at row r: x_r = ½[χ_left(R_r) + χ_right(L_r)], the response of a probe (R_r: row
    r, the 4 columns right of the centre line; L_r: left of it) to the chamber on the *other*
    side of the centre line. Beside the wall it only leaks around the wall end; below the wall
    end direct bonds cross the centre line, so x_r rises fastest between the last walled row
    (d − 1) and the first open row (d). Estimate: d̂ = argmax_r Δ_r, Δ_r = x_r − x_{r−1}.

    The increments are measured directly as susceptibilities to *difference* fields (probe weights
    +1 on row r, −1 on row r−1; χ is linear in the field), so their standard errors account for
    the strong correlation of neighbouring rows. Interval: rows whose increment is within two
    standard errors (combined in quadrature) of the largest.
    """
    H, W = lattice.height, lattice.width
    half = W // 2
    left_side = [lattice.rect(Rect(r, r + 1, half - 4, half)).astype(float) for r in range(H)]
    right_side = [lattice.rect(Rect(r, r + 1, half, half + 4)).astype(float) for r in range(H)]
    probes = {}
    for r in range(H):
        probes[f"L{r}"], probes[f"R{r}"] = left_side[r], right_side[r]
    for r in range(1, H):
        probes[f"dL{r}"] = left_side[r] - left_side[r - 1]
        probes[f"dR{r}"] = right_side[r] - right_side[r - 1]
    res = chamber_susceptibility(lattice, beta, probes, sampler, run, progress=progress)
    il, ir = res.observables.index("left"), res.observables.index("right")
    col = {name: a for a, name in enumerate(res.fields)}

    def cross(prefix_l: str, prefix_r: str, rows) -> tuple[np.ndarray, np.ndarray]:
        a_r = [col[f"{prefix_r}{r}"] for r in rows]
        a_l = [col[f"{prefix_l}{r}"] for r in rows]
        value = 0.5 * (res.chi[il, a_r] + res.chi[ir, a_l])
        se = 0.5 * np.hypot(res.stderr[il, a_r], res.stderr[ir, a_l])
        return value, se

    x, x_se = cross("L", "R", range(H))
    inc, inc_se = cross("dL", "dR", range(1, H))  # inc[r-1] = x_r - x_{r-1}
    k = int(np.argmax(inc))
    gap_se = np.hypot(inc_se[k], inc_se)
    plausible = np.nonzero(inc >= inc[k] - 2 * gap_se)[0] + 1
    depth = k + 1
    true_depth = int(lattice.regions["left"][:, 0].sum())
    return (
        {"estimated_depth": depth, "plausible_depths": [int(plausible.min()), int(plausible.max())],
         "true_depth": true_depth, "error_rows": depth - true_depth, "max_rhat": float(np.nanmax(res.rhat)),
         "n_unreliable": int((~res.reliable).sum())},
        x,
        x_se,
    )


def beta_sweep(lattice, betas, chains, draws, seed, progress) -> list[dict]:
    """⟨|m|⟩ and χ = β·Var(|M|)/N per β via the engine (Swendsen–Wang, h = 0)."""
    full = np.ones((1, lattice.height, lattice.width))
    N = lattice.n_sites
    rows = []
    for beta in betas:
        sampler = IsingSampler(lattice, float(beta), SamplerConfig(sampler="swendsen-wang", chains=chains, seed=seed))
        sampler.sweep(max(draws // 10, 50))
        mags = np.abs(sampler.sample_regions(full, draws, 1))  # [T, C, 1] |M|
        acc = MomentAccumulator(chains, 1, 1, draws)
        acc.update(torch.from_numpy(mags), torch.from_numpy(mags))
        res = estimate_susceptibility(acc, scale=float(beta) / N, observables=["|M|"], fields=["|M|"])
        rows.append({
            "beta": float(beta),
            "abs_m": float(res.observable_mean[0] / N),
            "abs_m_stderr": float(res.observable_stderr[0] / N),
            "chi": float(res.chi[0, 0]),
            "chi_stderr": float(res.stderr[0, 0]),
            "rhat": float(res.rhat[0, 0]),
            "yang_infinite_lattice": float(yang_magnetization(float(beta))),
        })
        if progress:
            r = rows[-1]
            print(f"  β = {beta:.4f}  <|m|> = {r['abs_m']:.4f} ± {r['abs_m_stderr']:.4f}   χ = {r['chi']:.2f} ± {r['chi_stderr']:.2f}")
    return rows


def plot_wall_scan(x, x_se, info, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.errorbar(np.arange(len(x)), x, yerr=x_se, fmt=".", ms=4, label="cross-talk x_r ± stderr")
    ax.axvline(info["true_depth"] - 0.5, color="k", ls="--", label=f"true wall end (depth {info['true_depth']})")
    ax.axvline(info["estimated_depth"] - 0.5, color="C3", label=f"inferred from χ (depth {info['estimated_depth']})")
    ax.set_xlabel("row r")
    ax.set_ylabel("½[χ_left(right-side probe) + χ_right(left-side probe)]")
    ax.legend(fontsize=8)
    ax.set_title("where does the wall end? (1x4 probes either side of the centre)")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_beta_sweep(rows, path: Path) -> None:
    b = np.array([r["beta"] for r in rows])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    a1.errorbar(b, [r["abs_m"] for r in rows], yerr=[r["abs_m_stderr"] for r in rows], fmt="o-", ms=3, label="walled 80x80, MC")
    bb = np.linspace(b.min(), b.max(), 400)
    a1.plot(bb, [yang_magnetization(x) for x in bb], "k--", lw=1, label="Yang (infinite lattice)")
    a2.errorbar(b, [r["chi"] for r in rows], yerr=[r["chi_stderr"] for r in rows], fmt="o-", ms=3)
    for a in (a1, a2):
        a.axvline(ONSAGER_BETA_C, color="gray", lw=0.8)
        a.set_xlabel("β")
    a1.set_ylabel("⟨|m|⟩")
    a1.legend(fontsize=8)
    a2.set_ylabel("χ = β·Var(|M|)/N")
    fig.suptitle("β sweep across β_c = 0.4407 (grey)")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/ising_walls"))
    ap.add_argument("--size", type=int, default=80)
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--draws", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small lattice and short runs (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.size, args.draws = 24, 2_000
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lattice = walled_lattice(args.size, args.size)
    results: dict = {"lattice": f"walled {args.size}x{args.size}, wall depth {int(lattice.regions['left'][:, 0].sum())}",
                     "chains": args.chains, "draws": args.draws, "seed": args.seed, "maps": {}}
    probe = 4 if args.size % 4 == 0 else 2
    for beta in (0.40, 0.43):
        print(f"χ map, β = {beta}, {probe}x{probe} probes")
        res = chamber_susceptibility(lattice, beta, probe_grid(lattice, probe), SamplerConfig(chains=args.chains, seed=args.seed),
                                     RunConfig(draws=args.draws), progress=True)
        tag = f"beta{beta:.2f}"
        res.save(args.out / f"chi_map_{tag}.npz")
        plot_chi_maps(res, lattice, args.out / f"chi_map_{tag}.png",
                      title=f"walled Ising {args.size}x{args.size}, β = {beta}: χ(chamber, {probe}x{probe} probe)")
        cls = classify_probes(res, lattice)
        results["maps"][tag] = {
            "beta": beta,
            "max_rhat": float(np.nanmax(res.rhat)),
            "min_ess": float(np.nanmin(res.ess)),
            "median_ess": float(np.nanmedian(res.ess)),
            "max_ess": float(np.nanmax(res.ess)),
            "median_dof": float(np.nanmedian(res.dof)),
            "n_entries": int(res.chi.size),
            "n_unreliable": int((~res.reliable).sum()),
            "warning": res.warning(),
            "median_relative_stderr": float(np.median(res.stderr / np.abs(res.chi))),
            "classification": {k: v for k, v in cls.items() if k != "guess"},
        }
        print(f"  chamber of each probe from χ alone: {cls['n_correct']}/{cls['n_probes_inside_one_chamber']} correct")
    print("wall-end scan (β = 0.43)")
    info, x, x_se = wall_depth_scan(lattice, 0.43, SamplerConfig(chains=args.chains, seed=args.seed + 1), RunConfig(draws=args.draws), True)
    results["wall_depth"] = info
    plot_wall_scan(x, x_se, info, args.out / "wall_depth_scan.png")
    print(f"  inferred wall depth {info['estimated_depth']} (plausible {info['plausible_depths']}), true {info['true_depth']}")
    print("β sweep (Swendsen–Wang)")
    betas = np.round(np.linspace(0.36, 0.52, 9 if args.quick else 17), 4)
    results["beta_sweep"] = beta_sweep(lattice, betas, args.chains, max(args.draws // 4, 500), args.seed + 2, True)
    plot_beta_sweep(results["beta_sweep"], args.out / "beta_sweep.png")
    results["seconds"] = time.perf_counter() - t0
    write_json(args.out / "results.json", results)
    print(f"wrote {args.out}/ (results.json, chi_map_*.png, wall_depth_scan.png, beta_sweep.png) in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
