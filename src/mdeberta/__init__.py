"""mdeberta: DeBERTa-V3 and mDeBERTa-V3 end to end, in exact parity with released checkpoints."""

import logging as _logging

from mdeberta.config import PRESETS, DebertaConfig, preset
from mdeberta.model import (
    DebertaForMaskedLM,
    DebertaForMultipleChoice,
    DebertaForQuestionAnswering,
    DebertaForReplacedTokenDetection,
    DebertaForSequenceClassification,
    DebertaForTokenClassification,
    DebertaModel,
)

__version__ = "0.1.0"
_logging.getLogger("mdeberta").addHandler(_logging.NullHandler())


def __getattr__(name: str):
    # The tokenizer pulls in sentencepiece; import it on first use.
    if name in ("DebertaTokenizer", "train_tokenizer"):
        from mdeberta import tokenizer

        return getattr(tokenizer, name)
    raise AttributeError(f"module 'mdeberta' has no attribute {name!r}")


__all__ = [
    "PRESETS", "DebertaConfig", "DebertaForMaskedLM", "DebertaForMultipleChoice", "DebertaForQuestionAnswering",
    "DebertaForReplacedTokenDetection", "DebertaForSequenceClassification", "DebertaForTokenClassification",
    "DebertaModel", "DebertaTokenizer", "preset", "train_tokenizer",
]
