"""Compare per-token susceptibilities across data subsets (domains) and across runs.

* :func:`compare_subsets` — dataset-level χ per (component, domain) from the job's ``dL:D``
  fields (proper stderrs; checked against the mean of the per-token χ), each component's domain
  profile relative to its own mean, and cosine similarities of domain-averaged vectors with a
  bootstrap over tokens.
* :func:`compare_runs` — stability across sampler seeds / checkpoints on the same probe tokens.
* :func:`spearman` — rank correlation used to compare per-head rankings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .principal_components import pca, standardise
from .token_table import TokenTable

__all__ = ["compare_subsets", "compare_runs", "relative_profile_ill_conditioned", "RELATIVE_PROFILE_MIN_MEAN", "spearman"]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def compare_subsets(table: TokenTable, names: Sequence[str] | None = None, *, which: str = "chi", n_boot: int = 200,
                    seed: int = 0) -> dict:
    """Which components respond to which data subset (domain), with uncertainties.

    * ``dataset_chi`` [K, D] ± ``dataset_stderr``: χ of the ``dL:D`` fields (the job's estimate of
      up-weighting the whole domain, stderr from the same draws); ``token_mean_check``: max over
      (C, D) of |mean_tokens χ − χ_dL| / stderr (the identity χ(q') = E_q'[χ_xy]; ≈ 0).
    * ``relative`` [K, D] ± stderr: χ[C, D] / mean_D χ[C, ·] — each component's domain profile on
      its own scale (scales differ by component); ``profile_z`` = (relative − its mean over
      components) / stderr: which component responds to a domain more than the others do.
    * ``cosine_raw`` [D, D]: cosine between domain-averaged raw χ vectors over ``names``;
      ``cosine_z``: the same on the z-scored columns (centred across all tokens, so it compares the
      domains' *deviations* from the average token); both with bootstrap std over tokens
      (resampled within each domain).

    ``which="cov_part"`` does the same for Baker's covariance part (dataset values and stderrs from
    the draws, so the table must be loaded with ``draws=True``).
    """
    names = list(names) if names is not None else table.heads()
    cols = table.columns(names)
    doms = table.domains
    if which == "chi":
        chi_d, se_d = table.subset_chi[cols], table.subset_stderr[cols]
    elif which == "cov_part":
        if table.subset_cov is None:
            raise ValueError("which='cov_part' needs the table loaded with draws=True (the devinterp export)")
        chi_d, se_d = table.subset_cov[cols], table.subset_cov_stderr[cols]
    else:
        raise ValueError(f"which must be 'chi' or 'cov_part', got {which!r}")
    xfull = table.matrix(names, which)
    check = 0.0
    for j, d in enumerate(doms):
        m = xfull[table.domain == d].mean(axis=0)
        check = max(check, float(np.max(np.abs(m - chi_d[:, j]) / se_d[:, j])))
    mean_c = chi_d.mean(axis=1, keepdims=True)
    rel = chi_d / mean_c
    # first-order error propagation, treating the D domain estimates as independent
    D = len(doms)
    grad_own = (1.0 / mean_c) - chi_d / mean_c**2 / D
    rel_se = np.sqrt((grad_own * se_d) ** 2 + ((chi_d / mean_c**2 / D) ** 2) * ((se_d**2).sum(axis=1, keepdims=True) - se_d**2))
    profile_z = (rel - rel.mean(axis=0, keepdims=True)) / rel_se

    x = xfull
    z, _, _ = standardise(x)
    idx = {d: np.flatnonzero(table.domain == d) for d in doms}

    def cos_mats(xx: np.ndarray, zz: np.ndarray, sel: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        mr = np.stack([xx[sel[d]].mean(axis=0) for d in doms])
        mz = np.stack([zz[sel[d]].mean(axis=0) for d in doms])
        cr = np.array([[_cos(mr[a], mr[b]) for b in range(D)] for a in range(D)])
        cz = np.array([[_cos(mz[a], mz[b]) for b in range(D)] for a in range(D)])
        return cr, cz

    cr, cz = cos_mats(x, z, idx)
    rng = np.random.default_rng(seed)
    br, bz = [], []
    for _ in range(n_boot):
        sel = {d: rng.choice(i, size=len(i), replace=True) for d, i in idx.items()}
        a, b = cos_mats(x, z, sel)
        br.append(a)
        bz.append(b)
    br, bz = np.asarray(br), np.asarray(bz)
    zmeans = np.stack([z[idx[d]].mean(axis=0) for d in doms])  # [D, K] mean z-score per domain
    zmeans_se = np.stack([z[idx[d]].std(axis=0, ddof=1) / math.sqrt(len(idx[d])) for d in doms])
    return {
        "which": which, "components": names, "domains": list(doms),
        "dataset_chi": chi_d.tolist(), "dataset_stderr": se_d.tolist(),
        "token_mean_check_max_z": check,
        "relative": rel.tolist(), "relative_stderr": rel_se.tolist(), "profile_z": profile_z.tolist(),
        "domain_mean_z": zmeans.tolist(), "domain_mean_z_sem": zmeans_se.tolist(),
        "cosine_raw": cr.tolist(), "cosine_raw_boot_std": br.std(axis=0, ddof=1).tolist(),
        "cosine_z": cz.tolist(), "cosine_z_boot_std": bz.std(axis=0, ddof=1).tolist(),
        "cosine_z_boot_q025": np.quantile(bz, 0.025, axis=0).tolist(), "cosine_z_boot_q975": np.quantile(bz, 0.975, axis=0).tolist(),
    }


# ============================================================================ runs
RELATIVE_PROFILE_MIN_MEAN = 0.2  # |mean over subsets| / rms below this: χ / mean is ill-conditioned


def relative_profile_ill_conditioned(chi: np.ndarray) -> bool:
    """True when some component's subset χ nearly cancel: |mean_d χ[k]| < ``RELATIVE_PROFILE_MIN_MEAN``
    · rms_d χ[k] for a row k of the [K, D] matrix, so that χ / mean_d χ amplifies noise without bound."""
    chi = np.asarray(chi, dtype=float)
    return bool(np.any(np.abs(chi.mean(axis=1)) < RELATIVE_PROFILE_MIN_MEAN * np.sqrt((chi**2).mean(axis=1))))


def _r_relative_profile(da: np.ndarray, db: np.ndarray) -> float:
    """Pearson r of the per-component profiles χ[k, d] / mean_d χ[k, d] of two runs.

    Only defined when every component's χ keeps one sign-dominated mean: when
    |mean_d χ| < ``RELATIVE_PROFILE_MIN_MEAN`` · rms_d χ for some component (subsets of opposite
    sign that nearly cancel), dividing by the mean amplifies noise without bound and NaN is
    returned; ``r_profile_shape`` (profiles scaled to unit norm) is the sign-safe comparison.
    """
    if relative_profile_ill_conditioned(da) or relative_profile_ill_conditioned(db):
        return float("nan")
    ra, rb = da / da.mean(axis=1, keepdims=True), db / db.mean(axis=1, keepdims=True)
    return float(np.corrcoef(ra.ravel(), rb.ravel())[0, 1])


def compare_runs(tables: Mapping[str, TokenTable], names: Sequence[str] | None = None) -> dict:
    """Stability of per-token χ, PCA and dataset χ across runs on the same probe tokens.

    Per pair of runs: median over components of the Pearson r of per-token χ (and of the
    covariance part when available), |cosine| between matched per-layer PC1 and PC2 loadings (χ and
    covariance part) and |r| between their per-token PC1 scores, Pearson r of the [K, D] dataset-χ matrices, of the per-component relative
    profiles χ/mean (NaN when a component's subsets cancel, see :func:`_r_relative_profile`) and of the
    unit-norm profiles χ/‖χ‖ (``r_profile_shape``), and a stderr calibration: the mean over tokens and components of
    (x_a − x_b)² / (se_a² + se_b²), ≈ 1 when the stderrs describe the run-to-run spread (only
    meaningful for runs of the same checkpoint; > 1: the stderrs are too small or the runs differ).
    Per run: the per-layer PC1 fractions (χ and covariance part).
    """
    labels = list(tables)
    if len(labels) < 2:
        raise ValueError("compare_runs needs at least two runs")
    ref = tables[labels[0]]
    names = list(names) if names is not None else ref.heads()
    for lab in labels[1:]:
        t = tables[lab]
        if t.n_tokens != ref.n_tokens or not (np.array_equal(t.token_id, ref.token_id) and np.array_equal(t.domain, ref.domain)):
            raise ValueError(f"run {lab!r} has different probe tokens from run {labels[0]!r}; stability needs the same probes")
    layers = ref.layers()
    with_cov = all(t.offset is not None for t in tables.values())
    per_run = {}
    pcs: dict[str, dict] = {}
    for lab, t in tables.items():
        per_run[lab] = {}
        pcs[lab] = {}
        for l, hs in layers.items():
            res = pca(t.matrix(hs), names=hs)
            pcs[lab][l] = res
            entry = {"pc1": float(res.explained_ratio[0]), "pc2": float(res.explained_ratio[1]) if len(hs) > 1 else None}
            if with_cov:
                rc = pca(t.matrix(hs, "cov_part"), names=hs)
                pcs[lab][("cov", l)] = rc
                entry["cov_part_pc1"] = float(rc.explained_ratio[0])
            per_run[lab][f"layer{l}"] = entry
    pairs = {}
    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            ta, tb = tables[labels[a]], tables[labels[b]]
            ca, cb = ta.matrix(names), tb.matrix(names)
            r_tok = [float(np.corrcoef(ca[:, k], cb[:, k])[0, 1]) for k in range(len(names))]
            entry = {"r_chi_per_component_median": float(np.median(r_tok)), "r_chi_per_component_min": float(np.min(r_tok))}
            sa, sb = ta.matrix(names, "stderr"), tb.matrix(names, "stderr")
            entry["chi_stderr_calibration"] = float(np.mean((ca - cb) ** 2 / (sa**2 + sb**2)))
            if with_cov:
                va, vb = ta.matrix(names, "cov_part"), tb.matrix(names, "cov_part")
                r_cov = [float(np.corrcoef(va[:, k], vb[:, k])[0, 1]) for k in range(len(names))]
                entry["r_cov_part_per_component_median"] = float(np.median(r_cov))
                if ta.cov_stderr is not None and tb.cov_stderr is not None:
                    ea, eb = ta.matrix(names, "cov_stderr"), tb.matrix(names, "cov_stderr")
                    entry["cov_stderr_calibration"] = float(np.mean((va - vb) ** 2 / (ea**2 + eb**2)))
            for l in layers:
                pa, pb = pcs[labels[a]][l], pcs[labels[b]][l]
                entry[f"layer{l}_pc1_abs_cos"] = float(abs(pa.loadings[0] @ pb.loadings[0]))
                entry[f"layer{l}_pc1_score_abs_r"] = float(abs(np.corrcoef(pa.scores[:, 0], pb.scores[:, 0])[0, 1]))
                if pa.loadings.shape[0] > 1:
                    entry[f"layer{l}_pc2_abs_cos"] = float(abs(pa.loadings[1] @ pb.loadings[1]))
                if with_cov:
                    qa, qb = pcs[labels[a]][("cov", l)], pcs[labels[b]][("cov", l)]
                    entry[f"layer{l}_cov_part_pc1_abs_cos"] = float(abs(qa.loadings[0] @ qb.loadings[0]))
                    entry[f"layer{l}_cov_part_pc1_score_abs_r"] = float(abs(np.corrcoef(qa.scores[:, 0], qb.scores[:, 0])[0, 1]))
            cols_a, cols_b = ta.columns(names), tb.columns(names)
            da, db = ta.subset_chi[cols_a], tb.subset_chi[cols_b]
            entry["r_dataset_chi"] = float(np.corrcoef(da.ravel(), db.ravel())[0, 1])
            entry["r_relative_profile"] = _r_relative_profile(da, db)
            ua, ub = da / np.linalg.norm(da, axis=1, keepdims=True), db / np.linalg.norm(db, axis=1, keepdims=True)
            entry["r_profile_shape"] = float(np.corrcoef(ua.ravel(), ub.ravel())[0, 1])
            pairs[f"{labels[a]} vs {labels[b]}"] = entry
    return {"runs": labels, "per_run": per_run, "pairs": pairs}


# ============================================================================ ranks
def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(x):
        x = np.asarray(x, dtype=np.float64)
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):
            sel = x == v
            r[sel] = r[sel].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
