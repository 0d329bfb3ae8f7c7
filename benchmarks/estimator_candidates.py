"""How the error-bar estimator was chosen: candidates compared on the exact linear-Gaussian law.

Full-batch SGLD on a linear model with squared loss is a linear Gaussian recursion, simulated
here exactly in NumPy (draws stored, many seeds); the truth is the SGLD stationary law's χ
(:class:`spectro.nn.oracles.LinearGaussianOracle`, ε-corrected). For each candidate standard
error and degrees of freedom the script prints rms z, the fraction |z| > 3 and the coverage of
nominal 95 % intervals over all entries of all seeds:

* ``bm20``: the old engine's batch means (20 batches per chain, normal quantile);
* ``geyer``: Geyer/Vehtari MCSE on per-draw u (the new engine's se), normal quantile;
* ``geyer_t(a)``: the same se with Student t at dof = a·ESS/(κ−1), a ∈ {2, 1, 0.5, 0.25};
* ``between_t``: spread of per-chain covariances / √C with t_{C−1}.

The new engine uses a = 0.5 (docs/design.md §4). Usage:
    python benchmarks/estimator_candidates.py CHAINS DRAWS SEEDS [--steps-per-draw K]
"""

from __future__ import annotations

import argparse
import platform
import subprocess

import numpy as np
from scipy import stats

from spectro.engine.diagnostics import mean_error
from spectro.nn.oracles import LinearGaussianOracle

N, D, NBETA, GAMMA, EPS = 20, 3, 5.0, 2.0, 0.02


def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.5 * rng.normal(size=N)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    O = np.vstack([np.eye(N)[:10], np.full((1, N), 1 / N)])  # 10 per-sample losses + the mean loss
    F = np.zeros((3, N))
    F[0, :5], F[1, 10:], F[2, 7] = 1 / 5, 1 / 10, 1.0  # two subsets and one up-weighted sample
    F -= 1 / N
    return LinearGaussianOracle(X, y, w_star, NBETA, GAMMA), O, F


def simulate(orc, O, F, seed, C, T, spd, burn=300):
    P, mu, X, y = orc.precision, orc.mean, orc.X, orc.y
    rng = np.random.default_rng(seed)
    w = np.tile(orc.w_star, (C, 1))
    M = np.eye(D) - EPS / 2 * P
    out = np.empty((T, C, N))
    for s in range(burn + T * spd):
        w = mu + (w - mu) @ M.T + np.sqrt(EPS) * rng.normal(size=(C, D))
        if s >= burn and (s - burn) % spd == spd - 1:
            out[(s - burn) // spd] = (y[None] - w @ X.T) ** 2
    return out @ O.T, out @ F.T  # φ [T, C, m], ψ [T, C, k]


def candidates(phi, psi):
    T, C, m = phi.shape
    k = psi.shape[2]
    mu, nu = phi.reshape(-1, m).mean(0), psi.reshape(-1, k).mean(0)
    u = (phi - mu)[..., :, None] * (psi - nu)[..., None, :]  # [T, C, m, k]
    chi = -u.sum((0, 1)).ravel() / (T * C - 1)
    series = np.moveaxis(u, 0, 1).reshape(C, T, m * k)
    err = mean_error(series)
    B = min(20, T)
    bm = series[:, : (T // B) * B].reshape(C, B, -1, m * k).mean(2).reshape(C * B, m * k)
    out = {"bm20": (np.sqrt(bm.var(0, ddof=1) / (C * B)), np.inf)}
    out["geyer"] = (err.se, np.inf)
    for a in (2.0, 1.0, 0.5, 0.25):
        out[f"geyer_t({a})"] = (err.se, np.maximum(a * err.ess / (np.maximum(err.kurtosis, 2) - 1), 1))
    per_chain = np.stack([np.cov(phi[:, c].T, psi[:, c].T)[:m, m:].ravel() for c in range(C)])
    out["between_t"] = (per_chain.std(0, ddof=1) / np.sqrt(C), np.full(m * k, C - 1.0))
    return chi, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chains", type=int)
    ap.add_argument("draws", type=int)
    ap.add_argument("seeds", type=int)
    ap.add_argument("--steps-per-draw", type=int, default=1)
    a = ap.parse_args()
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | head -1"], capture_output=True, text=True).stdout.strip()
    print(f"# {cpu or platform.processor()} | chains {a.chains} draws {a.draws} seeds {a.seeds} "
          f"steps/draw {a.steps_per_draw} eps {EPS}")
    orc, O, F = problem()
    exact = orc.susceptibility(O, F, EPS).ravel()
    z, cover = {}, {}
    for s in range(a.seeds):
        chi, outs = candidates(*simulate(orc, O, F, 1000 + s, a.chains, a.draws, a.steps_per_draw))
        for name, (se, dof) in outs.items():
            zz = (chi - exact) / se
            q = np.where(np.isfinite(dof), stats.t.ppf(0.975, np.where(np.isfinite(dof), dof, 1)), stats.norm.ppf(0.975))
            z.setdefault(name, []).append(zz)
            cover.setdefault(name, []).append(np.abs(zz) <= q)
    print(f"{'candidate':15s} {'rms z':>6s} {'|z|>3':>7s} {'cover95':>8s}  (entries: {len(exact)} x {a.seeds} seeds)")
    for name in z:
        zz, cc = np.concatenate(z[name]), np.concatenate(cover[name])
        print(f"{name:15s} {np.sqrt(np.mean(zz**2)):6.2f} {100 * np.mean(np.abs(zz) > 3):6.1f}% {100 * cc.mean():7.1f}%")


if __name__ == "__main__":
    main()
