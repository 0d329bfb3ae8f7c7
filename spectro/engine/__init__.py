"""The shared covariance engine: streaming co-moments → susceptibilities with error bars."""

from .coords import Axis, EstimatorInfo
from .diagnostics import MeanError, ess_bulk, ess_mean, ess_tail, mean_error, rhat_rank
from .moments import MomentAccumulator, MomentError
from .susceptibility import (
    Flags, PooledMoments, Susceptibility, component_susceptibility_estimate, estimate_susceptibility, pooled_moments,
)
from .seeding import chain_seed, run_seed
from .system import System, SystemBase
from .driver import Checkpointing, RunConfig, SamplingStopped, measure, measure_components

__all__ = [
    "MomentAccumulator", "MomentError", "PooledMoments", "Susceptibility", "estimate_susceptibility",
    "component_susceptibility_estimate", "pooled_moments", "Flags", "MeanError", "mean_error", "ess_mean",
    "ess_bulk", "ess_tail", "rhat_rank", "System", "SystemBase", "RunConfig", "Checkpointing", "SamplingStopped",
    "measure", "measure_components", "Axis", "EstimatorInfo", "chain_seed", "run_seed",
]
