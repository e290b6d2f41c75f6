"""Data pipelines: pretraining sources and formats (``sources``), streaming pretraining text (``text``); NLI data
lives in ``nli``."""

from mdeberta.data.sources import CorpusFile, DataError, SourceOptions, discover_corpus
from mdeberta.data.text import (
    Masker,
    MaskingConfig,
    PackedTextDataset,
    PretrainingLoader,
    ShuffleConfig,
    language_probabilities,
)

__all__ = [
    "CorpusFile",
    "DataError",
    "Masker",
    "MaskingConfig",
    "PackedTextDataset",
    "PretrainingLoader",
    "ShuffleConfig",
    "SourceOptions",
    "discover_corpus",
    "language_probabilities",
]
