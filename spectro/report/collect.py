"""Read a results folder into the report's data: plain JSON-able dicts, numbers rounded for the page.

Everything here is read from what the job wrote (``chi_*.npz`` through
:class:`~spectro.engine.Susceptibility`, ``summary.json``, ``config.json``, the devinterp export,
``exact_check.json``) and every derived number comes from :mod:`spectro.analysis`
(:func:`~spectro.analysis.token_table.load_token_table`,
:func:`~spectro.analysis.principal_components.layer_pca_report`,
:func:`~spectro.analysis.baker.baker_decomposition`); nothing is re-estimated. Folders of
earlier formats (susceptibility files /1 and /2, no summary or config) give the parts they can.

Intervals are the 95 % Student-t intervals of :meth:`Susceptibility.interval`; an entry's
``flag`` is its :class:`~spectro.engine.susceptibility.Flags` bits (0 = reliable) and
``FLAG_TEXT`` gives the reason and the advice for each bit (docs/design.md §4).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ..engine import Susceptibility
from ..engine.susceptibility import ADVICE, Flags

__all__ = ["ReportError", "collect", "FLAG_TEXT", "MAX_TOKENS", "r4"]

#: the reason and advice shown on the page for each flag bit
FLAG_TEXT = {str(int(f)): ADVICE[f] for f in Flags}
#: at most this many probe tokens go into a page (the rest are counted, not drawn)
MAX_TOKENS = 20_000
_MAX_TRACE_POINTS = 400  # loss-trace points per chain on the page (evenly thinned)
_HEAD = re.compile(r"l(\d+)h(\d+)")


class ReportError(ValueError):
    """A folder the report cannot be built from (one line, naming the folder and the problem)."""


def r4(x: Any) -> Any:
    """Numbers rounded to 4 significant digits for the page (None for NaN/inf), recursively."""
    if isinstance(x, np.ndarray):
        return r4(x.tolist())
    if isinstance(x, (list, tuple)):
        return [r4(v) for v in x]
    if isinstance(x, dict):
        return {k: r4(v) for k, v in x.items()}
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return float(f"{x:.4g}") if math.isfinite(x) else None
    return x


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{path} is not readable JSON ({' '.join(str(e).split())[:120]})") from None


def _load(path: Path) -> Susceptibility:
    try:
        return Susceptibility.load(path)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one line naming it
        raise ReportError(f"result file {path} is not a readable spectro result ({' '.join(str(e).split())[:160]})") from None


def collect(folder: str | Path) -> dict:
    """The report data of one results folder (``kind`` "nn" or "ising")."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder" if folder.exists() else f"results folder {folder} does not exist")
    summary = _read_json(folder / "summary.json") or {}
    config = _read_json(folder / "config.json") or {}
    if not isinstance(summary, dict) or not isinstance(config, dict):
        raise ReportError(f"{folder}: summary.json or config.json is not a JSON object")
    if (folder / "chi_map.npz").is_file():
        return _collect_ising(folder, summary, config)
    if any(folder.glob("chi_*.npz")):
        return _collect_nn(folder, summary, config)
    raise ReportError(f"{folder} holds no spectro results (no chi_map.npz or chi_<component>.npz)")


def _interval(res: Susceptibility) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore"):
        return res.interval(0.95)


def _header(folder: Path, summary: dict, config: dict, results: list[Susceptibility]) -> dict:
    first = results[0]
    versions = dict(summary.get("versions") or first.meta.get("versions") or {})
    versions.setdefault("machine", "not recorded by this job")
    return {
        "folder": str(folder.resolve()),
        "name": summary.get("name") or config.get("name") or folder.name,
        "format": summary.get("format", "(no summary.json)"),
        "settings": config or {"note": "no config.json in this folder"},
        "machine": versions,
        "estimator": first.estimator.to_dict() if first.estimator is not None else None,
        "seconds": summary.get("seconds", first.meta.get("seconds")),
        "flag_text": FLAG_TEXT,
    }


