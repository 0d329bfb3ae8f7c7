"""Neural-network side: localized tempered posterior sampling and susceptibilities.

Sign convention (docs/design.md §2): ``χ(φ) = −Cov_β(φ, ΔL) = (1/nβ)·∂_h⟨φ⟩_h``, ΔL = L(q') − L(q);
χ > 0 means up-weighting q' raises ⟨φ⟩.
"""

from .config import SamplerConfig, default_nbeta
from .fields import SampleUpweighting, SubsetFields, TokenPointMasses
from .observables import MeanLoss, PerSampleLoss, PerTokenLoss
from .posterior import (DataMismatchError, DivergenceError, Draw, LocalizedPosterior, LossShapeError, NonFiniteLossError,
                        SamplingResult)
from .probes import ProbeSet, Selection
from .restrictions import Restriction, attention_head
from .susceptibility import baker_susceptibility, component_susceptibility, run_susceptibility
from .system import PosteriorSystem, run_config

__all__ = [
    "SamplerConfig", "default_nbeta",
    "LocalizedPosterior", "Draw", "SamplingResult", "DivergenceError", "LossShapeError", "NonFiniteLossError",
    "DataMismatchError",
    "Restriction", "attention_head",
    "ProbeSet", "Selection",
    "PerSampleLoss", "PerTokenLoss", "MeanLoss",
    "SubsetFields", "SampleUpweighting", "TokenPointMasses",
    "run_susceptibility", "component_susceptibility", "baker_susceptibility", "PosteriorSystem", "run_config",
]
