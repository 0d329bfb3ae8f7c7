"""experiments/validate_error_bars.py's analysis on planted seeds with a known answer.

S seeds × E entries drawn as x = μ + se_true·N(0, 1) with a stated dof of 30 (the t-interval is then
slightly conservative: P(|N| ≤ t_0.975,60) = 0.9545): reported stderrs equal to se_true must give scatter/se ≈ 1 and pairwise coverage ≈ 95 %;
reported stderrs half the truth must give ≈ 2 and a coverage far below. Tolerances from the
binomial / sampling error of the planted draws (the pairs share seeds, so the coverage's error is
bounded by the per-seed count, not the pair count).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("validate_error_bars", ROOT / "experiments" / "validate_error_bars.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _planted(S: int, E: int, dof: float, report_factor: float, flagged_share: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=E)
    se_true = rng.uniform(0.5, 2.0, size=E)
    seeds = []
    for _ in range(S):
        x = mu + se_true * rng.normal(size=E)
        flags = rng.uniform(size=E) < flagged_share
        seeds.append({"c": {"token": (x, report_factor * se_true, np.full(E, dof), flags)}})
    return seeds


def test_calibrated_planted_seeds_give_ratio_one_and_nominal_coverage():
    m = _script()
    report, pair_z = m.analyse(_planted(S=10, E=2000, dof=30.0, report_factor=1.0, flagged_share=0.3, seed=1))
    r = report["c|token"]
    # sd of a pooled ratio over 2000 entries × 9 dof: ≈ 1/√(2·18000) ≈ 0.005; 5 sd ≈ 0.03
    assert r["scatter_over_se"] == pytest.approx(1.0, abs=0.03)
    # coverage: the pairs share seeds; ~1400 unflagged entries per seed pair, effective n ≥ 1400·9/2
    nominal = 2 * stats.norm.cdf(stats.t.ppf(0.975, 60)) - 1
    assert r["pairwise_coverage_95"] == pytest.approx(nominal, abs=5 * np.sqrt(0.05 * 0.95 / 6000))
    assert r["flagged_pairwise_coverage_95"] == pytest.approx(nominal, abs=5 * np.sqrt(0.05 * 0.95 / 6000))
    assert r["share_flagged"] == pytest.approx(0.3, abs=5 * np.sqrt(0.21 / 20000))
    assert r["pairwise_rms_z"] == pytest.approx(1.0, abs=0.05)
    z_ok, z_flag = pair_z["c|token"]
    assert z_ok.size == r["pairs_x_entries"] and z_flag.size == r["flagged_pairs_x_entries"]
    assert z_ok.size + z_flag.size == 45 * 2000


def test_under_reported_stderr_is_caught():
    m = _script()
    report, _ = m.analyse(_planted(S=10, E=2000, dof=30.0, report_factor=0.5, flagged_share=0.0, seed=2))
    r = report["c|token"]
    assert r["scatter_over_se"] == pytest.approx(2.0, abs=0.06)
    # |x_s − x_t| ≤ q·(se_true/2)·√2 ⇔ |N(0, 1)| ≤ q/2 with q = t_0.975,60: coverage ≈ 0.68
    expected = 2 * stats.norm.cdf(stats.t.ppf(0.975, 60) / 2) - 1
    assert r["pairwise_coverage_95"] == pytest.approx(expected, abs=0.02)
    assert r["pairwise_rms_z"] > 1.8


def test_plot_writes_a_figure(tmp_path):
    m = _script()
    report, pair_z = m.analyse(_planted(S=4, E=50, dof=10.0, report_factor=1.0, flagged_share=0.5, seed=3))
    m.plot(report, pair_z, tmp_path / "eb.png", "planted")
    assert (tmp_path / "eb.png").stat().st_size > 10_000
