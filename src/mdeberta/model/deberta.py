"""``DebertaModel`` (the backbone) and the base class every model shares: init, loading and saving."""

from __future__ import annotations

import os
from typing import Any, TypeVar

import torch
from torch import nn

import mdeberta.kernels  # noqa: F401  (registers the fast attention backends and the default "auto")
from mdeberta.config import DebertaConfig
from mdeberta.errors import UsageError
from mdeberta.model.attention import PackedSequences, get_attention_backend, is_tracing
from mdeberta.model.layers import DebertaEmbeddings, DebertaEncoder, init_weights, padding_mask_2d
from mdeberta.model.outputs import BaseModelOutput

M = TypeVar("M", bound="DebertaPreTrainedModel")


class DebertaPreTrainedModel(nn.Module):
    """What all models share: BERT init, ``from_pretrained`` / ``save_pretrained`` in the HF layout."""

    base_model_prefix = "deberta"
    # The transformers class that reads the same state dict (written to config.json "architectures").
    hf_architecture: str | None = None

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        if not isinstance(config, DebertaConfig):
            raise TypeError(f"config must be a DebertaConfig, got {type(config).__name__}")
        self.config = config

    def post_init(self) -> None:
        self.apply(lambda m: init_weights(m, self.config.initializer_range))

    # ------------------------------------------------------------------ conveniences
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            for m in self.modules():
                if isinstance(m, nn.Embedding) and m.weight.shape[0] == self.config.vocab_size:
                    params.pop(id(m.weight), None)
        return sum(p.numel() for p in params.values())

    def get_input_embeddings(self) -> nn.Embedding:
        base = getattr(self, self.base_model_prefix, self)
        return base.embeddings.word_embeddings

    def set_attention_backend(self, name: str) -> None:
        """Route every layer's score/softmax/value computation through a registered backend."""
        get_attention_backend(name)  # registers the fast backends on first use; clear error for unknown names
        for m in self.modules():
            if hasattr(m, "backend") and hasattr(m, "position_projections"):
                m.backend = name

    def gradient_checkpointing_enable(self) -> None:
        for m in self.modules():
            if isinstance(m, DebertaEncoder):
                m.gradient_checkpointing = True

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_pretrained(
        cls: type[M],
        name_or_path: str | os.PathLike,
        config: DebertaConfig | None = None,
        torch_dtype: torch.dtype | None = None,
        **config_overrides: Any,
    ) -> M:
        """Load from a folder in the HF layout or a hub id (``microsoft/mdeberta-v3-base``).

        Weights may be model.safetensors, pytorch_model.bin or sharded; ``deberta.``-prefixed or not. Keys the
        model does not use (e.g. the RTD head in released backbones) and parameters the checkpoint lacks (a fresh
        classification head) are reported in one log line. ``config_overrides`` change config fields before
        the model is built (e.g. ``num_labels=3``).
        """
        from mdeberta.checkpoint import load_pretrained

        return load_pretrained(cls, name_or_path, config=config, torch_dtype=torch_dtype, **config_overrides)

    def save_pretrained(self, folder: str | os.PathLike, safe_serialization: bool = True) -> None:
        """Write config.json and model.safetensors (or pytorch_model.bin) that transformers loads as-is."""
        from mdeberta.checkpoint import save_pretrained

        save_pretrained(self, folder, safe_serialization=safe_serialization)


# Keywords transformers' callers pass that change nothing here (outputs are always dataclasses).
IGNORED_KEYWORDS = ("return_dict",)


def check_keywords(kwargs: dict[str, Any], model: str, allowed: tuple[str, ...] = ()) -> None:
    """A keyword the forward pass does not know is an error naming it, as in a plain Python call."""
    unknown = [k for k in kwargs if k not in IGNORED_KEYWORDS and k not in allowed]
    if unknown:
        raise TypeError(f"{model}.forward() got an unexpected keyword argument {unknown[0]!r}")


