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

Packed sequences (:class:`PackedSequences`, FlashAttention's ``cu_seqlens``): several sequences concatenated into
one row, each attending only within itself. Since δ depends on i - j only, the packed row's slot table gives every
pair its in-sequence position; the mask is block-diagonal.

``DisentangledSelfAttention`` computes the projections and the slot table; the score/softmax/value part is an
*attention backend*: a function with the signature of :func:`reference_attention`. Faster backends (a fused CPU
path, a Triton kernel) live in ``mdeberta.kernels``, register themselves in ``ATTENTION_BACKENDS`` and are tested
against the reference. The default backend "auto" picks the fastest exact one for the device.

Two facts the fast paths rely on: δ(i, j) depends on i - j only (a Toeplitz table), and a sequence of length L
uses at most 2L - 1 of the 2S slots, so :func:`compact_relative_position_slots` hands the layers only the rows of
R that occur (255 of 512 for L = 128) with δ renumbered into them; every backend, the reference included, computes
the same scores from the compact table.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mdeberta.config import DebertaConfig
from mdeberta.errors import UsageError


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


def is_tracing() -> bool:
    """True while torch.compile, torch.jit.trace or the ONNX exporter records the model: no host syncs, no Python
    caches keyed by shapes (a traced length must stay symbolic)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def traced_relative_position_slots(length: torch.Tensor | int, config: DebertaConfig,
                                   device: torch.device) -> torch.Tensor:
    """δ(i, j) from tensor ops on ``arange(length)``, without the cache: what a traced (exported) graph computes, so
    that its length stays a dynamic dimension. Same values as :func:`relative_position_slots`."""
    ids = torch.arange(length, device=device)
    rel = ids[:, None] - ids[None, :]
    if config.position_buckets > 0 and config.max_relative_distance > 0:
        rel = make_log_bucket_position(rel, config.position_buckets, config.max_relative_distance).to(torch.long)
    span = config.relative_span
    return torch.clamp(rel + span, 0, 2 * span - 1)


# Slot tables per (query_size, key_size, span, buckets, max_position). A plain dict rather than lru_cache: under
# torch.compile a hit is a constant graph input, a miss is built by an opaque (compiler-disabled) function.
_SLOT_CACHE: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


@torch.compiler.disable
def _build_slot_tables(key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Cached across calls, so they must not become inference tensors (those cannot be saved for backward).
    with torch.inference_mode(False):
        slots = _relative_slots(*key)
        rows, remapped = torch.unique(slots, sorted=True, return_inverse=True)
    if len(_SLOT_CACHE) >= 64:
        _SLOT_CACHE.pop(next(iter(_SLOT_CACHE)))
    _SLOT_CACHE[key] = (slots, rows, remapped)
    return _SLOT_CACHE[key]


def _slot_tables(query_size: int, key_size: int, config: DebertaConfig) -> tuple[torch.Tensor, ...]:
    """(full slots, used rows, compact slots) for a length, all on the CPU, cached."""
    key = (query_size, key_size, config.relative_span, config.position_buckets, config.max_relative_distance)
    tables = _SLOT_CACHE.get(key)
    return tables if tables is not None else _build_slot_tables(key)


def _relative_slots(query_size: int, key_size: int, span: int, bucket_size: int, max_position: int) -> torch.Tensor:
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
    slots = _slot_tables(query_size, key_size, config)[0]
    return slots.to(device) if device is not None else slots


def compact_relative_position_slots(
    query_size: int, key_size: int, config: DebertaConfig, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, slots): the rows of the relative table R this length uses, and δ renumbered to index them.

    ``R[rows]`` with ``slots`` gives exactly the scores of ``R`` with :func:`relative_position_slots`, but the
    position projections then cost (number of rows) instead of 2S rows.
    """
    _, rows, slots = _slot_tables(query_size, key_size, config)
    if device is not None:
        rows, slots = rows.to(device), slots.to(device)
    return rows, slots


# --------------------------------------------------------------------------- packed sequences
@dataclass(frozen=True)
class PackedSequences:
    """N sequences concatenated into one row of T tokens: sequence s is tokens ``cu_seqlens[s] : cu_seqlens[s+1]``.

    It is what a backend receives as ``mask`` for a packed batch (B = 1): no padding is computed. The Triton kernel
    runs it as FlashAttention's varlen API does (one program row per sequence and head); the other backends use
    the equivalent block-diagonal :meth:`pair_mask`.
    """

    cu_seqlens: torch.Tensor  # (N + 1,) int32: 0, then the running total of the lengths
    max_seqlen: int

    @classmethod
    def from_lengths(cls, lengths: Sequence[int] | torch.Tensor, device: torch.device | str | None = None
                     ) -> PackedSequences:
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        if lengths.dim() != 1 or lengths.numel() == 0 or bool((lengths <= 0).any()):
            raise UsageError(f"packed sequence lengths must be a non-empty list of positive ints, got {lengths}")
        cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(lengths, 0)
        return cls(cu.to(device) if device is not None else cu, int(lengths.max()))

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: torch.Tensor, total: int) -> PackedSequences:
        """Checks ``cu_seqlens`` (0 first, increasing, ``total`` last) with errors that say what is wrong."""
        cu = torch.as_tensor(cu_seqlens)
        if cu.dim() != 1 or cu.numel() < 2 or cu.dtype.is_floating_point:
            raise UsageError(f"cu_seqlens must be a 1-D integer tensor of N + 1 offsets, got shape {tuple(cu.shape)} "
                             f"{cu.dtype}")
        lengths = cu[1:] - cu[:-1]
        if int(cu[0]) != 0 or int(cu[-1]) != total or bool((lengths <= 0).any()):
            raise UsageError(f"cu_seqlens must start at 0, increase strictly and end at the packed length {total}; "
                             f"got {cu.tolist()}")
        return cls(cu.to(torch.int32), int(lengths.max()))

    @property
    def num_sequences(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def starts(self) -> torch.Tensor:
        """(N,) index of each sequence's first token (its [CLS]) in the packed row."""
        return self.cu_seqlens[:-1].long()

    def sequence_ids(self) -> torch.Tensor:
        """(T,) which sequence each token belongs to."""
        lengths = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()
        return torch.repeat_interleave(torch.arange(self.num_sequences, device=lengths.device), lengths)

    def position_ids(self) -> torch.Tensor:
        """(1, T) positions restarting at 0 in every sequence."""
        ids = self.sequence_ids()
        return (torch.arange(ids.numel(), device=ids.device) - self.starts[ids]).unsqueeze(0)

    def pair_mask(self) -> torch.Tensor:
        """(1, 1, T, T) bool, block-diagonal: token i attends to j iff both are in the same sequence. Built once
        per batch (every layer's backend asks for it)."""
        return self._pair_mask

    @functools.cached_property
    def _pair_mask(self) -> torch.Tensor:
        ids = self.sequence_ids()
        return (ids[:, None] == ids[None, :])[None, None]


@dataclass(frozen=True)
class PaddingMask:
    """A padded batch's mask as the backends receive it, built once per batch by the encoder: ``tokens`` (B, L) bool
    marks the real tokens, ``pairs`` (B, 1, L, L) is their outer product (pair (i, j) attends iff both are real).
    A backend that runs on the token mask (the Triton kernel) takes ``tokens`` as it is, instead of re-deriving it
    from the pair mask in every layer with a device-to-host sync."""

    tokens: torch.Tensor
    pairs: torch.Tensor

    @classmethod
    def from_tokens(cls, tokens: torch.Tensor) -> PaddingMask:
        t = tokens.bool()
        return cls(t, t[:, None, :, None] & t[:, None, None, :])


def dense_mask(mask: torch.Tensor | PackedSequences | PaddingMask) -> torch.Tensor:
    """The (B, 1 or H, Lq, Lk) bool mask of a backend's ``mask`` argument (block-diagonal for packed input)."""
    if isinstance(mask, PaddingMask):
        return mask.pairs
    return mask.pair_mask() if isinstance(mask, PackedSequences) else mask


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
    slots (Lq, Lk) long (δ above) or None, mask (B, 1 or H, Lq, Lk) bool (True = attend) or
    :class:`PackedSequences` (B = 1), scale = 1/sqrt(d·(1+n_pos)).
    Returns the context (B, H, Lq, d) and, if asked, the attention probabilities (B, H, Lq, Lk).
    """
    mask = dense_mask(mask)
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


# The registry: "reference" here; ``mdeberta.kernels`` (imported by the model) registers the fast backends and the
# default "auto". This module imports nothing of the package but the config, so both the model and the kernels
# build on it without a cycle.
ATTENTION_BACKENDS: dict[str, AttentionBackend] = {"reference": reference_attention}


def register_attention_backend(name: str, fn: AttentionBackend) -> None:
    ATTENTION_BACKENDS[name] = fn


def get_attention_backend(name: str) -> AttentionBackend:
    if name not in ATTENTION_BACKENDS:
        raise UsageError(f"unknown attention backend {name!r}; available: {sorted(ATTENTION_BACKENDS)}")
    return ATTENTION_BACKENDS[name]


# --------------------------------------------------------------------------- the module
def tensor_state(t: torch.Tensor) -> tuple:
    """What identifies a tensor's current contents for an inference cache: storage, version counter, dtype, shape.

    Inference tensors have no version counter; they are our own intermediates, never written in place.
    """
    return (t.data_ptr(), -1 if t.is_inference() else t._version, t.dtype, tuple(t.shape))


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
        self.backend = "auto"
        # Inference cache of (Kr, Qr): they depend on weights only, not on the batch. See position_projections.
        self._pos_cache: dict[tuple, tuple[tuple[torch.Tensor | None, torch.Tensor | None], list[torch.Tensor]]] = {}

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., L, H*d) -> (..., H, L, d)"""
        x = x.view(*x.shape[:-1], self.num_heads, self.head_size)
        return x.transpose(-2, -3)

    def _projection_inputs(self, rel_embeddings: torch.Tensor) -> list[torch.Tensor]:
        tensors = [rel_embeddings]
        for name in ("key_proj", "query_proj", "pos_key_proj", "pos_query_proj"):
            proj = getattr(self, name, None)
            if proj is not None:
                tensors += [t for t in (proj.weight, proj.bias) if t is not None]
        return tensors

    def position_projections(
        self, rel_embeddings: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Kr and Qr, each (H, rows of ``rel_embeddings``, d), or None for a disabled term.

        At inference (eval mode, no autograd) they depend on the weights only, so they are cached. The key holds
        every input's storage address, version counter (bumped by optimizer steps, ``load_state_dict`` and any
        in-place write), dtype and the autocast state, so changed weights miss the cache; the entry keeps its
        inputs alive so an address cannot be reused by another tensor. Training mode clears the cache.
        """
        if self.training or torch.is_grad_enabled() or is_tracing():
            if self._pos_cache:
                self._pos_cache.clear()
            return self._position_projections(rel_embeddings)
        inputs = self._projection_inputs(rel_embeddings)
        device = rel_embeddings.device.type
        cast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        key = (tuple(tensor_state(t) for t in inputs), device, cast)
        hit = self._pos_cache.get(key)
        if hit is not None:
            return hit[0]
        pos = self._position_projections(rel_embeddings)
        if len(self._pos_cache) >= 4:  # a few lengths (dynamic padding); drop the oldest
            self._pos_cache.pop(next(iter(self._pos_cache)))
        self._pos_cache[key] = (pos, inputs)
        return pos

    def _position_projections(
        self, rel_embeddings: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
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
