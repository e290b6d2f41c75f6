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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mdeberta.model.attention import reference_attention, tensor_state

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
    b, h, length, width = scores.shape
    shifted = scores.contiguous().view(-1)[length - 1:]  # as_strided below keeps this view's offset
    return shifted.as_strided((b, h, length, length), (h * length * width, length * width, width - 1, 1))


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
