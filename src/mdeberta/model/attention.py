"""Disentangled self-attention: all of DeBERTa's attention math lives in this file.

Each token i has a content vector h_i; relative distances are embedded in a table R of 2S rows
(S = position_buckets in V3, else max_relative_positions). With

    q_i = W_q h_i,  k_j = W_k h_j,  v_j = W_v h_j          (content projections)
    Kr  = W_k' R,   Qr  = W_q' R                            (position projections; W' = W when share_att_key)
    δ(i, j) = clamp(bucket(i - j) + S, 0, 2S - 1)           (the relative-position slot of the pair)

the attention score of query i on key j is

    a_ij = ( q_i·k_j  +  q_i·Kr[δ(i,j)]  +  k_j·Qr[δ(i,j)] ) / sqrt(d · (1 + n_pos))
             c2c         c2p                 p2c

where n_pos is the number of position terms enabled by ``pos_att_type``. (transformers writes the p2c index as
S - bucket(j - i); the bucket function is odd, so it is the same slot δ(i, j).) Padding is an outer-product mask:
pair (i, j) takes part only if both tokens are real. The output is softmax(a) @ v.

``DisentangledSelfAttention`` computes the projections and the slot table; the score/softmax/value part is an
*attention backend*: a function with the signature of :func:`reference_attention`. Faster backends (a fused CPU
path, a Triton kernel) register themselves in ``ATTENTION_BACKENDS`` and are tested against the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from mdeberta.config import DebertaConfig


# --------------------------------------------------------------------------- relative positions
def make_log_bucket_position(relative_pos: torch.Tensor, bucket_size: int, max_position: int) -> torch.Tensor:
    """Map signed distances to log-spaced buckets, exactly as DeBERTa (and transformers) does.

    Distances with |d| <= bucket_size/2 keep their own slot; farther ones share slots whose width grows
    logarithmically up to ``max_position``. The float32 arithmetic mirrors the original, so bucket edges match.
    """
    sign = torch.sign(relative_pos)
    mid = bucket_size // 2
    abs_pos = torch.where(
        (relative_pos < mid) & (relative_pos > -mid),
        torch.tensor(mid - 1).type_as(relative_pos),
        torch.abs(relative_pos),
    )
    log_pos = torch.ceil(
        torch.log(abs_pos / mid) / torch.log(torch.tensor((max_position - 1) / mid)) * (mid - 1)
    ) + mid
    return torch.where(abs_pos <= mid, relative_pos.type_as(log_pos), log_pos * sign)


@lru_cache(maxsize=64)
def _relative_slots_cpu(query_size: int, key_size: int, span: int, bucket_size: int, max_position: int) -> torch.Tensor:
    q_ids = torch.arange(query_size, dtype=torch.long)
    k_ids = torch.arange(key_size, dtype=torch.long)
    rel = q_ids[:, None] - k_ids[None, :]
    if bucket_size > 0 and max_position > 0:
        rel = make_log_bucket_position(rel, bucket_size, max_position).to(torch.long)
    return torch.clamp(rel + span, 0, 2 * span - 1)


def relative_position_slots(
    query_size: int, key_size: int, config: DebertaConfig, device: torch.device | None = None
) -> torch.Tensor:
    """δ(i, j): the row of the relative-embedding table used by the pair (i, j); shape (query_size, key_size).

    Built once per length on the CPU (cached) and moved to ``device``; any length works, also beyond 512.
    """
    slots = _relative_slots_cpu(query_size, key_size, config.relative_span, config.position_buckets,
                                config.max_relative_distance)
    return slots.to(device) if device is not None else slots


# --------------------------------------------------------------------------- attention backends
AttentionBackend = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def reference_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    pos_key: torch.Tensor | None,
    pos_query: torch.Tensor | None,
    slots: torch.Tensor | None,
    mask: torch.Tensor,
    scale: float,
    dropout_p: float = 0.0,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ground truth every fast backend is tested against.

    Shapes: query (B, H, Lq, d), key/value (B, H, Lk, d), pos_key/pos_query (H, 2S, d) or None,
    slots (Lq, Lk) long (δ above) or None, mask (B, 1 or H, Lq, Lk) bool (True = attend), scale = 1/sqrt(d·(1+n_pos)).
    Returns the context (B, H, Lq, d) and, if asked, the attention probabilities (B, H, Lq, Lk).
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale  # c2c
    if pos_key is not None:
        # c2p: q_i · Kr[δ(i,j)] -- score every query against all 2S slots, then pick slot δ(i,j) per key j.
        c2p = torch.matmul(query, pos_key.transpose(-1, -2))  # (B, H, Lq, 2S)
        index = slots.expand(*c2p.shape[:2], *slots.shape)
        scores = scores + torch.gather(c2p, -1, index) * scale
    if pos_query is not None:
        # p2c: k_j · Qr[δ(i,j)] -- score every key against all slots, pick δ(i,j) per query i, transpose.
        p2c = torch.matmul(key, pos_query.transpose(-1, -2))  # (B, H, Lk, 2S)
        index = slots.transpose(0, 1).expand(*p2c.shape[:2], slots.shape[1], slots.shape[0])
        scores = scores + torch.gather(p2c, -1, index).transpose(-1, -2) * scale
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    context = torch.matmul(probs, value)
    return context, (probs if output_attentions else None)


ATTENTION_BACKENDS: dict[str, AttentionBackend] = {"reference": reference_attention}


def register_attention_backend(name: str, fn: AttentionBackend) -> None:
    ATTENTION_BACKENDS[name] = fn


def get_attention_backend(name: str) -> AttentionBackend:
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {sorted(ATTENTION_BACKENDS)}")
    return ATTENTION_BACKENDS[name]


# --------------------------------------------------------------------------- the module
class DisentangledSelfAttention(nn.Module):
    """Projections for content and relative positions; the score math is delegated to a backend."""

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        inner = self.num_heads * self.head_size
        self.query_proj = nn.Linear(config.hidden_size, inner)
        self.key_proj = nn.Linear(config.hidden_size, inner)
        self.value_proj = nn.Linear(config.hidden_size, inner)
        self.relative_attention = config.relative_attention
        self.use_c2p = config.relative_attention and "c2p" in config.pos_att_type
        self.use_p2c = config.relative_attention and "p2c" in config.pos_att_type
        self.share_att_key = config.share_att_key
        if self.relative_attention and not self.share_att_key:
            if self.use_c2p:
                self.pos_key_proj = nn.Linear(config.hidden_size, inner)
            if self.use_p2c:
                self.pos_query_proj = nn.Linear(config.hidden_size, inner)
        self.pos_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_dropout = config.attention_probs_dropout_prob
        # Scale of every term: 1/sqrt(d * (1 + number of position terms)); transformers counts the configured
        # terms even when relative attention is off, and so do we.
        n_pos = ("c2p" in config.pos_att_type) + ("p2c" in config.pos_att_type)
        self.scale = 1.0 / math.sqrt(self.head_size * (1 + n_pos))
        self.backend = "reference"

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., L, H*d) -> (..., H, L, d)"""
        x = x.view(*x.shape[:-1], self.num_heads, self.head_size)
        return x.transpose(-2, -3)

    def position_projections(
        self, rel_embeddings: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Kr and Qr, each (H, 2S, d), or None for a disabled term."""
        rel_embeddings = self.pos_dropout(rel_embeddings)
        pos_key = pos_query = None
        if self.use_c2p:
            proj = self.key_proj if self.share_att_key else self.pos_key_proj
            pos_key = self._heads(proj(rel_embeddings))
        if self.use_p2c:
            proj = self.query_proj if self.share_att_key else self.pos_query_proj
            pos_query = self._heads(proj(rel_embeddings))
        return pos_key, pos_query

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor,
        slots: torch.Tensor | None = None,
        rel_embeddings: torch.Tensor | None = None,
        query_states: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, L, hidden) give keys and values; query_states (default: hidden_states) the queries."""
        if query_states is None:
            query_states = hidden_states
        query = self._heads(self.query_proj(query_states))
        key = self._heads(self.key_proj(hidden_states))
        value = self._heads(self.value_proj(hidden_states))
        pos_key = pos_query = None
        if self.relative_attention and (self.use_c2p or self.use_p2c):
            pos_key, pos_query = self.position_projections(rel_embeddings)
        backend = get_attention_backend(self.backend)
        context, probs = backend(
            query, key, value, pos_key, pos_query, slots, mask, self.scale,
            dropout_p=self.attention_dropout if self.training else 0.0,
            output_attentions=output_attentions,
        )
        context = context.transpose(1, 2).reshape(*context.shape[:1], context.shape[2], -1)
        return context, probs
