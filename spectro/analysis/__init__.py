"""Analyses of results folders: each module answers one question (see its docstring).

* :mod:`.token_table` — read a job's per-token χ into a table (and reports into plain JSON);
* :mod:`.principal_components` — PCA with uncertainties, noise floors, class separation;
* :mod:`.baker` — Baker's χ split into its covariance and offset parts;
* :mod:`.compare` — across data subsets and across runs;
* :mod:`.induction` — do susceptibilities single out induction heads?
"""

from .baker import baker_decomposition, covariance_part_from_draws
from .compare import compare_runs, compare_subsets, relative_profile_ill_conditioned, spearman
from .induction import induction_alignment, induction_token_response
from .principal_components import (
    PCAResult,
    class_separation,
    layer_pca_report,
    noise_floor,
    pc_fraction_spread,
    pca,
    replicate_noise_floor,
    standardise,
)
from .token_table import TokenTable, load_token_table, probe_input_ids, resolve_checkpoint, to_jsonable

__all__ = [
    "TokenTable", "load_token_table", "probe_input_ids", "resolve_checkpoint", "to_jsonable",
    "standardise", "PCAResult", "pca", "pc_fraction_spread", "noise_floor", "replicate_noise_floor",
    "layer_pca_report", "class_separation",
    "baker_decomposition", "covariance_part_from_draws",
    "compare_subsets", "compare_runs", "relative_profile_ill_conditioned", "spearman",
    "induction_token_response", "induction_alignment",
]
