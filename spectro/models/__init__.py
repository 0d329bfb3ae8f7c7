"""Small transformers to study: the attention-only family (:mod:`.attention_only`), its training
loop (:mod:`.training`) and an induction-head detector (:mod:`.induction`)."""

from .attention_only import (
    AttentionOnlyConfig,
    AttentionOnlyTransformer,
    CheckpointError,
    head_masks,
    head_parameter_slices,
    head_restriction,
    load_checkpoint,
    next_token_loss,
    save_checkpoint,
)
from .induction import InductionReport, induction_report, repeated_random_tokens

__all__ = [
    "AttentionOnlyConfig",
    "AttentionOnlyTransformer",
    "CheckpointError",
    "head_masks",
    "head_parameter_slices",
    "head_restriction",
    "load_checkpoint",
    "next_token_loss",
    "save_checkpoint",
    "InductionReport",
    "induction_report",
    "repeated_random_tokens",
]
