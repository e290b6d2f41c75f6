"""The DeBERTa backbone: embeddings, transformer layers and the encoder.

Module and parameter names are those of transformers' DebertaV2 classes, so state dicts map one to one
(``embeddings.word_embeddings.weight``, ``encoder.layer.0.attention.self.query_proj.weight``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mdeberta.config import DebertaConfig
from mdeberta.errors import UsageError
from mdeberta.model.attention import (
    DisentangledSelfAttention,
    PackedSequences,
    PaddingMask,
    compact_relative_position_slots,
    is_tracing,
    relative_position_slots,
    tensor_state,
    traced_relative_position_slots,
)

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "relu": F.relu,
    "tanh": torch.tanh,
    "silu": F.silu,
    "swish": F.silu,
    "sigmoid": torch.sigmoid,
}


def padding_mask_2d(attention_mask: torch.Tensor) -> torch.Tensor:
    """The per-token mask (B, L) from a (B, L) or (B, L, L) attention mask."""
    return attention_mask if attention_mask.dim() == 2 else attention_mask.sum(-2) > 0


def backend_mask(attention_mask: torch.Tensor) -> torch.Tensor | PaddingMask:
    """What the attention backends receive, built once per batch: a (B, L) mask becomes a :class:`PaddingMask`
    (token mask and pair mask together); an explicit (B, L, L) or (B, 1, L, L) pair mask stays a tensor."""
    if attention_mask.dim() == 2:
        return PaddingMask.from_tokens(attention_mask)
    return pairwise_mask(attention_mask)


def pairwise_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool: pair (i, j) attends iff both tokens are real (outer product of the 2-D mask)."""
    if attention_mask.dim() == 2:
        m = attention_mask.bool()
        return (m[:, None, :, None] & m[:, None, None, :])
    if attention_mask.dim() == 3:
        return attention_mask.bool()[:, None]
    return attention_mask.bool()


class DebertaEmbeddings(nn.Module):
    """word (+ absolute position) (+ token type) -> [embed_proj] -> LayerNorm -> zero the padding -> dropout."""

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        # V3 has no absolute positions at the input, but its Enhanced Mask Decoder needs the table.
        self.position_biased_input = config.position_biased_input
        if config.position_biased_input or config.enhanced_mask_decoder:
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.embedding_size)
        else:
            self.position_embeddings = None
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.embedding_size) if config.type_vocab_size > 0 else None
        )
        self.embed_proj = (
            nn.Linear(config.embedding_size, config.hidden_size, bias=False)
            if config.embedding_size != config.hidden_size
            else None
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def absolute_positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        """Absolute position embeddings in hidden size (used by the Enhanced Mask Decoder)."""
        if self.position_embeddings is None:
            raise UsageError("this model has no absolute position embeddings (position_biased_input=False)")
        z = self.position_embeddings(position_ids)
        return self.embed_proj(z) if self.embed_proj is not None else z

    def forward(
        self,
        input_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        mask: torch.Tensor,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeddings = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if self.position_biased_input:
            embeddings = embeddings + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        if self.embed_proj is not None:
            embeddings = self.embed_proj(embeddings)
        embeddings = self.LayerNorm(embeddings)
        embeddings = embeddings * mask.unsqueeze(-1).to(embeddings.dtype)
        return self.dropout(embeddings)


class DebertaSelfOutput(nn.Module):
    """Attention output projection with residual and LayerNorm (post-norm, as BERT)."""

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.num_attention_heads * config.head_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class DebertaAttention(nn.Module):
    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.self = DisentangledSelfAttention(config)
        self.output = DebertaSelfOutput(config)

    def forward(self, hidden_states, mask, slots, rel_embeddings, query_states=None, output_attentions=False):
        context, probs = self.self(hidden_states, mask, slots, rel_embeddings, query_states, output_attentions)
        residual = hidden_states if query_states is None else query_states
        return self.output(context, residual), probs


class DebertaIntermediate(nn.Module):
    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden_states))


class DebertaOutput(nn.Module):
    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class DebertaLayer(nn.Module):
    """attention -> add & norm -> MLP -> add & norm."""

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.attention = DebertaAttention(config)
        self.intermediate = DebertaIntermediate(config)
        self.output = DebertaOutput(config)

    def forward(self, hidden_states, mask, slots, rel_embeddings, query_states=None, output_attentions=False):
        attention_output, probs = self.attention(
            hidden_states, mask, slots, rel_embeddings, query_states, output_attentions
        )
        return self.output(self.intermediate(attention_output), attention_output), probs