# ============================================================================ networks
def _collect_nn(folder: Path, summary: dict, config: dict) -> dict:
    from ..analysis.token_table import load_token_table

    files = {p.name[4:-4]: p for p in folder.glob("chi_*.npz")}
    results = {c: _load(p) for c, p in files.items()}
    first = next(iter(results.values()))
    observable = "phi_C" if all("phi_C" in r.observables for r in results.values()) else first.observables[0]
    notes: list[str] = []
    try:
        table = load_token_table(folder, observable=observable)
    except (FileNotFoundError, KeyError, OSError, ValueError) as e:
        table, why = _table_without_texts(folder, observable)
        notes.append(why or f"token texts unavailable ({' '.join(str(e).split())[:200]})")
    comps = table.components if table is not None else sorted(results)
    out = {"kind": "nn", **_header(folder, summary, config, [results[c] for c in comps]), "observable": observable,
           "components": comps, "notes": notes}
    out["llc"] = [_llc(c, results[c], (summary.get("components") or {}).get(c, {})) for c in comps]
    out["flagged"] = {"entries": int(sum((~r.reliable).sum() for r in results.values())),
                      "total": int(sum(r.flags.size for r in results.values())),
                      "warnings": {c: results[c].warning() for c in comps if results[c].warning()}}
    out["domains"] = _domain_table(results, comps, observable, table)
    if table is not None:
        out["tokens"] = _tokens(table, results, comps, observable)
        out["pca"] = _pca(table)
        out["decomposition"] = _decomposition(table)
    else:
        out["tokens"] = None
        out["pca"] = {"available": False, "reason": "no per-token fields"}
        out["decomposition"] = {"available": False, "reason": "no per-token fields"}
    return out


def _table_without_texts(folder: Path, observable: str):
    """The token table when the probe texts cannot be found (no devinterp export, or the
    checkpoint's tokenizer is gone): tokens are shown by id / position instead."""
    from ..analysis.token_table import load_token_table, token_fields

    first = _load(next(iter(sorted(folder.glob("chi_*.npz")))))
    idx, groups, samples, positions = token_fields(first)
    if not idx:
        return None, "this run has no per-token fields (no 'tokens' field): no text view"
    ids = None
    try:
        from ..analysis.token_table import probe_input_ids

        ids = probe_input_ids(folder)
    except (FileNotFoundError, KeyError, OSError, ValueError):
        pass
    if ids is None:
        width = max(positions) + 2
        ids = {g: np.full((max(s for gg, s in zip(groups, samples) if gg == g) + 1, width), -1, dtype=np.int64)
               for g in dict.fromkeys(groups)}
        why = "probe sequences not saved (export.devinterp false): tokens shown as their positions"
    else:
        why = "the checkpoint's tokenizer is not available: tokens shown as their ids"
    try:
        return load_token_table(folder, observable=observable, input_ids=ids, tokenizer=_IdTokenizer()), why
    except (FileNotFoundError, KeyError, OSError, ValueError) as e:
        return None, f"no per-token view ({' '.join(str(e).split())[:200]})"


class _IdTokenizer:
    """Stands in for a tokenizer: token id i reads "#i" ("·" for an unknown id)."""

    def id_to_token(self, i: int) -> str:
        return f"#{i}" if i >= 0 else "·"

    def decode(self, ids, skip_special_tokens=False) -> str:
        return " ".join(self.id_to_token(int(i)) for i in ids)


