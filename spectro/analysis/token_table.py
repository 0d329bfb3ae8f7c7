"""Per-token susceptibility vectors of a job's results folder, as one table.

A results folder of :func:`spectro.jobs.nn_job.run_job` with the ``tokens`` field holds, for every
component C (``chi_<C>.npz``) and every probe token (field ``tok:D[i,t]``: domain D, sample i,
predicted position t, i.e. the token ``ids[i, t+1]`` after the context ``ids[i, :t+1]``), the
susceptibility χ^C_xy of the observable φ_C with its standard error. Stacking components gives a
**susceptibility vector** per token and a matrix ``chi [tokens, components]``
(:func:`load_token_table`). With the full run's result, Baker's offset part of each χ is read
from the stored posterior means (see :mod:`spectro.analysis.baker`; docs/design.md §2).

This module only reads files: the checkpoint, tokenizer and probe sequences come from what the
job wrote (``config.json``, ``summary.json``, the devinterp export); it builds no model and
imports nothing from :mod:`spectro.nn` or :mod:`spectro.models`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange

from ..engine import Susceptibility
from .baker import covariance_part_from_draws
from .token_classes import TOKEN_CLASSES, classify_sequence, token_texts

__all__ = ["TokenTable", "load_token_table", "probe_input_ids", "resolve_checkpoint", "to_jsonable"]

_TOKEN_FIELD = re.compile(r"tok:(?P<group>.+)\[(?P<i>\d+),(?P<t>\d+)\]")
_HEAD = re.compile(r"l(\d+)h(\d+)")
_LAYER = re.compile(r"l(\d+)")


@dataclass
class TokenTable:
    """Per-token susceptibility vectors of one job: rows = probe tokens, columns = components.

    Row metadata (arrays [T]): ``domain``, ``sample``, ``position`` (predicted position t; the
    token is ``ids[sample, t+1]``), ``token_id``, ``text``, ``cls`` (primary class, see
    :mod:`spectro.analysis.token_classes`), ``surface``, ``induction``. Matrices [T, K]: ``chi``,
    ``stderr``, ``ess``, ``rhat`` and, when the files allow the decomposition, ``offset`` and
    ``offset_stderr`` (``cov_part = chi − offset``). ``subset_chi``/``subset_stderr`` [K, D]: the
    dataset-level χ of the ``dL:D`` fields for ``domains``. ``e_phi`` [K]: E_C[φ_C]. Loaded with
    ``draws=True``: ``cov_stderr`` [T, K] (batch-means stderr of the covariance part) and
    ``subset_cov``/``subset_cov_stderr`` [K, D] (covariance part of the domain fields).
    """

    domain: np.ndarray
    sample: np.ndarray
    position: np.ndarray
    token_id: np.ndarray
    text: np.ndarray
    cls: np.ndarray
    surface: np.ndarray
    induction: np.ndarray
    components: list[str]
    chi: np.ndarray
    stderr: np.ndarray
    ess: np.ndarray
    rhat: np.ndarray
    domains: list[str]
    subset_chi: np.ndarray
    subset_stderr: np.ndarray
    offset: np.ndarray | None = None
    offset_stderr: np.ndarray | None = None
    e_phi: np.ndarray | None = None
    cov_stderr: np.ndarray | None = None  # [T, K] from the draws, when loaded
    subset_cov: np.ndarray | None = None  # [K, D] covariance part of the dL:D fields (draws)
    subset_cov_stderr: np.ndarray | None = None
    noise: np.ndarray | None = None  # [T, K] split-chain realisation of χ's Monte Carlo noise (engine), when saved
    meta: dict = field(default_factory=dict)

    _ROW = ("domain", "sample", "position", "token_id", "text", "cls", "surface", "induction")
    _MAT = ("chi", "stderr", "ess", "rhat", "offset", "offset_stderr", "cov_stderr", "noise")

    @property
    def n_tokens(self) -> int:
        return int(self.chi.shape[0])

    @property
    def cov_part(self) -> np.ndarray | None:
        """−Cov_C(φ, ψ): χ minus the offset part (None without the decomposition)."""
        return None if self.offset is None else self.chi - self.offset

    def heads(self) -> list[str]:
        """Head components (``lLhH``) in layer, head order."""
        hs = [c for c in self.components if _HEAD.fullmatch(c)]
        return sorted(hs, key=lambda c: tuple(map(int, _HEAD.fullmatch(c).groups())))

    def layers(self) -> dict[int, list[str]]:
        """Layer → its head components."""
        out: dict[int, list[str]] = {}
        for c in self.heads():
            out.setdefault(int(_HEAD.fullmatch(c).group(1)), []).append(c)
        return out

    def columns(self, names: Sequence[str]) -> list[int]:
        missing = [n for n in names if n not in self.components]
        if missing:
            raise KeyError(f"components {missing} not in this table; it has {self.components}")
        return [self.components.index(n) for n in names]

    def matrix(self, names: Sequence[str], which: str = "chi") -> np.ndarray:
        """[T, len(names)] of ``which`` ∈ {chi, stderr, offset, cov_part, offset_stderr, cov_stderr, ess, rhat}."""
        x = self.cov_part if which == "cov_part" else getattr(self, which)
        if x is None:
            raise ValueError(f"this table has no {which!r} (the decomposition needs the full run and Baker-estimator results)")
        return x[:, self.columns(names)]

    def select(self, mask: np.ndarray) -> "TokenTable":
        """The rows where ``mask`` (bool [T] or index array) holds."""
        mask = np.asarray(mask)
        kw = {n: getattr(self, n)[mask] for n in self._ROW}
        kw.update({n: (None if getattr(self, n) is None else getattr(self, n)[mask]) for n in self._MAT})
        return replace(self, **kw)

    def class_counts(self) -> dict[str, dict[str, int]]:
        """domain → class → number of tokens (plus an ``all`` row)."""
        out = {}
        for d in [*self.domains, "all"]:
            sel = self.cls if d == "all" else self.cls[self.domain == d]
            out[d] = {c: int((sel == c).sum()) for c in TOKEN_CLASSES if (sel == c).any()}
        return out

    def to_frame(self):
        """A long pandas DataFrame: one row per (token, component) with χ, stderr and the token's metadata."""
        import pandas as pd

        T, K = self.chi.shape
        d = {n: np.repeat(getattr(self, n), K) for n in self._ROW}
        d["component"] = np.tile(np.asarray(self.components), T)
        for n in self._MAT:
            x = getattr(self, n)
            if x is not None:
                d[n] = rearrange(x, "token comp -> (token comp)")
        if self.offset is not None:
            d["cov_part"] = rearrange(self.chi - self.offset, "token comp -> (token comp)")
        return pd.DataFrame(d)


