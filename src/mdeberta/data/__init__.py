"""Data pipelines: streaming multilingual pretraining text (``text``); NLI data lives in ``nli``."""

from mdeberta.data.text import (
    CorpusFile,
    DataError,
    Masker,
    MaskingConfig,
    PackedTextDataset,
    PretrainingLoader,
    discover_corpus,
    language_probabilities,
)

__all__ = [
    "CorpusFile",
    "DataError",
    "Masker",
    "MaskingConfig",
    "PackedTextDataset",
    "PretrainingLoader",
    "discover_corpus",
    "language_probabilities",
]