def _llc(name: str, res: Susceptibility, comp_summary: dict) -> dict:
    s = res.meta.get("sampling", {}) or {}
    llc, se, dof = s.get("llc", comp_summary.get("llc")), s.get("llc_stderr", comp_summary.get("llc_stderr")), s.get("llc_dof")
    ci = None
    if llc is not None and se is not None and math.isfinite(llc) and math.isfinite(se):
        q = float(stats.t.ppf(0.975, dof)) if dof is not None and math.isfinite(dof) and dof > 0 else 1.959964
        ci = [llc - q * se, llc + q * se]
    trace = np.asarray(res.meta.get("loss_trace", []), dtype=float)
    sampler = s.get("sampler", {}) or {}
    burn, spd = int(sampler.get("burn_in", 0) or 0), int(sampler.get("steps_per_draw", 1) or 1)
    steps = None
    if trace.ndim == 2 and trace.size:
        keep = np.unique(np.linspace(0, trace.shape[1] - 1, min(trace.shape[1], _MAX_TRACE_POINTS)).round().astype(int))
        steps, trace = (burn + spd * (keep + 1)).tolist(), trace[:, keep]
    rhat = s.get("llc_rhat", comp_summary.get("loss_trace_rhat"))
    flag = []
    if rhat is not None and math.isfinite(rhat) and rhat > 1.1:
        flag.append(f"loss-trace R-hat {rhat:.2f} > 1.1: chains disagree (more burn-in, more draws, or a larger step size)")
    return r4({"component": name, "llc": llc, "stderr": se, "dof": dof, "ci95": ci, "rhat": rhat,
               "ess_bulk": s.get("llc_ess_bulk"), "ess_tail": s.get("llc_ess_tail"), "n_free": s.get("n_free"),
               "init_loss": s.get("init_loss"), "chains": res.n_chains, "draws": res.n_draws,
               "trace": trace.tolist() if steps is not None else None, "steps": steps, "why": flag})


def _domain_table(results: dict, comps: list[str], observable: str, table) -> dict:
    """Heads × domains: the dataset-level χ of the ``dL:D`` fields where the job had them (its
    own interval and flags); else the mean of the domain's per-token χ with a conservative
    interval (the stderr of a mean is at most the mean of the stderrs, whatever their correlation)."""
    first = results[comps[0]]
    doms = [f[3:] for f in first.fields if f.startswith("dL:")]
    if doms:
        rows = []
        for c in comps:
            r = results[c]
            i = r.observables.index(observable)
            lo, hi = _interval(r)
            row = []
            for d in doms:
                a = r.fields.index(f"dL:{d}")
                row.append({"chi": r.chi[i, a], "stderr": r.stderr[i, a], "ci95": [lo[i, a], hi[i, a]],
                            "rhat": r.rhat[i, a], "ess": r.ess[i, a], "flag": int(r.flags[i, a])})
            rows.append(row)
        return r4({"kind": "fields", "domains": doms, "rows": rows,
                   "note": "dataset-level χ of the domain fields dL:D (their own stderr and 95 % t interval)"})
    if table is None:
        return {"kind": "none", "domains": [], "rows": [], "note": "no domain fields and no per-token fields"}
    doms = list(dict.fromkeys(table.domain.tolist()))
    fields_idx = np.asarray(table.meta["field_index"])
    rows = []
    for k, c in enumerate(table.components):
        r = results[c]
        i = r.observables.index(observable)
        fl = r.flags[i, fields_idx]
        row = []
        for d in doms:
            m = table.domain == d
            mean, bound = float(table.chi[m, k].mean()), float(table.stderr[m, k].mean())
            nflag = int((fl[m] != 0).sum())
            bits = int(np.bitwise_or.reduce(fl[m])) if nflag else 0
            row.append({"chi": mean, "stderr": bound, "ci95": [mean - 1.959964 * bound, mean + 1.959964 * bound],
                        "n_tokens": int(m.sum()), "n_flagged": nflag, "flag": bits})
        rows.append(row)
    return r4({"kind": "token-mean", "domains": doms, "rows": rows,
               "note": "mean of the domain's per-token χ; interval ±1.96 × mean stderr, an upper bound on the "
                       "error of a mean (the job had no dL:D domain fields, which give exact intervals)"})


