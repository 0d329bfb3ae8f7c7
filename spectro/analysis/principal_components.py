"""PCA of per-token susceptibility vectors, with uncertainties and noise floors.

* :func:`standardise` / :func:`pca` — per-layer z-scoring of each component column across
  tokens (Baker et al. 2025; docs/design.md §2: component scales differ by ≈ Z_full/Z_C) and PCA by
  SVD. Sign convention: each PC's loadings sum to ≥ 0.
* :func:`pc_fraction_spread` — spread of the explained-variance ratios by resampling tokens
  (bootstrap) or by perturbing χ with its stderr (parametric); :func:`noise_floor` — the same
  ratios for pure noise of the same stderr (a null control: the PC1 fraction that needs no
  structure at all, ≈ 1/K plus a finite-sample excess); :func:`replicate_noise_floor` — the same
  for the real, correlated Monte Carlo noise (docs/design.md §4, "Noise floors").
* :func:`layer_pca_report` — all of the above per layer of a :class:`~spectro.analysis.token_table.TokenTable`.
* :func:`class_separation` — per token class mean PC score ± sem, the between-class variance
  fraction η² and a permutation p-value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .token_table import TokenTable

__all__ = ["standardise", "PCAResult", "pca", "pc_fraction_spread", "noise_floor", "replicate_noise_floor",
           "layer_pca_report", "class_separation"]


def standardise(x: np.ndarray, *, eps: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score each column across rows: ``(z, mean, std)`` with std over rows (ddof 0).

    A constant column (std ≤ eps) would divide by zero: ValueError names it.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a [tokens, components] matrix, got shape {x.shape}")
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    bad = np.flatnonzero(~(sd > eps))
    if bad.size:
        raise ValueError(f"columns {bad.tolist()} are constant across tokens; cannot z-score them")
    return (x - mean) / sd, mean, sd


@dataclass(frozen=True)
class PCAResult:
    """PCA of a [T, K] matrix. ``explained_ratio`` [r] (sums to 1), ``loadings`` [r, K] (rows are
    unit PCs, each with loadings summing to ≥ 0), ``scores`` [T, r], ``singular_values`` [r],
    ``mean``/``scale`` [K] (scale = 1 without standardisation), ``names`` of the columns."""

    explained_ratio: np.ndarray
    loadings: np.ndarray
    scores: np.ndarray
    singular_values: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    names: list[str]

    def to_dict(self, n_pc: int | None = None) -> dict:
        r = len(self.explained_ratio) if n_pc is None else n_pc
        return {"explained_ratio": self.explained_ratio[:r].tolist(),
                "loadings": {f"PC{i + 1}": dict(zip(self.names, self.loadings[i].tolist())) for i in range(r)}}


def _explained(x: np.ndarray, standardise_columns: bool) -> np.ndarray:
    xc = x - x.mean(axis=0)
    if standardise_columns:
        sd = xc.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        xc = xc / sd
    s = np.linalg.svd(xc, compute_uv=False)
    v = s**2
    return v / v.sum()


def pca(x: np.ndarray, *, standardise_columns: bool = True, names: Sequence[str] | None = None) -> PCAResult:
    """PCA by SVD of the column-centred (and, by default, z-scored) matrix ``x`` [T, K]."""
    x = np.asarray(x, dtype=np.float64)
    if standardise_columns:
        z, mean, scale = standardise(x)
    else:
        mean = x.mean(axis=0)
        scale = np.ones(x.shape[1])
        z = x - mean
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    signs = np.where(vt.sum(axis=1) < 0, -1.0, 1.0)
    vt = vt * signs[:, None]
    u = u * signs[None, :]
    var = s**2
    return PCAResult(explained_ratio=var / var.sum(), loadings=vt, scores=u * s[None, :], singular_values=s, mean=mean,
                     scale=scale, names=list(names) if names is not None else [f"c{k}" for k in range(x.shape[1])])


def _spread(samples: np.ndarray) -> dict:
    """mean, std, 2.5 / 50 / 95 / 97.5 % quantiles of [n, r] ratio samples (PC1 and all PCs)."""
    q = np.quantile(samples, [0.025, 0.5, 0.95, 0.975], axis=0)
    return {"pc1": {"mean": float(samples[:, 0].mean()), "std": float(samples[:, 0].std(ddof=1)),
                    "q025": float(q[0, 0]), "median": float(q[1, 0]), "q95": float(q[2, 0]), "q975": float(q[3, 0])},
            "mean": samples.mean(axis=0).tolist(), "std": samples.std(axis=0, ddof=1).tolist(), "n": int(samples.shape[0])}


def pc_fraction_spread(chi: np.ndarray, stderr: np.ndarray | None = None, *, mode: str = "tokens", n_boot: int = 200,
                       seed: int = 0, standardise_columns: bool = True) -> dict:
    """Uncertainty of the explained-variance ratios of ``chi`` [T, K].

    ``mode="tokens"``: bootstrap — resample the T tokens with replacement, redo the PCA.
    ``mode="noise"``: parametric — add N(0, stderr²) to every entry, redo the PCA (the ratios' sensitivity
    to the sampling noise of χ; it adds noise on top of noise, so it is biased towards lower PC1).
    Returns :func:`_spread` of the n_boot ratio vectors.
    """
    chi = np.asarray(chi, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, chi.shape[1]))
    if mode == "tokens":
        T = chi.shape[0]
        for b in range(n_boot):
            out[b] = _explained(chi[rng.integers(0, T, T)], standardise_columns)
    elif mode == "noise":
        if stderr is None:
            raise ValueError("mode='noise' needs stderr")
        se = np.asarray(stderr, dtype=np.float64)
        for b in range(n_boot):
            out[b] = _explained(chi + se * rng.standard_normal(chi.shape), standardise_columns)
    else:
        raise ValueError(f"mode must be 'tokens' or 'noise', got {mode!r}")
    return _spread(out)


def noise_floor(stderr: np.ndarray, *, n: int = 200, seed: int = 0, standardise_columns: bool = True) -> dict:
    """Explained-variance ratios of pure noise N(0, stderr²) of the shape of ``stderr`` [T, K] (null control).

    A PC1 fraction is evidence of shared structure only when it clears this floor (for
    independent columns ≈ 1/K, plus an excess ~ sqrt(K/T) from finite T).
    """
    se = np.asarray(stderr, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty((n, se.shape[1]))
    for b in range(n):
        out[b] = _explained(se * rng.standard_normal(se.shape), standardise_columns)
    return _spread(out)


def replicate_noise_floor(noise: np.ndarray, *, n: int = 200, seed: int = 0, standardise_columns: bool = True) -> dict:
    """Explained-variance ratios of the *actual* Monte Carlo noise (null control with real correlations).

    ``noise`` [T, K] is a realisation of χ's noise with its true correlation across tokens and
    components — the engine's split-chain ``Susceptibility.noise`` or (χ_a − χ_b)/√2 of two
    replicate runs. Baker's estimator puts most of it along one direction (the full run's error
    enters every component through E_C[φ]), so a floor built from independent N(0, stderr²)
    noise (:func:`noise_floor`) understates PC1 of pure noise. Resamples tokens (rows) with
    replacement and redoes the PCA; returns :func:`_spread` of the ratios.
    """
    x = np.asarray(noise, dtype=np.float64)
    rng = np.random.default_rng(seed)
    T = x.shape[0]
    out = np.empty((n, x.shape[1]))
    for b in range(n):
        out[b] = _explained(x[rng.integers(0, T, T)], standardise_columns)
    return _spread(out)


# ============================================================================ per-layer report
def layer_pca_report(table: TokenTable, *, which: str = "chi", n_boot: int = 200, seed: int = 0,
                     stderr: np.ndarray | None = None) -> dict:
    """Per layer (and all heads together): PCA of the z-scored head columns of ``which``
    (chi, offset or cov_part) with token-bootstrap and noise-perturbation spreads of the
    explained-variance ratios and the pure-noise floor. ``stderr`` defaults to ``table.stderr``
    (``cov_stderr`` for ``cov_part`` when loaded)."""
    groups = {f"layer{l}": hs for l, hs in table.layers().items()}
    if len(groups) > 1:
        groups["all_heads"] = table.heads()
    out = {}
    for g, hs in groups.items():
        x = table.matrix(hs, which)
        if stderr is not None:
            se = stderr[:, table.columns(hs)]
        elif which == "cov_part" and table.cov_stderr is not None:
            se = table.matrix(hs, "cov_stderr")
        else:
            se = table.matrix(hs, "stderr")
        res = pca(x, names=hs)
        out[g] = {
            "heads": hs,
            "explained_ratio": res.explained_ratio.tolist(),
            "loadings": res.loadings.tolist(),
            "pc1_bootstrap_tokens": pc_fraction_spread(x, mode="tokens", n_boot=n_boot, seed=seed)["pc1"],
            "pc1_noise_perturbed": pc_fraction_spread(x, se, mode="noise", n_boot=n_boot, seed=seed + 1)["pc1"],
            **_floor(table, hs, which, se, n_boot, seed + 2),
            "snr_median": float(np.median(np.abs(x - x.mean(axis=0)) / se)),
            "_pca": res,
        }
    return out


def _floor(table: TokenTable, heads: list[str], which: str, se: np.ndarray, n_boot: int, seed: int) -> dict:
    """The PCA noise floor: from the real (split-chain) noise of χ when the results carry it, else
    from independent N(0, stderr²) noise, which ignores the noise's correlation across heads."""
    if which == "chi" and table.noise is not None:
        return {"noise_floor": replicate_noise_floor(table.matrix(heads, "noise"), n=n_boot, seed=seed)["pc1"],
                "noise_floor_kind": "split-chain replicate of the Monte Carlo noise"}
    return {"noise_floor": noise_floor(se, n=n_boot, seed=seed)["pc1"],
            "noise_floor_kind": "independent N(0, stderr^2) per entry (no replicate noise saved)"}


