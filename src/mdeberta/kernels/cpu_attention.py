"""Fused disentangled attention for CPU (and any device): one additive bias fed to PyTorch's fused SDPA.

The reference (``mdeberta.model.attention.reference_attention``) scores every query against every relative slot
and then gathers, materialising c2c, two gathered L x L tensors, their sum and the probabilities. Here:

* δ(i, j) depends only on i - j. Ordering the position rows by distance (2L - 1 rows, built by one small
  ``index_select`` of the (H, rows, d) tables) makes ``q @ Kr_byDistance^T`` a (B, H, L, 2L-1) tensor whose
  c2p[i, j] entries sit at offset ``i * (2L - 2) + j + L - 1``: a strided *view*, no gather and no copy
  (the "relative shift" of Transformer-XL, generalised to any bucket function).
* c2p and p2c (its transpose view) are summed once into the bias, padding is written into it with the dtype's
  most negative value (as the reference does, so fully padded rows stay uniform, not NaN), and
  ``torch.nn.functional.scaled_dot_product_attention`` does scale, c2c, softmax and the value product in its
  fused kernel (fp32 accumulation of the softmax also for bf16 inputs).
* The scale is folded into the tiny distance tables, not into L x L tensors.

For lengths with many more distances than slots (2L - 1 >> used slots, e.g. L = 2048 with 512 slots) the
distance tables cost more matmul than a slot gather would; ``gather_threshold`` switches to scoring the slots and
one flat ``gather`` instead.

Not exact (falls back to the reference): ``output_attentions`` (the probabilities are not materialised) and
Lq != Lk. With dropout the random mask differs from the reference's (same distribution).

:func:`blocked_attention` (the CPU default, inference and training) computes the same scores tile by tile instead: a few
(batch, head) pairs and a block of query rows at a time, sized so that the tile's scores, its c2p distance
scores and its p2c slice stay in cache (``TILE_BYTES``). The L x L tensors of the whole batch never exist and
each tile is read and written while it is hot (its speed against the SDPA bias path: ``benchmarks/bench_backends.py``,
numbers in BENCHMARKS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mdeberta.model.attention import dense_mask, reference_attention, tensor_state

# Use slot scores + gather instead of distance tables when 2L - 1 > gather_threshold * (number of slot rows).
GATHER_THRESHOLD = 2.0

_TOEPLITZ_CHECKED: dict[tuple, torch.Tensor | None] = {}


def distance_slots(slots: torch.Tensor) -> torch.Tensor | None:
    """D (2L-1,) with slots[i, j] == D[i - j + L - 1], or None if ``slots`` is not a function of i - j.

    The check is O(L^2) integer compares; its result is cached per tensor (the model's slot tables are cached
    per length, so this runs once per length).
    """
    length = slots.shape[0]
    if slots.dim() != 2 or slots.shape[1] != length:
        return None
    if torch.compiler.is_compiling():  # the model's tables are Toeplitz by construction; no host sync in graphs
        return torch.cat([slots[0, 1:].flip(0), slots[:, 0]])
    key = (tensor_state(slots), str(slots.device))
    if key in _TOEPLITZ_CHECKED:
        return _TOEPLITZ_CHECKED[key]
    with torch.inference_mode(False):  # cached: must stay usable by autograd later
        dist = torch.cat([slots[0, 1:].flip(0), slots[:, 0]])
    idx = torch.arange(length, device=slots.device)
    ok = bool((dist[idx[:, None] - idx[None, :] + length - 1] == slots).all())
    if len(_TOEPLITZ_CHECKED) > 64:
        _TOEPLITZ_CHECKED.clear()
    _TOEPLITZ_CHECKED[key] = dist if ok else None
    return _TOEPLITZ_CHECKED[key]


def _relative_view(scores: torch.Tensor) -> torch.Tensor:
    """(B, H, L, 2L-1) distance scores -> the (B, H, L, L) view V[i, j] = scores[i, j - i + L - 1]."""
    return _block_relative_view(scores, scores.shape[-2])


def _block_relative_view(scores: torch.Tensor, length: int) -> torch.Tensor:
    """(..., n, n + L - 1) distance scores of n query rows -> the (..., n, L) view V[a, j] = scores[a, j - a + n - 1].

    Each row of the view starts one element further left in its row of ``scores``: the shift is a row stride of
    width - 1, not a copy. With n = L this is :func:`_relative_view`.
    """
    b, h, rows, width = scores.shape
    shifted = scores.contiguous().view(-1)[rows - 1:]  # as_strided below keeps this view's offset
    return shifted.as_strided((b, h, rows, length), (h * rows * width, rows * width, width - 1, 1))


def disentangled_bias(
    query: torch.Tensor,
    key: torch.Tensor,
    pos_key: torch.Tensor | None,
    pos_query: torch.Tensor | None,
    slots: torch.Tensor | None,
    scale: float,
    dist: torch.Tensor | None,
) -> torch.Tensor | None:
    """(c2p + p2c) * scale as one (B, H, L, L) tensor in query's dtype, or None without position terms."""
    bias = None
    length = query.shape[-2]
    table = pos_key if pos_key is not None else pos_query
    rows = table.shape[-2] if table is not None else 1
    use_gather = dist is None or (2 * length - 1) > GATHER_THRESHOLD * rows
    if pos_key is not None:
        if use_gather:
            c2p = torch.matmul(query, (pos_key * scale).to(query.dtype).transpose(-1, -2))  # (B, H, L, rows)
            bias = torch.gather(c2p, -1, slots.expand(*c2p.shape[:2], *slots.shape))
        else:
            # Row t of the table is the slot of distance i - j = L - 1 - t (see _relative_view).
            table = pos_key.index_select(-2, dist.flip(0)) * scale
            bias = _relative_view(torch.matmul(query, table.to(query.dtype).transpose(-1, -2)))
    if pos_query is not None:
        if use_gather:
            p2c = torch.matmul(key, (pos_query * scale).to(key.dtype).transpose(-1, -2))  # (B, H, L, rows)
            term = torch.gather(p2c, -1, slots.t().expand(*p2c.shape[:2], *slots.t().shape)).transpose(-1, -2)
        else:
            # P[j, i] needs the slot of distance i - j = t - (L - 1): the table in distance order.
            table = pos_query.index_select(-2, dist) * scale
            term = _relative_view(torch.matmul(key, table.to(key.dtype).transpose(-1, -2))).transpose(-1, -2)
        bias = term.contiguous() if bias is None else bias + term
    elif bias is not None:
        bias = bias.contiguous()
    return bias


