"""Susceptibilities χ = scale · Cov(φ, ψ) with standard errors, ESS and R-hat, from streamed moments.

The one estimator shared by the Ising and the neural-network sides:

* Ising: ψ_B = M_B (probe magnetization), scale = β:  χ_{A,B} = ∂⟨M_A⟩/∂h_B = β·Cov(M_A, M_B).
* Neural networks: ψ = ΔL = L(w; q') − L(w; q), scale = −1:  χ(φ) = −Cov(φ, ΔL)
  = (1/nβ)·∂_h⟨φ⟩_h at h = 0 (χ > 0: up-weighting q' raises ⟨φ⟩).

Estimates (N = total draws over C chains, pooled means μ, ν over all chains):

* ``Cov = Σ_{c,t} (φ−μ)(ψ−ν) / (N − 1)``.
* ``stderr``: batch means of the centred product u = (φ−μ)(ψ−ν) over C·B batches
  (see :func:`spectro.engine.diagnostics.batch_means_stderr`).
* ``stderr_chains``: spread of the per-chain covariances, std_c / sqrt(C) (needs C ≥ 2).
* ``ess = Var(u) / stderr²``; ``rhat``: split R-hat on the batch means of u.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import atomic_path
from .diagnostics import batch_means_stderr, effective_sample_size, split_rhat
from .moments import MomentAccumulator

__all__ = ["PooledMoments", "pooled_moments", "Susceptibility", "estimate_susceptibility", "environment_versions"]


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


def pooled_moments(acc: MomentAccumulator) -> PooledMoments:
    """Combine the per-chain shifted power sums into pooled central moments (Chan et al. step)."""
    if acc.draws_seen < 2:
        raise ValueError(f"need at least 2 draws per chain to estimate a covariance, have {acc.draws_seen}")
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
    return PooledMoments(int(N), mean_phi, mean_psi, cov, var_u, batch_u, batch_phi, batch_psi, chain_cov)


@dataclass
class Susceptibility:
    """χ[i, a] = scale · Cov(φ_i, ψ_a) with uncertainty, for observables i and fields a.

    Arrays are float64 [m, k] unless noted. ``stderr`` is the batch-means standard error (the
    one to use for z-scores); ``stderr_chains`` the between-chain one (a cross-check);
    ``ess`` the effective sample size of the covariance; ``rhat`` split R-hat (≈ 1 when mixed).
    ``observable_mean``/``observable_stderr`` [m] and ``field_mean``/``field_stderr`` [k] are the
    posterior means of φ and ψ with their batch-means standard errors.
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

    _ARRAYS = (
        "chi", "stderr", "stderr_chains", "ess", "rhat",
        "observable_mean", "observable_stderr", "field_mean", "field_stderr",
    )

    def z_scores(self, reference: np.ndarray) -> np.ndarray:
        """(χ − reference) / stderr, elementwise."""
        return (self.chi - np.asarray(reference)) / self.stderr

    def entry(self, observable: str, field_name: str) -> dict:
        """One entry as a plain dict (mean, stderr, stderr_chains, ess, rhat)."""
        i, a = self.observables.index(observable), self.fields.index(field_name)
        return {
            "mean": float(self.chi[i, a]),
            "stderr": float(self.stderr[i, a]),
            "stderr_chains": float(self.stderr_chains[i, a]),
            "ess": float(self.ess[i, a]),
            "rhat": float(self.rhat[i, a]),
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (``.npz``): the arrays by name plus ``meta`` as JSON.

        Format: NumPy ``.npz`` with float64 arrays named as the attributes above, string arrays
        ``observables`` and ``fields``, and a 0-d string ``header`` holding JSON with keys
        ``scale``, ``n_chains``, ``n_draws``, ``meta``, ``format`` ("spectro.susceptibility/1").
        """
        path = Path(path)
        header = {
            "format": "spectro.susceptibility/1",
            "scale": self.scale,
            "n_chains": self.n_chains,
            "n_draws": self.n_draws,
            "meta": self.meta,
        }
        arrays = {name: np.asarray(getattr(self, name)) for name in self._ARRAYS}
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(
                tmp,
                observables=np.asarray(self.observables, dtype=str),
                fields=np.asarray(self.fields, dtype=str),
                header=np.asarray(json.dumps(header, default=str)),
                **arrays,
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Susceptibility":
        with np.load(Path(path), allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            if header.get("format") != "spectro.susceptibility/1":
                raise ValueError(f"{path} is not a spectro susceptibility file (format {header.get('format')!r})")
            arrays = {name: z[name] for name in cls._ARRAYS}
            return cls(
                **arrays,
                observables=[str(x) for x in z["observables"]],
                fields=[str(x) for x in z["fields"]],
                scale=float(header["scale"]),
                n_chains=int(header["n_chains"]),
                n_draws=int(header["n_draws"]),
                meta=header["meta"],
            )


def estimate_susceptibility(
    acc: MomentAccumulator,
    scale: float,
    observables: list[str] | None = None,
    fields: list[str] | None = None,
    meta: dict | None = None,
) -> Susceptibility:
    """χ = scale · Cov(φ, ψ) with batch-means stderr, between-chain stderr, ESS and split R-hat."""
    m, k = acc.n_observables, acc.n_fields
    observables = list(observables) if observables is not None else [f"obs{i}" for i in range(m)]
    fields = list(fields) if fields is not None else [f"field{a}" for a in range(k)]
    if len(observables) != m or len(fields) != k:
        raise ValueError(f"got {len(observables)} observable names and {len(fields)} field names for a {m}x{k} accumulator")
    pm = pooled_moments(acc)
    se = batch_means_stderr(pm.batch_u)
    C = acc.n_chains
    se_chains = pm.chain_cov.std(axis=0, ddof=1) / np.sqrt(C) if C >= 2 else np.full((m, k), np.nan)
    return Susceptibility(
        chi=scale * pm.cov,
        stderr=abs(scale) * se,
        stderr_chains=abs(scale) * se_chains,
        ess=effective_sample_size(pm.var_u, se),
        rhat=split_rhat(pm.batch_u),
        observable_mean=pm.mean_phi,
        observable_stderr=batch_means_stderr(pm.batch_phi),
        field_mean=pm.mean_psi,
        field_stderr=batch_means_stderr(pm.batch_psi),
        observables=observables,
        fields=fields,
        scale=float(scale),
        n_chains=C,
        n_draws=acc.draws_seen,
        meta={"versions": environment_versions(), **(meta or {})},
    )


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
