"""Per-token susceptibility vectors of a job's components: load, standardise, PCA, compare subsets.

A results folder of :func:`spectro.jobs.nn_job.run_job` with the ``tokens`` field holds, for every
component C (``chi_<C>.npz``) and every probe token (field ``tok:D[i,t]``: domain D, sample i,
predicted position t, i.e. the token ``ids[i, t+1]`` after the context ``ids[i, :t+1]``), the
susceptibility χ^C_xy of the observable φ_C with its standard error. Stacking components gives a
**susceptibility vector** per token and a matrix ``chi [tokens, components]``
(:func:`load_token_table`).

Analyses (all plain NumPy, every number with an uncertainty):

* :func:`standardise` / :func:`pca` — per-layer z-scoring of each component column across
  tokens (Baker et al. 2025; docs/design.md §2: component scales differ by ≈ Z_full/Z_C) and PCA by
  SVD. Sign convention: each PC's loadings sum to ≥ 0.
* :func:`pc_fraction_spread` — spread of the explained-variance ratios by resampling tokens
  (bootstrap) or by perturbing χ with its stderr (parametric); :func:`noise_floor` — the same
  ratios for pure noise of the same stderr (a null control: the PC1 fraction that needs no
  structure at all, ≈ 1/K plus a finite-sample excess).
* :func:`baker_decomposition` — Baker's restricted estimator splits exactly as
  ``χ^C = −Cov_C(φ, ψ) − E_C[φ]·(E_C[ψ] − E_full[ψ])``: a covariance part and an *offset* part.
  The offset needs only the posterior means the result files store (``observable_mean`` =
  E_C[φ], ``field_mean`` = E_C[ψ], the full run's ``field_mean`` = E_full[ψ]); with the job's
  devinterp export (per-draw probe losses) :func:`covariance_part_from_draws` recomputes both
  parts draw by draw and gives the covariance part its own batch-means stderr.
* :func:`class_separation` — per token class mean PC score ± sem, the between-class variance
  fraction η² and a permutation p-value.
* :func:`compare_subsets` — dataset-level χ per (component, domain) from the job's ``dL:D``
  fields (proper stderrs; checked against the mean of the per-token χ), each component's domain
  profile relative to its own mean, and cosine similarities of domain-averaged vectors with a
  bootstrap over tokens.
* :func:`compare_runs` — stability across sampler seeds / checkpoints on the same probe tokens.
* :func:`induction_alignment` — do the PC loadings or the response to induction tokens single out
  the heads an independent detector (:func:`spectro.models.induction_report`) calls induction heads?
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

from ..engine import Susceptibility
from ..engine.diagnostics import mean_error
from .token_classes import TOKEN_CLASSES, classify_sequence, token_texts

__all__ = [
    "TokenTable",
    "load_token_table",
    "probe_input_ids",
    "resolve_checkpoint",
    "standardise",
    "PCAResult",
    "pca",
    "pc_fraction_spread",
    "noise_floor",
    "replicate_noise_floor",
    "baker_decomposition",
    "covariance_part_from_draws",
    "layer_pca_report",
    "class_separation",
    "compare_subsets",
    "compare_runs",
    "induction_alignment",
    "induction_token_response",
    "spearman",
    "to_jsonable",
]

_TOKEN_FIELD = re.compile(r"tok:(?P<group>.+)\[(?P<i>\d+),(?P<t>\d+)\]")
_HEAD = re.compile(r"l(\d+)h(\d+)")
_LAYER = re.compile(r"l(\d+)")


# ============================================================================ the table
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
                d[n] = x.reshape(-1)
        if self.offset is not None:
            d["cov_part"] = (self.chi - self.offset).reshape(-1)
        return pd.DataFrame(d)


def resolve_checkpoint(folder: str | Path) -> Path:
    """The checkpoint folder a results folder was computed from (a built-in is looked up in its cache,
    and trained there first when the cache does not hold it)."""
    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    ck = cfg["model"]["checkpoint"]
    if ck.startswith("builtin:"):
        from ..nn.builtin import builtin_checkpoint

        return builtin_checkpoint(ck.split(":", 1)[1], cfg["model"].get("cache_dir"), steps=cfg["model"].get("train_steps"),
                                  progress=False, log=lambda *_: None)
    path = Path(ck)
    if not path.is_dir():
        summary = folder / "summary.json"
        if summary.is_file():
            alt = Path(json.loads(summary.read_text())["run"]["checkpoint"])
            if alt.is_dir():
                return alt
        raise FileNotFoundError(f"checkpoint {ck} of results folder {folder} not found")
    return path


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


def probe_input_ids(folder: str | Path, tokenizer=None) -> dict[str, np.ndarray]:
    """Probe sequences of a results folder, group → int64 [n_g, context].

    Read from the devinterp export (``devinterp/samples_*.zarr``, ``input_ids_<group>``) when the
    job wrote one; otherwise re-cut from the corpus exactly as the job does (same windows).
    """
    folder = Path(folder)
    stores = sorted((folder / "devinterp").glob("samples_*.zarr")) if (folder / "devinterp").is_dir() else []
    if stores:
        import zarr

        root = zarr.open_group(str(stores[0]), mode="r")
        return {k[len("input_ids_"):]: np.asarray(root[k][...], dtype=np.int64) for k in root.array_keys() if k.startswith("input_ids_")}
    from ..data.corpus import FIXTURE_DIR, load_corpus
    from ..models.training import TokenizedCorpus

    cfg = json.loads((folder / "config.json").read_text())
    tokenizer = tokenizer or _load_tokenizer_for(folder)
    root_dir = FIXTURE_DIR if cfg["data"]["corpus"] == "fixture" else Path(cfg["data"]["corpus"])
    domains = list(cfg["data"]["domains"])
    corpus = TokenizedCorpus.from_datasets(load_corpus(root_dir, domains=domains), tokenizer)
    per = cfg["probes"]["per_domain"]
    out = {}
    for d in domains:
        want = per[d] if isinstance(per, dict) else per
        out[d] = corpus.eval_windows(int(cfg["data"]["context"]), int(want), cfg["probes"].get("split", "validation"))[d].numpy()
    return out


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
    tok_idx, dom, samp, pos = [], [], [], []
    for a, f in enumerate(fields):
        m = _TOKEN_FIELD.fullmatch(f)
        if m:
            tok_idx.append(a)
            dom.append(m["group"])
            samp.append(int(m["i"]))
            pos.append(int(m["t"]))
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
    subset_chi = stack("chi", sub_idx).T if len(sub_idx) else np.zeros((len(names), 0))
    subset_se = stack("stderr", sub_idx).T if len(sub_idx) else np.zeros((len(names), 0))

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
            if r.meta.get("observable_estimators", {}).get(observable) != "baker2025":
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
            input_ids = probe_input_ids(folder, tokenizer)
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


# ============================================================================ PCA
def standardise(x: np.ndarray, *, eps: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score each column across rows: ``(z, mean, std)`` with std over rows (ddof 0).

    A constant column (std ≤ eps) would divide by zero: ValueError names it.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a [tokens, components] matrix, got shape {x.shape}")
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    bad = np.flatnonzero(~(sd > eps))
    if bad.size:
        raise ValueError(f"columns {bad.tolist()} are constant across tokens; cannot z-score them")
    return (x - mean) / sd, mean, sd


@dataclass(frozen=True)
class PCAResult:
    """PCA of a [T, K] matrix. ``explained_ratio`` [r] (sums to 1), ``loadings`` [r, K] (rows are
    unit PCs, each with loadings summing to ≥ 0), ``scores`` [T, r], ``singular_values`` [r],
    ``mean``/``scale`` [K] (scale = 1 without standardisation), ``names`` of the columns."""

    explained_ratio: np.ndarray
    loadings: np.ndarray
    scores: np.ndarray
    singular_values: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    names: list[str]

    def to_dict(self, n_pc: int | None = None) -> dict:
        r = len(self.explained_ratio) if n_pc is None else n_pc
        return {"explained_ratio": self.explained_ratio[:r].tolist(),
                "loadings": {f"PC{i + 1}": dict(zip(self.names, self.loadings[i].tolist())) for i in range(r)}}


def _explained(x: np.ndarray, standardise_columns: bool) -> np.ndarray:
    xc = x - x.mean(axis=0)
    if standardise_columns:
        sd = xc.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        xc = xc / sd
    s = np.linalg.svd(xc, compute_uv=False)
    v = s**2
    return v / v.sum()


def pca(x: np.ndarray, *, standardise_columns: bool = True, names: Sequence[str] | None = None) -> PCAResult:
    """PCA by SVD of the column-centred (and, by default, z-scored) matrix ``x`` [T, K]."""
    x = np.asarray(x, dtype=np.float64)
    if standardise_columns:
        z, mean, scale = standardise(x)
    else:
        mean = x.mean(axis=0)
        scale = np.ones(x.shape[1])
        z = x - mean
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    signs = np.where(vt.sum(axis=1) < 0, -1.0, 1.0)
    vt = vt * signs[:, None]
    u = u * signs[None, :]
    var = s**2
    return PCAResult(explained_ratio=var / var.sum(), loadings=vt, scores=u * s[None, :], singular_values=s, mean=mean,
                     scale=scale, names=list(names) if names is not None else [f"c{k}" for k in range(x.shape[1])])


def _spread(samples: np.ndarray) -> dict:
    """mean, std, 2.5 / 50 / 97.5 % quantiles of [n, r] ratio samples (PC1 and all PCs)."""
    q = np.quantile(samples, [0.025, 0.5, 0.975], axis=0)
    return {"pc1": {"mean": float(samples[:, 0].mean()), "std": float(samples[:, 0].std(ddof=1)),
                    "q025": float(q[0, 0]), "median": float(q[1, 0]), "q975": float(q[2, 0])},
            "mean": samples.mean(axis=0).tolist(), "std": samples.std(axis=0, ddof=1).tolist(), "n": int(samples.shape[0])}


def pc_fraction_spread(chi: np.ndarray, stderr: np.ndarray | None = None, *, mode: str = "tokens", n_boot: int = 200,
                       seed: int = 0, standardise_columns: bool = True) -> dict:
    """Uncertainty of the explained-variance ratios of ``chi`` [T, K].

    ``mode="tokens"``: bootstrap — resample the T tokens with replacement, redo the PCA.
    ``mode="noise"``: parametric — add N(0, stderr²) to every entry, redo the PCA (the ratios' sensitivity
    to the sampling noise of χ; it adds noise on top of noise, so it is biased towards lower PC1).
    Returns :func:`_spread` of the n_boot ratio vectors.
    """
    chi = np.asarray(chi, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, chi.shape[1]))
    if mode == "tokens":
        T = chi.shape[0]
        for b in range(n_boot):
            out[b] = _explained(chi[rng.integers(0, T, T)], standardise_columns)
    elif mode == "noise":
        if stderr is None:
            raise ValueError("mode='noise' needs stderr")
        se = np.asarray(stderr, dtype=np.float64)
        for b in range(n_boot):
            out[b] = _explained(chi + se * rng.standard_normal(chi.shape), standardise_columns)
    else:
        raise ValueError(f"mode must be 'tokens' or 'noise', got {mode!r}")
    return _spread(out)


def noise_floor(stderr: np.ndarray, *, n: int = 200, seed: int = 0, standardise_columns: bool = True) -> dict:
    """Explained-variance ratios of pure noise N(0, stderr²) of the shape of ``stderr`` [T, K] (null control).

    A PC1 fraction is evidence of shared structure only when it clears this floor (for
    independent columns ≈ 1/K, plus an excess ~ sqrt(K/T) from finite T).
    """
    se = np.asarray(stderr, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty((n, se.shape[1]))
    for b in range(n):
        out[b] = _explained(se * rng.standard_normal(se.shape), standardise_columns)
    return _spread(out)


def replicate_noise_floor(noise: np.ndarray, *, n: int = 200, seed: int = 0, standardise_columns: bool = True) -> dict:
    """Explained-variance ratios of the *actual* Monte Carlo noise (null control with real correlations).

    ``noise`` [T, K] is a realisation of χ's noise with its true correlation across tokens and
    components — the engine's split-chain ``Susceptibility.noise`` or (χ_a − χ_b)/√2 of two
    replicate runs. Baker's estimator puts most of it along one direction (the full run's error
    enters every component through E_C[φ]), so a floor built from independent N(0, stderr²)
    noise (:func:`noise_floor`) understates PC1 of pure noise. Resamples tokens (rows) with
    replacement and redoes the PCA; returns :func:`_spread` of the ratios.
    """
    x = np.asarray(noise, dtype=np.float64)
    rng = np.random.default_rng(seed)
    T = x.shape[0]
    out = np.empty((n, x.shape[1]))
    for b in range(n):
        out[b] = _explained(x[rng.integers(0, T, T)], standardise_columns)
    return _spread(out)


# ============================================================================ decomposition
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
    cfg = json.loads((folder / "config.json").read_text())
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
        base = np.asarray(root["loss_base"][...], dtype=np.float64).mean(axis=(2, 3))  # [C, D]
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


# ============================================================================ per-layer report
def layer_pca_report(table: TokenTable, *, which: str = "chi", n_boot: int = 200, seed: int = 0,
                     stderr: np.ndarray | None = None) -> dict:
    """Per layer (and all heads together): PCA of the z-scored head columns of ``which``
    (chi, offset or cov_part) with token-bootstrap and noise-perturbation spreads of the
    explained-variance ratios and the pure-noise floor. ``stderr`` defaults to ``table.stderr``
    (``cov_stderr`` for ``cov_part`` when loaded)."""
    groups = {f"layer{l}": hs for l, hs in table.layers().items()}
    if len(groups) > 1:
        groups["all_heads"] = table.heads()
    out = {}
    for g, hs in groups.items():
        x = table.matrix(hs, which)
        if stderr is not None:
            se = stderr[:, table.columns(hs)]
        elif which == "cov_part" and table.cov_stderr is not None:
            se = table.matrix(hs, "cov_stderr")
        else:
            se = table.matrix(hs, "stderr")
        res = pca(x, names=hs)
        out[g] = {
            "heads": hs,
            "explained_ratio": res.explained_ratio.tolist(),
            "loadings": res.loadings.tolist(),
            "pc1_bootstrap_tokens": pc_fraction_spread(x, mode="tokens", n_boot=n_boot, seed=seed)["pc1"],
            "pc1_noise_perturbed": pc_fraction_spread(x, se, mode="noise", n_boot=n_boot, seed=seed + 1)["pc1"],
            **_floor(table, hs, which, se, n_boot, seed + 2),
            "snr_median": float(np.median(np.abs(x - x.mean(axis=0)) / se)),
            "_pca": res,
        }
    return out


def _floor(table: TokenTable, heads: list[str], which: str, se: np.ndarray, n_boot: int, seed: int) -> dict:
    """The PCA noise floor: from the real (split-chain) noise of χ when the results carry it, else
    from independent N(0, stderr²) noise, which ignores the noise's correlation across heads."""
    if which == "chi" and table.noise is not None:
        return {"noise_floor": replicate_noise_floor(table.matrix(heads, "noise"), n=n_boot, seed=seed)["pc1"],
                "noise_floor_kind": "split-chain replicate of the Monte Carlo noise"}
    return {"noise_floor": noise_floor(se, n=n_boot, seed=seed)["pc1"],
            "noise_floor_kind": "independent N(0, stderr^2) per entry (no replicate noise saved)"}


