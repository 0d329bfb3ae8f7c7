"""Do per-token susceptibilities single out induction heads?

:func:`induction_token_response` — each head's response to tokens an induction head could
predict (``TokenTable.induction``), beyond its layer's common mode. :func:`induction_alignment` —
compare the PC loadings and that response with the per-head scores of an independent attention
detector (:func:`spectro.models.induction_report`, computed by :func:`spectro.analysis.study.detector_scores`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from einops import rearrange

from .compare import spearman
from .principal_components import standardise
from .token_table import _HEAD, TokenTable

__all__ = ["induction_token_response", "induction_alignment"]


def induction_token_response(table: TokenTable, names: Sequence[str] | None = None, which: str = "chi",
                             *, n_boot: int = 200, seed: int = 0) -> dict:
    """Per head: mean z-score of ``which`` on induction tokens minus on the other tokens (Δ), and Δ minus
    its layer mean (the head-specific part, since all heads share a common mode), with bootstrap std
    over tokens. A susceptibility signature of an induction head would be a head-specific Δ."""
    names = list(names) if names is not None else table.heads()
    z, _, _ = standardise(table.matrix(names, which))
    ind = table.induction.astype(bool)
    if ind.sum() < 2 or (~ind).sum() < 2:
        return {"available": False, "reason": f"{int(ind.sum())} induction tokens"}
    layer_of = np.asarray([int(_HEAD.fullmatch(c).group(1)) if _HEAD.fullmatch(c) else -1 for c in names])

    def delta(zz, ii):
        d = zz[ii].mean(axis=0) - zz[~ii].mean(axis=0)
        spec = d.copy()
        for l in np.unique(layer_of):
            spec[layer_of == l] -= d[layer_of == l].mean()
        return d, spec

    d, spec = delta(z, ind)
    rng = np.random.default_rng(seed)
    T = len(ind)
    bd, bs = [], []
    for _ in range(n_boot):
        s = rng.integers(0, T, T)
        if ind[s].sum() < 2 or (~ind[s]).sum() < 2:
            continue
        a, b = delta(z[s], ind[s])
        bd.append(a)
        bs.append(b)
    bd, bs = np.asarray(bd), np.asarray(bs)
    return {"available": True, "which": which, "n_induction_tokens": int(ind.sum()), "components": names,
            "delta": d.tolist(), "delta_std": bd.std(axis=0, ddof=1).tolist(),
            "head_specific": spec.tolist(), "head_specific_std": bs.std(axis=0, ddof=1).tolist()}


def induction_alignment(induction_scores: np.ndarray, layer_reports: Mapping[str, Any], *,
                        previous_token_scores: np.ndarray | None = None, uniform_baseline: float | None = None,
                        token_response: Mapping[str, Any] | None = None) -> dict:
    """Compare per-head induction scores [n_layers, n_heads] with PC loadings of ``layer_reports``
    (from :func:`layer_pca_report`; uses its ``all_heads`` PCA when present, else each layer's).

    Reports, per head: induction (and previous-token) score, loadings on PC1 and PC2 (all-heads PCA),
    and per-layer PC2 loadings; Spearman correlations of the induction score with |PC2 loading| and with
    the head-specific induction-token response; whether the top induction head has the largest
    |PC2 loading|; and whether any head clears ``uniform_baseline`` clearly (score > 2× baseline,
    a detector verdict independent of χ).
    """
    ind = np.asarray(induction_scores, dtype=np.float64)
    L, H = ind.shape
    heads = [f"l{l}h{h}" for l in range(L) for h in range(H)]
    flat = rearrange(ind, "layer head -> (layer head)")  # the order of ``heads``
    out: dict[str, Any] = {"heads": heads, "induction": flat.tolist()}
    if previous_token_scores is not None:
        out["previous_token"] = rearrange(np.asarray(previous_token_scores, dtype=np.float64), "layer head -> (layer head)").tolist()
    if uniform_baseline is not None:
        out["uniform_baseline"] = float(uniform_baseline)
        out["heads_above_2x_baseline"] = [h for h, s in zip(heads, flat) if s > 2 * uniform_baseline]
    allp = layer_reports.get("all_heads")
    if allp is not None:
        res = allp["_pca"]
        order = [res.names.index(h) for h in heads]
        pc1 = res.loadings[0][order]
        pc2 = res.loadings[1][order] if res.loadings.shape[0] > 1 else np.zeros(len(heads))
        out["all_heads_pc1_loading"] = pc1.tolist()
        out["all_heads_pc2_loading"] = pc2.tolist()
        out["spearman_induction_vs_abs_pc2"] = spearman(flat, np.abs(pc2))
        out["top_induction_head"] = heads[int(np.argmax(flat))]
        out["head_with_max_abs_pc2"] = heads[int(np.argmax(np.abs(pc2)))]
        out["top_induction_head_has_max_abs_pc2"] = out["top_induction_head"] == out["head_with_max_abs_pc2"]
    per_layer = {}
    for l in range(L):
        rep = layer_reports.get(f"layer{l}")
        if rep is None:
            continue
        res = rep["_pca"]
        per_layer[f"layer{l}"] = {"pc1": dict(zip(res.names, res.loadings[0].tolist())),
                                  "pc2": dict(zip(res.names, res.loadings[1].tolist())) if res.loadings.shape[0] > 1 else {}}
    out["per_layer_loadings"] = per_layer
    if token_response is not None and token_response.get("available"):
        spec = dict(zip(token_response["components"], token_response["head_specific"]))
        vals = [spec.get(h, float("nan")) for h in heads]
        std = dict(zip(token_response["components"], token_response["head_specific_std"]))
        out["head_specific_induction_response"] = vals
        out["head_specific_induction_response_std"] = [std.get(h, float("nan")) for h in heads]
        out["response_which"] = token_response.get("which", "chi")
        out["spearman_induction_vs_token_response"] = spearman(flat, vals)
    return out
