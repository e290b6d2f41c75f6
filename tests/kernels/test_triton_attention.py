"""The Triton kernel (forward and backward) against the reference, run by Triton's CPU interpreter.

Tiny shapes only (L <= 64, d = 16): the interpreter executes the kernel in numpy, one program at a time.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed (pip install triton: a CPU wheel exists for x86-64 Linux)",
                allow_module_level=True)
# The interpreter must be chosen before triton is first imported (it decorates triton.language at import).
if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"

from mdeberta.config import preset  # noqa: E402
from mdeberta.model.attention import compact_relative_position_slots, reference_attention  # noqa: E402

# The package re-exports the function under the module's name, so fetch the module itself.
ta = importlib.import_module("mdeberta.kernels.triton_attention")


def case(length, buckets, max_rel, terms="both", seed=0, pad=True, dtype=torch.float32):
    cfg = preset("deberta-v3-micro", position_buckets=buckets, max_relative_positions=max_rel)
    rows, slots = compact_relative_position_slots(length, length, cfg)
    g = torch.Generator().manual_seed(seed)
    b, h, d = 2, 2, 16
    q, k, v = (torch.randn(b, h, length, d, generator=g) for _ in range(3))
    pk, pq = (torch.randn(h, len(rows), d, generator=g) for _ in range(2))
    pk = pk if terms in ("both", "c2p") else None
    pq = pq if terms in ("both", "p2c") else None
    tokens = torch.ones(b, length, dtype=torch.bool)
    if pad:
        tokens[1, length // 2 + 1:] = False
    mask = tokens[:, None, :, None] & tokens[:, None, None, :]
    cast = [t.to(dtype) if t is not None else None for t in (q, k, v, pk, pq)]
    return cast, slots, mask


def assert_same_forward_and_backward(reference, candidate, tensors):
    """Run each (a function of the input leaves -> output) forward and backward under one fixed output weighting;
    outputs and every input gradient must agree."""
    results = []
    for fn in (reference, candidate):
        leaves = [t.clone().requires_grad_() if t is not None else None for t in tensors]
        out = fn(leaves)
        weights = torch.linspace(-1, 1, out.numel()).view_as(out)
        (out * weights).sum().backward()
        results.append((out.detach(), [t.grad for t in leaves if t is not None]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-5)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("length,buckets,max_rel,terms", [
    (20, 8, 32, "both"),   # log buckets: several keys of a row share a slot
    (37, -1, 12, "c2p"),   # clamped distances
    (64, 32, -1, "p2c"),
    (9, 8, 32, "none"),
])
def test_triton_forward_and_backward_match_reference(length, buckets, max_rel, terms):
    tensors, slots, mask = case(length, buckets, max_rel, terms)
    assert_same_forward_and_backward(lambda x: reference_attention(*x, slots, mask, 0.3)[0],
                                     lambda x: ta.triton_attention(*x, slots, mask, 0.3)[0], tensors)


def test_triton_kernel_is_used_not_the_fallback(monkeypatch):
    tensors, slots, mask = case(24, 8, 32)
    called = []
    monkeypatch.setattr(ta, "sdpa_attention", lambda *a, **k: called.append(1))
    out, _ = ta.triton_attention(*tensors, slots, mask, 0.3)
    assert not called and out.shape == tensors[0].shape


def test_unsupported_cases_fall_back_exactly():
    tensors, slots, mask = case(12, 8, 32)
    mask = mask.clone()
    mask[0, 0, 3, 5] = False  # not an outer product of a token mask
    assert ta.token_mask_of(mask) is None
    ref, _ = reference_attention(*tensors, slots, mask, 0.3)
    out, _ = ta.triton_attention(*tensors, slots, mask, 0.3)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def _reference_with_mask(tensors, slots, mask, scale, keep, p):
    """The reference's probabilities with a given keep mask applied as F.dropout would (x 1/(1-p))."""
    q, k, v, pk, pq = tensors
    _, probs = reference_attention(q, k, v, pk, pq, slots, mask, scale, 0.0, output_attentions=True)
    return torch.matmul(probs * keep / (1 - p), v)


@pytest.mark.parametrize("length,buckets,max_rel,terms", [(20, 8, 32, "both"), (37, -1, 12, "c2p")])
def test_dropout_inside_the_kernel_matches_reference_with_the_same_mask(length, buckets, max_rel, terms):
    p, seed = 0.3, 1234
    tensors, slots, mask = case(length, buckets, max_rel, terms)
    keep = ta.dropout_keep_mask(seed, 2, 2, length, p, "cpu")
    assert keep.shape == (2, 2, length, length)
    assert abs(keep.float().mean().item() - (1 - p)) < 0.05
    assert_same_forward_and_backward(
        lambda x: _reference_with_mask(x, slots, mask, 0.3, keep, p),
        lambda x: ta.flash_attention(*x, slots, mask, 0.3, dropout_p=p, seed=seed)[0], tensors)


