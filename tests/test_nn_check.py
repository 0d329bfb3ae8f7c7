"""``spectro nn check``: pilot grid, diagnostics, recommendation (spectro.jobs.nn_check).

Validation on the linear-Gaussian oracle (spectro.nn.oracles): full-batch SGLD's stationary law is
known exactly at every ε, so the LLC's ε-bias of each setting is known; the check must reject the
settings whose bias is far above the full run's stderr, and the recommended setting's χ, sampled at
the full run's size, must agree with the exact (continuous) posterior within its error bars.
"""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from spectro.jobs.cli import main
from spectro.jobs.nn_check import CheckGrid, check_settings, pilot_runner, recommend
from spectro.nn import MeanLoss, PerSampleLoss, ProbeSet, SamplerConfig, SubsetFields
from spectro.nn.oracles import LinearGaussianOracle
from toy_regression import linear_gaussian_problem, squared_loss

N, D = 20, 3
NBETA, GAMMA = 5.0, 2.0


def _problem():
    return linear_gaussian_problem(N)


def test_grid_settings_and_bad_grids():
    g = CheckGrid()
    s = g.settings()
    assert len(s) == 15 and (1.0, 1.0, 1.0) in s and (2.0, 3.0, 1.0) in s and (0.5, 1.0, 0.5) in s
    for bad in ({"eps": (0.5, 2.0)}, {"eps": (1.0, -1.0)}, {"chains": 1}, {"draws": 3}, {"gamma": (float("nan"),)}):
        with pytest.raises(ValueError, match="check grid"):
            CheckGrid(**bad)


def test_recommended_setting_matches_the_exact_posterior_on_the_gaussian_oracle():
    model, X, y, w_star = _problem()
    probe = ProbeSet({"train": (X, y)})
    idx = [0, 1, 2, 3]
    obs = [PerSampleLoss(("train", idx)), MeanLoss("train")]
    fields = [SubsetFields({"A": ("train", list(range(5))), "B": ("train", list(range(10, 20)))}, base="train")]
    O = np.vstack([np.eye(N)[idx], np.full((1, N), 1 / N)])
    F = np.zeros((2, N))
    F[0, :5], F[1, 10:] = 1 / 5, 1 / 10
    F -= 1 / N
    # the study the check is for: 4 chains × 100 draws (its stderr sets how much ε-bias is tolerable)
    base = SamplerConfig(epsilon=0.04, gamma=GAMMA, nbeta=NBETA, chains=4, draws=100, steps_per_draw=4, burn_in=200,
                         batch_size=None, seed=5, master_dtype=torch.float64)
    run = pilot_runner(model, squared_loss, (X, y), probe, obs, fields)
    grid = CheckGrid(chains=16, draws=200, gamma=(), nbeta=())  # the ε ladder only: γ, nβ are the estimand
    reports = check_settings(run, base, grid, full_size=base.chains * base.draws, progress=False)
    # the exact ε-bias of the LLC of every setting, in units of the full run's stderr
    for r in reports:
        assert not r.diverged
        orc = LinearGaussianOracle(X.numpy(), y.numpy(), w_star.numpy(), r.nbeta, r.gamma)
        exact_bias = orc.llc(r.epsilon) - orc.llc(0.0)
        if exact_bias > 6 * r.llc_stderr_full + 2 * r.eps_bias_llc_se:  # unmistakably biased
            assert not r.trustworthy, (r.epsilon, r.gamma, r.nbeta, exact_bias, r.reasons)
    assert any(not r.trustworthy for r in reports)  # the grid does contain biased settings
    best, why = recommend(reports)
    assert best is not None and best.gamma_factor == 1 and best.nbeta_factor == 1, why
    # the recommended setting, run at the full size, agrees with the exact continuous posterior
    from dataclasses import replace

    sus = run(replace(base, epsilon=best.epsilon, seed=17))
    exact = LinearGaussianOracle(X.numpy(), y.numpy(), w_star.numpy(), NBETA, GAMMA).susceptibility(O, F)
    z = sus.z_scores(exact)
    assert np.abs(z).max() < 4, (best.epsilon, np.round(z, 2))
    s = sus.meta["sampling"]
    llc0 = LinearGaussianOracle(X.numpy(), y.numpy(), w_star.numpy(), NBETA, GAMMA).llc(0.0)
    assert abs(s["llc"] - llc0) < 4 * s["llc_stderr"], (s["llc"], s["llc_stderr"], llc0)


def test_cli_one_line_errors(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert main(["nn", "check", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spectro: error:") and "nope.json" in err and "\n" not in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"system": "nn", "model": {"checkpoint": "builtin:tiny"}, "components": ["full"], "sampler": {"epsilon": -1}}))
    assert main(["nn", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spectro: error:") and "epsilon" in err and "\n" not in err
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"system": "nn", "model": {"checkpoint": "builtin:tiny"}, "components": ["full"]}))
    assert main(["nn", "check", str(good), "--chains", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "chains" in err and "\n" not in err