# ============================================================================ classes
def class_separation(scores: np.ndarray, labels: np.ndarray, *, n_perm: int = 500, seed: int = 0,
                     min_count: int = 3) -> dict:
    """How well token classes separate along each PC score column.

    Per class with ≥ ``min_count`` tokens: count, mean score ± sem per PC. Per PC: η² = between-class
    sum of squares / total (the fraction of the score variance explained by the class labels) and
    a permutation p-value (labels shuffled ``n_perm`` times; p = (1 + #{η²_perm ≥ η²}) / (1 + n_perm)).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    labels = np.asarray(labels)
    keep_classes = [c for c in dict.fromkeys(labels.tolist()) if (labels == c).sum() >= min_count]
    mask = np.isin(labels, keep_classes)
    s, lab = scores[mask], labels[mask]
    codes = np.asarray([keep_classes.index(c) for c in lab])

    def eta2(codes_: np.ndarray) -> np.ndarray:
        tot = ((s - s.mean(axis=0)) ** 2).sum(axis=0)
        between = np.zeros(s.shape[1])
        for j in range(len(keep_classes)):
            sel = s[codes_ == j]
            between += len(sel) * (sel.mean(axis=0) - s.mean(axis=0)) ** 2
        return between / tot

    e = eta2(codes)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(s.shape[1])
    for _ in range(n_perm):
        exceed += eta2(rng.permutation(codes)) >= e
    per_class = {}
    for j, c in enumerate(keep_classes):
        sel = s[codes == j]
        per_class[str(c)] = {"n": int(len(sel)), "mean": sel.mean(axis=0).tolist(),
                             "sem": (sel.std(axis=0, ddof=1) / math.sqrt(len(sel))).tolist() if len(sel) > 1 else [float("nan")] * s.shape[1]}
    return {"eta2": e.tolist(), "p_perm": ((1 + exceed) / (1 + n_perm)).tolist(), "classes": per_class,
            "n_tokens": int(mask.sum()), "dropped_small_classes": sorted(set(labels.tolist()) - set(keep_classes))}


# ============================================================================ subsets
def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def compare_subsets(table: TokenTable, names: Sequence[str] | None = None, *, which: str = "chi", n_boot: int = 200,
                    seed: int = 0) -> dict:
    """Which components respond to which data subset (domain), with uncertainties.

    * ``dataset_chi`` [K, D] ± ``dataset_stderr``: χ of the ``dL:D`` fields (the job's estimate of
      up-weighting the whole domain, stderr from the same draws); ``token_mean_check``: max over
      (C, D) of |mean_tokens χ − χ_dL| / stderr (the identity χ(q') = E_q'[χ_xy]; ≈ 0).
    * ``relative`` [K, D] ± stderr: χ[C, D] / mean_D χ[C, ·] — each component's domain profile on
      its own scale (scales differ by component); ``profile_z`` = (relative − its mean over
      components) / stderr: which component responds to a domain more than the others do.
    * ``cosine_raw`` [D, D]: cosine between domain-averaged raw χ vectors over ``names``;
      ``cosine_z``: the same on the z-scored columns (centred across all tokens, so it compares the
      domains' *deviations* from the average token); both with bootstrap std over tokens
      (resampled within each domain).

    ``which="cov_part"`` does the same for Baker's covariance part (dataset values and stderrs from
    the draws, so the table must be loaded with ``draws=True``).
    """
    names = list(names) if names is not None else table.heads()
    cols = table.columns(names)
    doms = table.domains
    if which == "chi":
        chi_d, se_d = table.subset_chi[cols], table.subset_stderr[cols]
    elif which == "cov_part":
        if table.subset_cov is None:
            raise ValueError("which='cov_part' needs the table loaded with draws=True (the devinterp export)")
        chi_d, se_d = table.subset_cov[cols], table.subset_cov_stderr[cols]
    else:
        raise ValueError(f"which must be 'chi' or 'cov_part', got {which!r}")
    xfull = table.matrix(names, which)
    check = 0.0
    for j, d in enumerate(doms):
        m = xfull[table.domain == d].mean(axis=0)
        check = max(check, float(np.max(np.abs(m - chi_d[:, j]) / se_d[:, j])))
    mean_c = chi_d.mean(axis=1, keepdims=True)
    rel = chi_d / mean_c
    # first-order error propagation, treating the D domain estimates as independent
    D = len(doms)
    grad_own = (1.0 / mean_c) - chi_d / mean_c**2 / D
    rel_se = np.sqrt((grad_own * se_d) ** 2 + ((chi_d / mean_c**2 / D) ** 2) * ((se_d**2).sum(axis=1, keepdims=True) - se_d**2))
    profile_z = (rel - rel.mean(axis=0, keepdims=True)) / rel_se

    x = xfull
    z, _, _ = standardise(x)
    idx = {d: np.flatnonzero(table.domain == d) for d in doms}

    def cos_mats(xx: np.ndarray, zz: np.ndarray, sel: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        mr = np.stack([xx[sel[d]].mean(axis=0) for d in doms])
        mz = np.stack([zz[sel[d]].mean(axis=0) for d in doms])
        cr = np.array([[_cos(mr[a], mr[b]) for b in range(D)] for a in range(D)])
        cz = np.array([[_cos(mz[a], mz[b]) for b in range(D)] for a in range(D)])
        return cr, cz

    cr, cz = cos_mats(x, z, idx)
    rng = np.random.default_rng(seed)
    br, bz = [], []
    for _ in range(n_boot):
        sel = {d: rng.choice(i, size=len(i), replace=True) for d, i in idx.items()}
        a, b = cos_mats(x, z, sel)
        br.append(a)
        bz.append(b)
    br, bz = np.asarray(br), np.asarray(bz)
    zmeans = np.stack([z[idx[d]].mean(axis=0) for d in doms])  # [D, K] mean z-score per domain
    zmeans_se = np.stack([z[idx[d]].std(axis=0, ddof=1) / math.sqrt(len(idx[d])) for d in doms])
    return {
        "which": which, "components": names, "domains": list(doms),
        "dataset_chi": chi_d.tolist(), "dataset_stderr": se_d.tolist(),
        "token_mean_check_max_z": check,
        "relative": rel.tolist(), "relative_stderr": rel_se.tolist(), "profile_z": profile_z.tolist(),
        "domain_mean_z": zmeans.tolist(), "domain_mean_z_sem": zmeans_se.tolist(),
        "cosine_raw": cr.tolist(), "cosine_raw_boot_std": br.std(axis=0, ddof=1).tolist(),
        "cosine_z": cz.tolist(), "cosine_z_boot_std": bz.std(axis=0, ddof=1).tolist(),
        "cosine_z_boot_q025": np.quantile(bz, 0.025, axis=0).tolist(), "cosine_z_boot_q975": np.quantile(bz, 0.975, axis=0).tolist(),
    }


# ============================================================================ runs
RELATIVE_PROFILE_MIN_MEAN = 0.2  # |mean over subsets| / rms below this: χ / mean is ill-conditioned


def relative_profile_ill_conditioned(chi: np.ndarray) -> bool:
    """True when some component's subset χ nearly cancel: |mean_d χ[k]| < ``RELATIVE_PROFILE_MIN_MEAN``
    · rms_d χ[k] for a row k of the [K, D] matrix, so that χ / mean_d χ amplifies noise without bound."""
    chi = np.asarray(chi, dtype=float)
    return bool(np.any(np.abs(chi.mean(axis=1)) < RELATIVE_PROFILE_MIN_MEAN * np.sqrt((chi**2).mean(axis=1))))


def _r_relative_profile(da: np.ndarray, db: np.ndarray) -> float:
    """Pearson r of the per-component profiles χ[k, d] / mean_d χ[k, d] of two runs.

    Only defined when every component's χ keeps one sign-dominated mean: when
    |mean_d χ| < ``RELATIVE_PROFILE_MIN_MEAN`` · rms_d χ for some component (subsets of opposite
    sign that nearly cancel), dividing by the mean amplifies noise without bound and NaN is
    returned; ``r_profile_shape`` (profiles scaled to unit norm) is the sign-safe comparison.
    """
    if relative_profile_ill_conditioned(da) or relative_profile_ill_conditioned(db):
        return float("nan")
    ra, rb = da / da.mean(axis=1, keepdims=True), db / db.mean(axis=1, keepdims=True)
    return float(np.corrcoef(ra.ravel(), rb.ravel())[0, 1])


def compare_runs(tables: Mapping[str, TokenTable], names: Sequence[str] | None = None) -> dict:
    """Stability of per-token χ, PCA and dataset χ across runs on the same probe tokens.

    Per pair of runs: median over components of the Pearson r of per-token χ (and of the
    covariance part when available), |cosine| between matched per-layer PC1 and PC2 loadings (χ and
    covariance part) and |r| between their per-token PC1 scores, Pearson r of the [K, D] dataset-χ matrices, of the per-component relative
    profiles χ/mean (NaN when a component's subsets cancel, see :func:`_r_relative_profile`) and of the
    unit-norm profiles χ/‖χ‖ (``r_profile_shape``), and a stderr calibration: the mean over tokens and components of
    (x_a − x_b)² / (se_a² + se_b²), ≈ 1 when the stderrs describe the run-to-run spread (only
    meaningful for runs of the same checkpoint; > 1: the stderrs are too small or the runs differ).
    Per run: the per-layer PC1 fractions (χ and covariance part).
    """
    labels = list(tables)
    if len(labels) < 2:
        raise ValueError("compare_runs needs at least two runs")
    ref = tables[labels[0]]
    names = list(names) if names is not None else ref.heads()
    for lab in labels[1:]:
        t = tables[lab]
        if t.n_tokens != ref.n_tokens or not (np.array_equal(t.token_id, ref.token_id) and np.array_equal(t.domain, ref.domain)):
            raise ValueError(f"run {lab!r} has different probe tokens from run {labels[0]!r}; stability needs the same probes")
    layers = ref.layers()
    with_cov = all(t.offset is not None for t in tables.values())
    per_run = {}
    pcs: dict[str, dict] = {}
    for lab, t in tables.items():
        per_run[lab] = {}
        pcs[lab] = {}
        for l, hs in layers.items():
            res = pca(t.matrix(hs), names=hs)
            pcs[lab][l] = res
            entry = {"pc1": float(res.explained_ratio[0]), "pc2": float(res.explained_ratio[1]) if len(hs) > 1 else None}
            if with_cov:
                rc = pca(t.matrix(hs, "cov_part"), names=hs)
                pcs[lab][("cov", l)] = rc
                entry["cov_part_pc1"] = float(rc.explained_ratio[0])
            per_run[lab][f"layer{l}"] = entry
    pairs = {}
    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            ta, tb = tables[labels[a]], tables[labels[b]]
            ca, cb = ta.matrix(names), tb.matrix(names)
            r_tok = [float(np.corrcoef(ca[:, k], cb[:, k])[0, 1]) for k in range(len(names))]
            entry = {"r_chi_per_component_median": float(np.median(r_tok)), "r_chi_per_component_min": float(np.min(r_tok))}
            sa, sb = ta.matrix(names, "stderr"), tb.matrix(names, "stderr")
            entry["chi_stderr_calibration"] = float(np.mean((ca - cb) ** 2 / (sa**2 + sb**2)))
            if with_cov:
                va, vb = ta.matrix(names, "cov_part"), tb.matrix(names, "cov_part")
                r_cov = [float(np.corrcoef(va[:, k], vb[:, k])[0, 1]) for k in range(len(names))]
                entry["r_cov_part_per_component_median"] = float(np.median(r_cov))
                if ta.cov_stderr is not None and tb.cov_stderr is not None:
                    ea, eb = ta.matrix(names, "cov_stderr"), tb.matrix(names, "cov_stderr")
                    entry["cov_stderr_calibration"] = float(np.mean((va - vb) ** 2 / (ea**2 + eb**2)))
            for l in layers:
                pa, pb = pcs[labels[a]][l], pcs[labels[b]][l]
                entry[f"layer{l}_pc1_abs_cos"] = float(abs(pa.loadings[0] @ pb.loadings[0]))
                entry[f"layer{l}_pc1_score_abs_r"] = float(abs(np.corrcoef(pa.scores[:, 0], pb.scores[:, 0])[0, 1]))
                if pa.loadings.shape[0] > 1:
                    entry[f"layer{l}_pc2_abs_cos"] = float(abs(pa.loadings[1] @ pb.loadings[1]))
                if with_cov:
                    qa, qb = pcs[labels[a]][("cov", l)], pcs[labels[b]][("cov", l)]
                    entry[f"layer{l}_cov_part_pc1_abs_cos"] = float(abs(qa.loadings[0] @ qb.loadings[0]))
                    entry[f"layer{l}_cov_part_pc1_score_abs_r"] = float(abs(np.corrcoef(qa.scores[:, 0], qb.scores[:, 0])[0, 1]))
            cols_a, cols_b = ta.columns(names), tb.columns(names)
            da, db = ta.subset_chi[cols_a], tb.subset_chi[cols_b]
            entry["r_dataset_chi"] = float(np.corrcoef(da.ravel(), db.ravel())[0, 1])
            entry["r_relative_profile"] = _r_relative_profile(da, db)
            ua, ub = da / np.linalg.norm(da, axis=1, keepdims=True), db / np.linalg.norm(db, axis=1, keepdims=True)
            entry["r_profile_shape"] = float(np.corrcoef(ua.ravel(), ub.ravel())[0, 1])
            pairs[f"{labels[a]} vs {labels[b]}"] = entry
    return {"runs": labels, "per_run": per_run, "pairs": pairs}


# ============================================================================ induction
def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(x):
        x = np.asarray(x, dtype=np.float64)
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):
            sel = x == v
            r[sel] = r[sel].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


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
    flat = ind.reshape(-1)
    out: dict[str, Any] = {"heads": heads, "induction": flat.tolist()}
    if previous_token_scores is not None:
        out["previous_token"] = np.asarray(previous_token_scores, dtype=np.float64).reshape(-1).tolist()
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