def resolve_checkpoint(folder: str | Path) -> Path:
    """The checkpoint folder a results folder was computed from, as the job recorded it.

    ``config.json`` names the checkpoint (``model.checkpoint``: a folder, or ``builtin:<name>``);
    ``summary.json`` records the folder the job loaded (``run.checkpoint``: for a built-in, its
    cache folder). Nothing is trained here: when neither is a folder on disk, a built-in raises
    ValueError saying how to materialise it, any other checkpoint FileNotFoundError.
    """
    folder = Path(folder)
    model = json.loads((folder / "config.json").read_text())["model"]
    ck = model["checkpoint"]
    summary = folder / "summary.json"
    ran = Path(json.loads(summary.read_text())["run"]["checkpoint"]) if summary.is_file() else None
    builtin = ck.startswith("builtin:")
    for path in ([] if builtin else [Path(ck)]) + ([] if ran is None else [ran]):
        if path.is_dir():
            return path
    if builtin:
        where = f"its cache folder {ran} is gone" if ran is not None else f"no {summary} records its cache folder"
        raise ValueError(f"results folder {folder} was computed from {ck}, which is not materialised ({where}); "
                         f"build it with spectro.jobs.builtin.builtin_checkpoint({ck.split(':', 1)[1]!r}, "
                         f"{model.get('cache_dir')!r}, steps={model.get('train_steps')!r}) and try again")
    raise FileNotFoundError(f"checkpoint {ck} of results folder {folder} not found")


def _load_tokenizer_for(folder: Path):
    from ..data.tokenizer import load_tokenizer

    ckpt = resolve_checkpoint(folder)
    if (ckpt / "tokenizer.json").is_file():
        return load_tokenizer(ckpt)
    cfg = json.loads((folder / "config.json").read_text())
    tok = cfg.get("data", {}).get("tokenizer")
    if tok is None:
        raise FileNotFoundError(f"no tokenizer.json in {ckpt} and no data.tokenizer in {folder / 'config.json'}")
    return load_tokenizer(tok)


