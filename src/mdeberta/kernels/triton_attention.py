"""Disentangled attention as a flash-attention style Triton kernel (forward and backward), for CUDA.

No L x L tensor is ever stored. Per (batch, head) the kernel reads

* q, k, v (L, d) and the *position score tables* C2P = q @ (Kr * scale)^T and P2C = k @ (Qr * scale)^T, each
  (L, rows) with rows <= 2S (computed by two ordinary matmuls, so autograd carries their gradients on to q, k,
  Kr, Qr);
* the per-length distance table D (2L - 1,) built on the host from the exact bucket function: δ(i, j) =
  D[i - j + L - 1] (see ``cpu_attention.distance_slots``), so the score of a pair is
  ``q_i·k_j * scale + C2P[i, D[i-j+L-1]] + P2C[j, D[i-j+L-1]]``, looked up, never gathered into memory;
* the token mask (B, L): the pair mask of the model is the outer product of it.

Forward: online softmax over key blocks, saving only the row log-sum-exp. Backward (FlashAttention-2 split, no
atomics): one kernel per query block computes dq and dC2P (rows it owns), one per key block dk, dv and dP2C (rows
it owns). Several keys of a row may share a slot (log buckets), so the table gradients are accumulated one
column (resp. row) of the tile at a time: within a column all addresses are distinct, and no other program writes
those rows.

Attention dropout runs inside the kernels: the keep mask of a pair is Philox(seed, global pair index) (``tl.rand``),
drawn in the forward and drawn again in the backward, never stored; the seed comes from PyTorch's CPU generator,
so runs are reproducible and resume exactly. The softmax normalises over all keys and the kept probabilities are
scaled by 1/(1-p), as ``F.dropout`` on the probabilities does. ``dropout_keep_mask`` returns the mask of a seed
(the tests compare with the reference under that mask).

Packed sequences (``mask`` a :class:`~mdeberta.model.attention.PackedSequences`, q (1, H, T, d), FlashAttention's
varlen layout): program (m, s * H + h) handles query block m of sequence s, head h, and loops over that sequence's
keys only, so a packed or length-grouped batch computes no padding; blocks past a sequence's end return at once.
Their dropout numbers are those of the dense (1, H, T, T) matrix at the same places.

Fully padded query rows follow the reference: a uniform softmax over all keys, with no gradient reaching q or k.
Cases the kernel does not cover (``output_attentions``, masks that are not an outer product, head sizes that are
not a power of two >= 16, Lq != Lk) go to the fused SDPA path, which is exact for them.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from mdeberta.kernels.aot import BACKWARD_TILES, BLOCK, FORWARD_TILES, backward_pruner, prune_forward_configs
from mdeberta.kernels.cpu_attention import distance_slots, sdpa_attention
from mdeberta.model.attention import PackedSequences, PaddingMask

_KERNELS: dict[str, Any] = {}
# Tiles of the backward kernels where they are not autotuned (the interpreter); the tests set others from
# BACKWARD_TILES to check each against the reference.
BACKWARD_BLOCKS = {"bwd_dq": {"BM": BLOCK, "BN": BLOCK}, "bwd_dkdv": {"BM": BLOCK, "BN": BLOCK}}


def length_bucket(length: int) -> int:
    """The autotuners' length key: the next power of two (at least 16), so dynamically padded batches of lengths
    100, 117 and 128 share one tuning instead of benchmarking every tile again for each."""
    return max(16, 1 << (max(1, length) - 1).bit_length())


def _build_kernels() -> dict[str, Any]:
    """Import the kernels on first use. ``TRITON_INTERPRET=1`` is read when ``triton.jit`` decorates them, so the
    module is re-imported if that setting changed (the tests run the kernels in the CPU interpreter)."""
    key = os.environ.get("TRITON_INTERPRET", "0")
    if key not in _KERNELS:
        import importlib
        import sys

        import triton

        name = "mdeberta.kernels._triton_kernels"
        module = importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
        _KERNELS.clear()
        kernels = {"fwd": module._fwd, "bwd_dq": module._bwd_dq, "bwd_dkdv": module._bwd_dkdv}
        tuned = key != "1"
        if tuned:  # on a GPU: tiles autotuned per (length bucket, head size, dropout, varlen) among those that fit
            def configs(tiles: tuple) -> list:
                return [triton.Config({"BM": bm, "BN": bn}, num_warps=w, num_stages=st) for bm, bn, w, st in tiles]

            case = ["BUCKET", "D", "DROPOUT", "VARLEN"]
            kernels["fwd"] = triton.autotune(configs(FORWARD_TILES), key=case, prune_configs_by={
                "early_config_prune": prune_forward_configs})(module._fwd)
            for name, table in (("bwd_dq", "DC2P"), ("bwd_dkdv", "DP2C")):  # the tables they add into: zeroed
                kernels[name] = triton.autotune(configs(BACKWARD_TILES[name]), key=case, reset_to_zero=[table],
                                                prune_configs_by={"early_config_prune": backward_pruner(name)})(
                    kernels[name])
        _KERNELS[key] = {**kernels, "tuned": tuned, "mask": module._dropout_mask, "cdiv": triton.cdiv}
    return _KERNELS[key]


# The kernels as PyTorch custom operators (``torch.ops.mdeberta.flash_forward`` / ``flash_backward``), with fake
# (meta) implementations that give the output shapes without running anything: ``torch.compile`` then keeps the
# kernel as one opaque node instead of breaking the graph at it, and autograd is registered on the forward op.
_FORWARD_SCHEMA = ("(Tensor q, Tensor k, Tensor v, Tensor c2p, Tensor p2c, Tensor dist, Tensor? tokens, "
                   "Tensor? cu_seqlens, int max_seqlen, float scale, float dropout_p, int seed) -> (Tensor, Tensor)")
_BACKWARD_SCHEMA = ("(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor c2p, Tensor p2c, Tensor dist, "
                    "Tensor? tokens, Tensor? cu_seqlens, Tensor out, Tensor lse, int max_seqlen, float scale, "
                    "float dropout_p, int seed) -> (Tensor, Tensor, Tensor, Tensor, Tensor)")


def _pointers(tokens: torch.Tensor | None, cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, cu) as the kernels take them: each mode's unused pointer is any tensor on the device."""
    if cu_seqlens is not None:
        return cu_seqlens, cu_seqlens
    return tokens, tokens