def sdpa_attention(
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
    """Drop-in for :func:`reference_attention` (same arguments and result) through fused SDPA."""
    mask = dense_mask(mask)
    if output_attentions or query.shape[-2] != key.shape[-2]:
        return reference_attention(query, key, value, pos_key, pos_query, slots, mask, scale, dropout_p,
                                   output_attentions)
    dist = None
    if pos_key is not None or pos_query is not None:
        dist = distance_slots(slots)
    bias = disentangled_bias(query, key, pos_key, pos_query, slots, scale, dist)
    neg = torch.finfo(query.dtype).min
    if bias is None:
        bias = torch.zeros(mask.shape, dtype=query.dtype, device=query.device)
    # Padding: the most negative value (not -inf) so that fully padded rows give a uniform softmax like the
    # reference instead of NaN; for real rows exp(neg - max) is exactly 0.
    bias = bias.masked_fill(~mask, neg)
    # Fully padded query rows: the reference's scores there are all `neg` (a constant, so no gradient reaches
    # q or k through them). Zeroing those queries gives the same uniform softmax *and* the same zero gradients.
    live_rows = mask.any(-1, keepdim=True)
    if torch.compiler.is_compiling() or not bool(live_rows.all()):
        query = query * live_rows.to(query.dtype)
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout_p, scale=scale)
    return context, None


# Working-set target of one tile of blocked_attention: scores + c2p distance scores + p2c slice (~3 x rows x L).
# 4 MiB fits the per-core L2 + a share of L3 of current x86 server cores (larger tiles spill out of cache; the
# sizes tried are in BENCHMARKS.md).
TILE_BYTES = 4 << 20