def probe_input_ids(folder: str | Path) -> dict[str, np.ndarray]:
    """Probe sequences of a results folder, group → int64 [n_g, context], from the job's devinterp
    export (``devinterp/samples_*.zarr``, arrays ``input_ids_<group>``).

    Raises FileNotFoundError when the job wrote no export (``export.devinterp`` false): pass the
    sequences to :func:`load_token_table` as ``input_ids=`` then.
    """
    folder = Path(folder)
    stores = sorted((folder / "devinterp").glob("samples_*.zarr")) if (folder / "devinterp").is_dir() else []
    if not stores:
        raise FileNotFoundError(f"no devinterp/samples_*.zarr in {folder} (the job ran with export.devinterp false)")
    import zarr

    root = zarr.open_group(str(stores[0]), mode="r")
    return {k[len("input_ids_"):]: np.asarray(root[k][...], dtype=np.int64) for k in root.array_keys() if k.startswith("input_ids_")}


def _component_order(names: Sequence[str]) -> list[str]:
    def key(c: str):
        m = _HEAD.fullmatch(c)
        if m:
            return (0, int(m.group(1)), int(m.group(2)), c)
        m = _LAYER.fullmatch(c)
        if m:
            return (1, int(m.group(1)), 0, c)
        return (2, 0, 0, c)

    return sorted(names, key=key)


def token_fields(result: Susceptibility) -> tuple[list[int], list[str], list[int], list[int]]:
    """(column index, probe group, sample, position) of every per-token field of ``result``: read
    from its typed field axis (format /3), or from the ``tok:G[i,t]`` names of older files."""
    ax = result.field_axis
    if {"kind", "group", "sample", "position"} <= set(ax.columns):
        idx = [int(a) for a in np.flatnonzero(ax.column("kind") == "token")]
        return (idx, [str(g) for g in ax.column("group")[idx]], [int(i) for i in ax.column("sample")[idx]],
                [int(t) for t in ax.column("position")[idx]])
    found = [(a, _TOKEN_FIELD.fullmatch(f)) for a, f in enumerate(result.fields)]  # files before format /3
    found = [(a, m) for a, m in found if m]
    return ([a for a, _ in found], [m["group"] for _, m in found], [int(m["i"]) for _, m in found],
            [int(m["t"]) for _, m in found])


def row_estimator(result: Susceptibility, row: int) -> str:
    """``"baker2025"`` or ``"cov"`` for observable ``row``: the typed ``estimator`` column of the
    observable axis, else the result's estimator record, else (older files) ``meta``."""
    ax = result.observable_axis
    if "estimator" in ax.columns:
        return str(ax.column("estimator")[row])
    legacy = result.meta.get("observable_estimators")
    if isinstance(legacy, dict):
        return "baker2025" if legacy.get(result.observables[row]) == "baker2025" else "cov"
    return result.estimator.kind if result.estimator is not None else "cov"


