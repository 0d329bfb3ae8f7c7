"""Pictures of Ising susceptibility maps: one panel per chamber, a composite, and error bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..engine import Susceptibility  # noqa: E402
from ..io import atomic_path  # noqa: E402
from ..ising.lattice import Lattice, Rect  # noqa: E402

__all__ = ["probe_extent_grid", "plot_chi_maps"]


def probe_extent_grid(result: Susceptibility) -> tuple[list[Rect], np.ndarray]:
    """Parse the field names (``R0:R1,C0:C1``) back into rectangles; return them and their centres [k, 2]."""
    rects = [Rect.parse(name) for name in result.fields]
    centres = np.array([((r.r0 + r.r1) / 2, (r.c0 + r.c1) / 2) for r in rects])
    return rects, centres


def _paint(values: np.ndarray, rects: list[Rect], shape: tuple[int, int]) -> np.ndarray:
    """Site image where every site carries the value of the (last) probe rectangle covering it."""
    img = np.full(shape + values.shape[1:], np.nan)
    for v, r in zip(values, rects):
        img[r.r0 : r.r1, r.c0 : r.c1] = v
    return img


def _draw_walls(ax, lattice: Lattice) -> None:
    """Overlay removed interior bonds (walls) as white segments."""
    H, W = lattice.height, lattice.width
    for r, c in zip(*np.nonzero(lattice.j_right[:, : W - 1] == 0)):
        ax.plot([c + 0.5, c + 0.5], [r - 0.5, r + 0.5], color="white", lw=2.5)
    for r, c in zip(*np.nonzero(lattice.j_down[: H - 1, :] == 0)):
        ax.plot([c - 0.5, c + 0.5], [r + 0.5, r + 0.5], color="white", lw=2.5)


def plot_chi_maps(result: Susceptibility, lattice: Lattice, path: str | Path, title: str = "") -> Path:
    """Write a PNG: top row χ_{chamber, probe} per chamber + composite; bottom row stderr and |z|.

    The composite colours each probe by its χ vector (left → red, right → green, lower → blue),
    each component divided by its maximum over probes, so a probe's hue says which chamber it
    talks to. Walls are drawn in white. Probes whose χ is flagged unreliable for some chamber
    (``Susceptibility.reliable``; docs/design.md §4) are crossed out in every panel, and the
    title says how many there are and why.
    """
    rects, _ = probe_extent_grid(result)
    shape = (lattice.height, lattice.width)
    n_obs = len(result.observables)
    fig, axes = plt.subplots(2, n_obs + 1, figsize=(4.2 * (n_obs + 1), 8), constrained_layout=True)
    vmax = np.nanmax(result.chi)
    for i, name in enumerate(result.observables):
        ax = axes[0, i]
        im = ax.imshow(_paint(result.chi[i], rects, shape), cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"χ(M_{name}, probe)")
        fig.colorbar(im, ax=ax, shrink=0.8)
        _draw_walls(ax, lattice)
        ax = axes[1, i]
        im = ax.imshow(_paint(result.stderr[i], rects, shape), cmap="viridis")
        ax.set_title(f"stderr of χ({name})   (median ESS {np.nanmedian(result.ess[i]):.0f})")
        fig.colorbar(im, ax=ax, shrink=0.8)
        _draw_walls(ax, lattice)
    rgb = np.clip(result.chi[:3].T / np.nanmax(result.chi[:3], axis=1), 0, 1)
    if rgb.shape[1] < 3:
        rgb = np.pad(rgb, ((0, 0), (0, 3 - rgb.shape[1])))
    ax = axes[0, n_obs]
    ax.imshow(np.nan_to_num(_paint(rgb, rects, shape)))
    ax.set_title("composite: (left, right, lower) → (R, G, B)")
    _draw_walls(ax, lattice)
    ax = axes[1, n_obs]
    rhat = np.nanmax(result.rhat, axis=0)
    im = ax.imshow(_paint(rhat, rects, shape), cmap="coolwarm", vmin=0.98, vmax=1.2)
    ax.set_title("max rank-normalised split R-hat over chambers")
    fig.colorbar(im, ax=ax, shrink=0.8)
    bad = ~result.reliable.all(axis=0)  # [k] probes with an untrustworthy entry
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for r in (rect for rect, b in zip(rects, bad) if b):
            ax.plot([r.c0 - 0.5, r.c1 - 0.5], [r.r0 - 0.5, r.r1 - 0.5], color="cyan", lw=1)
            ax.plot([r.c0 - 0.5, r.c1 - 0.5], [r.r1 - 0.5, r.r0 - 0.5], color="cyan", lw=1)
    title = title or f"walled Ising χ maps — {result.n_chains} chains × {result.n_draws} draws"
    if bad.any():
        title += f"\n{int(bad.sum())} of {bad.size} probes crossed out: {result.warning()}"
    fig.suptitle(title)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