def test_dropout_seed_is_reproducible_and_drawn_from_torch():
    tensors, slots, mask = case(16, 8, 32)
    a, _ = ta.flash_attention(*tensors, slots, mask, 0.3, dropout_p=0.2, seed=7)
    b, _ = ta.flash_attention(*tensors, slots, mask, 0.3, dropout_p=0.2, seed=7)
    c, _ = ta.flash_attention(*tensors, slots, mask, 0.3, dropout_p=0.2, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d, _ = ta.triton_attention(*tensors, slots, mask, 0.3, dropout_p=0.2)
    torch.manual_seed(3)
    e, _ = ta.triton_attention(*tensors, slots, mask, 0.3, dropout_p=0.2)
    assert torch.equal(d, e)  # the seed comes from torch's generator: seeding makes runs repeat
    assert not torch.equal(ta.dropout_keep_mask(1, 1, 1, 16, 0.5, "cpu"), ta.dropout_keep_mask(2, 1, 1, 16, 0.5,
                                                                                                 "cpu"))


def packed_case(lengths, buckets=8, max_rel=32, terms="both", seed=0):
    """Three sequences of different lengths packed into one row (1, H, T, d)."""
    from mdeberta.model.attention import PackedSequences

    total = sum(lengths)
    tensors, slots, _ = case(total, buckets, max_rel, terms, seed, pad=False)
    tensors = [t[:1].contiguous() if t is not None and t.dim() == 4 else t for t in tensors]
    return tensors, slots, PackedSequences.from_lengths(lengths)


@pytest.mark.parametrize("lengths,terms,dropout", [
    ((5, 17, 9), "both", 0.0),   # sequences cross tile boundaries; blocks past a short sequence return at once
    ((16, 3, 12), "c2p", 0.0),
    ((7, 20), "both", 0.25),     # dropout: the dense (1, H, T, T) mask's numbers at the same places
])
def test_packed_sequences_match_the_block_diagonal_reference(lengths, terms, dropout):
    tensors, slots, packed = packed_case(lengths, terms=terms)
    total = sum(lengths)
    mask = packed.pair_mask()
    assert mask.shape == (1, 1, total, total) and not bool(mask[0, 0, 0, lengths[0]])
    keep = ta.dropout_keep_mask(99, 1, 2, total, dropout, "cpu") if dropout else torch.ones(1)
    assert_same_forward_and_backward(
        lambda x: _reference_with_mask(x, slots, mask, 0.3, keep, dropout),
        lambda x: ta.flash_attention(*x, slots, packed, 0.3, dropout_p=dropout, seed=99)[0], tensors)


def test_packed_sequences_equal_each_sequence_alone(monkeypatch):
    """A packed row gives every sequence what it gets alone (relative positions restart per sequence), and the
    varlen kernel, not the fallback, computed it."""
    lengths = (6, 13)
    tensors, slots, packed = packed_case(lengths)
    monkeypatch.setattr(ta, "sdpa_attention", lambda *a, **k: pytest.fail("fell back to SDPA"))
    out, _ = ta.flash_attention(*tensors, slots, packed, 0.3)
    cfg = preset("deberta-v3-micro", position_buckets=8, max_relative_positions=32)
    start = 0
    for n in lengths:
        rows, own_slots = compact_relative_position_slots(n, n, cfg)
        full_rows, _ = compact_relative_position_slots(sum(lengths), sum(lengths), cfg)
        pick = torch.searchsorted(full_rows, rows)  # this length's table rows inside the packed row's table
        q, k, v, pk, pq = (t[:, :, start:start + n] if t.dim() == 4 else t[:, pick] for t in tensors)
        alone, _ = reference_attention(q, k, v, pk, pq, own_slots, torch.ones(1, 1, n, n, dtype=torch.bool), 0.3)
        torch.testing.assert_close(out[:, :, start:start + n], alone, rtol=0, atol=1e-5)
        start += n


# Every tile of each backward kernel but the default BLOCK x BLOCK (the last; every other test's), paired in turn.
_DQ_TILES = [t[:2] for t in ta.BACKWARD_TILES["bwd_dq"][:-1]]
_DKDV_TILES = [t[:2] for t in ta.BACKWARD_TILES["bwd_dkdv"][:-1]]
BACKWARD_TILE_PAIRS = [(dq, _DKDV_TILES[i % len(_DKDV_TILES)]) for i, dq in enumerate(_DQ_TILES)]


@pytest.mark.parametrize("dq,dkdv", BACKWARD_TILE_PAIRS)
def test_every_autotuned_backward_tile_matches_the_reference(dq, dkdv, monkeypatch):
    """The GPU autotunes the backward over BACKWARD_TILES: each tile computes the same gradients (padded with a
    length that is not a tile multiple, dropout on, and packed sequences crossing tile edges)."""
    monkeypatch.setitem(ta.BACKWARD_BLOCKS, "bwd_dq", {"BM": dq[0], "BN": dq[1]})
    monkeypatch.setitem(ta.BACKWARD_BLOCKS, "bwd_dkdv", {"BM": dkdv[0], "BN": dkdv[1]})
    tensors, slots, mask = case(45, 8, 32, "both")
    keep = ta.dropout_keep_mask(7, 2, 2, 45, 0.2, "cpu")
    assert_same_forward_and_backward(lambda x: _reference_with_mask(x, slots, mask, 0.3, keep, 0.2),
                                     lambda x: ta.flash_attention(*x, slots, mask, 0.3, dropout_p=0.2, seed=7)[0],
                                     tensors)
    tensors, slots, packed = packed_case((29, 6, 40), terms="both")
    assert_same_forward_and_backward(lambda x: _reference_with_mask(x, slots, packed.pair_mask(), 0.3, 1.0, 0.0),
                                     lambda x: ta.flash_attention(*x, slots, packed, 0.3)[0], tensors)


def test_length_bucket_groups_lengths_for_the_autotuners():
    assert [ta.length_bucket(n) for n in (1, 16, 17, 100, 128, 129, 8192)] == [16, 16, 32, 128, 128, 256, 8192]
