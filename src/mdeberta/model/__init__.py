"""DeBERTa-V2/V3 models: backbone, disentangled attention and task heads."""

from mdeberta.model.attention import (
    ATTENTION_BACKENDS,
    DisentangledSelfAttention,
    make_log_bucket_position,
    reference_attention,
    register_attention_backend,
    relative_position_slots,
)
from mdeberta.model.deberta import DebertaModel, DebertaPreTrainedModel
from mdeberta.model.heads import (
    DebertaForMaskedLM,
    DebertaForMultipleChoice,
    DebertaForQuestionAnswering,
    DebertaForReplacedTokenDetection,
    DebertaForSequenceClassification,
    DebertaForTokenClassification,
)

__all__ = [
    "ATTENTION_BACKENDS", "DebertaForMaskedLM", "DebertaForMultipleChoice", "DebertaForQuestionAnswering",
    "DebertaForReplacedTokenDetection", "DebertaForSequenceClassification", "DebertaForTokenClassification",
    "DebertaModel", "DebertaPreTrainedModel", "DisentangledSelfAttention", "make_log_bucket_position",
    "reference_attention", "register_attention_backend", "relative_position_slots",
]
