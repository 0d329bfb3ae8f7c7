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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LinearGaussianOracle"]


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