def _tiles(batch: int, heads: int, length: int, elem: int) -> tuple[list[tuple[int, int, int, int]], int]:
    """(batch range, head range) tiles and the query-row block for blocked_attention."""
    per_head = 3 * length * length * elem
    rows = min(length, max(64, TILE_BYTES // (3 * length * elem)))
    group = max(1, TILE_BYTES // per_head) if rows == length else 1
    if group >= heads:  # whole heads, several batch rows per tile
        step = group // heads
        return [(b, min(batch, b + step), 0, heads) for b in range(0, batch, step)], rows
    return [(b, b + 1, h, min(heads, h + group)) for b in range(batch) for h in range(0, heads, group)], rows


def blocked_attention(
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
    """Drop-in for :func:`reference_attention`, computed in cache-sized tiles (see the module docstring).

    Per tile of query rows i0:i1 (n rows) of some (batch, head) pairs (fp32: the scale folded into q and the tables;
    bf16/fp16: the terms summed, scaled, masked and soft-maxed in fp32):
      S  = q_blk k^T                                   c2c
      S += view(q_blk Kr[distances i1-1 .. i0-L+1]^T)  c2p: n + L - 1 distance rows, read as a strided view
      S += P[i0:i1]                                    p2c: P = view(k Qr_byDistance^T)^T, once per (batch, head)
      out[i0:i1] = softmax(masked S) v
    """
    mask = dense_mask(mask)
    length = query.shape[-2]
    has_pos = pos_key is not None or pos_query is not None
    dist = distance_slots(slots) if has_pos else None
    if output_attentions or key.shape[-2] != length or (has_pos and dist is None) or torch.compiler.is_compiling():
        return sdpa_attention(query, key, value, pos_key, pos_query, slots, mask, scale, dropout_p,
                              output_attentions)
    batch, heads = query.shape[:2]
    dtype = query.dtype
    # bf16/fp16 inputs: scores are summed, masked and soft-maxed in fp32 (the three terms and the scale are each
    # rounded once instead of at every step); the tile is in cache, so the wider type costs little.
    low_precision = dtype in (torch.bfloat16, torch.float16)
    acc_dtype = torch.float32 if low_precision else dtype
    table_scale = 1.0 if low_precision else scale  # fp32: fold the scale into the tiny tables and into q
    # Distance-ordered tables (2L - 1 rows, tiny): c2p row t is distance i - j = L - 1 - t, p2c row t is t - (L - 1).
    table_k = (pos_key.index_select(-2, dist.flip(0)) * table_scale).to(dtype) if pos_key is not None else None
    table_q = (pos_query.index_select(-2, dist) * table_scale).to(dtype) if pos_query is not None else None
    term_scale = scale if low_precision else 1.0
    padded = not bool(mask.all())
    neg = torch.finfo(acc_dtype).min
    # bf16 strided adds run unvectorised; copying the transposed p2c slice first is ~2.5x cheaper (fp32: the reverse).
    copy_p2c = low_precision
    tiles, rows = _tiles(batch, heads, length, query.element_size())
    out = torch.empty_like(query)
    for b0, b1, h0, h1 in tiles:
        q, k, v = query[b0:b1, h0:h1], key[b0:b1, h0:h1], value[b0:b1, h0:h1]
        tile_mask = mask[b0:b1] if mask.shape[0] > 1 else mask
        tile_mask = tile_mask[:, h0:h1] if tile_mask.shape[1] > 1 else tile_mask
        k_t = k.transpose(-1, -2)
        p2c = None
        if table_q is not None:
            p2c = _relative_view(torch.matmul(k, table_q[h0:h1].transpose(-1, -2))).transpose(-1, -2)
        for i0 in range(0, length, rows):
            i1 = min(length, i0 + rows)
            q_blk = q[..., i0:i1, :]
            if low_precision:
                scores = torch.matmul(q_blk, k_t).to(acc_dtype).mul_(scale)
            else:
                scores = torch.matmul(q_blk * scale, k_t)
            if table_k is not None:
                distances = table_k[h0:h1, length - i1:2 * length - 1 - i0]
                c2p = _block_relative_view(torch.matmul(q_blk, distances.transpose(-1, -2)), length)
                scores.add_(c2p, alpha=term_scale)
            if p2c is not None:
                p2c_blk = p2c[..., i0:i1, :]
                scores.add_(p2c_blk.contiguous() if copy_p2c else p2c_blk, alpha=term_scale)
            if padded:
                scores.masked_fill_(~(tile_mask[..., i0:i1, :] if tile_mask.shape[-2] > 1 else tile_mask), neg)
            probs = torch.softmax(scores, dim=-1).to(dtype)
            if dropout_p > 0.0:
                probs = F.dropout(probs, p=dropout_p, training=True)
            out[b0:b1, h0:h1, i0:i1] = torch.matmul(probs, v)
    return out, None
