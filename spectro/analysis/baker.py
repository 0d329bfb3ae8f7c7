"""Baker's restricted susceptibility split into a covariance part and an offset part.

Baker et al. 2025's estimator splits exactly as
``χ^C = −Cov_C(φ, ψ) − E_C[φ]·(E_C[ψ] − E_full[ψ])`` (docs/design.md §2). The offset needs only the
posterior means the result files store (``observable_mean`` = E_C[φ], ``field_mean`` = E_C[ψ], the
full run's ``field_mean`` = E_full[ψ]; read by :func:`~spectro.analysis.token_table.load_token_table`).
With the job's devinterp export (per-draw probe losses), :func:`covariance_part_from_draws`
recomputes both parts draw by draw and gives the covariance part its own stderr;
:func:`baker_decomposition` reports how much of each component's χ is the offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from einops import reduce

from ..engine import Susceptibility
from ..engine.diagnostics import mean_error

if TYPE_CHECKING:  # token_table imports this module to load the draws
    from .token_table import TokenTable

__all__ = ["baker_decomposition", "covariance_part_from_draws"]


def baker_decomposition(table: TokenTable, names: Sequence[str] | None = None) -> dict:
    """How much of each component's per-token χ is Baker's offset term.

    ``χ^C = cov + offset`` with ``cov = −Cov_C(φ, ψ)`` and ``offset = −E_C[φ]·(E_C[ψ] − E_full[ψ])``.
    Per component: Pearson r(χ, offset) across tokens, the fractions var(offset)/var(χ) and
    var(cov)/var(χ) (they need not sum to 1: the two parts may covary), the RMS of each part, the
    median stderr of χ (and of the covariance part when the draws were loaded), and E_C[φ].
    """
    if table.offset is None:
        return {"available": False, "reason": "needs chi_full.npz and Baker-estimator restricted results"}
    names = list(names) if names is not None else table.heads()
    out: dict[str, Any] = {"available": True, "components": {}}
    for c in names:
        k = table.components.index(c)
        chi, off = table.chi[:, k], table.offset[:, k]
        cov = chi - off
        v = chi.var()
        entry = {
            "e_phi": float(table.e_phi[k]),
            "r_chi_offset": float(np.corrcoef(chi, off)[0, 1]) if off.std() > 0 else None,
            "var_offset_over_var_chi": float(off.var() / v),
            "var_cov_over_var_chi": float(cov.var() / v),
            "rms_chi": float(np.sqrt(np.mean(chi**2))),
            "sd_chi_across_tokens": float(chi.std()),
            "sd_offset_across_tokens": float(off.std()),
            "sd_cov_across_tokens": float(cov.std()),
            "median_stderr_chi": float(np.median(table.stderr[:, k])),
        }
        if table.cov_stderr is not None:
            cse = table.cov_stderr[:, k]
            z = cov / cse
            entry["median_stderr_cov"] = float(np.median(cse))
            entry["cov_z_rms"] = float(np.sqrt(np.mean(z**2)))
            entry["cov_frac_abs_z_gt_2"] = float(np.mean(np.abs(z) > 2))
        out["components"][c] = entry
    return out


def covariance_part_from_draws(folder: str | Path, table: TokenTable) -> dict:
    """Recompute Baker's χ, its covariance part and its offset per token from the per-draw probe losses.

    Needs the job's devinterp export (``devinterp/samples_<C>.zarr``: probe losses [chain, draw,
    sample, position] of every probe group). Per draw, ``φ = L̄_base − L̄_base(w*)`` and
    ``ψ_xy = ℓ_xy − L̄_base``; ``cov = −Cov_C(φ, ψ)`` pooled over chains (ddof 0 for a Baker
    component, so that ``cov + offset`` is its estimate exactly; ddof 1, the engine's, for ``full``) with the
    Monte Carlo stderr of u = (φ−μ)(ψ−ν) (Geyer ESS on each chain's draws, as the engine); ``offset =
    −E_C[φ]·(E_C[ψ] − E_full[ψ])``. Returns ``cov_stderr`` [T, K] (NaN for components without
    a store), ``cov`` and ``offset`` [T, K], the same for the domain fields ``ψ_D = L(D) − L̄_base``
    (``subset_cov``, ``subset_cov_stderr``, ``subset_offset`` [K, D], domains as ``table.domains``)
    and a ``check``: max |(cov + offset) − χ_file| / median stderr over tokens.
    """
    import zarr

    folder = Path(folder)
    T, K = table.chi.shape
    doms = list(table.domains)
    dom_rows = [np.flatnonzero(table.domain == d) for d in doms]
    sub_cov = np.full((K, len(doms)), np.nan)
    sub_se = np.full((K, len(doms)), np.nan)
    sub_off = np.full((K, len(doms)), np.nan)
    cov_all = np.full((T, K), np.nan)
    off_all = np.full((T, K), np.nan)
    se_all = np.full((T, K), np.nan)

    def load(c: str):
        p = folder / "devinterp" / f"samples_{c}.zarr"
        if not p.is_dir():
            return None
        root = zarr.open_group(str(p), mode="r")
        r = Susceptibility.load(folder / f"chi_{c}.npz")
        ref = float(r.meta["phi_reference_loss"])
        base = reduce(np.asarray(root["loss_base"][...], dtype=np.float64), "chain draw sample pos -> chain draw", "mean")
        psi = np.empty(base.shape + (T,))
        for g in dict.fromkeys(table.domain.tolist()):
            rows = np.flatnonzero(table.domain == g)
            loss = np.asarray(root[f"loss_{g}"][...], dtype=np.float64)  # [C, D, n, pos]
            psi[:, :, rows] = loss[:, :, table.sample[rows], table.position[rows]] - base[:, :, None]
        return base - ref, psi

    full = load("full")
    if full is None:
        raise FileNotFoundError(f"{folder}/devinterp/samples_full.zarr not found (run the job with export.devinterp true)")
    e_full_psi = full[1].mean(axis=(0, 1))
    e_full_sub = np.stack([full[1][:, :, r].mean(axis=2) for r in dom_rows], axis=-1).mean(axis=(0, 1))
    worst = 0.0

    def cov_se(phi, psi, ddof):
        C, D = phi.shape
        mu, nu = phi.mean(), psi.mean(axis=(0, 1))
        u = (phi - mu)[:, :, None] * (psi - nu)  # [C, D, n]
        cov = -u.sum(axis=(0, 1)) / (C * D - ddof)
        return mu, nu, cov, mean_error(u).se  # Geyer MCSE on each chain's per-draw series, as the engine

    for k, c in enumerate(table.components):
        got = full if c == "full" else load(c)
        if got is None:
            continue
        phi, psi = got
        baker = table.offset is not None and (table.offset[:, k] != 0).any()
        mu, nu, cov, se = cov_se(phi, psi, 0 if baker else 1)
        off = -mu * (nu - e_full_psi) if baker else np.zeros(T)
        cov_all[:, k], off_all[:, k], se_all[:, k] = cov, off, se
        psi_d = np.stack([psi[:, :, r].mean(axis=2) for r in dom_rows], axis=-1)  # [C, D, n_domains]
        _, nu_d, sub_cov[k], sub_se[k] = cov_se(phi, psi_d, 0 if baker else 1)
        sub_off[k] = -mu * (nu_d - e_full_sub) if baker else 0.0
        dev = np.abs(cov + off - table.chi[:, k]) / np.median(table.stderr[:, k])
        worst = max(worst, float(dev.max()))
    return {"cov": cov_all, "offset": off_all, "cov_stderr": se_all, "subset_cov": sub_cov, "subset_cov_stderr": sub_se,
            "subset_offset": sub_off,
            "check": {"max_abs_dev_over_median_stderr": worst,
                      "note": "χ recomputed from the float32 per-draw losses vs the file's χ (float64 streamed moments)"}}
