"""experiments/partA_rank1.py: share of the dataset χ carried by one outer product E_C[φ] ⊗ v."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("partA_rank1", ROOT / "experiments" / "partA_rank1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_exact_outer_product_and_known_remainder():
    m = _script()
    rng = np.random.default_rng(0)
    u = rng.uniform(0.5, 2.0, 16)
    v = np.array([-0.2, -0.8, 0.5, 0.25])
    fit = m.rank1_offset(np.outer(u, v), u)
    np.testing.assert_allclose(fit["v"], v, rtol=1e-12)
    assert fit["share_offset_rank1"] == pytest.approx(1.0, abs=1e-12)
    assert fit["share_svd_rank1"] == pytest.approx(1.0, abs=1e-12)
    assert fit["cos_u_left_singular"] == pytest.approx(1.0, abs=1e-12)
    assert fit["profile_cos_min"] == pytest.approx(1.0, abs=1e-12)
    # a remainder E with uᵀE = 0 is exactly what u vᵀ cannot explain: share = 1 − ‖E‖²/‖X‖²
    e = rng.normal(size=(16, 4))
    e -= np.outer(u, u @ e) / (u @ u)
    x = np.outer(u, v) + 0.1 * e
    fit = m.rank1_offset(x, u)
    np.testing.assert_allclose(fit["v"], v, rtol=1e-12)
    assert fit["share_offset_rank1"] == pytest.approx(1 - (0.01 * (e**2).sum()) / (x**2).sum(), rel=1e-12)
    assert fit["share_svd_rank1"] >= fit["share_offset_rank1"]  # the best rank 1 can only do better
    np.testing.assert_allclose(fit["residual"], 0.1 * e, atol=1e-14)


def test_heads_with_their_own_profiles_are_not_rank_one():
    m = _script()
    x = np.eye(4)  # four heads, each responding to one domain only
    fit = m.rank1_offset(x, np.ones(4))
    assert fit["share_offset_rank1"] == pytest.approx(0.25)
    assert fit["profile_cos_min"] == pytest.approx(0.5)


def test_bad_record_is_one_line_exit_2(tmp_path, capsys):
    m = _script()
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"runs": {"a": {"subsets": {}}}}))
    assert m.main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable study record" in err[0]
    assert m.main([str(tmp_path / "missing.json")]) == 2
