"""Trace plots of neural-network susceptibility runs: is the sampler healthy, and what did χ come out as?

:func:`plot_traces` draws, for a set of component results (``spectro.engine.Susceptibility`` with
the ``loss_trace`` and ``sampling`` entries that :mod:`spectro.nn` puts in ``meta``):

* one small panel per component: the minibatch loss of every chain against the SGLD step, with
  L_n(w*) as a dashed line. Healthy: the traces rise above L(w*), level off and overlap across
  chains (docs/design.md §6); the panel title gives the LLC ± stderr and the loss-trace R-hat;
* one wide panel: the per-domain mean χ (fields ``dL:<domain>``) of the first observable with
  ±1 stderr error bars, components side by side for each domain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..engine import Susceptibility  # noqa: E402
from ..io import atomic_path  # noqa: E402

__all__ = ["plot_traces", "plot_loss_trace", "plot_domain_chi"]


def plot_loss_trace(ax, result: Susceptibility, name: str = "") -> None:
    """Loss trace per chain (x: SGLD step of each draw) with the L_n(w*) line."""
    trace = np.asarray(result.meta.get("loss_trace", []), dtype=float)
    sampling = result.meta.get("sampling", {})
    sampler = sampling.get("sampler", {})
    burn, spd = int(sampler.get("burn_in", 0)), int(sampler.get("steps_per_draw", 1))
    if trace.ndim == 2 and trace.size:
        steps = burn + spd * (np.arange(trace.shape[1]) + 1)
        for c, row in enumerate(trace):
            ax.plot(steps, row, lw=0.8, alpha=0.85, label=f"chain {c}")
    init = sampling.get("init_loss")
    if init is not None:
        ax.axhline(init, color="k", ls="--", lw=1, label="L(w*)")
    llc, se, rhat = sampling.get("llc"), sampling.get("llc_stderr"), sampling.get("llc_rhat")
    parts = [name or str(result.meta.get("component", ""))]
    if llc is not None and math.isfinite(llc):
        parts.append(f"LLC {llc:.1f}" + (f" ± {se:.1f}" if se is not None and math.isfinite(se) else ""))
    if rhat is not None and math.isfinite(rhat):
        parts.append(f"R̂ {rhat:.2f}")
    ax.set_title("  ".join(parts), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def plot_domain_chi(ax, results: Mapping[str, Susceptibility], domains: Sequence[str] | None = None, observable: int = 0) -> None:
    """Per-domain χ (``dL:<domain>`` fields) with ±1 stderr, grouped by domain, one colour per component."""
    names = list(results)
    if domains is None:
        first = results[names[0]]
        domains = [f[3:] for f in first.fields if f.startswith("dL:")]
    domains = [d for d in domains if f"dL:{d}" in results[names[0]].fields]
    if not domains:
        ax.text(0.5, 0.5, "no per-domain (dL:…) fields", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    width = 0.8 / max(1, len(names))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for j, name in enumerate(names):
        r = results[name]
        cols = [r.fields.index(f"dL:{d}") for d in domains]
        x = np.arange(len(domains)) - 0.4 + width * (j + 0.5)
        ax.errorbar(x, r.chi[observable, cols], yerr=r.stderr[observable, cols], fmt="o", ms=4, capsize=2,
                    color=cmap(j % cmap.N), label=name)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(np.arange(len(domains)), domains)
    obs = results[names[0]].observables[observable]
    ax.set_ylabel(f"χ[{obs}]  (mean over the domain's tokens)", fontsize=8)
    ax.set_title("susceptibility to up-weighting each domain (±1 stderr); components differ in scale", fontsize=9)
    ax.legend(fontsize=7, ncol=min(len(names), 5), loc="best")
    ax.grid(alpha=0.3, axis="y")


def plot_traces(results: Mapping[str, Susceptibility], path: str | Path, *, domains: Sequence[str] | None = None,
                title: str = "") -> Path:
    """Write the trace figure (loss traces per component + per-domain χ) as a PNG, atomically."""
    if not results:
        raise ValueError("no results to plot")
    names = list(results)
    ncols = min(5, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = plt.figure(figsize=(3.0 * ncols + 0.5, 2.3 * nrows + 3.6))
    gs = fig.add_gridspec(nrows + 1, ncols, height_ratios=[1.0] * nrows + [1.5])
    for i, name in enumerate(names):
        ax = fig.add_subplot(gs[i // ncols, i % ncols])
        plot_loss_trace(ax, results[name], name)
        if i % ncols == 0:
            ax.set_ylabel("minibatch loss", fontsize=8)
        if i == 0:
            ax.legend(fontsize=6, loc="lower right")
    plot_domain_chi(fig.add_subplot(gs[nrows, :]), results, domains)
    fig.suptitle(title or "loss traces (dashed: L(w*)) and susceptibilities", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
