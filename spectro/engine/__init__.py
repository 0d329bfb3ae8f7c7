"""The shared covariance engine: streaming co-moments → susceptibilities with error bars."""

from .diagnostics import batch_means_stderr, effective_sample_size, split_rhat
from .moments import MomentAccumulator, MomentError
from .susceptibility import PooledMoments, Susceptibility, estimate_susceptibility, pooled_moments

__all__ = [
    "MomentAccumulator", "MomentError", "PooledMoments", "Susceptibility", "estimate_susceptibility",
    "pooled_moments", "batch_means_stderr", "effective_sample_size", "split_rhat",
]
