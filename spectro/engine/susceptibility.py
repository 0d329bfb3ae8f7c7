"""Susceptibilities χ = scale · Cov(φ, ψ) with calibrated error bars, from streamed moments.

The one estimator shared by the Ising and the neural-network sides (docs/design.md §2):

* Ising: ψ_B = M_B (probe magnetization), scale = β:  χ_{A,B} = ∂⟨M_A⟩/∂h_B = β·Cov(M_A, M_B).
* Neural networks: ψ = ΔL = L(w; q') − L(w; q), scale = −1:  χ(φ) = −Cov(φ, ΔL)
  = (1/nβ)·∂_h⟨φ⟩_h at h = 0 (χ > 0: up-weighting q' raises ⟨φ⟩).

Estimates (N = total draws over C chains, pooled means μ, ν over all chains):

* ``Cov = Σ_{c,t} (φ−μ)(ψ−ν) / (N − 1)``, the mean of u = (φ−μ)(ψ−ν).
* ``stderr``: Monte Carlo standard error of the mean of u from each chain's series of u
  (per draw, or per fine batch beyond the memory budget): Geyer's initial monotone sequence
  on split chains, the ESS/MCSE of arviz-stats (:mod:`spectro.engine.diagnostics`).
* ``dof``: Student-t degrees of freedom of that stderr; :meth:`Susceptibility.interval` uses
  them. ``ess`` = Var(u)/stderr² in draws; ``rhat``: rank-normalised split R-hat of u.
* ``stderr_chains``: spread of the per-chain covariances, std_c / sqrt(C) (a cross-check).
* ``flags`` (:class:`Flags`): entries whose error bar cannot be trusted; ``reliable`` is
  ``flags == 0``. Never silently small error bars: a flagged entry says why and what to do.
"""

from __future__ import annotations

import enum
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import stats

from ..io import atomic_path
from .coords import Axis, EstimatorInfo
from .diagnostics import MIN_POINTS_PER_CHAIN, mean_error, rhat_rank
from .moments import MomentAccumulator

__all__ = [
    "PooledMoments", "pooled_moments", "Susceptibility", "estimate_susceptibility",
    "component_susceptibility_estimate", "environment_versions", "Flags", "RHAT_MAX", "inferred_flags",
]

FORMAT = "spectro.susceptibility/3"
_READABLE = (FORMAT, "spectro.susceptibility/2", "spectro.susceptibility/1")
RHAT_MAX = 1.1  # rank-normalised split R-hat above this: chains disagree beyond the noise of short runs
#   (Gelman–Rubin's classic 1.1; Vehtari et al. 2021's 1.01 presumes ESS > 400, and at ESS ≈ 100 a
#   threshold of 1.05 is crossed by noise alone: docs/calibration.md)


class Flags(enum.IntFlag):
    """Why an entry's error bar cannot be trusted (bit set per entry; 0 = reliable).

    Few degrees of freedom are *not* a flag: they widen the t interval, which then covers
    (docs/calibration.md measured that flagging small-dof entries removes the entries whose
    error bars came out large and keeps the overconfident ones). Bit 8 is unused. STUCK is set
    by a system that knows a symmetry its chains must traverse (the Ising system: the sign of
    the magnetisation at zero field, docs/design.md §4).
    """

    NONFINITE = 1  # φ or ψ was NaN/±inf in some draw: the entry is not a number
    FROZEN = 2  # φ or ψ never changed within some chain: the sampler did not move
    UNMIXED = 4  # rank-normalised split R-hat > RHAT_MAX: chains or chain halves disagree
    FEW_POINTS = 16  # < 8 series points per chain: no autocorrelation estimate possible
    STUCK = 32  # the chains did not cross between modes that symmetry makes equally likely

    @classmethod
    def reasons(cls, value: int) -> list[str]:
        return [ADVICE[f] for f in cls if value & f]


ADVICE = {
    Flags.NONFINITE: "non-finite observable or field values (check ε, nβ, γ: a diverging chain, or a NaN loss)",
    Flags.FROZEN: "a chain never moved (step size too small, temperature too low, or a constant observable)",
    Flags.UNMIXED: f"R-hat > {RHAT_MAX}: chains disagree (more burn-in, more draws, or a larger step size)",
    Flags.FEW_POINTS: f"fewer than {MIN_POINTS_PER_CHAIN} draws/batches per chain (more draws, or a larger series budget)",
    Flags.STUCK: "the chains stayed in their magnetisation modes (the sign of M almost never changed): the modes' "
                 "weights were not sampled (use sampler swendsen-wang, more chains, or a higher temperature)",
}