# ============================================================================ classes
def class_separation(scores: np.ndarray, labels: np.ndarray, *, n_perm: int = 500, seed: int = 0,
                     min_count: int = 3) -> dict:
    """How well token classes separate along each PC score column.

    Per class with ≥ ``min_count`` tokens: count, mean score ± sem per PC. Per PC: η² = between-class
    sum of squares / total (the fraction of the score variance explained by the class labels) and
    a permutation p-value (labels shuffled ``n_perm`` times; p = (1 + #{η²_perm ≥ η²}) / (1 + n_perm)).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    labels = np.asarray(labels)
    keep_classes = [c for c in dict.fromkeys(labels.tolist()) if (labels == c).sum() >= min_count]
    mask = np.isin(labels, keep_classes)
    s, lab = scores[mask], labels[mask]
    codes = np.asarray([keep_classes.index(c) for c in lab])

    def eta2(codes_: np.ndarray) -> np.ndarray:
        tot = ((s - s.mean(axis=0)) ** 2).sum(axis=0)
        between = np.zeros(s.shape[1])
        for j in range(len(keep_classes)):
            sel = s[codes_ == j]
            between += len(sel) * (sel.mean(axis=0) - s.mean(axis=0)) ** 2
        return between / tot

    e = eta2(codes)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(s.shape[1])
    for _ in range(n_perm):
        exceed += eta2(rng.permutation(codes)) >= e
    per_class = {}
    for j, c in enumerate(keep_classes):
        sel = s[codes == j]
        per_class[str(c)] = {"n": int(len(sel)), "mean": sel.mean(axis=0).tolist(),
                             "sem": (sel.std(axis=0, ddof=1) / math.sqrt(len(sel))).tolist() if len(sel) > 1 else [float("nan")] * s.shape[1]}
    return {"eta2": e.tolist(), "p_perm": ((1 + exceed) / (1 + n_perm)).tolist(), "classes": per_class,
            "n_tokens": int(mask.sum()), "dropped_small_classes": sorted(set(labels.tolist()) - set(keep_classes))}
