"""Figures of the per-token susceptibility study (:mod:`spectro.analysis.study`).

Every function writes one PNG atomically (:func:`spectro.io.atomic_path`; ``dpi`` keyword) and
returns its path:

* :func:`plot_pca_scatter` — per layer, PC1 vs PC2 scores of the z-scored head columns, coloured
  by token class and by domain (one row per matrix: χ, and Baker's covariance part when given).
* :func:`plot_domain_heatmap` — component × domain dataset-level χ (``dL:D`` fields) with
  ``±stderr`` written in every cell, beside each component's relative profile with its z-score.
* :func:`plot_induction_vs_loadings` — per head: induction and previous-token scores of the
  independent detector (with the uniform-attention baseline), the all-heads PC1/PC2 loadings and
  the head-specific response to induction tokens ± bootstrap std.
* :func:`plot_decomposition` — χ against Baker's offset term for every head, and per-layer
  explained-variance ratios of χ, offset and covariance part against the pure-noise floor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io import atomic_path  # noqa: E402
from .compare import relative_profile_ill_conditioned  # noqa: E402
from .token_table import TokenTable  # noqa: E402
from .token_classes import TOKEN_CLASSES  # noqa: E402

__all__ = ["plot_pca_scatter", "plot_domain_heatmap", "plot_induction_vs_loadings", "plot_decomposition", "save_figure"]

_CLASS_COLOURS = dict(zip(TOKEN_CLASSES, ["#d62728", "#7f7f7f", "#9467bd", "#ff7f0e", "#1f77b4", "#2ca02c", "#bcbd22"]))


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def _scatter(ax, scores: np.ndarray, labels: np.ndarray, colours: Mapping[str, str] | None, ratio: np.ndarray, title: str) -> None:
    cats = [c for c in (colours or {}) if (labels == c).any()] if colours else list(dict.fromkeys(labels.tolist()))
    cmap = plt.get_cmap("tab10")
    index = {c: j for j, c in enumerate(cats)}
    for c in sorted(cats, key=lambda c: -int((labels == c).sum())):  # large classes first, small ones on top
        j = index[c]
        sel = labels == c
        col = colours[c] if colours else cmap(j % 10)
        ax.scatter(scores[sel, 0], scores[sel, 1], s=7, alpha=0.65, color=col, label=f"{c} ({int(sel.sum())})", lw=0)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.2f}%)", fontsize=8)
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.2f}%)" if len(ratio) > 1 else "PC2", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, markerscale=1.5, loc="best", framealpha=0.7)


def plot_pca_scatter(table: TokenTable, reports: Mapping[str, Mapping[str, Any]], path: str | Path, *, title: str = "", dpi: int = 110) -> Path:
    """PC1–PC2 scatter per layer, coloured by class and by domain.

    ``reports``: matrix name (e.g. ``"chi"``, ``"cov_part"``) → :func:`layer_pca_report` output; one
    row of panels per (matrix, layer), two columns (class, domain).
    """
    rows = [(w, g) for w, rep in reports.items() for g in rep if g.startswith("layer")]
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.6 * len(rows)), squeeze=False)
    for r, (w, g) in enumerate(rows):
        res = reports[w][g]["_pca"]
        sc = res.scores[:, :2] if res.scores.shape[1] > 1 else np.c_[res.scores[:, 0], np.zeros(len(res.scores))]
        _scatter(axes[r, 0], sc, np.asarray(table.cls), _CLASS_COLOURS, res.explained_ratio, f"{w}, {g}: token class")
        _scatter(axes[r, 1], sc, np.asarray(table.domain), None, res.explained_ratio, f"{w}, {g}: domain")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


def plot_domain_heatmap(subsets: Mapping[str, Any], path: str | Path, *, title: str = "", dpi: int = 110) -> Path:
    """Heat maps from :func:`compare_subsets`: dataset χ (cell text ``χ ± se``) and the relative
    profile χ / mean over domains (cell text ``ratio`` and its profile z-score) — or, when some
    component's domains nearly cancel (|mean| < 0.2·rms), the unit-norm profile χ / ‖χ‖."""
    comps, doms = subsets["components"], subsets["domains"]
    chi = np.asarray(subsets["dataset_chi"])
    se = np.asarray(subsets["dataset_stderr"])
    rel = np.asarray(subsets["relative"])
    pz = np.asarray(subsets["profile_z"])
    fig, axes = plt.subplots(1, 2, figsize=(4.2 + 2.6 * len(doms), 0.5 * len(comps) + 2.2))
    lim = np.nanmax(np.abs(chi))
    im = axes[0].imshow(chi, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(comps)):
        for j in range(len(doms)):
            axes[0].text(j, i, f"{chi[i, j]:+.4f}\n±{se[i, j]:.4f}", ha="center", va="center", fontsize=6.5)
    axes[0].set_title(f"dataset χ[{subsets.get('which', 'chi')}] per (component, domain) ± stderr", fontsize=9)
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    if relative_profile_ill_conditioned(chi):
        # domains of opposite sign nearly cancel: χ/mean blows up, so show the unit-norm profile
        shape = chi / np.linalg.norm(chi, axis=1, keepdims=True)
        dev = shape - shape.mean(axis=0, keepdims=True)
        cells = [[f"{shape[i, j]:+.3f}" for j in range(len(doms))] for i in range(len(comps))]
        right_title = "profile shape χ/‖χ‖_D (χ/mean_D is ill-conditioned here; colour: minus the mean over components)"
    else:
        dev = rel - rel.mean(axis=0, keepdims=True)
        cells = [[f"{rel[i, j]:.3f}\nz={pz[i, j]:+.1f}" for j in range(len(doms))] for i in range(len(comps))]
        right_title = "relative profile χ/mean_D χ (colour: minus the mean over components)"
    lim2 = np.nanmax(np.abs(dev)) or 1.0
    im2 = axes[1].imshow(dev, cmap="PuOr", vmin=-lim2, vmax=lim2, aspect="auto")
    for i in range(len(comps)):
        for j in range(len(doms)):
            axes[1].text(j, i, cells[i][j], ha="center", va="center", fontsize=6.5)
    axes[1].set_title(right_title, fontsize=8)
    fig.colorbar(im2, ax=axes[1], shrink=0.8)
    for ax in axes:
        ax.set_xticks(range(len(doms)), doms, fontsize=8)
        ax.set_yticks(range(len(comps)), comps, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


def plot_induction_vs_loadings(alignment: Mapping[str, Any], path: str | Path, *, title: str = "", dpi: int = 110) -> Path:
    """Bars per head: detector scores (induction, previous token, uniform baseline), all-heads PC1/PC2
    loadings, and the head-specific induction-token response ± std (from :func:`induction_alignment`)."""
    heads = alignment["heads"]
    x = np.arange(len(heads))
    panels = ["scores", "loadings"] + (["response"] if "head_specific_induction_response" in alignment else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.7 * len(heads) + 2), 2.6 * len(panels)), sharex=True)
    axes = np.atleast_1d(axes)
    ax = axes[0]
    w = 0.38
    ax.bar(x - w / 2, alignment["induction"], w, label="induction score", color="#d62728")
    if "previous_token" in alignment:
        ax.bar(x + w / 2, alignment["previous_token"], w, label="previous-token score", color="#1f77b4")
    if alignment.get("uniform_baseline") is not None:
        ax.axhline(alignment["uniform_baseline"], color="k", ls="--", lw=1, label="uniform attention")
    ax.set_ylabel("detector score", fontsize=8)
    ax.legend(fontsize=7)
    ax = axes[1]
    if "all_heads_pc1_loading" in alignment:
        ax.bar(x - w / 2, alignment["all_heads_pc1_loading"], w, label="PC1 loading (all heads)", color="#7f7f7f")
        ax.bar(x + w / 2, alignment["all_heads_pc2_loading"], w, label="PC2 loading (all heads)", color="#9467bd")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("loading", fontsize=8)
    ax.legend(fontsize=7)
    if "response" in panels:
        ax = axes[2]
        resp = alignment["head_specific_induction_response"]
        err = alignment.get("head_specific_induction_response_std")
        ax.bar(x, resp, 0.6, yerr=err, capsize=3, color="#2ca02c",
               label=f"Δz on induction tokens, minus layer mean ({alignment.get('response_which', 'chi')})")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylabel("Δ mean z", fontsize=8)
        ax.legend(fontsize=7)
    axes[-1].set_xticks(x, heads, fontsize=8)
    for a in axes:
        a.tick_params(labelsize=7)
        a.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