@dataclass(frozen=True)
class PooledMoments:
    """Central moments pooled over chains (float64 NumPy), plus per-batch and per-chain pieces."""

    n_total: int
    mean_phi: np.ndarray  # [m]
    mean_psi: np.ndarray  # [k]
    cov: np.ndarray  # [m, k], ddof = 1
    var_u: np.ndarray  # [m, k], variance of u = (φ−μ)(ψ−ν)
    batch_u: np.ndarray  # [C, B', m, k] batch means of u (non-empty batches)
    batch_phi: np.ndarray  # [C, B', m] batch means of φ
    batch_psi: np.ndarray  # [C, B', k]
    chain_cov: np.ndarray  # [C, m, k] per-chain covariance (own means, ddof = 1)
    frozen_phi: np.ndarray  # [m] bool: some chain never changed φ_i
    frozen_psi: np.ndarray  # [k]
    bad_phi: np.ndarray  # [m] bool: some draw of φ_i was not finite
    bad_psi: np.ndarray  # [k]


def pooled_moments(acc: MomentAccumulator) -> PooledMoments:
    """Combine the per-chain shifted power sums into pooled central moments (Chan et al. step)."""
    if acc.draws_seen < 2:
        raise ValueError(f"need at least 2 draws per chain to estimate a covariance, have {acc.draws_seen}")
    if acc.n_chains * acc.draws_seen < 4:
        raise ValueError(f"need at least 4 draws in all to estimate an error, have {acc.n_chains * acc.draws_seen}")
    g = {k: v.detach().cpu().double().numpy() for k, v in acc.chain_tensors().items()}
    n = g["n"]  # [C]
    N = float(n.sum())
    mean_phi = ((g["shift_a"] * n[:, None]) + g["sa"]).sum(0) / N
    mean_psi = ((g["shift_b"] * n[:, None]) + g["sb"]).sum(0) / N
    d = mean_phi[None, :] - g["shift_a"]  # [C, m] pooled mean in chain-shifted coordinates
    f = mean_psi[None, :] - g["shift_b"]  # [C, k]
    D, F = d[:, :, None], f[:, None, :]
    sa, sb = g["sa"][:, :, None], g["sb"][:, None, :]
    saa, sbb = g["saa"][:, :, None], g["sbb"][:, None, :]
    nn = n[:, None, None]
    sum_u = g["sab"] - D * sb - sa * F + nn * D * F
    sum_u2 = (
        g["saabb"]
        - 2 * F * g["saab"]
        + F**2 * saa
        - 2 * D * g["sabb"]
        + 4 * D * F * g["sab"]
        - 2 * D * F**2 * sa
        + D**2 * sbb
        - 2 * D**2 * F * sb
        + D**2 * F**2 * nn
    )
    cov = sum_u.sum(0) / (N - 1)
    mean_u = sum_u.sum(0) / N
    var_u = np.maximum(sum_u2.sum(0) / N - mean_u**2, 0.0)

    bn = g["bn"]  # [C, B]
    keep = bn.min(axis=0) > 0  # batches every chain has filled
    bn = bn[:, keep]
    bsa, bsb, bsab = g["bsa"][:, keep], g["bsb"][:, keep], g["bsab"][:, keep]
    Db, Fb = d[:, None, :, None], f[:, None, None, :]
    bnn = bn[:, :, None, None]
    batch_u = (bsab - Db * bsb[:, :, None, :] - bsa[:, :, :, None] * Fb + bnn * Db * Fb) / bnn
    batch_phi = bsa / bn[:, :, None] + g["shift_a"][:, None, :]
    batch_psi = bsb / bn[:, :, None] + g["shift_b"][:, None, :]

    ma, mb = g["sa"] / n[:, None], g["sb"] / n[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        chain_cov = (g["sab"] / nn - ma[:, :, None] * mb[:, None, :]) * (nn / (nn - 1))
    with np.errstate(invalid="ignore"):
        frozen_phi = (g["saa"] <= 0).any(axis=0)
        frozen_psi = (g["sbb"] <= 0).any(axis=0)
    bad_phi, bad_psi = (g["bad_a"] > 0).any(axis=0), (g["bad_b"] > 0).any(axis=0)
    return PooledMoments(int(N), mean_phi, mean_psi, cov, var_u, batch_u, batch_phi, batch_psi, chain_cov,
                         frozen_phi, frozen_psi, bad_phi, bad_psi)


def entry_flags(pm: PooledMoments, rhat: np.ndarray, n_points: int) -> np.ndarray:
    """The :class:`Flags` of every [m, k] entry."""
    m, k = pm.cov.shape
    f = np.zeros((m, k), dtype=np.int64)
    f |= np.where(pm.bad_phi[:, None] | pm.bad_psi[None, :], int(Flags.NONFINITE), 0)
    f |= np.where(pm.frozen_phi[:, None] | pm.frozen_psi[None, :], int(Flags.FROZEN), 0)
    with np.errstate(invalid="ignore"):
        f |= np.where(rhat > RHAT_MAX, int(Flags.UNMIXED), 0)  # NaN (a constant series) is FROZEN's business
    if n_points < MIN_POINTS_PER_CHAIN:
        f |= int(Flags.FEW_POINTS)
    return f


def inferred_flags(res: "Susceptibility") -> np.ndarray:
    """:class:`Flags` for a result that carries none (a format /1 file, one built by hand),
    computed from what it holds, never assumed clean: NONFINITE where χ, its stderr or a mean
    of its observable or field is not finite; FROZEN where the ESS or R-hat is missing (not
    finite) or the ESS is not positive (no evidence the chains moved); UNMIXED where R-hat >
    :data:`RHAT_MAX`; FEW_POINTS everywhere when there are fewer than
    :data:`MIN_POINTS_PER_CHAIN` draws per chain."""
    shape = np.shape(res.chi)
    arr = lambda x: np.broadcast_to(np.asarray(x, dtype=np.float64), shape)  # noqa: E731
    f = np.zeros(shape, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arr(res.chi)) | ~np.isfinite(arr(res.stderr))
        m, k = shape if len(shape) == 2 else (0, 0)
        if np.shape(res.observable_mean) == (m,) and np.shape(res.field_mean) == (k,):
            bad |= ~np.isfinite(np.asarray(res.observable_mean, dtype=np.float64))[:, None]
            bad |= ~np.isfinite(np.asarray(res.field_mean, dtype=np.float64))[None, :]
        ess, rhat = arr(res.ess), arr(res.rhat)
        f |= np.where(bad, int(Flags.NONFINITE), 0)
        f |= np.where(~np.isfinite(ess) | ~np.isfinite(rhat) | (ess <= 0), int(Flags.FROZEN), 0)
        f |= np.where(rhat > RHAT_MAX, int(Flags.UNMIXED), 0)
    if int(res.n_draws) < MIN_POINTS_PER_CHAIN:
        f |= int(Flags.FEW_POINTS)
    return f


@dataclass
class Susceptibility:
    """χ[i, a] = scale · Cov(φ_i, ψ_a) with uncertainty, for observables i and fields a.

    Arrays are float64 [m, k] unless noted. ``stderr`` is the Monte Carlo standard error (Geyer
    ESS on each chain's series, module docstring) and ``dof`` its Student-t degrees of freedom:
    use :meth:`interval` for confidence intervals. ``stderr_chains`` is the between-chain error
    (a cross-check); ``ess`` the effective sample size of the covariance in draws; ``rhat`` the
    rank-normalised split R-hat (≈ 1 when mixed); ``flags`` [m, k] int (:class:`Flags`, 0 =
    reliable). ``observable_mean``/``observable_stderr`` [m] and ``field_mean``/``field_stderr``
    [k] are the posterior means of φ and ψ with their Monte Carlo standard errors. ``noise``
    (C ≥ 2) is one realisation of the Monte Carlo noise of χ with its real correlation across
    entries, w·(χ_first half of chains − χ_second half), w = √(n_a·n_b)/(n_a + n_b): build
    noise floors and "above noise" tests from it (docs/design.md §4), not from ``stderr`` alone.

    ``observable_axis``/``field_axis`` (:class:`~spectro.engine.coords.Axis`) are the typed
    coordinates of the rows and columns; their labels are ``observables``/``fields`` (default: an
    axis with those labels and no columns). ``estimator`` (:class:`EstimatorInfo`) records the
    estimator, system and sampler; None for results read from formats /1 and /2.
    """

    chi: np.ndarray
    stderr: np.ndarray
    stderr_chains: np.ndarray
    ess: np.ndarray
    rhat: np.ndarray
    observable_mean: np.ndarray
    observable_stderr: np.ndarray
    field_mean: np.ndarray
    field_stderr: np.ndarray
    observables: list[str]
    fields: list[str]
    scale: float
    n_chains: int
    n_draws: int
    meta: dict = field(default_factory=dict)
    dof: np.ndarray | None = None
    flags: np.ndarray | None = None
    noise: np.ndarray | None = None  # [m, k] one realisation of χ's Monte Carlo noise (split chains), or None
    observable_axis: Axis | None = None
    field_axis: Axis | None = None
    estimator: EstimatorInfo | None = None

    _ARRAYS = (
        "chi", "stderr", "stderr_chains", "ess", "rhat",
        "observable_mean", "observable_stderr", "field_mean", "field_stderr",
    )

    def __post_init__(self) -> None:
        shape = np.shape(self.chi)
        if self.dof is None:  # results built by hand or read from format /1: large-sample normal
            self.dof = np.full(shape, np.inf)
        if self.flags is None:  # a format /1 file or a result built by hand: judged by what it holds
            self.flags = inferred_flags(self)
        self.dof = np.asarray(self.dof, dtype=np.float64)
        self.flags = np.asarray(self.flags, dtype=np.int64)
        self.observable_axis = _axis("observable", self.observable_axis, self.observables)
        self.field_axis = _axis("field", self.field_axis, self.fields)
        if self.estimator is not None and not isinstance(self.estimator, EstimatorInfo):
            raise ValueError(f"estimator must be an EstimatorInfo or None, got {type(self.estimator).__name__}")

    @property
    def reliable(self) -> np.ndarray:
        """[m, k] bool: the entry's error bar can be trusted (no :class:`Flags` set)."""
        return self.flags == 0

    def interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Two-sided confidence interval χ ± t_dof((1+level)/2)·stderr, as (lower, upper) arrays."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        q = stats.t.ppf(0.5 + level / 2, self.dof)
        return self.chi - q * self.stderr, self.chi + q * self.stderr

    def z_scores(self, reference: np.ndarray) -> np.ndarray:
        """(χ − reference) / stderr, elementwise (Student-t with ``dof`` degrees of freedom)."""
        return (self.chi - np.asarray(reference)) / self.stderr

    def reasons(self, i: int, a: int) -> list[str]:
        """Why entry [i, a] is flagged (empty when reliable)."""
        return Flags.reasons(int(self.flags[i, a]))

    def entry(self, observable: str, field_name: str) -> dict:
        """One entry as a plain dict: mean, stderr, stderr_chains, ess, rhat, dof, ci95, reliable, why."""
        i, a = self.observables.index(observable), self.fields.index(field_name)
        lo, hi = self.interval(0.95)
        return {
            "mean": float(self.chi[i, a]),
            "stderr": float(self.stderr[i, a]),
            "stderr_chains": float(self.stderr_chains[i, a]),
            "ess": float(self.ess[i, a]),
            "rhat": float(self.rhat[i, a]),
            "dof": float(self.dof[i, a]),
            "ci95": [float(lo[i, a]), float(hi[i, a])],
            "reliable": bool(self.reliable[i, a]),
            "why": self.reasons(i, a),
        }

    def warning(self) -> str | None:
        """One line for the user when entries are flagged (None when every entry is reliable)."""
        n_bad = int((~self.reliable).sum())
        if n_bad == 0:
            return None
        counts = {f: int(((self.flags & int(f)) != 0).sum()) for f in Flags}
        parts = [f"{c} {ADVICE[f]}" for f, c in counts.items() if c]
        return (f"{n_bad} of {self.flags.size} χ entries have no trustworthy error bar: " + "; ".join(parts))

    def to_xarray(self):
        """An ``xarray.Dataset`` with dims (observable, field): :func:`spectro.engine.xarray_io.to_xarray`."""
        from .xarray_io import to_xarray

        return to_xarray(self)

    @classmethod
    def from_xarray(cls, ds) -> "Susceptibility":
        """Inverse of :meth:`to_xarray` (exact)."""
        from .xarray_io import from_xarray

        return from_xarray(ds)

    def to_devinterp_dataset(self, observable: str | None = None, wr: str | None = None):
        """Per-token χ in devinterp's SusceptibilitiesV2 layout: :func:`spectro.engine.xarray_io.to_devinterp_dataset`."""
        from .xarray_io import to_devinterp_dataset

        return to_devinterp_dataset({wr or _default_wr(self): self}, observable)

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (``.npz``): the arrays by name plus ``meta`` as JSON.

        Format ``spectro.susceptibility/3``: NumPy ``.npz`` with float64 arrays named as the
        attributes above plus ``dof``, int64 ``flags`` and (C ≥ 2) ``noise``, string arrays
        ``observables`` and ``fields``, one array ``<axis>_axis.<column>`` per axis column, and a
        0-d string ``header`` holding JSON with keys ``format``, ``scale``, ``n_chains``,
        ``n_draws``, ``meta``, ``axes`` ({"observable": [column names], "field": [...]}) and
        ``estimator`` (:meth:`EstimatorInfo.to_dict`, or null). Formats /2 (no axes, estimator)
        and /1 (no dof, flags either) still load, with axes derived from the names.
        """
        with atomic_path(Path(path), suffix=".npz") as tmp:
            np.savez(tmp, **self.to_arrays())
        return Path(path)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the :meth:`save` format by name (what the ``.npz`` holds)."""
        axes = (_axis("observable", self.observable_axis, self.observables), _axis("field", self.field_axis, self.fields))
        header = {
            "format": FORMAT,
            "scale": self.scale,
            "n_chains": self.n_chains,
            "n_draws": self.n_draws,
            "meta": self.meta,
            "axes": {ax.name: list(ax.columns) for ax in axes},
            "estimator": self.estimator.to_dict() if self.estimator is not None else None,
        }
        arrays = {name: np.asarray(getattr(self, name)) for name in self._ARRAYS + ("dof", "flags", "noise")
                  if getattr(self, name) is not None}
        for ax in axes:
            arrays.update({f"{ax.name}_axis.{key}": col for key, col in ax.columns.items()})
        return {"observables": np.asarray(self.observables, dtype=str), "fields": np.asarray(self.fields, dtype=str),
                "header": np.asarray(json.dumps(header, default=str)), **arrays}

    @classmethod
    def from_arrays(cls, z: Mapping[str, np.ndarray]) -> "Susceptibility":
        """Inverse of :meth:`to_arrays` (exact); a missing or malformed entry raises."""
        header = json.loads(str(z["header"]))
        fmt = header.get("format") if isinstance(header, dict) else None
        if fmt not in _READABLE:
            raise ValueError(f"format {fmt!r}")
        names = set(z.keys())
        observables, fields = [str(x) for x in z["observables"]], [str(x) for x in z["fields"]]
        axes = header.get("axes", {})
        estimator = header.get("estimator")
        return cls(
            **{name: z[name] for name in cls._ARRAYS},
            **{name: z[name] for name in ("dof", "flags", "noise") if name in names},
            observables=observables,
            fields=fields,
            observable_axis=Axis("observable", tuple(observables),
                                 {c: z[f"observable_axis.{c}"] for c in axes.get("observable", [])}),
            field_axis=Axis("field", tuple(fields), {c: z[f"field_axis.{c}"] for c in axes.get("field", [])}),
            estimator=EstimatorInfo.from_dict(estimator) if estimator is not None else None,
            scale=float(header["scale"]),
            n_chains=int(header["n_chains"]),
            n_draws=int(header["n_draws"]),
            meta=header["meta"],
        )

    @classmethod
    def load(cls, path: str | Path) -> "Susceptibility":
        """Read a file written by :meth:`save`; anything else raises ValueError naming the file."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls.from_arrays(z)
        except FileNotFoundError:
            raise
        except Exception as exc:  # zip, JSON, key or shape errors: one message naming the file
            raise ValueError(f"{path} is not a spectro susceptibility file ({exc})") from None


def estimate_susceptibility(
    acc: MomentAccumulator,
    scale: float,
    observables: list[str] | None = None,
    fields: list[str] | None = None,
    meta: dict | None = None,
    *,
    observable_axis: Axis | None = None,
    field_axis: Axis | None = None,
    estimator: EstimatorInfo | None = None,
) -> Susceptibility:
    """χ = scale · Cov(φ, ψ) with Monte Carlo stderr, its dof, between-chain stderr, ESS, R-hat, flags.

    Names default to the axes' labels (else ``obs<i>``/``field<a>``); ``estimator`` gets
    ``kind="cov"`` and ``scale`` filled in (and a default ``convention`` when empty).
    """
    m, k = acc.n_observables, acc.n_fields
    observables, fields = _names(observables, fields, m, k, observable_axis, field_axis)
    pm = pooled_moments(acc)
    err = mean_error(pm.batch_u)
    rhat = rhat_rank(pm.batch_u) if pm.batch_u.shape[1] >= 4 else np.full((m, k), np.nan)
    C = acc.n_chains
    se_chains = pm.chain_cov.std(axis=0, ddof=1) / np.sqrt(C) if C >= 2 else np.full((m, k), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ess = pm.var_u / err.se**2
    return Susceptibility(
        chi=scale * pm.cov,
        stderr=abs(scale) * err.se,
        stderr_chains=abs(scale) * se_chains,
        ess=ess,
        rhat=rhat,
        observable_mean=pm.mean_phi,
        observable_stderr=mean_error(pm.batch_phi).se,
        field_mean=pm.mean_psi,
        field_stderr=mean_error(pm.batch_psi).se,
        observables=observables,
        fields=fields,
        scale=float(scale),
        n_chains=C,
        n_draws=acc.draws_seen,
        meta={"versions": environment_versions(), **(meta or {})},
        dof=err.dof,
        flags=entry_flags(pm, rhat, pm.batch_u.shape[1]),
        noise=_split_noise(acc, lambda part: scale * pooled_moments(part).cov),
        observable_axis=observable_axis,
        field_axis=field_axis,
        estimator=_estimator(estimator, "cov", scale, "chi = scale*Cov(phi, psi)"),
    )


def _split_noise(acc: MomentAccumulator, estimate, other: MomentAccumulator | None = None) -> np.ndarray | None:
    """w·(χ(first half of the chains) − χ(second half)), w = √(n_a n_b)/(n_a + n_b): the same
    variance as χ's Monte Carlo error and its correlation across entries. ``other`` (Baker's full
    run) is split alongside, so its error enters too. None with one chain, or when a half has fewer
    than the 4 draws an estimate needs (e.g. 2 chains × 3 draws)."""
    C = acc.n_chains
    if C < 2 or (other is not None and other.n_chains < 2):
        return None
    if (C // 2) * acc.draws_seen < 4 or (other is not None and (other.n_chains // 2) * other.draws_seen < 4):
        return None
    h = C // 2
    parts = [acc.select_chains(slice(0, h)), acc.select_chains(slice(h, C))]
    if other is not None:
        ho = other.n_chains // 2
        others = [other.select_chains(slice(0, ho)), other.select_chains(slice(ho, other.n_chains))]
        a, b = estimate(parts[0], others[0]), estimate(parts[1], others[1])
    else:
        a, b = estimate(parts[0]), estimate(parts[1])
    return np.sqrt(h * (C - h)) / C * (a - b)


def _names(observables, fields, m: int, k: int, observable_axis: Axis | None = None,
           field_axis: Axis | None = None) -> tuple[list[str], list[str]]:
    if observables is None and observable_axis is not None:
        observables = observable_axis.labels
    if fields is None and field_axis is not None:
        fields = field_axis.labels
    observables = list(observables) if observables is not None else [f"obs{i}" for i in range(m)]
    fields = list(fields) if fields is not None else [f"field{a}" for a in range(k)]
    if len(observables) != m or len(fields) != k:
        raise ValueError(f"got {len(observables)} observable names and {len(fields)} field names for a {m}x{k} accumulator")
    return observables, fields


def component_susceptibility_estimate(
    component: MomentAccumulator,
    full: MomentAccumulator,
    observables: list[str] | None = None,
    fields: list[str] | None = None,
    meta: dict | None = None,
    *,
    rows: list[int] | None = None,
    observable_axis: Axis | None = None,
    field_axis: Axis | None = None,
    estimator: EstimatorInfo | None = None,
) -> Susceptibility:
    """Baker et al. 2025's weight-restricted susceptibility from two independent streamed runs.

    ``component``: run with only component C's weights free, observables φ [m] (usually φ_C =
    L̄(w) − L̄(w*)) and fields ψ [k]. ``full``: unrestricted run with the same ψ (its φ is
    ignored). With c = E_full[ψ] (docs/design.md §2)::

        χ^C = −(E_C[φ·ψ] − E_C[φ]·c) = −E_C[p],   p = φ·(ψ − c)

    Standard error by the delta method, the two runs being independent::

        se² = se_C(p)² + E_C[φ]²·se_full(ψ)²

    where se_C(p) is the Monte Carlo error of the mean of p over the component run (c held
    fixed; p's per-batch sums are exact polynomials in the shifted power sums) and se_full(ψ)
    that of c. Degrees of freedom by Welch–Satterthwaite. ``meta["full_run_variance_share"]`` is
    the median over entries of E_C[φ]²·se_full(ψ)² / se²: with a share f, giving the full run r
    times the draws cuts the variance by the factor 1 − f·(1 − 1/r) at the cost of r − 1 more
    full runs (``full_config`` of :func:`spectro.nn.component_susceptibility`). ``rhat`` is rank-normalised split
    R-hat of p; ``stderr_chains`` combines the spread of per-chain estimates with the full
    run's per-chain spread of ψ. ``observable_mean`` is E_C[φ]; ``field_mean`` is E_C[ψ].

    The scale of χ^C differs between components (≈ Z_full/Z_C): z-score the columns before
    comparing components. Axes and ``estimator`` as in :func:`estimate_susceptibility`, with
    ``kind="baker2025"`` and ``scale=-1``.

    ``rows``: the observable rows that take Baker's estimator (default: all). The other rows get
    the component run's plain χ = −Cov(φ, ψ) (:func:`estimate_susceptibility`, e.g. a mean loss
    beside φ_C); every per-row array comes from the row's own estimator, the observable axis
    records it per row in its ``estimator`` column ("baker2025" | "cov"), and the result's
    ``estimator.kind`` is "cov".
    """
    if rows is not None:
        return _mixed_rows(component, full, observables, fields, meta, rows, observable_axis, field_axis, estimator)
    if component.n_fields != full.n_fields:
        raise ValueError(f"component run has {component.n_fields} fields, full run {full.n_fields}")
    m, k = component.n_observables, component.n_fields
    observables, fields = _names(observables, fields, m, k, observable_axis, field_axis)
    pm_full = pooled_moments(full)
    c_full = pm_full.mean_psi  # [k]
    err_c = mean_error(pm_full.batch_psi)  # [k]

    g = {key: val.detach().cpu().double().numpy() for key, val in component.chain_tensors().items()}
    n = g["n"][:, None, None]  # [C,1,1]
    A = g["shift_a"][:, :, None]  # φ shift [C,m,1]
    Bc = (g["shift_b"] - c_full[None, :])[:, None, :]  # ψ shift − c  [C,1,k]
    sa, saa = g["sa"][:, :, None], g["saa"][:, :, None]
    sb, sbb = g["sb"][:, None, :], g["sbb"][:, None, :]
    # p = (a + A)(b + Bc) with a = φ − shift_a, b = ψ − shift_b
    s1 = g["sab"] + A * sb + Bc * sa + n * A * Bc  # Σ_t p      [C,m,k]
    s2 = (
        g["saabb"] + A**2 * sbb + Bc**2 * saa + n * A**2 * Bc**2
        + 2 * A * g["sabb"] + 2 * Bc * g["saab"] + 4 * A * Bc * g["sab"]
        + 2 * A**2 * Bc * sb + 2 * A * Bc**2 * sa
    )  # Σ_t p²
    N = float(g["n"].sum())
    mean_p = s1.sum(0) / N
    var_p = np.maximum(s2.sum(0) / N - mean_p**2, 0.0)

    bn = g["bn"]  # [C, B]
    keep = bn.min(axis=0) > 0
    bn = bn[:, keep][:, :, None, None]
    bsum = (g["bsab"][:, keep] + A[:, None] * g["bsb"][:, keep][:, :, None, :]
            + Bc[:, None] * g["bsa"][:, keep][:, :, :, None] + bn * A[:, None] * Bc[:, None])
    batch_p = bsum / bn  # [C, B, m, k]
    err_p = mean_error(batch_p)

    pm_c = pooled_moments(component)
    mu_phi = pm_c.mean_phi  # [m]
    full_term = (mu_phi[:, None] * err_c.se[None, :]) ** 2
    var = err_p.se**2 + full_term
    with np.errstate(divide="ignore", invalid="ignore"):
        dof = var**2 / (err_p.se**4 / err_p.dof + full_term**2 / err_c.dof[None, :])
        ess = var_p / err_p.se**2
    dof = np.where(np.isfinite(dof), dof, err_p.dof)

    C = component.n_chains
    chain_est = -(s1 / n)  # [C, m, k]
    full_chain_psi = pm_full.batch_psi.mean(axis=1)  # [C_full, k]
    if C >= 2 and full_chain_psi.shape[0] >= 2:
        se_full_chains = full_chain_psi.std(axis=0, ddof=1) / np.sqrt(full_chain_psi.shape[0])
        stderr_chains = np.sqrt(chain_est.var(axis=0, ddof=1) / C + (mu_phi[:, None] * se_full_chains[None, :]) ** 2)
    else:
        stderr_chains = np.full_like(mean_p, np.nan)
    rhat = rhat_rank(batch_p) if batch_p.shape[1] >= 4 else np.full((m, k), np.nan)
    flags = entry_flags(pm_c, rhat, batch_p.shape[1])
    flags |= np.where(pm_full.bad_psi[None, :], int(Flags.NONFINITE), 0)
    flags |= np.where(pm_full.frozen_psi[None, :], int(Flags.FROZEN), 0)
    if pm_full.batch_psi.shape[1] < MIN_POINTS_PER_CHAIN:
        flags |= int(Flags.FEW_POINTS)
    return Susceptibility(
        chi=-mean_p,
        stderr=np.sqrt(var),
        stderr_chains=stderr_chains,
        ess=ess,
        rhat=rhat,
        observable_mean=mu_phi,
        observable_stderr=mean_error(pm_c.batch_phi).se,
        field_mean=pm_c.mean_psi,
        field_stderr=mean_error(pm_c.batch_psi).se,
        observables=observables,
        fields=fields,
        scale=-1.0,
        n_chains=C,
        n_draws=component.draws_seen,
        meta={"versions": environment_versions(), "estimator": "baker2025: -(E_C[phi*psi] - E_C[phi]*E_full[psi])",
              "full_run_variance_share": float(np.nanmedian(np.where(var > 0, full_term / var, np.nan)))
              if np.any(var > 0) else None, **(meta or {})},
        dof=dof,
        flags=flags,
        noise=_split_noise(component, _baker_chi, full),
        observable_axis=observable_axis,
        field_axis=field_axis,
        estimator=_estimator(estimator, "baker2025", -1.0, "chi = -(E_C[phi*psi] - E_C[phi]*E_full[psi])"),
    )


ROW_ARRAYS = ("chi", "stderr", "stderr_chains", "ess", "rhat", "dof", "flags", "noise", "observable_mean",
              "observable_stderr")
"""The arrays of a :class:`Susceptibility` that belong to an observable row."""


def _mixed_rows(component: MomentAccumulator, full: MomentAccumulator, observables, fields, meta, rows,
                observable_axis: Axis | None, field_axis: Axis | None, estimator: EstimatorInfo | None) -> Susceptibility:
    """Baker's estimator on ``rows``, the plain −Cov(φ, ψ) of the component run elsewhere."""
    m = component.n_observables
    rows = sorted({int(r) for r in rows})
    if any(r < 0 or r >= m for r in rows):
        raise ValueError(f"rows must index the {m} observables, got {rows}")
    kw = dict(observable_axis=observable_axis, field_axis=field_axis, estimator=estimator)
    plain = estimate_susceptibility(component, -1.0, observables, fields, meta, **kw)
    if rows:  # Baker's estimator on those rows only (an accumulator of just them)
        names = None if plain.observables is None else [plain.observables[r] for r in rows]
        baker = component_susceptibility_estimate(component.select_observables(rows), full, names, fields, meta,
                                                  field_axis=field_axis, estimator=estimator)
        for name in ROW_ARRAYS:
            mine, theirs = getattr(plain, name), getattr(baker, name)
            if mine is None or theirs is None:  # split-chain noise needs two chains in both runs
                setattr(plain, name, None)
                continue
            mine[rows] = theirs
        plain.meta["full_run_variance_share"] = baker.meta["full_run_variance_share"]
    ax = plain.observable_axis
    kinds = ["baker2025" if i in rows else "cov" for i in range(m)]
    plain.observable_axis = Axis(ax.name, ax.labels, {**ax.columns, "estimator": kinds})
    return plain


