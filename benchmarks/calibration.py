"""Calibration of the engine's error bars on problems with an exact answer (issue 13, item 5).

For every regime, many independent seeds; each seed gives a few χ entries with the engine's
``stderr``, ``dof``, ``flags`` and 95 % interval ``χ ± t_dof(0.975)·stderr``. Against the exact χ:

* % unflagged (``flags == 0``);
* coverage of the 95 % intervals over the unflagged entries (and over all entries, a NaN interval
  counting as a miss);
* rms z and the fraction |z| > 3, z = (χ − exact)/stderr, over the unflagged entries;
* the median dof of the unflagged entries.

Entries of one seed share their draws and are correlated, so every rate's standard error is
computed from the seed-level spread (ratio estimator over seeds, a cluster-robust se), floored by
the binomial sd of the rate at its nominal value over all counted entries. A target is ``PASS``
when the estimate lies inside its band, ``pass*`` when it lies outside but within 2 se of the band
(the seeds cannot tell it from a pass), ``FAIL`` otherwise.

Suites:

* ``ar1`` — synthetic stationary Gaussian series fed to :class:`~spectro.engine.MomentAccumulator`
  directly, chains started in the stationary law (no burn-in question): AR(1) with every component
  of (φ₁, φ₂, ψ₁, ψ₂) sharing the coefficient a, so the centred product u = (φ−μ)(ψ−ν) has
  integrated autocorrelation time τ_u = (1 + a²)/(1 − a²) ∈ {1, 3, 10, 30} draws (the components
  themselves τ_x = (1 + a)/(1 − a)); and a VAR(1) with mixed time scales (exact τ_u of each entry
  from the lagged covariances). Exact χ = Cov(φ, ψ) (scale 1).
* ``linear`` — the linear-Gaussian oracle of tests/test_nn_linear_gaussian.py (n = 20, d = 3,
  nβ = 5, γ = 2) through the real sampler (:class:`~spectro.nn.LocalizedPosterior`,
  :func:`~spectro.engine.driver.sample_moments` on a :class:`~spectro.nn.PosteriorSystem`), full-batch SGLD ε = 0.02, 2 steps per draw, 300 burn-in
  steps, float64; per seed an unrestricted run and a run restricted to weights 0 and 2 (weight 1
  frozen at w*). Estimators: plain FDT χ = −Cov(φ, ψ) on both runs, and Baker's component
  estimator χ^C = −(E_C[φψ] − E_C[φ]·E_full[ψ]) (component = the restricted run, full = the
  unrestricted run of the same seed, independent streams). Exact values: the ε-corrected
  stationary law of full-batch SGLD (:class:`~spectro.nn.oracles.LinearGaussianOracle` and
  :meth:`~spectro.nn.oracles.LinearGaussianOracle.restricted`). 5 observables (ℓ₀..ℓ₃ and
  L̄ − L̄(w*)) × 3 fields (ΔL_A, ΔL_B, up-weighting sample 7) = 15 entries per seed.
* ``ising`` — 12 × 12 walled lattice at β = 0.44, Metropolis, 4 chains × 1,000 sweeps (100 burn-in
  sweeps, random start), the 3 chambers × 4 probes (6 × 6 grid), against the transfer matrix.

All sampler settings were fixed before the first calibration run; nothing is tuned to the targets.

Usage::

    python benchmarks/calibration.py --suite all --seeds 30 --json docs/results/calibration/calibration.json
    python benchmarks/calibration.py --quick          # smoke version, seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import linalg, stats

LEVEL = 0.95
Z_BIG = 3.0
TOL_SE = 2.0  # a rate outside its band by less than this many standard errors: "pass*"

# targets, decided before running (issue 13, item 5)
TARGETS = {
    "long": {"unflagged": (0.90, 1.0), "coverage": (0.92, 0.98), "rms_z": (0.0, 1.25), "frac_z3": (0.0, 0.025)},
    "long_ising": {"unflagged": (0.80, 1.0), "coverage": (0.92, 0.98), "rms_z": (0.0, 1.25), "frac_z3": (0.0, 0.025)},
    "short": {"coverage": (0.90, 0.98)},
}
SIZES = {"8x400": (8, 400), "4x100": (4, 100), "4x40": (4, 40)}
SIZE_TARGET = {"8x400": "long", "4x100": "short", "4x40": "short"}


# ================================================================================================
# records and summaries
# ================================================================================================


@dataclass
class Regime:
    """One calibration regime: per-seed estimates of the same entries against one exact answer."""

    name: str
    suite: str
    target: str | None  # key of TARGETS, None = report only
    exact: np.ndarray  # [E]
    entries: list[str]
    settings: dict = field(default_factory=dict)
    chi: list[np.ndarray] = field(default_factory=list)  # per seed [E]
    stderr: list[np.ndarray] = field(default_factory=list)
    dof: list[np.ndarray] = field(default_factory=list)
    flags: list[np.ndarray] = field(default_factory=list)
    wall_s: float = 0.0

    def add(self, sus) -> None:
        self.chi.append(np.asarray(sus.chi, float).ravel())
        self.stderr.append(np.asarray(sus.stderr, float).ravel())
        self.dof.append(np.asarray(sus.dof, float).ravel())
        self.flags.append(np.asarray(sus.flags, np.int64).ravel())

    def arrays(self) -> dict[str, np.ndarray]:
        """[S, E] arrays of chi, stderr, dof, flags and the exact values broadcast."""
        out = {k: np.stack(getattr(self, k)) for k in ("chi", "stderr", "dof", "flags")}
        out["exact"] = np.broadcast_to(self.exact, out["chi"].shape)
        return out


def _clustered_rate(hits: np.ndarray, counts: np.ndarray, nominal: float | None) -> tuple[float, float]:
    """Ratio estimate Σhits/Σcounts over seeds and its seed-level (cluster-robust) standard error.

    The se is floored by the binomial sd at ``nominal`` (if given) over all counted entries, so a
    lucky lack of spread between seeds never gives a zero tolerance.
    """
    hits, counts = np.asarray(hits, float), np.asarray(counts, float)
    S, N = len(counts), counts.sum()
    if N == 0:
        return float("nan"), float("nan")
    p = hits.sum() / N
    se = math.sqrt(S / (S - 1) * np.sum((hits - p * counts) ** 2)) / N if S > 1 else float("nan")
    if nominal is not None:
        se = max(se, math.sqrt(nominal * (1 - nominal) / N))
    return float(p), float(se)


def summarise(regime: Regime) -> dict:
    """The metrics of a regime (module docstring), with seed-level standard errors and diagnostics."""
    a = regime.arrays()
    chi, se, dof, flags, exact = a["chi"], a["stderr"], a["dof"], a["flags"], a["exact"]
    S, E = chi.shape
    ok = flags == 0
    q = stats.t.ppf(0.5 + LEVEL / 2, dof)
    with np.errstate(invalid="ignore", divide="ignore"):
        covered = np.abs(chi - exact) <= q * se  # NaN → False
        covered_normal = np.abs(chi - exact) <= stats.norm.ppf(0.5 + LEVEL / 2) * se
        z = (chi - exact) / se
    n_ok = ok.sum(1)
    m = {"n_seeds": S, "entries_per_seed": E, "n_entries": S * E, "n_unflagged": int(n_ok.sum())}
    m["unflagged"], m["unflagged_se"] = _clustered_rate(n_ok, np.full(S, E), None)
    m["coverage"], m["coverage_se"] = _clustered_rate((covered & ok).sum(1), n_ok, LEVEL)
    m["coverage_all"], m["coverage_all_se"] = _clustered_rate(covered.sum(1), np.full(S, E), LEVEL)
    m["coverage_normal"], _ = _clustered_rate((covered_normal & ok).sum(1), n_ok, None)
    z_ok = np.where(ok, z, 0.0)
    mean_z2, mean_z2_se = _clustered_rate((z_ok**2).sum(1), n_ok, None)
    m["rms_z"] = math.sqrt(mean_z2) if np.isfinite(mean_z2) else float("nan")
    m["rms_z_se"] = mean_z2_se / (2 * m["rms_z"]) if m["rms_z"] > 0 else float("nan")
    m["frac_z3"], m["frac_z3_se"] = _clustered_rate((ok & (np.abs(z_ok) > Z_BIG)).sum(1), n_ok, 2 * stats.norm.sf(Z_BIG))
    m["mean_z"] = float(z_ok.sum() / n_ok.sum()) if n_ok.sum() else float("nan")
    m["median_dof"] = float(np.median(dof[ok])) if ok.any() else float("nan")
    m["median_dof_all"] = float(np.nanmedian(dof))
    counts = {}
    for bit, label in ((1, "NONFINITE"), (2, "FROZEN"), (4, "UNMIXED"), (16, "FEW_POINTS")):
        c = int(((flags & bit) != 0).sum())
        if c:
            counts[label] = c
    m["flag_counts"] = counts
    # diagnostics over all seeds of each entry (flagged or not; entries with finite stderr)
    err = chi - exact
    fin = np.isfinite(se) & np.isfinite(err)
    if S >= 3 and fin.all():
        sd_err = err.std(0, ddof=1)  # actual scatter of χ over seeds, per entry
        rms_se = np.sqrt((se**2).mean(0))  # what the error bars claimed
        m["scatter_over_stderr"] = float(np.median(sd_err / rms_se))  # > 1: error bars too small
        m["stderr_cv"] = float(np.median(se.std(0, ddof=1) / se.mean(0)))  # noise of the error bar itself
        # selection by the flags: the claimed stderr ÷ the actual scatter, unflagged vs flagged entries
        ratio = se / sd_err
        m["stderr_over_sd_unflagged"] = float(np.median(ratio[ok])) if ok.any() else float("nan")
        m["stderr_over_sd_flagged"] = float(np.median(ratio[~ok])) if (~ok).any() else float("nan")
        bias_t = err.mean(0) / (sd_err / math.sqrt(S))
        m["bias_t_max"] = float(np.max(np.abs(bias_t)))  # entry-wise bias, t with S−1 dof
        m["bias_t_crit"] = float(stats.t.ppf(1 - 0.025 / E, S - 1))  # Bonferroni 5 % over the entries
    return m


def verdicts(metrics: dict, target: str | None) -> dict[str, str]:
    """PASS / pass* / FAIL / n/a per targeted metric (module docstring)."""
    if target is None:
        return {}
    out = {}
    for key, (lo, hi) in TARGETS[target].items():
        v, s = metrics[key], metrics.get(key + "_se", float("nan"))
        if not np.isfinite(v):
            out[key] = "n/a"
        elif lo <= v <= hi:
            out[key] = "PASS"
        elif np.isfinite(s) and (lo - TOL_SE * s <= v <= hi + TOL_SE * s):
            out[key] = "pass*"
        else:
            out[key] = "FAIL"
    return out


# ================================================================================================
# suite (a): synthetic AR(1) / VAR(1) series
# ================================================================================================

AR_SD = np.array([1.0, 2.0, 0.5, 3.0])  # φ₁, φ₂, ψ₁, ψ₂
AR_CORR = np.array([
    [1.0, 0.0, 0.7, 0.0],
    [0.0, 1.0, -0.3, 0.2],
    [0.7, -0.3, 1.0, 0.1],
    [0.0, 0.2, 0.1, 1.0],
])
AR_SIGMA = AR_CORR * np.outer(AR_SD, AR_SD)  # stationary covariance; χ = Σ[:2, 2:]
AR_TAUS = (1.0, 3.0, 10.0, 30.0)  # τ_u of the centred product
VAR_TAU_X = (1.5, 5.0, 20.0, 60.0)  # τ of the four VAR modes


def ar_coefficient(tau_u: float) -> float:
    """a with (1 + a²)/(1 − a²) = τ_u."""
    return math.sqrt((tau_u - 1) / (tau_u + 1))


@dataclass(frozen=True)
class VarProcess:
    """x_t = A x_{t−1} + e_t, e ~ N(0, Q), stationary covariance Σ; φ = x[:m], ψ = x[m:]."""

    A: np.ndarray
    Q: np.ndarray
    m: int = 2

    @property
    def sigma(self) -> np.ndarray:
        return linalg.solve_discrete_lyapunov(self.A, self.Q)

    @property
    def exact(self) -> np.ndarray:
        return self.sigma[: self.m, self.m:]

    def tau_u(self, max_lag: int = 20_000) -> np.ndarray:
        """[m, k] exact τ of u = (φ_i − μ)(ψ_a − ν): Cov(u_0, u_s) = Γ_ii(s)Γ_aa(s) + Γ_ia(s)Γ_ai(s), Γ(s) = AˢΣ."""
        S = self.sigma
        m = self.m
        G = S.copy()
        num = np.zeros((m, S.shape[0] - m))
        var = np.diag(S)[:m, None] * np.diag(S)[None, m:] + S[:m, m:] ** 2
        for _ in range(max_lag):
            G = self.A @ G
            term = np.diag(G)[:m, None] * np.diag(G)[None, m:] + G[:m, m:] * G[m:, :m].T
            num += term
            if np.abs(term).max() < 1e-12 * var.max():
                break
        return 1 + 2 * num / var

    def sample(self, chains: int, draws: int, rng: np.random.Generator) -> np.ndarray:
        """[draws, chains, d], chains started in the stationary law."""
        d = self.A.shape[0]
        Ls, Lq = np.linalg.cholesky(self.sigma), np.linalg.cholesky(self.Q)
        x = rng.standard_normal((chains, d)) @ Ls.T
        noise = rng.standard_normal((draws, chains, d)) @ Lq.T
        out = np.empty((draws, chains, d))
        for t in range(draws):
            if t:
                x = x @ self.A.T + noise[t]
            out[t] = x
        return out


def ar1_process(tau_u: float) -> VarProcess:
    a = ar_coefficient(tau_u)
    return VarProcess(a * np.eye(4), (1 - a * a) * AR_SIGMA)


def var_mixed_process() -> VarProcess:
    """Four modes with τ_x ∈ VAR_TAU_X mixed by a fixed random basis; innovations AR_SIGMA."""
    a = np.array([(t - 1) / (t + 1) for t in VAR_TAU_X])
    V = np.random.default_rng(12345).standard_normal((4, 4)) + 2 * np.eye(4)
    A = V @ np.diag(a) @ np.linalg.inv(V)
    return VarProcess(A, AR_SIGMA.copy())


def run_synthetic(process: VarProcess, chains: int, draws: int, seed: int):
    """One seed: the series through the engine (scale 1, so χ = Cov)."""
    import torch

    from spectro.engine import MomentAccumulator, estimate_susceptibility

    x = process.sample(chains, draws, np.random.default_rng(seed))
    acc = MomentAccumulator(chains, process.m, x.shape[2] - process.m, draws)
    acc.update(torch.from_numpy(x[..., : process.m]), torch.from_numpy(x[..., process.m:]))
    return estimate_susceptibility(acc, 1.0)


def suite_ar1(seeds: int, quick: bool, log) -> list[Regime]:
    processes = [(f"AR1 tau_u={t:g}", ar1_process(t), {"tau_u": t, "tau_x": (1 + ar_coefficient(t)) / (1 - ar_coefficient(t))})
                 for t in AR_TAUS]
    var = var_mixed_process()
    tu = var.tau_u()
    processes.append(("VAR mixed", var, {"tau_x_modes": list(VAR_TAU_X), "tau_u_entries": np.round(tu.ravel(), 2).tolist()}))
    names = [f"phi{i + 1}~psi{a + 1}" for i in range(2) for a in range(2)]
    out = []
    for size, (C, T) in SIZES.items():
        for label, proc, info in processes:
            r = Regime(f"{label} {size}", "ar1", SIZE_TARGET[size], proc.exact.ravel(), names,
                       {"chains": C, "draws": T, **info})
            t0 = time.perf_counter()
            for s in range(seeds):
                r.add(run_synthetic(proc, C, T, seed=1_000_003 * (len(out) + 1) + s))
            r.wall_s = time.perf_counter() - t0
            out.append(r)
            log(f"  {r.name}: {r.wall_s:.1f} s")
    return out


# ================================================================================================
# suite (b): linear-Gaussian oracle through the NN sampler
# ================================================================================================

LG_N, LG_D, LG_NBETA, LG_GAMMA = 20, 3, 5.0, 2.0
LG_EPS, LG_STEPS_PER_DRAW, LG_BURN_IN = 0.02, 2, 300
LG_OBS_IDX = [0, 1, 2, 3]
LG_SUBSET_A, LG_SUBSET_B, LG_UP = list(range(5)), list(range(10, 20)), [7]
LG_FREE = np.array([True, False, True])  # weight 1 frozen at w*


def lg_problem():
    """The problem of tests/test_nn_linear_gaussian.py: X, y, OLS w*, the model at w*."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(0)
    X = torch.randn(LG_N, LG_D, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.5 * torch.randn(LG_N, generator=g, dtype=torch.float64)
    w_star = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    model = nn.Linear(LG_D, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w_star[None])
    return model, X, y, w_star


def _squared_loss(out, batch):
    return (out[:, 0] - batch[1]) ** 2


def lg_specs(l_star: float):
    """Observables, fields and their matrices on the loss vector (O [5, n], F [3, n], φ offsets [5])."""
    from spectro.nn import MeanLoss, PerSampleLoss, SampleUpweighting, SubsetFields

    observables = [PerSampleLoss(("train", LG_OBS_IDX)), MeanLoss("train", reference=l_star)]
    fields = [
        SubsetFields({"A": ("train", LG_SUBSET_A), "B": ("train", LG_SUBSET_B)}, base="train"),
        SampleUpweighting(("train", LG_UP), base="train"),
    ]
    O = np.vstack([np.eye(LG_N)[LG_OBS_IDX], np.full((1, LG_N), 1 / LG_N)])
    F = np.zeros((3, LG_N))
    F[0, LG_SUBSET_A] = 1 / len(LG_SUBSET_A)
    F[1, LG_SUBSET_B] = 1 / len(LG_SUBSET_B)
    F[2, LG_UP] = 1.0
    F -= 1 / LG_N
    offset = np.array([0.0] * len(LG_OBS_IDX) + [l_star])
    return observables, fields, O, F, offset


def lg_sample(chains: int, draws: int, seed: int, restricted: bool, burn_in: int = LG_BURN_IN):
    """One run of the real sampler; returns the MomentAccumulator and the names."""
    import torch

    from spectro.engine.driver import sample_moments
    from spectro.nn import PosteriorSystem, ProbeSet, Restriction, SamplerConfig, run_config

    model, X, y, w_star = lg_problem()
    l_star = float(torch.mean((y - X @ w_star) ** 2))
    observables, fields, *_ = lg_specs(l_star)
    cfg = SamplerConfig(epsilon=LG_EPS, gamma=LG_GAMMA, nbeta=LG_NBETA, chains=chains, draws=draws,
                        steps_per_draw=LG_STEPS_PER_DRAW, burn_in=burn_in, batch_size=None, seed=seed,
                        master_dtype=torch.float64)
    restriction = Restriction({"weight": torch.as_tensor(LG_FREE)[None]}, name="w0,w2") if restricted else None
    system = PosteriorSystem(model, _squared_loss, (X, y), cfg, ProbeSet({"train": (X, y)}), observables, fields,
                             restriction=restriction)
    return sample_moments(system, run_config(cfg), progress=False).accumulator, system.observables, system.fields


def lg_exact() -> dict[str, np.ndarray]:
    """Exact χ of the three linear-Gaussian estimators at ε = LG_EPS, each [5, 3]."""
    from spectro.nn.oracles import LinearGaussianOracle

    _, X, y, w_star = lg_problem()
    X, y, w_star = X.numpy(), y.numpy(), w_star.numpy()
    l_star = float(np.mean((y - X @ w_star) ** 2))
    _, _, O, F, offset = lg_specs(l_star)
    full = LinearGaussianOracle(X, y, w_star, LG_NBETA, LG_GAMMA)
    comp = full.restricted(LG_FREE)
    return {
        "fdt_full": full.susceptibility(O, F, LG_EPS),
        "fdt_restricted": comp.susceptibility(O, F, LG_EPS),
        "baker_restricted": comp.component_susceptibility(O, F, LG_EPS, offset=offset),
    }


LG_ESTIMATORS = {
    "fdt_full": "FDT, no restriction",
    "fdt_restricted": "FDT, restricted to w0,w2",
    "baker_restricted": "Baker C=w0,w2",
}


def suite_linear(seeds: int, quick: bool, log, sizes: list[str] | None = None) -> list[Regime]:
    from spectro.engine import component_susceptibility_estimate, estimate_susceptibility

    exact = lg_exact()
    sizes = {k: SIZES[k] for k in (sizes or (["4x40"] if quick else list(SIZES)))}
    settings = {"n": LG_N, "d": LG_D, "nbeta": LG_NBETA, "gamma": LG_GAMMA, "epsilon": LG_EPS,
                "steps_per_draw": LG_STEPS_PER_DRAW, "burn_in_steps": LG_BURN_IN, "batch_size": "full",
                "free_weights": np.flatnonzero(LG_FREE).tolist()}
    out = []
    for size, (C, T) in sizes.items():
        regimes, names = {}, None
        t0 = time.perf_counter()
        for s in range(seeds):
            base = 100_000 * (list(SIZES).index(size) + 1) + 2 * s  # every run its own streams
            acc_full, obs, fld = lg_sample(C, T, base, restricted=False)
            acc_c, _, _ = lg_sample(C, T, base + 1, restricted=True)
            if names is None:
                names = [f"{o}~{f}" for o in obs for f in fld]
                for key, label in LG_ESTIMATORS.items():
                    regimes[key] = Regime(f"LG {label} {size}", "linear", SIZE_TARGET[size], exact[key].ravel(), names,
                                          {"chains": C, "draws": T, "estimator": key, **settings})
            regimes["fdt_full"].add(estimate_susceptibility(acc_full, -1.0))
            regimes["fdt_restricted"].add(estimate_susceptibility(acc_c, -1.0))
            regimes["baker_restricted"].add(component_susceptibility_estimate(acc_c, acc_full))
        wall = time.perf_counter() - t0
        for r in regimes.values():
            r.wall_s = wall / len(regimes)
        out.extend(regimes.values())
        log(f"  LG {size}: {wall:.1f} s for {seeds} seeds (2 runs each)")
    return out


# ================================================================================================
# suite (c): walled Ising vs the transfer matrix
# ================================================================================================

IS_SIZE, IS_BETA, IS_CHAINS, IS_DRAWS, IS_PROBE = 12, 0.44, 4, 1000, 6


def suite_ising(seeds: int, quick: bool, log) -> list[Regime]:
    from spectro.ising import walled_lattice
    from spectro.ising.samplers import SamplerConfig
    from spectro.ising.susceptibility import RunConfig, chamber_susceptibility, exact_chamber_susceptibility, probe_grid

    lat = walled_lattice(IS_SIZE, IS_SIZE)
    probes = probe_grid(lat, IS_PROBE)
    exact = exact_chamber_susceptibility(lat, IS_BETA, probes)
    draws = 200 if quick else IS_DRAWS
    run = RunConfig(draws=draws)
    names = None
    r = None
    t0 = time.perf_counter()
    for s in range(seeds):
        sus = chamber_susceptibility(lat, IS_BETA, probes, SamplerConfig(chains=IS_CHAINS, seed=s), run, progress=False)
        if r is None:
            names = [f"{o}~{p}" for o in sus.observables for p in sus.fields]
            r = Regime(f"Ising 12x12 walled b=0.44 {IS_CHAINS}x{draws}", "ising", None if quick else "long_ising",
                       exact.ravel(), names, {"lattice": "walled 12x12", "beta": IS_BETA, "sampler": "metropolis",
                                              "chains": IS_CHAINS, "draws": draws, "burn_in_sweeps": run.burn_in_steps,
                                              "init": "random", "probes": list(probes)})
        r.add(sus)
    r.wall_s = time.perf_counter() - t0
    log(f"  {r.name}: {r.wall_s:.1f} s")
    return [r]


SUITES = {"ar1": suite_ar1, "linear": suite_linear, "ising": suite_ising}


# ================================================================================================
# report
# ================================================================================================


def _pct(v: float, se: float | None = None, digits: int = 1) -> str:
    if not np.isfinite(v):
        return "n/a"
    s = f"{100 * v:.{digits}f}"
    if se is not None and np.isfinite(se):
        s += f"±{100 * se:.{digits}f}"
    return s


def format_table(results: list[dict]) -> str:
    head = (f"{'regime':<40} {'n':>5} {'unfl%':>6} {'cov95 unfl%':>12} {'cov95 all%':>10} {'rms z':>10} "
            f"{'|z|>3 %':>9} {'med dof':>8}  verdict")
    lines = [head, "-" * len(head)]
    for r in results:
        m, v = r["metrics"], r["verdicts"]
        rz = f"{m['rms_z']:.2f}±{m['rms_z_se']:.2f}" if np.isfinite(m["rms_z"]) else "n/a"
        verdict = " ".join(f"{k}:{x}" for k, x in v.items()) if v else "(report only)"
        lines.append(f"{r['name']:<40} {m['n_entries']:>5} {_pct(m['unflagged'], digits=0):>6} "
                     f"{_pct(m['coverage'], m['coverage_se']):>12} {_pct(m['coverage_all']):>10} {rz:>10} "
                     f"{_pct(m['frac_z3']):>9} {m['median_dof']:>8.1f}  {verdict}")
    return "\n".join(lines)


def format_diagnostics(results: list[dict]) -> str:
    head = (f"{'regime':<40} {'mean z':>7} {'cov95 normal%':>13} {'scatter/se':>10} {'se cv':>6} "
            f"{'se/sd unfl':>10} {'se/sd flag':>10} {'max|bias t|':>11} {'(crit)':>6}  flags")
    lines = [head, "-" * len(head)]
    for r in results:
        m = r["metrics"]
        g = lambda k, f: (f.format(m[k]) if k in m and np.isfinite(m[k]) else "n/a")  # noqa: E731
        flags = ", ".join(f"{k} {c}" for k, c in m["flag_counts"].items()) or "-"
        lines.append(f"{r['name']:<40} {g('mean_z', '{:+.2f}'):>7} {_pct(m['coverage_normal']):>13} "
                     f"{g('scatter_over_stderr', '{:.2f}'):>10} {g('stderr_cv', '{:.2f}'):>6} "
                     f"{g('stderr_over_sd_unflagged', '{:.2f}'):>10} {g('stderr_over_sd_flagged', '{:.2f}'):>10} "
                     f"{g('bias_t_max', '{:.2f}'):>11} {g('bias_t_crit', '{:.2f}'):>6}  {flags}")
    return "\n".join(lines)


def format_markdown(rec: dict) -> str:
    """Markdown tables of a record (what docs/calibration.md quotes), one row per regime."""
    f = lambda v, d=1: "n/a" if v is None else f"{100 * v:.{d}f}"  # noqa: E731
    out = []
    for suite, regimes in rec["suites"].items():
        out.append(f"**{suite}** ({rec['seeds']} seeds per regime)\n")
        out.append("| regime | entries | unflagged % | coverage 95 % (unflagged) | coverage 95 % (all) | rms z | \\|z\\| > 3 % "
                   "| median dof | stderr/sd unflagged · flagged | verdicts |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in regimes:
            m = r["metrics"]
            cov = "n/a" if m["coverage"] is None else f"{f(m['coverage'])} ± {f(m['coverage_se'])}"
            rz = "n/a" if m["rms_z"] is None else f"{m['rms_z']:.2f} ± {m['rms_z_se']:.2f}"
            dof = "n/a" if m["median_dof"] is None else f"{m['median_dof']:.1f}"
            ss = " · ".join("–" if m.get(k) is None else f"{m[k]:.2f}"
                            for k in ("stderr_over_sd_unflagged", "stderr_over_sd_flagged"))
            v = ", ".join(f"{k} {x}" for k, x in r["verdicts"].items()) or "report only"
            out.append(f"| {r['name']} | {m['n_entries']} | {f(m['unflagged'], 0)} | {cov} | {f(m['coverage_all'])} | {rz} "
                       f"| {f(m['frac_z3'])} | {dof} | {ss} | {v} |")
        out.append("")
    return "\n".join(out)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    import os

    import numpy
    import scipy
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__,
            "torch": torch.__version__, "load_average_at_start": load}


def code_state() -> dict:
    """git HEAD, whether the working tree differs from it, and a hash of the engine sources as run
    (the engine is edited in the working tree, so HEAD alone does not pin the numbers)."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted((root / "spectro" / "engine").glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    out = {"engine_sha256": h.hexdigest()[:16]}
    try:
        git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=20).stdout  # noqa: E731
        out["git_head"] = git("rev-parse", "--short", "HEAD").strip()
        out["dirty_files"] = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def regime_record(r: Regime) -> dict:
    m = summarise(r)
    a = r.arrays()
    return {
        "name": r.name, "suite": r.suite, "target": r.target, "targets": TARGETS.get(r.target or "", {}),
        "settings": r.settings, "entries": r.entries, "exact": r.exact, "wall_s": r.wall_s,
        "metrics": m, "verdicts": verdicts(m, r.target),
        "per_seed": {k: a[k] for k in ("chi", "stderr", "dof", "flags")},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=["ar1", "linear", "ising", "all"], default="all")
    p.add_argument("--seeds", type=int, default=None, help="independent seeds per regime (default 30; 3 with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny smoke version (3 seeds, LG at 4x40 only, Ising 200 sweeps)")
    p.add_argument("--json", type=Path, default=None, help="write the record here")
    p.add_argument("--threads", type=int, default=1, help="torch / numba threads (default 1: the machine is shared)")
    p.add_argument("--markdown", type=Path, default=None, metavar="RECORD",
                   help="print the markdown tables of an existing record and exit (runs nothing)")
    args = p.parse_args(argv)
    if args.markdown is not None:
        print(format_markdown(json.loads(args.markdown.read_text())))
        return 0
    seeds = args.seeds if args.seeds is not None else (3 if args.quick else 30)
    if seeds < 2:
        p.error("--seeds must be at least 2 (standard errors come from the spread between seeds)")

    import torch

    torch.set_num_threads(args.threads)
    try:
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass

    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix() if argv is None else "benchmarks/calibration.py",
                                                *(sys.argv[1:] if argv is None else argv)])
    mach = machine()
    code = code_state()
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"command: python {command}")
    print(f"machine: {mach['cpu']}, {mach['logical_cpus']} logical CPUs, load {mach['load_average_at_start']}, "
          f"python {mach['python']}, torch {mach['torch']}, numpy {mach['numpy']}")
    print(f"date: {started.isoformat(timespec='seconds')}   seeds per regime: {seeds}{'  (quick)' if args.quick else ''}   "
          f"git {code.get('git_head', '?')} ({len(code.get('dirty_files', []))} modified files), engine sha256 {code['engine_sha256']}")
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    t0 = time.perf_counter()
    records: dict[str, list[dict]] = {}
    for name in suites:
        print(f"\n[{name}] running ...", flush=True)
        regimes = SUITES[name](seeds, args.quick, lambda s: print(s, flush=True))
        records[name] = [regime_record(r) for r in regimes]
        print(f"\n[{name}] 95 % intervals χ ± t_dof·stderr vs exact; ± = seed-level standard error")
        print(format_table(records[name]))
        print(f"\n[{name}] diagnostics (scatter/se = sd over seeds of χ − exact ÷ rms stderr, median over entries; "
              f"se cv = spread of the stderr over seeds; se/sd = stderr ÷ that entry's scatter over seeds, median "
              f"over unflagged / flagged draws; max|bias t| = largest entry-wise t of mean(χ − exact), crit = "
              f"Bonferroni 5 %)")
        print(format_diagnostics(records[name]))
    wall = time.perf_counter() - t0
    print(f"\nwall time {wall:.0f} s")
    print("targets: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()))
    print("verdict: PASS = inside the band; pass* = outside but within 2 seed-level se; FAIL = further out")
    if args.json is not None:
        rec = {"format": "spectro.calibration/1", "command": f"python {command}", "date": started.isoformat(timespec="seconds"),
               "machine": mach, "code": code, "seeds": seeds, "quick": args.quick, "level": LEVEL, "wall_s": wall,
               "targets": TARGETS, "tolerance_se": TOL_SE, "suites": records}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(_jsonable(rec), indent=1))
        tmp.replace(args.json)
        print(f"record: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
