"""Output containers with transformers' field names, so code written for transformers reads the same."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class ModelOutput:
    """Base: attribute access by name, and ``out[0]`` / ``out["logits"]`` for code written against tuples."""

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key: int | str):
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput(MaskedLMOutput):
    pass


@dataclass
class TokenClassifierOutput(MaskedLMOutput):
    pass


@dataclass
class MultipleChoiceModelOutput(MaskedLMOutput):
    pass


@dataclass
class ReplacedTokenDetectionOutput(MaskedLMOutput):
    """logits: (B, L), one "was replaced" logit per token."""


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