@torch.library.custom_op("mdeberta::flash_forward", mutates_args=(), schema=_FORWARD_SCHEMA)
def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, c2p: torch.Tensor, p2c: torch.Tensor,
                  dist: torch.Tensor, tokens: torch.Tensor | None, cu_seqlens: torch.Tensor | None, max_seqlen: int,
                  scale: float, dropout_p: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, v (B, H, T, d). Padded: ``tokens`` (B, T) marks the real tokens. Packed (B = 1): ``cu_seqlens``
    (N + 1,) int32 marks the sequences, the grid has one program row per (sequence, head). Returns the output and
    the row log-sum-exp the backward needs."""
    kern = _build_kernels()
    b, h, length, d = q.shape
    rows = c2p.shape[-1]
    varlen = cu_seqlens is not None
    programs = (cu_seqlens.numel() - 1 if varlen else b) * h
    longest = max_seqlen if varlen else length
    tok, cu = _pointers(tokens, cu_seqlens)
    out = torch.empty_like(q) if not varlen else torch.zeros_like(q)
    lse = torch.zeros(b, h, length, dtype=torch.float32, device=q.device)
    flags = dict(D=d, DROPOUT=dropout_p > 0.0, VARLEN=varlen)
    tiles = {} if kern["tuned"] else {"BM": BLOCK, "BN": BLOCK}
    grid = lambda meta: (kern["cdiv"](longest, meta["BM"]), programs)  # noqa: E731
    kern["fwd"][grid](q, k, v, c2p, p2c, dist, tok, cu, out, lse, h, length, rows, scale, seed, dropout_p,
                      length_bucket(longest), **tiles, **flags)
    return out, lse


@flash_forward.register_fake
def _(q, k, v, c2p, p2c, dist, tokens, cu_seqlens, max_seqlen, scale, dropout_p, seed):
    b, h, length, _ = q.shape
    return torch.empty_like(q), q.new_empty((b, h, length), dtype=torch.float32)


@torch.library.custom_op("mdeberta::flash_backward", mutates_args=(), schema=_BACKWARD_SCHEMA)
def flash_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, c2p: torch.Tensor,
                   p2c: torch.Tensor, dist: torch.Tensor, tokens: torch.Tensor | None,
                   cu_seqlens: torch.Tensor | None, out: torch.Tensor, lse: torch.Tensor, max_seqlen: int,
                   scale: float, dropout_p: float, seed: int) -> tuple[torch.Tensor, ...]:
    """Gradients of q, k, v and of the two position-score tables (c2p, p2c)."""
    kern = _build_kernels()
    b, h, length, d = q.shape
    rows = c2p.shape[-1]
    varlen = cu_seqlens is not None
    programs = (cu_seqlens.numel() - 1 if varlen else b) * h
    tok, cu = _pointers(tokens, cu_seqlens)
    grad_out = grad_out.contiguous()
    delta = (grad_out.float() * out.float()).sum(-1).contiguous()
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    dc2p, dp2c = torch.zeros_like(c2p), torch.zeros_like(p2c)
    longest = max_seqlen if varlen else length
    bucket = length_bucket(longest)
    flags = dict(D=d, DROPOUT=dropout_p > 0.0, VARLEN=varlen)
    dq_tiles, dkdv_tiles = ({}, {}) if kern["tuned"] else (BACKWARD_BLOCKS["bwd_dq"], BACKWARD_BLOCKS["bwd_dkdv"])
    dq_grid = lambda meta: (kern["cdiv"](longest, meta["BM"]), programs)  # noqa: E731  (a program per query block)
    dkdv_grid = lambda meta: (kern["cdiv"](longest, meta["BN"]), programs)  # noqa: E731  (a program per key block)
    kern["bwd_dq"][dq_grid](q, k, v, c2p, p2c, dist, tok, cu, grad_out, lse, delta, dq, dc2p, h, length, rows,
                            scale, seed, dropout_p, bucket, **dq_tiles, **flags)
    kern["bwd_dkdv"][dkdv_grid](q, k, v, c2p, p2c, dist, tok, cu, grad_out, lse, delta, dk, dv, dp2c, h, length,
                                rows, scale, seed, dropout_p, bucket, **dkdv_tiles, **flags)
    return dq, dk, dv, dc2p, dp2c


@flash_backward.register_fake
def _(grad_out, q, k, v, c2p, p2c, dist, tokens, cu_seqlens, out, lse, max_seqlen, scale, dropout_p, seed):
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(c2p),
            torch.empty_like(p2c))


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    q, k, v, c2p, p2c, dist, tokens, cu_seqlens, max_seqlen, scale, dropout_p, seed = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, c2p, p2c, dist, out, lse,
                          *(t for t in (tokens, cu_seqlens) if t is not None))
    ctx.has = (tokens is not None, cu_seqlens is not None)
    ctx.max_seqlen, ctx.scale, ctx.dropout_p, ctx.seed = max_seqlen, scale, dropout_p, seed


def _backward(ctx: Any, grad_out: torch.Tensor, grad_lse: torch.Tensor | None) -> tuple:
    q, k, v, c2p, p2c, dist, out, lse, *rest = ctx.saved_tensors
    tokens = rest.pop(0) if ctx.has[0] else None
    cu_seqlens = rest.pop(0) if ctx.has[1] else None
    grads = flash_backward(grad_out, q, k, v, c2p, p2c, dist, tokens, cu_seqlens, out, lse, ctx.max_seqlen,
                           ctx.scale, ctx.dropout_p, ctx.seed)
    return (*grads, None, None, None, None, None, None, None)


flash_forward.register_autograd(_backward, setup_context=_setup_context)


def dropout_keep_mask(seed: int, batch: int, heads: int, length: int, dropout_p: float,
                      device: torch.device | str) -> torch.Tensor:
    """(batch, heads, L, L) bool: the pairs the kernels keep for ``seed`` (True = kept, scaled by 1/(1-p))."""
    kern = _build_kernels()
    out = torch.empty(batch * heads, length, length, dtype=torch.int8, device=device)
    grid = (kern["cdiv"](length, BLOCK), kern["cdiv"](length, BLOCK), batch * heads)
    kern["mask"][grid](out, seed, dropout_p, length, BM=BLOCK, BN=BLOCK)
    return out.view(batch, heads, length, length).bool()


def new_dropout_seed() -> int:
    """A Philox key from PyTorch's CPU generator (so seeding and checkpointed RNG state cover it)."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def token_mask_of(mask: torch.Tensor) -> torch.Tensor | None:
    """(B, L) int32 token mask if ``mask`` (B, 1 or H, L, L) is the outer product of one shared by all heads."""
    if mask.dim() != 4:
        return None
    tokens = mask.any(-1)[:, 0]  # (B, L)
    outer = tokens[:, None, :, None] & tokens[:, None, None, :]
    if not bool((outer == mask).all()):
        return None
    return tokens.to(torch.int32).contiguous()