def _baker_chi(component: MomentAccumulator, full: MomentAccumulator) -> np.ndarray:
    """χ^C = −(E_C[φψ] − E_C[φ]·E_full[ψ]) alone (for split-chain replicates)."""
    pc, pf = pooled_moments(component), pooled_moments(full)
    N = pc.n_total
    e_phipsi = pc.cov * (N - 1) / N + pc.mean_phi[:, None] * pc.mean_psi[None, :]
    return -(e_phipsi - pc.mean_phi[:, None] * pf.mean_psi[None, :])


def _axis(name: str, axis: Axis | None, labels: list[str]) -> Axis:
    """``axis``, checked against the result's names, or an axis of those names without columns."""
    if axis is None:
        return Axis.from_labels(name, labels)
    if not isinstance(axis, Axis) or axis.name != name:
        raise ValueError(f"{name}_axis must be an Axis named {name!r}, got {axis!r:.80}")
    if axis.labels != tuple(labels):
        if len(axis) != len(labels):
            raise ValueError(f"{name}_axis has {len(axis)} labels, expected {len(labels)} (one per {name} name)")
        j = next(j for j, (a, b) in enumerate(zip(axis.labels, labels)) if a != b)
        raise ValueError(f"{name}_axis label {j} is {axis.labels[j]!r}, but the {name} name is {labels[j]!r}")
    return axis


def _estimator(info: EstimatorInfo | None, kind: str, scale: float, convention: str) -> EstimatorInfo:
    info = info if info is not None else EstimatorInfo()
    if not isinstance(info, EstimatorInfo):
        raise ValueError(f"estimator must be an EstimatorInfo or None, got {type(info).__name__}")
    return replace(info, kind=kind, scale=float(scale), convention=info.convention or convention)


def _default_wr(result: Susceptibility) -> str:
    """devinterp's name of the weight restriction of an unnamed result: "full" for a plain covariance."""
    if result.estimator is not None and result.estimator.kind == "baker2025":
        raise ValueError("a baker2025 result is a restricted component: name it, to_devinterp_dataset(wr=...)")
    return "full"


def environment_versions() -> dict:
    """Versions of the packages that produced a result (recorded in every result file)."""
    import torch

    import spectro

    return {
        "spectro": spectro.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