def _tokens(table, results: dict, comps: list[str], observable: str) -> dict:
    """The probe sequences with every predicted token's χ, interval and flags per component."""
    fields_idx = np.asarray(table.meta["field_index"])
    n = min(table.n_tokens, MAX_TOKENS)
    flags, lo, hi = [], [], []
    for c in comps:
        r = results[c]
        i = r.observables.index(observable)
        a, b = _interval(r)
        flags.append(r.flags[i, fields_idx[:n]])
        lo.append(a[i, fields_idx[:n]])
        hi.append(b[i, fields_idx[:n]])
    seqs: list[dict] = []
    for t in range(n):
        key = (str(table.domain[t]), int(table.sample[t]))
        if not seqs or (seqs[-1]["domain"], seqs[-1]["sample"]) != key:
            seqs.append({"domain": key[0], "sample": key[1], "tokens": []})
        seqs[-1]["tokens"].append(t)
    out = {
        "n_tokens": table.n_tokens, "shown": n,
        "text": [str(x) for x in table.text[:n]],
        "cls": [str(x) for x in table.cls[:n]],
        "position": table.position[:n].tolist(),
        "sequences": seqs,
        "chi": table.chi[:n].T, "lo": np.stack(lo), "hi": np.stack(hi), "stderr": table.stderr[:n].T,
        "flag": np.stack(flags).astype(int).tolist(),
        "offset": None if table.offset is None else table.offset[:n].T,
        "offset_stderr": None if table.offset_stderr is None else table.offset_stderr[:n].T,
    }
    return r4(out)


def _pca(table) -> dict:
    """Per layer: explained variance with its noise floor, loadings per head, per-token PC scores."""
    from ..analysis.principal_components import layer_pca_report

    if len(table.heads()) < 2:
        return {"available": False, "reason": "fewer than two head components: no PCA"}
    try:
        rep = layer_pca_report(table, n_boot=100, seed=0)
        cov = layer_pca_report(table, which="cov_part", n_boot=100, seed=0) if table.offset is not None else None
    except ValueError as e:
        return {"available": False, "reason": " ".join(str(e).split())}
    layers = {}
    n = min(table.n_tokens, MAX_TOKENS)
    for g, e in rep.items():
        res = e["_pca"]
        hs = e["heads"]
        cols = table.columns(hs)
        # score stderr by linear propagation of each entry's stderr (independent-error approximation)
        w = res.loadings / res.scale[None, :]
        se = np.sqrt((table.stderr[:n][:, cols] ** 2) @ (w.T**2))
        layers[g] = {"heads": hs, "explained_ratio": e["explained_ratio"], "loadings": e["loadings"],
                     "pc1_bootstrap": e["pc1_bootstrap_tokens"], "noise_floor": e["noise_floor"],
                     "noise_floor_kind": e["noise_floor_kind"], "snr_median": e["snr_median"],
                     "scores": res.scores[:n].T, "score_stderr": se.T,
                     "cov_part_explained_ratio": None if cov is None else cov[g]["explained_ratio"],
                     "cov_part_noise_floor": None if cov is None else cov[g]["noise_floor"]}
    return r4({"available": True, "layers": layers})


def _decomposition(table) -> dict:
    from ..analysis.baker import baker_decomposition

    dec = baker_decomposition(table)
    return r4(dec)