class ConvLayer(nn.Module):
    """DeBERTa-V2's n-gram convolution, added to the first layer's output (conv_kernel_size > 0)."""

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        k = config.conv_kernel_size
        self.conv = nn.Conv1d(config.hidden_size, config.hidden_size, k, padding=(k - 1) // 2,
                              groups=config.conv_groups)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.act = ACTIVATIONS[config.conv_act]

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        keep = token_mask.unsqueeze(-1).to(hidden_states.dtype)
        out = self.conv(hidden_states.transpose(1, 2)).transpose(1, 2) * keep
        out = self.act(self.dropout(out))
        return self.LayerNorm(residual + out) * keep


class DebertaEncoder(nn.Module):
    """The layer stack plus what all layers share: the relative-position table and the slot table δ."""

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([DebertaLayer(config) for _ in range(config.num_hidden_layers)])
        self.relative_attention = config.relative_attention
        if config.relative_attention:
            self.rel_embeddings = nn.Embedding(2 * config.relative_span, config.hidden_size)
        self.norm_rel_ebd = "layer_norm" in [n.strip() for n in config.norm_rel_ebd.lower().split("|")]
        if self.norm_rel_ebd:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.conv = ConvLayer(config) if config.conv_kernel_size > 0 else None
        self.gradient_checkpointing = False
        # Inference cache of the compact relative table per length (see relative_inputs).
        self._rel_cache: dict[tuple, tuple[torch.Tensor, list[torch.Tensor]]] = {}

    def get_rel_embedding(self) -> torch.Tensor | None:
        if not self.relative_attention:
            return None
        table = self.rel_embeddings.weight
        return self.LayerNorm(table) if self.norm_rel_ebd else table

    def relative_slots(self, length: int, device: torch.device) -> torch.Tensor | None:
        if not self.relative_attention:
            return None
        if is_tracing() and not torch.compiler.is_compiling():  # an exported graph keeps the length dynamic
            return traced_relative_position_slots(length, self.config, device)
        return relative_position_slots(length, length, self.config, device)

    def relative_inputs(self, length: int, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(slots, rel_embeddings) restricted to the relative rows this length uses (compact_relative_position_slots).

        Same scores as the full table (LayerNorm is row-wise), fewer rows to project. At inference the table is
        cached per length and weight version, so that the layers' position-projection caches can hit.
        """
        if not self.relative_attention:
            return None, None
        if is_tracing() and not torch.compiler.is_compiling():  # the whole table, slots from the traced length
            return traced_relative_position_slots(length, self.config, device), self.get_rel_embedding()
        rows, slots = compact_relative_position_slots(length, length, self.config, device)
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            self._rel_cache.clear()
            return slots, self._compact_rel_embedding(rows)
        params = [self.rel_embeddings.weight] + (list(self.LayerNorm.parameters()) if self.norm_rel_ebd else [])
        cast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        key = (length, str(device), cast, tuple(tensor_state(p) for p in params))
        hit = self._rel_cache.get(key)
        if hit is None:
            if len(self._rel_cache) >= 4:
                self._rel_cache.pop(next(iter(self._rel_cache)))
            hit = self._rel_cache[key] = (self._compact_rel_embedding(rows), params)
        return slots, hit[0]

    def _compact_rel_embedding(self, rows: torch.Tensor) -> torch.Tensor:
        table = self.rel_embeddings(rows)
        return self.LayerNorm(table) if self.norm_rel_ebd else table

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | PackedSequences,
        output_attentions: bool = False,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Returns every layer's input/output [embeddings, layer 1, ..., layer N] and the attention maps.

        ``attention_mask``: (B, L) or (B, L, L), or :class:`PackedSequences` (handed to the backends as is)."""
        if isinstance(attention_mask, PackedSequences):
            token_mask, mask = None, attention_mask
        else:
            token_mask = padding_mask_2d(attention_mask)
            mask = backend_mask(attention_mask)
        slots, rel_embeddings = self.relative_inputs(hidden_states.shape[1], hidden_states.device)
        all_states, all_attentions = [hidden_states], []
        x = hidden_states
        for i, layer in enumerate(self.layer):
            if self.gradient_checkpointing and self.training:
                x, probs = torch.utils.checkpoint.checkpoint(
                    layer, x, mask, slots, rel_embeddings, None, output_attentions, use_reentrant=False
                )
            else:
                x, probs = layer(x, mask, slots, rel_embeddings, None, output_attentions)
            if i == 0 and self.conv is not None:
                x = self.conv(hidden_states, x, token_mask)
            all_states.append(x)
            if output_attentions:
                all_attentions.append(probs)
        return all_states, all_attentions


def init_weights(module: nn.Module, std: float) -> None:
    """BERT initialisation: normal(0, std) for weights, zeros for biases, ones for LayerNorm scales."""
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


