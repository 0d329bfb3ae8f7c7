"""``spectro nn check CONFIG``: pilot chains on a small grid of ε, γ, nβ around a job's settings,
with diagnostics per setting and a recommended setting with its reasons.

Grid (:class:`CheckGrid`): an ε ladder (factors 0.5, 1, 2 of the config's ε) at the config's
(γ, nβ) and at each one-at-a-time change of γ (× 1/3, × 3) and nβ (× 0.5, × 2): 15 short runs.
γ and nβ are part of the estimand (they define the tempered, localized posterior); ε is numerics
only. So the recommendation keeps the config's γ and nβ unless no ε works there.

Per setting (:func:`check_settings`): divergence; loss-trace stationarity (``trend_z``: second
half's mean minus the first half's over their combined Monte Carlo error); LLC ± stderr,
R-hat and ESS of the loss trace; the distance travelled ‖w − w*‖ (mean over chains at the last
draw) beside ``√(d/γ)``, the spread of the localizing Gaussian alone (d free coordinates); the
share of χ entries the engine flags; and the ε-bias of the LLC and of every χ entry from the
ε-halving pair of the ladder: with a bias ∝ ε (docs/design.md §2; tests/test_nn_linear_gaussian.py),
``bias(ε) ≈ 2·(λ̂(ε) − λ̂(ε/2))`` (ε at the bottom of the ladder: ``λ̂(2ε) − λ̂(ε)``), reported in
units of the stderr the full run will have (the pilot stderr scaled by √(pilot size / run size)).

A setting is *trustworthy* when it did not diverge, its trace is stationary (|trend_z| < 3), its
R-hat < ``max_rhat`` and its ε-bias is not shown to exceed the full run's stderr
(|bias| − 2·se(bias) < se_full, for the LLC and for the median χ entry). The recommendation is
the largest trustworthy ε at the config's (γ, nβ) (fewest steps per effective draw), else the
trustworthy setting nearest to the config (more localized first).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CheckGrid", "SettingReport", "check_settings", "recommend", "pilot_runner", "run_check", "plot_check",
           "format_table"]


@dataclass(frozen=True)
class CheckGrid:
    """Factors around the config's (ε, γ, nβ) and the pilot's size (None: the config's)."""

    eps: tuple[float, ...] = (0.5, 1.0, 2.0)
    gamma: tuple[float, ...] = (1 / 3, 3.0)
    nbeta: tuple[float, ...] = (0.5, 2.0)
    chains: int | None = 4
    draws: int | None = 40
    burn_in: int | None = None
    max_rhat: float = 1.1
    max_trend_z: float = 3.0

    def __post_init__(self) -> None:
        for name in ("eps", "gamma", "nbeta"):
            v = getattr(self, name)
            if not all(isinstance(f, (int, float)) and math.isfinite(f) and f > 0 for f in v):
                raise ValueError(f"check grid: {name} factors must be positive numbers, got {list(v)}")
        if 1.0 not in self.eps or len(self.eps) < 2:
            raise ValueError(f"check grid: eps factors must include 1 and one more value, got {list(self.eps)}")
        for name in ("chains", "draws"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < (2 if name == "chains" else 8)):
                raise ValueError(f"check grid: {name} must be an integer ≥ {2 if name == 'chains' else 8}, got {v!r}")

    def settings(self) -> list[tuple[float, float, float]]:
        """(ε factor, γ factor, nβ factor) of every pilot run."""
        pairs = [(1.0, 1.0)] + [(g, 1.0) for g in self.gamma if g != 1] + [(1.0, b) for b in self.nbeta if b != 1]
        return [(e, g, b) for g, b in pairs for e in sorted(self.eps)]


@dataclass
class SettingReport:
    """Diagnostics of one pilot setting (JSON-friendly)."""

    eps_factor: float
    gamma_factor: float
    nbeta_factor: float
    epsilon: float
    gamma: float
    nbeta: float
    diverged: bool = False
    error: str = ""
    llc: float = float("nan")
    llc_stderr: float = float("nan")
    llc_stderr_full: float = float("nan")  # projected to the full run's size
    rhat: float = float("nan")
    ess: float = float("nan")
    trend_z: float = float("nan")
    distance: float = float("nan")
    prior_scale: float = float("nan")  # √(d/γ)
    flagged_share: float = float("nan")
    eps_bias_llc: float = float("nan")
    eps_bias_llc_se: float = float("nan")
    eps_bias_chi_median: float = float("nan")  # median over entries of |bias| / se_full
    seconds: float = float("nan")
    trustworthy: bool = False
    reasons: list[str] = field(default_factory=list)
    chi: list | None = None  # per entry, for the ε-bias (dropped from the JSON)
    chi_stderr: list | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("chi"), d.pop("chi_stderr")
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _trend_z(trace: np.ndarray) -> float:
    from ..engine import mean_error

    half = trace.shape[1] // 2
    a, b = mean_error(trace[:, :half, None]), mean_error(trace[:, half:2 * half, None])
    return float((b.mean[0] - a.mean[0]) / np.hypot(a.se[0], b.se[0]))


def check_settings(run: Callable[[Any], Any], sampler, grid: CheckGrid, *, full_size: int,
                   progress: bool = True) -> list[SettingReport]:
    """Run ``run(sampler_config) -> Susceptibility`` (with ``meta["sampling"]`` and the final
    weights' distance in ``meta["distance"]``) on every setting of ``grid`` around ``sampler``;
    ``full_size`` = chains × draws of the study the settings are for."""
    from tqdm import tqdm

    from ..nn.posterior import DivergenceError

    base_nb = sampler.nbeta
    reports: list[SettingReport] = []
    settings = grid.settings()
    bar = tqdm(total=len(settings), unit="setting", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for fe, fg, fb in settings:
        cfg = replace(sampler, epsilon=sampler.epsilon * fe, gamma=sampler.gamma * fg, nbeta=base_nb * fb,
                      chains=grid.chains or sampler.chains, draws=grid.draws or sampler.draws,
                      burn_in=sampler.burn_in if grid.burn_in is None else grid.burn_in)
        rep = SettingReport(fe, fg, fb, cfg.epsilon, cfg.gamma, cfg.nbeta)
        bar.set_postfix_str(f"eps {cfg.epsilon:.3g} gamma {cfg.gamma:.3g} nbeta {cfg.nbeta:.3g}")
        t0 = time.perf_counter()
        try:
            sus = run(cfg)
        except DivergenceError as e:
            rep.diverged, rep.error = True, " ".join(str(e).split())[:200]
        else:
            s = sus.meta["sampling"]
            trace = np.asarray(sus.meta["loss_trace"], float)
            rep.llc, rep.llc_stderr, rep.rhat, rep.ess = s["llc"], s["llc_stderr"], s["llc_rhat"], s["llc_ess"]
            rep.llc_stderr_full = rep.llc_stderr * math.sqrt(cfg.chains * cfg.draws / full_size)
            rep.trend_z = _trend_z(trace)
            rep.distance, rep.prior_scale = sus.meta["distance"], math.sqrt(s["n_free"] / cfg.gamma) if cfg.gamma > 0 else math.inf
            rep.flagged_share = float(np.mean(sus.flags != 0)) if sus.flags is not None else float("nan")
            rep.chi, rep.chi_stderr = np.asarray(sus.chi).ravel().tolist(), np.asarray(sus.stderr).ravel().tolist()
        rep.seconds = time.perf_counter() - t0
        reports.append(rep)
        bar.update(1)
    bar.close()
    _eps_bias(reports, full_size)
    for r in reports:
        _judge(r, grid)
    return reports


def _eps_bias(reports: list[SettingReport], full_size: int) -> None:
    """ε-bias from the ladder at each (γ, nβ): bias ∝ ε ⇒ bias(ε) = ε·Δλ̂/Δε over the nearest pair."""
    by = {}
    for r in reports:
        by.setdefault((r.gamma_factor, r.nbeta_factor), []).append(r)
    for ladder in by.values():
        ladder.sort(key=lambda r: r.eps_factor)
        for i, r in enumerate(ladder):
            if r.diverged:
                continue
            j = i - 1 if i > 0 else i + 1
            if j >= len(ladder) or ladder[j].diverged:
                continue
            o = ladder[j]
            k = r.epsilon / (r.epsilon - o.epsilon) if i > 0 else r.epsilon / (o.epsilon - r.epsilon)
            sign = 1.0 if i > 0 else -1.0
            r.eps_bias_llc = sign * k * (r.llc - o.llc)
            r.eps_bias_llc_se = abs(k) * math.hypot(r.llc_stderr, o.llc_stderr)
            if r.chi and o.chi:
                chi, ochi = np.asarray(r.chi), np.asarray(o.chi)
                se, ose = np.asarray(r.chi_stderr), np.asarray(o.chi_stderr)
                bias = sign * k * (chi - ochi)
                bias_se = abs(k) * np.hypot(se, ose)
                shrink = r.llc_stderr_full / r.llc_stderr if r.llc_stderr > 0 else 1.0
                with np.errstate(divide="ignore", invalid="ignore"):
                    excess = np.maximum(np.abs(bias) - 2 * bias_se, 0.0) / (se * shrink)
                r.eps_bias_chi_median = float(np.nanmedian(excess))


def _judge(r: SettingReport, grid: CheckGrid) -> None:
    reasons = []
    if r.diverged:
        r.reasons = ["diverged: " + r.error]
        return
    if not abs(r.trend_z) < grid.max_trend_z:
        reasons.append(f"loss trace drifts (trend z {r.trend_z:+.1f})")
    if not r.rhat < grid.max_rhat:
        reasons.append(f"R-hat {r.rhat:.2f} ≥ {grid.max_rhat}")
    if math.isfinite(r.eps_bias_llc) and abs(r.eps_bias_llc) - 2 * r.eps_bias_llc_se > r.llc_stderr_full:
        reasons.append(f"ε-bias of the LLC {r.eps_bias_llc:+.3g} ± {r.eps_bias_llc_se:.2g} exceeds the full run's "
                       f"stderr {r.llc_stderr_full:.2g}")
    if math.isfinite(r.eps_bias_chi_median) and r.eps_bias_chi_median > 1:
        reasons.append(f"ε-bias of χ exceeds the full run's stderr (median {r.eps_bias_chi_median:.1f} se)")
    if not math.isfinite(r.eps_bias_llc):
        reasons.append("no ε-bias estimate (its ε-halving partner diverged or is missing)")
    r.trustworthy = not reasons
    r.reasons = reasons or ["stationary, mixed, ε-bias below the full run's stderr"]


def recommend(reports: Sequence[SettingReport]) -> tuple[SettingReport | None, str]:
    """The recommended setting and why (see the module docstring)."""
    ok = [r for r in reports if r.trustworthy]
    here = [r for r in ok if r.gamma_factor == 1 and r.nbeta_factor == 1]
    if here:
        best = max(here, key=lambda r: r.eps_factor)
        why = (f"largest trustworthy ε at the config's γ and nβ (ε × {best.eps_factor:g}; fewest steps per "
               f"effective draw): {best.reasons[0]}; loss-trace ESS {best.ess:.0f} in the pilot")
        return best, why
    if ok:  # nearest to the config: fewest changed factors, more localized (larger γ, smaller nβ) first
        def dist(r: SettingReport) -> tuple:
            return (abs(math.log(r.gamma_factor)) + abs(math.log(r.nbeta_factor)), -r.gamma_factor, r.nbeta_factor,
                    -r.eps_factor)
        best = min(ok, key=dist)
        bad = [r for r in reports if r.gamma_factor == 1 and r.nbeta_factor == 1]
        why = ("no ε works at the config's γ and nβ (" + "; ".join(f"ε × {r.eps_factor:g}: {r.reasons[0]}" for r in bad)
               + f"); nearest trustworthy setting: γ × {best.gamma_factor:g}, nβ × {best.nbeta_factor:g}, "
               f"ε × {best.eps_factor:g} (this changes the posterior being measured)")
        return best, why
    return None, "no setting of the grid is trustworthy: lower ε further, raise γ or lower nβ, and run the check again"


def format_table(reports: Sequence[SettingReport]) -> str:
    head = (f"{'eps':>9} {'gamma':>8} {'nbeta':>7} {'LLC ± se':>18} {'R-hat':>6} {'ESS':>6} {'trend z':>7} "
            f"{'|w-w*|':>8} {'sqrt(d/g)':>9} {'flag%':>6} {'eps-bias LLC':>16} {'ok':>3}")
    lines = [head]
    for r in reports:
        if r.diverged:
            lines.append(f"{r.epsilon:9.3g} {r.gamma:8.3g} {r.nbeta:7.3g}  diverged")
            continue
        bias = f"{r.eps_bias_llc:+.3g}±{r.eps_bias_llc_se:.2g}" if math.isfinite(r.eps_bias_llc) else "-"
        lines.append(f"{r.epsilon:9.3g} {r.gamma:8.3g} {r.nbeta:7.3g} {r.llc:9.3g} ± {r.llc_stderr:<6.2g} "
                     f"{r.rhat:6.2f} {r.ess:6.0f} {r.trend_z:7.1f} {r.distance:8.3g} {r.prior_scale:9.3g} "
                     f"{100 * r.flagged_share:6.1f} {bias:>16} {'yes' if r.trustworthy else 'no':>3}")
    return "\n".join(lines)


def plot_check(reports: Sequence[SettingReport], path: str | Path) -> None:
    """LLC ± stderr against ε for every (γ, nβ) of the grid; trustworthy settings filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    by: dict = {}
    for r in reports:
        by.setdefault((r.gamma, r.nbeta), []).append(r)
    for (g, b), rs in by.items():
        rs = sorted((r for r in rs if not r.diverged), key=lambda r: r.epsilon)
        if not rs:
            continue
        line = ax.errorbar([r.epsilon for r in rs], [r.llc for r in rs], [r.llc_stderr for r in rs], marker="",
                           capsize=3, label=f"γ {g:.3g}, nβ {b:.3g}")
        for r in rs:
            ax.plot(r.epsilon, r.llc, "o", color=line[0].get_color(), mfc=line[0].get_color() if r.trustworthy else "white")
    ax.set_xscale("log")
    ax.set_xlabel("ε")
    ax.set_ylabel("LLC λ̂ ± pilot stderr")
    ax.set_title("spectro nn check: pilot chains (filled = trustworthy)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pilot_runner(model, per_sample_loss, train_data, probe, observables, fields, **system_options) -> Callable:
    """``run(sampler_config) -> Susceptibility`` for :func:`check_settings`: the engine's estimate
    of ``observables`` × ``fields`` with ``meta["distance"]`` = mean over chains of ‖w − w*‖ at the
    last draw."""
    import torch

    from ..engine import measure
    from ..nn.system import PosteriorSystem, run_config

    def run(s):
        system = PosteriorSystem(model, per_sample_loss, train_data, s, probe, observables, fields, **system_options)
        sus = measure(system, run_config(s), progress=False)
        sus.meta["distance"] = float(torch.linalg.vector_norm(system.state.W - system.posterior.w_star, dim=1).mean())
        return sus

    return run


def run_check(config, out: str | Path | None, grid: CheckGrid = CheckGrid(), *, progress: bool = True,
              log: Callable[[str], None] | None = None) -> dict:
    """The check for a job config (path, dict or JobConfig): pilot runs of the *full* model with the
    job's fields (a component_loss observable becomes the mean base loss); writes ``check.json``
    and ``check.png`` to ``out`` (when given); returns the record."""
    import torch

    from ..models import next_token_loss
    from ..nn.observables import MeanLoss
    from .nn_config import _BASE, JobConfig
    from .nn_prepare import _prepare

    log = log or (lambda s: print(s, file=sys.stderr))
    cfg = config if isinstance(config, JobConfig) else (JobConfig.from_dict(config) if isinstance(config, Mapping)
                                                       else JobConfig.load(config))
    torch.set_num_threads(max(1, int(cfg.threads or 1)))
    prep = _prepare(cfg, progress, log)
    obs = [MeanLoss(_BASE) if o is None else o for o in prep.observables]
    sampler = replace(prep.sampler, nbeta=prep.nbeta)
    full_size = sampler.chains * sampler.draws

    run = pilot_runner(prep.model, next_token_loss, prep.train, prep.probe, obs, prep.fields)
    t0 = time.perf_counter()
    reports = check_settings(run, sampler, grid, full_size=full_size, progress=progress)
    best, why = recommend(reports)
    record = {"format": "spectro.nn_check/1", "config": cfg.to_dict(), "grid": asdict(grid),
              "full_run": {"chains": sampler.chains, "draws": sampler.draws}, "settings": [r.to_dict() for r in reports],
              "recommended": None if best is None else {"epsilon": best.epsilon, "gamma": best.gamma, "nbeta": best.nbeta},
              "reason": why, "seconds": time.perf_counter() - t0}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "check.json").write_text(json.dumps(record, indent=1))
        plot_check(reports, out / "check.png")
    record["table"] = format_table(reports)
    return record