class DebertaModel(DebertaPreTrainedModel):
    """The backbone: token ids -> contextual vectors (``last_hidden_state``)."""

    base_model_prefix = ""
    hf_architecture = "DebertaV2Model"

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__(config)
        self.embeddings = DebertaEmbeddings(config)
        self.encoder = DebertaEncoder(config)
        self.post_init()

    def check_inputs(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
    ) -> tuple[int, int]:
        """Clear errors for inputs that would otherwise fail deep inside an embedding lookup."""
        if (input_ids is None) == (inputs_embeds is None):
            raise UsageError("pass exactly one of input_ids and inputs_embeds")
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
        if len(shape) != 2:
            raise UsageError(f"input_ids must be (batch, length), got shape {tuple(shape)}")
        # Value checks read tensors on the host: skipped while torch.compile / an exporter traces.
        if is_tracing():
            return shape[0], shape[1]
        if input_ids is not None and input_ids.numel():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                bad = low if low < 0 else high
                raise UsageError(f"token id {bad} is outside the vocabulary (vocab_size={self.config.vocab_size})")
        if self.config.position_biased_input and shape[1] > self.config.max_position_embeddings:
            raise UsageError(
                f"sequence length {shape[1]} exceeds max_position_embeddings={self.config.max_position_embeddings}"
                " of this model (it adds absolute position embeddings)"
            )
        # With type_vocab_size == 0 token types are ignored (as in transformers), so any value is fine.
        if self.config.type_vocab_size > 0 and token_type_ids is not None and token_type_ids.numel():
            low, high = int(token_type_ids.min()), int(token_type_ids.max())
            if low < 0 or high >= self.config.type_vocab_size:
                raise UsageError(
                    f"token_type_ids contain {high if high > 0 else low}, outside type_vocab_size="
                    f"{self.config.type_vocab_size}"
                )
        return shape[0], shape[1]

    def packed_sequences(self, cu_seqlens: torch.Tensor | None, batch: int, length: int,
                         attention_mask: torch.Tensor | None, device: torch.device) -> PackedSequences | None:
        """Checks a packed batch (clear errors for the combinations that cannot be packed)."""
        if cu_seqlens is None:
            return None
        if batch != 1:
            raise UsageError(f"packed input (cu_seqlens) must be one row (1, total_tokens), got batch {batch}")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise UsageError("packed input has no padding: pass cu_seqlens without an attention_mask (or all ones)")
        if self.config.conv_kernel_size > 0:
            raise UsageError("this config has a convolution layer (conv_kernel_size > 0), which would mix "
                             "neighbouring packed sequences; use padded batches")
        return PackedSequences.from_cu_seqlens(cu_seqlens.to(device), length)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        cu_seqlens: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutput:
        """``cu_seqlens`` (N + 1,): the input (1, T) holds N sequences packed back to back, sequence s being tokens
        ``cu_seqlens[s] : cu_seqlens[s + 1]`` (FlashAttention's varlen convention). Each attends only within itself,
        with positions restarting at 0, so its outputs equal those it gets alone; no padding is computed."""
        check_keywords(kwargs, type(self).__name__)
        batch, length = self.check_inputs(input_ids, inputs_embeds, token_type_ids)
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        packed = self.packed_sequences(cu_seqlens, batch, length, attention_mask, device)
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=device)
        if token_type_ids is None:
            token_type_ids = torch.zeros(batch, length, dtype=torch.long, device=device)
        if position_ids is None:
            position_ids = (packed.position_ids() if packed is not None
                            else torch.arange(length, device=device).unsqueeze(0))
        embedding_output = self.embeddings(
            input_ids, token_type_ids, position_ids, padding_mask_2d(attention_mask), inputs_embeds
        )
        states, attentions = self.encoder(embedding_output, packed if packed is not None else attention_mask,
                                          output_attentions)
        return BaseModelOutput(
            last_hidden_state=states[-1],
            hidden_states=tuple(states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )
