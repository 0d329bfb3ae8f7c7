"""Closed forms for a linear model with squared loss, whose localized tempered posterior is Gaussian.

Model ``f(x) = w·x`` (w ∈ R^d, no bias), per-sample loss ``ℓ_i(w) = (y_i − x_i·w)²`` and data
weights ρ (``ρ_i = 1/n`` by default), ``L(w) = Σ_i ρ_i ℓ_i(w)``. Then

    nβ·L(w) + (γ/2)‖w − w*‖² = ½ wᵀPw − hᵀw + const,
    P = 2nβ·XᵀRX + γI,   h = 2nβ·XᵀRy + γw*,   R = diag(ρ),

so the posterior is N(μ, Σ) with μ = P⁻¹h, Σ = P⁻¹ exactly.

SGLD with the *full-batch* gradient is the linear recursion ``w' = w − (ε/2)P(w − μ) + √ε η``,
whose stationary law is also Gaussian, N(μ, Σ_ε) with (eigenbasis of P, eigenvalues λ_j)
``Σ_ε = U diag(1 / (λ_j (1 − ελ_j/4))) Uᵀ`` — the exact O(ε) discretisation bias.

Covariances of per-sample losses (w = μ + z, z ~ N(0, S), residuals r_i = y_i − x_i·μ)::

    ℓ_i = r_i² − 2 r_i x_iᵀz + (x_iᵀz)²
    Cov(ℓ_i, ℓ_j) = 4 r_i r_j (x_iᵀ S x_j) + 2 (x_iᵀ S x_j)²

(Isserlis: Cov(zᵀAz, zᵀBz) = 2 tr(ASBS), odd moments vanish.) Observables and fields that are
linear in the losses (φ = Oℓ, ψ = Fℓ) then have ``χ = −Cov(φ, ψ) = −O K Fᵀ``.

Weight restriction (:meth:`LinearGaussianOracle.restricted`): the free coordinates F move, the
others (R) stay at w*. With E(w) = ½wᵀPw − hᵀw the energy as a function of w_F alone is
½ w_Fᵀ P_FF w_F − (h_F − P_FR w*_R)ᵀ w_F + const, so the restricted posterior is Gaussian with

    precision P_FF,   μ_F = P_FF⁻¹ (h_F − P_FR w*_R) = w*_F − P_FF⁻¹ ∇E(w*)_F,

∇E(w*) = P w* − h = nβ·∇L(w*) (the localization term vanishes at w*). Masked full-batch SGLD moves
only w_F, by the same linear recursion with P_FF, so Σ_ε is the formula above applied to P_FF.
Embedding μ_F into w* and Σ_FF into a [d, d] matrix with zeros on R, every loss moment above
holds unchanged (z has zero components on R). Baker et al. 2025's component susceptibility of
φ = Oℓ − c and ψ = Fℓ (E_C over the restricted law, E_full over the unrestricted one)::

    χ^C = −(E_C[φψ] − E_C[φ]·E_full[ψ]) = −(Cov_C(φ, ψ) + E_C[φ]·(E_C[ψ] − E_full[ψ])).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LinearGaussianOracle", "RestrictedLinearGaussianOracle"]


@dataclass(frozen=True)
class LinearGaussianOracle:
    """Exact posterior moments for ``ℓ_i = (y_i − x_i·w)²``; arrays in float64."""

    X: np.ndarray  # [n, d]
    y: np.ndarray  # [n]
    w_star: np.ndarray  # [d]
    nbeta: float
    gamma: float
    weights: np.ndarray | None = None  # ρ [n], sums to 1; None = uniform

    @property
    def rho(self) -> np.ndarray:
        n = self.X.shape[0]
        return np.full(n, 1.0 / n) if self.weights is None else np.asarray(self.weights, float) / np.sum(self.weights)

    @property
    def precision(self) -> np.ndarray:
        """P = 2nβ·XᵀRX + γI."""
        X = np.asarray(self.X, float)
        return 2 * self.nbeta * (X.T * self.rho) @ X + self.gamma * np.eye(X.shape[1])

    @property
    def mean(self) -> np.ndarray:
        """μ = P⁻¹(2nβ·XᵀRy + γw*)."""
        X, y = np.asarray(self.X, float), np.asarray(self.y, float)
        h = 2 * self.nbeta * (X.T * self.rho) @ y + self.gamma * np.asarray(self.w_star, float)
        return np.linalg.solve(self.precision, h)

    def covariance(self, epsilon: float = 0.0) -> np.ndarray:
        """Σ (ε = 0) or the full-batch SGLD stationary covariance Σ_ε."""
        lam, U = np.linalg.eigh(self.precision)
        if epsilon * lam.max() >= 4:
            raise ValueError(f"SGLD is unstable for epsilon={epsilon} (ε·λ_max = {epsilon * lam.max():.3g} ≥ 4)")
        return (U / (lam * (1 - epsilon * lam / 4))) @ U.T

    def loss_mean(self, epsilon: float = 0.0) -> np.ndarray:
        """E[ℓ_i] = r_i² + x_iᵀ S x_i, [n]."""
        X, S = np.asarray(self.X, float), self.covariance(epsilon)
        r = np.asarray(self.y, float) - X @ self.mean
        return r**2 + np.einsum("id,de,ie->i", X, S, X)

    def loss_covariance(self, epsilon: float = 0.0) -> np.ndarray:
        """K_ij = Cov(ℓ_i, ℓ_j) = 4 r_i r_j x_iᵀSx_j + 2 (x_iᵀSx_j)², [n, n]."""
        X, S = np.asarray(self.X, float), self.covariance(epsilon)
        r = np.asarray(self.y, float) - X @ self.mean
        G = X @ S @ X.T
        return 4 * np.outer(r, r) * G + 2 * G**2

    def susceptibility(self, O: np.ndarray, F: np.ndarray, epsilon: float = 0.0) -> np.ndarray:
        """χ = −Cov(Oℓ, Fℓ) = −O K Fᵀ for observables O [m, n] and field generators F [k, n]."""
        return -np.asarray(O, float) @ self.loss_covariance(epsilon) @ np.asarray(F, float).T

    def llc(self, epsilon: float = 0.0) -> float:
        """nβ·(E[L] − L(w*)) with L = Σρ_iℓ_i (the LLC the sampler estimates)."""
        X, y, ws = np.asarray(self.X, float), np.asarray(self.y, float), np.asarray(self.w_star, float)
        L_star = np.sum(self.rho * (y - X @ ws) ** 2)
        return float(self.nbeta * (np.sum(self.rho * self.loss_mean(epsilon)) - L_star))

    def restricted(self, free: np.ndarray) -> "RestrictedLinearGaussianOracle":
        """The posterior with only the coordinates where ``free`` is true sampled (the rest at w*).

        ``free``: bool array of d entries (any shape with d elements, e.g. the [1, d] mask of an
        ``nn.Linear(d, 1, bias=False)`` weight in a :class:`~spectro.nn.restrictions.Restriction`).
        """
        return RestrictedLinearGaussianOracle(self.X, self.y, self.w_star, self.nbeta, self.gamma, self.weights, free=free)


@dataclass(frozen=True)
class RestrictedLinearGaussianOracle(LinearGaussianOracle):
    """The localized posterior restricted to the free coordinates (module docstring); same interface.

    ``mean`` is the full d-vector (w* on frozen coordinates), ``covariance`` the [d, d] matrix with
    zeros on frozen rows and columns; :meth:`loss_mean`, :meth:`loss_covariance`,
    :meth:`susceptibility` and :meth:`llc` are then the restricted run's. ``precision`` stays the
    unrestricted P; :attr:`precision_free` is P_FF.
    """

    free: np.ndarray | None = None  # [d] bool

    def __post_init__(self) -> None:
        d = np.asarray(self.X).shape[1]
        free = np.asarray(self.free if self.free is not None else np.ones(d, bool))
        if free.size != d:
            raise ValueError(f"free mask has {free.size} entries, the model has {d} weights")
        if free.dtype != bool and not np.isin(free, (0, 1)).all():
            raise ValueError("free mask must be boolean (0/1): a fractional mask is a preconditioner, not a restriction")
        free = free.reshape(-1).astype(bool)
        if not free.any():
            raise ValueError("free mask frees no coordinate")
        object.__setattr__(self, "free", free)

    @property
    def full(self) -> LinearGaussianOracle:
        """The unrestricted oracle of the same problem."""
        return LinearGaussianOracle(self.X, self.y, self.w_star, self.nbeta, self.gamma, self.weights)

    @property
    def precision_free(self) -> np.ndarray:
        """P_FF, the precision of the free coordinates."""
        return self.precision[np.ix_(self.free, self.free)]

    @property
    def mean(self) -> np.ndarray:
        """[d]: w* with the free coordinates replaced by μ_F = w*_F − P_FF⁻¹ (P w* − h)_F."""
        X, y = np.asarray(self.X, float), np.asarray(self.y, float)
        ws = np.asarray(self.w_star, float)
        h = 2 * self.nbeta * (X.T * self.rho) @ y + self.gamma * ws
        grad = self.precision @ ws - h  # ∇E(w*)
        mu = ws.copy()
        mu[self.free] = ws[self.free] - np.linalg.solve(self.precision_free, grad[self.free])
        return mu

    def covariance(self, epsilon: float = 0.0) -> np.ndarray:
        """[d, d]: Σ_ε of P_FF on the free block, zero elsewhere."""
        lam, U = np.linalg.eigh(self.precision_free)
        if epsilon * lam.max() >= 4:
            raise ValueError(f"SGLD is unstable for epsilon={epsilon} (ε·λ_max = {epsilon * lam.max():.3g} ≥ 4)")
        d = self.free.size
        S = np.zeros((d, d))
        S[np.ix_(self.free, self.free)] = (U / (lam * (1 - epsilon * lam / 4))) @ U.T
        return S

    def component_susceptibility(
        self, O: np.ndarray, F: np.ndarray, epsilon: float = 0.0, offset: np.ndarray | float = 0.0,
        epsilon_full: float | None = None,
    ) -> np.ndarray:
        """Baker's χ^C = −(E_C[φψ] − E_C[φ]·E_full[ψ]) for φ = Oℓ − offset [m], ψ = Fℓ [k].

        E_C: this (restricted) law at step size ``epsilon``; E_full: the unrestricted law at
        ``epsilon_full`` (default ``epsilon``). Returns [m, k].
        """
        O, F = np.asarray(O, float), np.asarray(F, float)
        eps_full = epsilon if epsilon_full is None else epsilon_full
        mean_c = self.loss_mean(epsilon)
        e_phi = O @ mean_c - np.broadcast_to(np.asarray(offset, float), (O.shape[0],))
        e_psi_c = F @ mean_c
        e_psi_full = F @ self.full.loss_mean(eps_full)
        cov_c = O @ self.loss_covariance(epsilon) @ F.T
        return -(cov_c + np.outer(e_phi, e_psi_c - e_psi_full))