def load_token_table(folder: str | Path, *, observable: str = "phi_C", components: Sequence[str] | None = None,
                     input_ids: Mapping[str, np.ndarray] | None = None, tokenizer=None,
                     draws: bool = False) -> TokenTable:
    """Read a job's results folder into a :class:`TokenTable`.

    ``components``: default every ``chi_<C>.npz`` (heads in layer/head order, then layers, then
    the rest, e.g. ``full``). ``input_ids``/``tokenizer``: the probe sequences and the tokenizer
    (default: from the devinterp export / the checkpoint); classes need both. ``draws``: also
    recompute the Baker decomposition from the per-draw probe losses of the devinterp export
    (sets ``cov_stderr``; see :func:`covariance_part_from_draws`).

    Raises ValueError when the files disagree (different fields, no token fields).
    """
    folder = Path(folder)
    files = {p.name[4:-4]: p for p in folder.glob("chi_*.npz")}
    if not files:
        raise FileNotFoundError(f"no chi_<component>.npz in {folder}")
    names = _component_order(files) if components is None else list(components)
    res = {c: Susceptibility.load(files[c]) for c in names}
    full = res.get("full") or (Susceptibility.load(files["full"]) if "full" in files else None)
    first = res[names[0]]
    fields = first.fields
    for c, r in res.items():
        if r.fields != fields:
            raise ValueError(f"chi_{c}.npz has different fields from chi_{names[0]}.npz")
        if observable not in r.observables:
            raise ValueError(f"chi_{c}.npz has no observable {observable!r}; it has {r.observables}")
    tok_idx, dom, samp, pos = token_fields(first)
    if not tok_idx:
        raise ValueError(f"{folder}: no per-token fields tok:D[i,t] (run the job with the 'tokens' field)")
    tok_idx = np.asarray(tok_idx)
    domains = list(dict.fromkeys(dom))
    subset_domains = [d for d in domains if f"dL:{d}" in fields]

    def stack(attr: str, cols=tok_idx) -> np.ndarray:
        return np.stack([getattr(res[c], attr)[res[c].observables.index(observable), cols] for c in names], axis=1)

    chi, se = stack("chi"), stack("stderr")
    noise = stack("noise") if all(res[c].noise is not None for c in names) else None
    ess, rhat = stack("ess"), stack("rhat")
    sub_idx = np.asarray([fields.index(f"dL:{d}") for d in subset_domains], dtype=int)
    subset_chi = rearrange(stack("chi", sub_idx), "domain comp -> comp domain") if len(sub_idx) else np.zeros((len(names), 0))
    subset_se = rearrange(stack("stderr", sub_idx), "domain comp -> comp domain") if len(sub_idx) else np.zeros((len(names), 0))

    # Baker decomposition from the stored posterior means
    offset = offset_se = e_phi = None
    if full is not None and observable == "phi_C":
        offset = np.zeros_like(chi)
        offset_se = np.zeros_like(chi)
        e_phi = np.zeros(len(names))
        for k, c in enumerate(names):
            r = res[c]
            row = r.observables.index(observable)
            e_phi[k] = r.observable_mean[row]
            if row_estimator(r, row) != "baker2025":
                continue  # −Cov estimator (the full model): no offset
            d_psi = r.field_mean[tok_idx] - full.field_mean[tok_idx]
            offset[:, k] = -e_phi[k] * d_psi
            offset_se[:, k] = np.sqrt((e_phi[k] * r.field_stderr[tok_idx]) ** 2 + (e_phi[k] * full.field_stderr[tok_idx]) ** 2
                                      + (d_psi * r.observable_stderr[row]) ** 2)

    # token ids and classes
    n = len(tok_idx)
    token_id = np.full(n, -1, dtype=np.int64)
    text = np.full(n, "", dtype=object)
    cls = np.full(n, "other", dtype=object)
    surface = np.full(n, "other", dtype=object)
    induction = np.zeros(n, dtype=bool)
    try:
        if tokenizer is None:
            tokenizer = _load_tokenizer_for(folder)
        if input_ids is None:
            input_ids = probe_input_ids(folder)
    except (FileNotFoundError, KeyError, OSError) as e:
        if input_ids is None or tokenizer is None:
            raise FileNotFoundError(f"cannot find the probe tokens / tokenizer of {folder}: {e}; pass input_ids= and tokenizer=") from e
    cache: dict[tuple[str, int], list] = {}
    for r_ in range(n):
        g, i, t = dom[r_], samp[r_], pos[r_]
        if (g, i) not in cache:
            ids = np.asarray(input_ids[g][i], dtype=np.int64)
            texts, special = token_texts(tokenizer, ids)
            cache[(g, i)] = [ids, classify_sequence(texts, ids.tolist(), special=special)]
        ids, classes = cache[(g, i)]
        tc = classes[t + 1]
        token_id[r_] = ids[t + 1]
        text[r_], cls[r_], surface[r_], induction[r_] = tc.text, tc.cls, tc.surface, tc.induction

    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    table = TokenTable(
        domain=np.asarray(dom, dtype=object), sample=np.asarray(samp), position=np.asarray(pos), token_id=token_id,
        text=text, cls=cls, surface=surface, induction=induction, components=names, chi=chi, stderr=se, ess=ess,
        rhat=rhat, domains=subset_domains or domains, subset_chi=subset_chi, subset_stderr=subset_se, offset=offset,
        offset_stderr=offset_se, e_phi=e_phi, noise=noise,
        meta={"folder": str(folder), "observable": observable, "run": summary.get("run", {}), "n_chains": first.n_chains,
              "n_draws": first.n_draws, "field_index": tok_idx.tolist()},
    )
    if draws:
        dec = covariance_part_from_draws(folder, table)
        table.cov_stderr = dec["cov_stderr"]
        table.subset_cov, table.subset_cov_stderr = dec["subset_cov"], dec["subset_cov_stderr"]
        table.meta["draws_check"] = dec["check"]
    return table


def to_jsonable(obj: Any) -> Any:
    """A report as plain JSON: drops keys starting with ``_`` (PCA objects), arrays → lists, NaN/inf → None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