def plot_decomposition(table: TokenTable, reports: Mapping[str, Mapping[str, Any]], path: str | Path, *,
                       title: str = "", heads: Sequence[str] | None = None, dpi: int = 110) -> Path:
    """Left: χ vs Baker's offset term per token, every head. Right: per-layer explained-variance
    ratio of PC1 (± token-bootstrap std) for each matrix in ``reports`` vs the noise floor."""
    heads = list(heads) if heads is not None else table.heads()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    if table.offset is not None:
        cmap = plt.get_cmap("tab10")
        for j, h in enumerate(heads):
            k = table.components.index(h)
            ax.scatter(table.offset[:, k], table.chi[:, k], s=4, alpha=0.5, color=cmap(j % 10), label=h, lw=0)
        lo = np.nanmin(table.offset[:, [table.components.index(h) for h in heads]])
        hi = np.nanmax(table.offset[:, [table.components.index(h) for h in heads]])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="χ = offset")
        ax.set_xlabel("offset −E_C[φ]·(E_C[ψ] − E_full[ψ])", fontsize=8)
        ax.set_ylabel("χ (Baker)", fontsize=8)
        ax.legend(fontsize=6, ncol=2, markerscale=2)
    else:
        ax.text(0.5, 0.5, "no decomposition available", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("per-token χ against its offset part", fontsize=9)
    ax.grid(alpha=0.3)
    ax = axes[1]
    groups = [g for g in next(iter(reports.values()))]
    width = 0.8 / (len(reports) + 1)
    x = np.arange(len(groups))
    for j, (w, rep) in enumerate(reports.items()):
        vals = [rep[g]["explained_ratio"][0] for g in groups]
        errs = [rep[g]["pc1_bootstrap_tokens"]["std"] for g in groups]
        ax.bar(x + j * width, vals, width, yerr=errs, capsize=2, label=f"PC1 of {w}")
    floor = [reports[next(iter(reports))][g]["noise_floor"]["q975"] for g in groups]
    ax.bar(x + len(reports) * width, floor, width, color="#cccccc", label="noise floor (97.5%)")
    ax.set_xticks(x + width * len(reports) / 2, groups, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("explained variance ratio of PC1", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("PC1 fraction: χ, its parts, pure noise", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)
