"""Two runs side by side and their difference with combined error bars.

For two independent runs the difference of an entry is χ_A − χ_B with standard error
√(se_A² + se_B²) (independent Monte Carlo errors), its interval ±1.96 of that (normal
approximation) and z = difference / combined stderr; a difference is flagged when either entry
is. Per-token and per-probe differences are computed from the result files at full precision;
the domain and LLC differences from the page's numbers (4 significant digits, far finer than
their error bars). Summary statistics of agreement come from
:func:`spectro.analysis.compare.compare_runs` (docs/design.md §4).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..engine import Susceptibility
from .collect import ReportError, _load, collect, r4

__all__ = ["collect_compare"]


def collect_compare(a: str | Path, b: str | Path) -> dict:
    """The report data comparing results folders ``a`` and ``b`` (same kind of job)."""
    A, B = collect(a), collect(b)
    if A["kind"] != B["kind"]:
        raise ReportError(f"cannot compare a {A['kind']} run ({a}) with a {B['kind']} run ({b})")
    out = {"kind": "compare", "a": A, "b": B}
    out["compare"] = _nn(Path(a), Path(b), A, B) if A["kind"] == "nn" else _ising(Path(a), Path(b), A, B)
    return out


def _diff(ra: Susceptibility, rb: Susceptibility, ia: int, ib: int, cols_a, cols_b) -> dict:
    d = ra.chi[ia, cols_a] - rb.chi[ib, cols_b]
    se = np.sqrt(ra.stderr[ia, cols_a] ** 2 + rb.stderr[ib, cols_b] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = d / se
    return {"diff": d, "se": se, "lo": d - 1.959964 * se, "hi": d + 1.959964 * se, "z": z,
            "flag": (ra.flags[ia, cols_a] | rb.flags[ib, cols_b]).astype(int)}


def _nn(fa: Path, fb: Path, A: dict, B: dict) -> dict:
    comps = [c for c in A["components"] if c in B["components"]]
    notes = []
    if not comps:
        raise ReportError(f"{fa} and {fb} have no component in common")
    dropped = sorted(set(A["components"]) ^ set(B["components"]))
    if dropped:
        notes.append(f"components in only one run (not compared): {', '.join(dropped)}")
    if A["observable"] != B["observable"]:
        raise ReportError(f"the runs have different observables ({A['observable']} vs {B['observable']})")
    out: dict = {"components": comps, "notes": notes, "tokens": None, "stats": None, "domains": None, "llc": None}
    ta, tb = A["tokens"], B["tokens"]
    same_tokens = (ta is not None and tb is not None and ta["text"] == tb["text"] and ta["position"] == tb["position"]
                   and [(s["domain"], s["sample"]) for s in ta["sequences"]] == [(s["domain"], s["sample"]) for s in tb["sequences"]])
    if same_tokens:
        rows = {k: [] for k in ("diff", "lo", "hi", "flag")}
        for c in comps:
            ra, rb = _load(fa / f"chi_{c}.npz"), _load(fb / f"chi_{c}.npz")
            obs = A["observable"]
            fa_idx, fb_idx = _token_columns(ra), _token_columns(rb)
            n = ta["shown"]
            d = _diff(ra, rb, ra.observables.index(obs), rb.observables.index(obs), fa_idx[:n], fb_idx[:n])
            for k in rows:
                rows[k].append(d[k])
        out["tokens"] = r4(rows)
        out["stats"] = _stats(fa, fb, comps, A["observable"])
    else:
        notes.append("the runs have different probe tokens: no per-token difference (compare needs the same probes)")
    da, db = A["domains"], B["domains"]
    if da["rows"] and db["rows"] and da["domains"] == db["domains"] and da["kind"] == db["kind"]:
        rows = []
        for c in comps:
            ea, eb = da["rows"][A["components"].index(c)], db["rows"][B["components"].index(c)]
            rows.append([{"a": x, "b": y, "d": _entry_diff(x, y)} for x, y in zip(ea, eb)])
        out["domains"] = {"domains": da["domains"], "components": comps, "rows": rows,
                          "note": da["note"] + "; A − B: difference ± 1.96·√(se_A² + se_B²)"}
    la = {e["component"]: e for e in A["llc"]}
    lb = {e["component"]: e for e in B["llc"]}
    items = []
    for c in comps:
        x, y = la[c], lb[c]
        for lab, e in (("A", x), ("B", y)):
            items.append({"label": f"{c} {lab}", "v": e["llc"], "lo": (e["ci95"] or [None, None])[0],
                          "hi": (e["ci95"] or [None, None])[1], "flagged": bool(e["why"]),
                          "tip": f"LLC {c} ({lab}) = {e['llc']} ± {e['stderr']}" + "".join("\n⚠ " + w for w in e["why"])})
        d = _entry_diff({"chi": x["llc"], "stderr": x["stderr"], "flag": int(bool(x["why"]))},
                        {"chi": y["llc"], "stderr": y["stderr"], "flag": int(bool(y["why"]))})
        items.append({"label": f"{c} A−B", "v": d["chi"], "lo": d["ci95"][0], "hi": d["ci95"][1], "flagged": bool(d["flag"]),
                      "tip": f"LLC_A − LLC_B ({c}) = {d['chi']} ± {d['stderr']} (combined stderr)"})
    out["llc"] = r4(items)
    return out


def _entry_diff(x: dict, y: dict) -> dict:
    ok = all(v is not None for v in (x.get("chi"), y.get("chi"), x.get("stderr"), y.get("stderr")))
    if not ok:
        return {"chi": None, "stderr": None, "ci95": [None, None], "flag": int(x.get("flag", 0)) | int(y.get("flag", 0))}
    d, se = x["chi"] - y["chi"], math.hypot(x["stderr"], y["stderr"])
    return r4({"chi": d, "stderr": se, "ci95": [d - 1.959964 * se, d + 1.959964 * se],
               "flag": int(x.get("flag", 0)) | int(y.get("flag", 0))})


def _token_columns(r: Susceptibility) -> np.ndarray:
    from ..analysis.token_table import token_fields

    return np.asarray(token_fields(r)[0], dtype=int)


def _stats(fa: Path, fb: Path, comps: list[str], observable: str) -> dict | None:
    """compare_runs on the two token tables (None when the texts or the heads are not there)."""
    from ..analysis.compare import compare_runs
    from ..analysis.token_table import load_token_table

    try:
        ta = load_token_table(fa, observable=observable, components=comps)
        tb = load_token_table(fb, observable=observable, components=comps)
        heads = ta.heads()
        if len(heads) < 2:
            return None
        return r4(compare_runs({"A": ta, "B": tb}, heads))
    except (FileNotFoundError, KeyError, OSError, ValueError):
        return None


def _ising(fa: Path, fb: Path, A: dict, B: dict) -> dict:
    if A["fields"] != B["fields"] or A["chambers"] != B["chambers"] or A["lattice"]["walls"] != B["lattice"]["walls"]:
        raise ReportError(f"{fa} and {fb} have different lattices or probes; compare needs the same probe grid")
    ra, rb = _load(fa / "chi_map.npz"), _load(fb / "chi_map.npz")
    cols = np.arange(len(ra.fields))
    rows = [_diff(ra, rb, i, i, cols, cols) for i in range(len(ra.observables))]
    z = np.stack([r["z"] for r in rows])
    finite = z[np.isfinite(z)]
    notes = [f"rms z of the difference = {math.sqrt(float(np.mean(finite ** 2))):.3g} over {finite.size} entries "
             f"(≈ 1 when the runs agree within their error bars)"] if finite.size else []
    return r4({"notes": notes, "diff": np.stack([r["diff"] for r in rows]), "se": np.stack([r["se"] for r in rows]),
               "z": z, "flag": np.stack([r["flag"] for r in rows]).tolist()})
