"""The small regression network and data the sampler tests share (imported by test modules)."""

import torch
from torch import nn


class TwoLayer(nn.Module):
    """x [B, d_in] → tanh hidden layer → scalar [B]."""

    def __init__(self, d_in: int = 3, hidden: int = 5):
        super().__init__()
        self.a = nn.Linear(d_in, hidden)
        self.b = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))[:, 0]


def mse(out, batch):
    """Per-sample squared error [B] of ``out`` against ``batch[1]``."""
    return (out - batch[1]) ** 2


def regression_data(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(X [n, 3], y = sin(ΣX) + 0.1·noise), seeded."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g)
    return X, torch.sin(X.sum(1)) + 0.1 * torch.randn(n, generator=g)


def linear_gaussian_problem(n: int = 20, seed: int = 0):
    """A linear model at its least-squares weights w* on (X [n, 3], y): the localized tempered
    posterior of the squared loss is exactly Gaussian (spectro.nn.oracles.LinearGaussianOracle).
    Returns ``(model, X, y, w_star)`` in float64."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    w_star = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]  # the trained (OLS) weights
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w_star[None])
    return model, X, y, w_star


def squared_loss(out, batch):
    """Per-sample squared error [B] of a one-output linear model."""
    return (out[:, 0] - batch[1]) ** 2