# ============================================================================ Ising
def _collect_ising(folder: Path, summary: dict, config: dict) -> dict:
    from ..analysis.ising_maps import probe_extent_grid
    from ..ising import walled_lattice

    res = _load(folder / "chi_map.npz")
    H = int(summary.get("height") or res.meta.get("height") or 0)
    W = int(summary.get("width") or res.meta.get("width") or 0)
    try:
        rects, _ = probe_extent_grid(res)
    except ValueError as e:
        raise ReportError(f"{folder / 'chi_map.npz'}: probe names are not rectangles ({e})") from None
    if not H or not W:
        H, W = max(r.r1 for r in rects), max(r.c1 for r in rects)
    depth = (config.get("lattice") or {}).get("wall_depth")
    lattice = walled_lattice(H, W, depth)
    lo, hi = _interval(res)
    out = {"kind": "ising", **_header(folder, summary, config, [res]),
           "beta": summary.get("beta", res.meta.get("beta")), "chambers": res.observables,
           "lattice": _lattice(lattice), "probes": [[r.r0, r.r1, r.c0, r.c1] for r in rects], "fields": res.fields,
           "chi": res.chi, "stderr": res.stderr, "lo": lo, "hi": hi, "rhat": res.rhat, "ess": res.ess,
           "flag": res.flags.astype(int).tolist(), "chains": res.n_chains, "draws": res.n_draws,
           "flagged": {"entries": int((~res.reliable).sum()), "total": int(res.flags.size),
                       "warnings": {"map": res.warning()} if res.warning() else {}},
           "exact": _exact_check(folder / "exact_check.json", res.observables)}
    return r4(out)


def _lattice(lattice) -> dict:
    """Chamber of each site (0 left, 1 right, 2 lower, -1 none) and the wall segments."""
    H, W = lattice.height, lattice.width
    region = np.full((H, W), -1, dtype=int)
    for k, name in enumerate(("left", "right", "lower")):
        if name in lattice.regions:
            region[np.asarray(lattice.regions[name], dtype=bool)] = k
    walls = []  # [r0, c0, r1, c1] in site-edge coordinates
    for r, c in zip(*np.nonzero(lattice.j_right[:, : W - 1] == 0)):
        walls.append([int(r), int(c) + 1, int(r) + 1, int(c) + 1])
    for r, c in zip(*np.nonzero(lattice.j_down[: H - 1, :] == 0)):
        walls.append([int(r) + 1, int(c), int(r) + 1, int(c) + 1])
    return {"height": H, "width": W, "region": region.tolist(), "walls": walls}


def _exact_check(path: Path, chambers: list[str]) -> dict | None:
    """The demo's exact cross-check (exact_check.json): z = (MC − exact)/stderr per probe and chamber."""
    from ..ising import Rect, walled_lattice

    check = _read_json(path)
    if not isinstance(check, dict) or not isinstance(check.get("entries"), dict):
        return None
    entries = check["entries"]
    fields = list(dict.fromkeys(k.split("|", 1)[1] for k in entries if "|" in k))
    try:
        rects = [Rect.parse(f) for f in fields]
    except ValueError:
        return None
    H, W = max(r.r1 for r in rects), max(r.c1 for r in rects)
    m = re.search(r"wall depth (\d+)", str(check.get("lattice", "")))
    lattice = walled_lattice(H, W, int(m.group(1)) if m else None)
    z, flag, mc, exact, se = [], [], [], [], []
    for o in chambers:
        row = [entries.get(f"{o}|{f}", {}) for f in fields]
        mc.append([e.get("mc") for e in row])
        se.append([e.get("stderr") for e in row])
        exact.append([e.get("exact") for e in row])
        z.append([(e["mc"] - e["exact"]) / e["stderr"] if e.get("stderr") else None for e in row])
        flag.append([0 if e.get("reliable", True) else 256 for e in row])  # 256: flagged, reason not recorded
    return r4({"lattice_label": check.get("lattice"), "beta": check.get("beta"), "lattice": _lattice(lattice),
               "probes": [[r.r0, r.r1, r.c0, r.c1] for r in rects], "fields": fields, "z": z, "mc": mc, "stderr": se,
               "exact": exact, "flag": flag, "rms_z": check.get("rms_z"), "max_abs_z": check.get("max_abs_z"),
               "covered": check.get("covered_by_95_interval"), "n": len(fields) * len(chambers)})
