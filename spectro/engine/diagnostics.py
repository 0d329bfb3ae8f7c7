"""Chain diagnostics computed from batch means: split R-hat, ESS, batch-means standard errors.

All functions take *batch means* ``x[c, b, ...]`` (chain c, batch b, any trailing shape) so
they work on streamed statistics without the draws. Hand-written (a few lines) because the
libraries that implement R-hat/ESS (ArviZ, devinterp) need the full draw array.
"""

from __future__ import annotations

import numpy as np

__all__ = ["batch_means_stderr", "split_rhat", "effective_sample_size"]


def batch_means_stderr(batch_means: np.ndarray) -> np.ndarray:
    """Standard error of the overall mean from C·B batch means of equal size.

    ``se = sqrt(Var_{c,b}(x̄_cb) / (C·B))`` (Var with ddof = 1). Consistent when the batch
    length exceeds the autocorrelation time (check with R-hat and ESS).
    """
    x = np.asarray(batch_means, dtype=np.float64)
    flat = x.reshape(-1, *x.shape[2:])
    if flat.shape[0] < 2:
        return np.full(x.shape[2:], np.nan)
    return np.sqrt(flat.var(axis=0, ddof=1) / flat.shape[0])


def split_rhat(batch_means: np.ndarray) -> np.ndarray:
    """Gelman–Rubin split R-hat on batch-mean series.

    Each chain's B batch means are split into two halves (the middle batch is dropped when B
    is odd), giving 2C sequences of length L = B // 2; with W the mean within-sequence
    variance and B_v = L·Var(sequence means):  R̂ = sqrt(((L−1)/L·W + B_v/L) / W).
    Needs B ≥ 4. Values near 1 (< 1.01–1.05) indicate mixed chains.
    """
    x = np.asarray(batch_means, dtype=np.float64)
    C, B = x.shape[:2]
    L = B // 2
    if L < 2:
        return np.full(x.shape[2:], np.nan)
    seqs = np.concatenate([x[:, :L], x[:, B - L :]], axis=0)  # [2C, L, ...]
    within = seqs.var(axis=1, ddof=1).mean(axis=0)
    between = L * seqs.mean(axis=1).var(axis=0, ddof=1)
    var_hat = (L - 1) / L * within + between / L
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(var_hat / within)


def effective_sample_size(variance: np.ndarray, stderr: np.ndarray) -> np.ndarray:
    """ESS = Var(x) / se² — the number of independent draws giving the same standard error."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(variance, dtype=np.float64) / np.asarray(stderr, dtype=np.float64) ** 2