def flash_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    pos_key: torch.Tensor | None,
    pos_query: torch.Tensor | None,
    slots: torch.Tensor | None,
    mask: torch.Tensor | PackedSequences,
    scale: float,
    dropout_p: float = 0.0,
    output_attentions: bool = False,
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Drop-in for ``reference_attention`` through the Triton kernels (registered as the ``triton`` backend);
    unsupported cases use ``sdpa_attention``. ``seed``: the dropout key (None: drawn from PyTorch's generator).

    ``mask`` may be :class:`PackedSequences` (query (1, H, T, d)): the varlen kernels then run one program row
    per (sequence, head), and no pair across sequences is ever computed."""
    batch, heads, length, d = query.shape
    packed = mask if isinstance(mask, PackedSequences) else None
    fallback = output_attentions or key.shape[-2] != length or d < 16 or d & (d - 1) != 0
    fallback = fallback or (packed is not None and batch != 1)
    dist = tokens = None
    if not fallback:
        has_pos = pos_key is not None or pos_query is not None
        dist = distance_slots(slots) if has_pos else torch.zeros(2 * length - 1, dtype=torch.long)
        if isinstance(mask, PaddingMask):  # built once per batch: no host sync here
            tokens = mask.tokens.to(torch.int32).contiguous()
        else:
            tokens = token_mask_of(mask) if packed is None else None
        fallback = dist is None or (tokens is None and packed is None)
    if fallback:
        return sdpa_attention(query, key, value, pos_key, pos_query, slots, mask, scale, dropout_p,
                              output_attentions)
    device = query.device
    rows = (pos_key if pos_key is not None else pos_query).shape[-2] if has_pos else 1
    zeros = query.new_zeros(batch, heads, length, rows, dtype=torch.float32)
    c2p = (torch.matmul(query.float(), (pos_key.float() * scale).transpose(-1, -2)) if pos_key is not None
           else zeros)
    p2c = (torch.matmul(key.float(), (pos_query.float() * scale).transpose(-1, -2)) if pos_query is not None
           else zeros)
    if dropout_p > 0.0 and seed is None:
        seed = new_dropout_seed()
    cu = packed.cu_seqlens.to(device=device, dtype=torch.int32).contiguous() if packed is not None else None
    out, _ = flash_forward(
        query.contiguous(), key.contiguous(), value.contiguous(), c2p.contiguous(), p2c.contiguous(),
        dist.to(device=device, dtype=torch.int32).contiguous(), tokens.to(device) if tokens is not None else None,
        cu, int(packed.max_seqlen if packed is not None else length), float(scale), float(dropout_p), int(seed or 0),
    )
    return out, None


# The backend's registered name; the backend interface passes no seed.
triton_attention = flash_attention
