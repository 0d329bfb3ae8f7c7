"""Where RMSProp-SGLD's bias comes from, on the linear-Gaussian oracle (numpy, full batch).

The problem of tests/test_nn_linear_gaussian.py (n = 20, d = 3, nβ = 5, γ = 2, w* = OLS); C
independent chains, ε = 2e-3, α = 0.99, δ = 0.1, 6000 steps (1000 discarded), every 5th state
kept. Prints the variance of each coordinate over the exact posterior variance Σ_jj for:

* ``rmsprop_sgld``: devinterp's method (v adapts every step, no correction);
* ``rmsprop_sgld + Gamma(EMA)``: plus (ε/2)·Γ with Γ_i = ∂G_i/∂w_i for v taken as a function of the
  current w through its own update, ∂v_i/∂w_i = 2(1−α)·g_i·H_ii (H the Hessian of L_n);
* ``rmsprop_sgld_warmup``: v adapted during the 1000 burn-in steps, then fixed (Γ = 0 exactly);
  its remaining excess is the O(ε_i) step bias ε_iλ/4;
* ``sghmc`` (BAOAB, h = √ε, friction f) at large steps: exact on Gaussians.

    python benchmarks/rmsprop_gamma.py [--chains 2000]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

N, D, NB, GA = 20, 3, 5.0, 2.0


def problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.5 * torch.randn(N, generator=g, dtype=torch.float64)
    ws = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    return X.numpy(), y.numpy(), ws.numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=2000)
    C = ap.parse_args().chains
    X, y, ws = problem()
    P = 2 * NB * X.T @ X / N + GA * np.eye(D)
    S = np.linalg.inv(P)
    Hdiag = np.diag(2 * X.T @ X / N)
    rng = np.random.default_rng(1)

    def grad(W):
        return (W @ X.T - y) @ X * 2 / N

    def rmsprop(mode, eps=2e-3, alpha=0.99, delta=0.1, steps=6000, burn=1000):
        W, v, keep = np.tile(ws, (C, 1)), np.zeros((C, D)), []
        for t in range(steps):
            g = grad(W)
            if mode != "warmup" or t < burn:
                v = alpha * v + (1 - alpha) * g**2
            G = 1 / (np.sqrt(v) + delta)
            corr = 0.0
            if mode == "gamma":
                corr = -(G**2) * (2 * (1 - alpha) * g * Hdiag) / (2 * np.sqrt(v))
            W = W - 0.5 * eps * G * (NB * g + GA * (W - ws)) + 0.5 * eps * corr + np.sqrt(eps * G) * rng.standard_normal(W.shape)
            if t >= burn and t % 5 == 0:
                keep.append(W.copy())
        return np.cov(np.array(keep).reshape(-1, D).T)

    def baoab(eps, friction, steps=3000, burn=500):
        h = np.sqrt(eps)
        c = np.exp(-friction * h)
        W, p, keep = np.tile(ws, (C, 1)), np.zeros((C, D)), []
        for t in range(steps):
            p = p - h * (NB * grad(W) + GA * (W - ws))
            W = W + 0.5 * h * p
            p = c * p + np.sqrt(1 - c * c) * rng.standard_normal(W.shape)
            W = W + 0.5 * h * p
            if t >= burn and t % 3 == 0:
                keep.append(W.copy())
        return np.cov(np.array(keep).reshape(-1, D).T)

    print(f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}; chains {C}")
    print(f"eigenvalues of P: {np.round(np.linalg.eigvalsh(P), 3)}")
    for label, mode in (("rmsprop_sgld", "plain"), ("rmsprop_sgld + Gamma(EMA)", "gamma"), ("rmsprop_sgld_warmup", "warmup")):
        print(f"{label:28s} var/Sigma_jj = {np.round(np.diag(rmsprop(mode)) / np.diag(S), 3)}")
    for eps, f in ((0.04, 1.0), (0.1, 1.0), (0.1, 5.0)):
        sgld = 1 / (1 - eps * np.linalg.eigvalsh(P).max() / 4)
        print(f"sghmc eps={eps} friction={f}     var/Sigma_jj = {np.round(np.diag(baoab(eps, f)) / np.diag(S), 3)}"
              f"   (SGLD at this eps: up to {sgld:.2f})")


if __name__ == "__main__":
    main()
