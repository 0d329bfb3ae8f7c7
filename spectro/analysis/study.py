"""The whole per-token susceptibility study of one job results folder, as one call.

    from spectro.analysis.study import analyse_job, write_figures
    report, table, pcas = analyse_job("runs/nn-demo")
    write_figures(report, table, pcas, "runs/study", prefix="demo")

:func:`analyse_job` loads the folder (:func:`~spectro.analysis.token_table.load_token_table`,
with the per-draw decomposition when the job wrote its devinterp export), and computes:

* ``decomposition`` — Baker's χ against its offset part, per head;
* ``pca`` — per layer and for all heads, for χ, the offset part and the covariance part: explained
  ratios, PC1 spread (token bootstrap, stderr perturbation) and the pure-noise floor;
* ``classes`` / ``domains`` — η² of token class and of domain along PC1/PC2, per matrix and layer;
* ``subsets`` — dataset-level χ per (component, domain), relative profiles, cosine similarities
  (for χ and for the covariance part);
* ``induction`` — the independent detector (:func:`spectro.models.induction_report`) on the
  job's checkpoint, compared with PC loadings and with each head's response to induction tokens;
* ``verdicts`` — the literature's headline claims checked with numbers (see :func:`verdicts`).

Everything is JSON-able after :func:`~spectro.analysis.token_table.to_jsonable`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .baker import baker_decomposition
from .compare import compare_subsets
from .induction import induction_alignment, induction_token_response
from .principal_components import class_separation, layer_pca_report
from .token_table import TokenTable, load_token_table, resolve_checkpoint

__all__ = ["analyse_job", "detector_scores", "verdicts", "write_figures"]


def detector_scores(folder: str | Path, *, n_seqs: int = 64, seed: int = 0) -> dict:
    """Induction / previous-token scores of the job's checkpoint on repeated random tokens.

    ``seq_len = min(50, n_ctx // 2)``; ``uniform_baseline`` is the mean over second-copy queries i of
    1/(i+1), the score of a head that attends uniformly to the causal past.
    """
    from ..models import induction_report, load_checkpoint

    ckpt = resolve_checkpoint(folder)
    model, _, _ = load_checkpoint(ckpt)
    T = min(50, model.cfg.n_ctx // 2)
    rep = induction_report(model, model.cfg.vocab_size, seq_len=T, n_seqs=n_seqs, seed=seed)
    return {"checkpoint": str(ckpt), "seq_len": T, "n_seqs": n_seqs,
            "induction": rep.induction.numpy().astype(float), "previous_token": rep.previous_token.numpy().astype(float),
            "uniform_baseline": rep.uniform_baseline}


def analyse_job(folder: str | Path, *, n_boot: int = 200, n_perm: int = 500, seed: int = 0, induction: bool = True,
                table: TokenTable | None = None) -> tuple[dict, TokenTable, dict]:
    """Run every analysis on one results folder; return ``(report, table, pca_reports)``.

    ``pca_reports``: matrix name (chi / offset / cov_part) → :func:`layer_pca_report` (holds the
    PCA objects the figures need).
    """
    t0 = time.perf_counter()
    folder = Path(folder)
    if table is None:
        draws = (folder / "devinterp" / "samples_full.zarr").is_dir()
        table = load_token_table(folder, draws=draws)
    report: dict[str, Any] = {
        "folder": str(folder),
        "n_tokens": table.n_tokens,
        "components": table.components,
        "domains": table.domains,
        "class_counts": table.class_counts(),
        "run": table.meta.get("run", {}),
        "n_chains": table.meta.get("n_chains"),
        "n_draws": table.meta.get("n_draws"),
        "draws_check": table.meta.get("draws_check"),
    }
    report["decomposition"] = baker_decomposition(table)
    matrices = ["chi"] + (["offset", "cov_part"] if table.offset is not None else [])
    pcas = {w: layer_pca_report(table, which=w, n_boot=n_boot, seed=seed) for w in matrices}
    report["pca"] = pcas
    sep: dict[str, Any] = {}
    for w, rep in pcas.items():
        sep[w] = {}
        for g, r in rep.items():
            sc = r["_pca"].scores[:, :2]
            sep[w][g] = {"class": class_separation(sc, table.cls, n_perm=n_perm, seed=seed),
                         "surface_class": class_separation(sc, table.surface, n_perm=n_perm, seed=seed),
                         "domain": class_separation(sc, table.domain, n_perm=n_perm, seed=seed)}
    report["separation"] = sep
    report["subsets"] = {"chi": compare_subsets(table, which="chi", n_boot=n_boot, seed=seed)}
    if table.subset_cov is not None:
        report["subsets"]["cov_part"] = compare_subsets(table, which="cov_part", n_boot=n_boot, seed=seed)
    responses = {w: induction_token_response(table, which=w, n_boot=n_boot, seed=seed) for w in matrices if w != "offset"}
    report["induction_token_response"] = responses
    if induction:
        det = detector_scores(folder)
        report["detector"] = det
        report["induction"] = {
            w: induction_alignment(det["induction"], pcas[w], previous_token_scores=det["previous_token"],
                                   uniform_baseline=det["uniform_baseline"], token_response=responses.get(w))
            for w in matrices if w != "offset"}
    report["verdicts"] = verdicts(report)
    report["seconds"] = time.perf_counter() - t0
    return report, table, pcas


def verdicts(report: dict) -> dict:
    """The literature's headline claims (docs/design.md §6) checked against a report, as numbers + a verdict.

    * ``dominant_pc1``: per layer, PC1 fraction of χ (± token bootstrap std) vs the 97.5% noise floor;
      holds when it is ≥ 0.9 and above the floor.
    * ``pc1_is_offset``: per layer, PC1 fraction of the offset part alone and of the covariance part,
      and the median r(χ, offset) over heads — PC1 dominance is "trivial" when the offset alone
      reproduces it and r ≥ 0.99.
    * ``cov_part_structure``: PC1 of the covariance part above its noise floor?
    * ``classes_cluster``: η² of token class on PC1/PC2 with permutation p-values (χ and cov part).
    * ``induction_heads``: does the detector find any head > 2× the uniform baseline; does a
      susceptibility mode single it out (top-induction head = max |PC2| head; Spearman ρ).
    """
    out: dict[str, Any] = {}
    pca = report["pca"]
    layers = [g for g in pca["chi"] if g.startswith("layer")]
    dom = {}
    for g in layers:
        r = pca["chi"][g]
        f, sd, floor = r["explained_ratio"][0], r["pc1_bootstrap_tokens"]["std"], r["noise_floor"]["q975"]
        dom[g] = {"pc1": f, "pc1_std": sd, "noise_floor_q975": floor, "holds": bool(f >= 0.9 and f - 2 * sd > floor)}
    out["dominant_pc1"] = dom
    if "offset" in pca:
        dec = report["decomposition"]["components"]
        rs = [e["r_chi_offset"] for e in dec.values() if e["r_chi_offset"] is not None]
        triv = {}
        for g in layers:
            triv[g] = {"pc1_chi": pca["chi"][g]["explained_ratio"][0], "pc1_offset": pca["offset"][g]["explained_ratio"][0],
                       "pc1_cov_part": pca["cov_part"][g]["explained_ratio"][0],
                       "pc1_cov_part_std": pca["cov_part"][g]["pc1_bootstrap_tokens"]["std"],
                       "cov_part_noise_floor_q975": pca["cov_part"][g]["noise_floor"]["q975"]}
        med_r = float(np.median(rs)) if rs else None
        out["pc1_is_offset"] = {"median_r_chi_offset": med_r,
                                "median_var_cov_over_var_chi": float(np.median([e["var_cov_over_var_chi"] for e in dec.values()])),
                                "per_layer": triv,
                                "holds": bool(med_r is not None and med_r >= 0.99
                                              and all(abs(v["pc1_chi"] - v["pc1_offset"]) < 0.01 for v in triv.values()))}
        out["cov_part_structure"] = {g: {"pc1": v["pc1_cov_part"], "std": v["pc1_cov_part_std"], "floor_q975": v["cov_part_noise_floor_q975"],
                                         "above_floor": bool(v["pc1_cov_part"] - 2 * v["pc1_cov_part_std"] > v["cov_part_noise_floor_q975"])}
                                     for g, v in triv.items()}
    cl = {}
    for w, seps in report["separation"].items():
        for g in layers:
            c = seps[g]["class"]
            cl[f"{w}/{g}"] = {"eta2_pc1": c["eta2"][0], "eta2_pc2": c["eta2"][1] if len(c["eta2"]) > 1 else None,
                              "p_pc1": c["p_perm"][0], "p_pc2": c["p_perm"][1] if len(c["p_perm"]) > 1 else None}
    out["classes_cluster"] = cl
    if "induction" in report:
        det = report["detector"]
        ind = np.asarray(det["induction"], dtype=float)
        above = [f"l{l}h{h}" for l in range(ind.shape[0]) for h in range(ind.shape[1]) if ind[l, h] > 2 * det["uniform_baseline"]]
        entry: dict[str, Any] = {"max_induction_score": float(ind.max()), "uniform_baseline": det["uniform_baseline"],
                                 "detector_heads": above, "model_has_induction_heads": bool(above)}
        for w, al in report["induction"].items():
            entry[w] = {"top_induction_head": al.get("top_induction_head"), "head_with_max_abs_pc2": al.get("head_with_max_abs_pc2"),
                        "spearman_induction_vs_abs_pc2": al.get("spearman_induction_vs_abs_pc2"),
                        "spearman_induction_vs_token_response": al.get("spearman_induction_vs_token_response")}
        entry["note"] = ("no head attends to the induction target above 2x uniform attention: there is no induction head "
                         "for a susceptibility mode to single out, so any match is chance") if not above else ""
        out["induction_heads"] = entry
    return out


def write_figures(report: dict, table: TokenTable, pcas: dict, out_dir: str | Path, *, prefix: str = "", title: str = "") -> list[Path]:
    """The study's figures for one job (PNG, written atomically) into ``out_dir``; returns their paths."""
    from .plots import plot_decomposition, plot_domain_heatmap, plot_induction_vs_loadings, plot_pca_scatter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = f"{prefix}_" if prefix else ""
    paths = [plot_pca_scatter(table, {w: pcas[w] for w in pcas if w != "offset"}, out / f"{p}pca_scatter.png", title=title)]
    for w, sub in report["subsets"].items():
        paths.append(plot_domain_heatmap(sub, out / f"{p}domain_heatmap_{w}.png", title=f"{title} ({w})"))
    for w, al in report.get("induction", {}).items():
        paths.append(plot_induction_vs_loadings(al, out / f"{p}induction_vs_loadings_{w}.png", title=f"{title} ({w})"))
    paths.append(plot_decomposition(table, pcas, out / f"{p}decomposition.png", title=title))
    return paths
