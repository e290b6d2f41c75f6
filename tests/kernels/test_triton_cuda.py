"""The Triton kernel compiled for a real GPU: the interpreter tests' cases at GPU sizes, in every precision.

Skipped without CUDA (CI). Run it in its own process (``benchmarks/gpu/run.sh`` does): the interpreter tests set
``TRITON_INTERPRET=1`` for the whole session, after which Triton cannot compile for the GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("TRITON_INTERPRET=1 is set (the interpreter tests ran first): run this file alone",
                allow_module_level=True)

from mdeberta.config import preset  # noqa: E402
from mdeberta.model import DebertaModel  # noqa: E402
from mdeberta.model.attention import compact_relative_position_slots, reference_attention  # noqa: E402

ta = importlib.import_module("mdeberta.kernels.triton_attention")
DEVICE = torch.device("cuda")
TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (3e-2, 3e-2), torch.float16: (5e-3, 5e-3)}


def case(length, buckets, max_rel, terms="both", heads=4, d=64, dtype=torch.float32, seed=0):
    cfg = preset("deberta-v3-base", position_buckets=buckets, max_relative_positions=max_rel)
    rows, slots = compact_relative_position_slots(length, length, cfg, DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    b = 2
    q, k, v = (torch.randn(b, heads, length, d, generator=g, device=DEVICE) for _ in range(3))
    pk, pq = (torch.randn(heads, len(rows), d, generator=g, device=DEVICE) for _ in range(2))
    pk = pk if terms in ("both", "c2p") else None
    pq = pq if terms in ("both", "p2c") else None
    tokens = torch.ones(b, length, dtype=torch.bool, device=DEVICE)
    tokens[1, length // 2 + 1:] = False
    mask = tokens[:, None, :, None] & tokens[:, None, None, :]
    return [t.to(dtype) if t is not None else None for t in (q, k, v, pk, pq)], slots, mask


def assert_same_forward_and_backward(reference, candidate, tensors, dtype):
    """Both functions (input leaves cast to ``dtype`` -> output) forward and backward under one fixed output
    weighting, gradients taken in fp32; outputs and input gradients agree within ``dtype``'s tolerance."""
    results = []
    for fn in (reference, candidate):
        leaves = [t.float().clone().requires_grad_() if t is not None else None for t in tensors]
        out = fn([t.to(dtype) if t is not None else None for t in leaves])
        weights = torch.linspace(-1, 1, out.numel(), device=DEVICE).view_as(out)
        (out.float() * weights).sum().backward()
        results.append((out.detach().float(), [t.grad for t in leaves if t is not None]))
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(results[1][0], results[0][0], rtol=rtol, atol=atol)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol * 10)


def reference_with_keep(inputs, slots, mask, keep, p):
    """The reference's probabilities with a given dropout keep mask applied as F.dropout would."""
    q, k, v, pk, pq = inputs
    _, probs = reference_attention(q, k, v, pk, pq, slots, mask, 0.125, 0.0, output_attentions=True)
    return torch.matmul(probs * keep / (1 - p), v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("length,buckets,max_rel,terms", [
    (128, 256, -1, "both"),
    (512, 256, -1, "both"),
    (1000, 256, -1, "both"),   # not a multiple of any tile
    (300, 32, 128, "c2p"),     # log buckets: many keys of a row share a slot
    (257, -1, 64, "p2c"),
])
def test_forward_and_backward_match_reference_on_gpu(length, buckets, max_rel, terms, dtype):
    tensors, slots, mask = case(length, buckets, max_rel, terms, dtype=dtype)
    assert_same_forward_and_backward(lambda x: reference_attention(*x, slots, mask, 0.125)[0],
                                     lambda x: ta.triton_attention(*x, slots, mask, 0.125)[0], tensors, dtype)


def test_kernel_runs_not_the_fallback(monkeypatch):
    tensors, slots, mask = case(256, 256, -1)
    called = []
    monkeypatch.setattr(ta, "sdpa_attention", lambda *a, **k: called.append(1))
    out, _ = ta.triton_attention(*tensors, slots, mask, 0.125)
    assert not called and out.shape == tensors[0].shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_whole_model_matches_the_reference_backend(dtype):
    torch.manual_seed(0)
    model = DebertaModel(preset("deberta-v3-xsmall", vocab_size=1000)).to(DEVICE).eval()
    ids = torch.randint(4, 1000, (3, 700), device=DEVICE)
    mask = torch.ones_like(ids)
    mask[1, 400:] = 0
    outs = []
    for backend in ("reference", "auto"):
        model.set_attention_backend(backend)
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            outs.append(model(input_ids=ids, attention_mask=mask).last_hidden_state.float())
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(outs[1][mask.bool()], outs[0][mask.bool()], rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_inside_the_kernel_on_gpu(dtype):
    p, seed, length = 0.1, 99, 384
    tensors, slots, mask = case(length, 256, -1, dtype=dtype)
    keep = ta.dropout_keep_mask(seed, 2, 4, length, p, DEVICE)
    assert abs(keep.float().mean().item() - (1 - p)) < 0.01
    assert_same_forward_and_backward(
        lambda x: reference_with_keep(x, slots, mask, keep, p),
        lambda x: ta.flash_attention(*x, slots, mask, 0.125, dropout_p=p, seed=seed)[0], tensors, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_packed_sequences_on_gpu(dtype, dropout):
    """The varlen kernels (cu_seqlens) against the reference with the block-diagonal mask, dropout included."""
    from mdeberta.model.attention import PackedSequences

    lengths = (37, 128, 5, 300, 64)
    total, seed = sum(lengths), 7
    tensors, slots, _ = case(total, 256, -1, dtype=dtype)
    tensors = [t[:1].contiguous() if t is not None and t.dim() == 4 else t for t in tensors]
    packed = PackedSequences.from_lengths(lengths, DEVICE)
    mask = packed.pair_mask()
    keep = ta.dropout_keep_mask(seed, 1, 4, total, dropout, DEVICE) if dropout else torch.ones(1, device=DEVICE)
    assert_same_forward_and_backward(
        lambda x: reference_with_keep(x, slots, mask, keep, dropout),
        lambda x: ta.flash_attention(*x, slots, packed, 0.125, dropout_p=dropout, seed=seed)[0], tensors, dtype)


def test_packed_classifier_matches_padded_on_gpu():
    from mdeberta.model import DebertaForSequenceClassification
    from mdeberta.model.attention import PackedSequences

    torch.manual_seed(0)
    model = DebertaForSequenceClassification(preset("deberta-v3-xsmall", vocab_size=1000, num_labels=3))
    model = model.to(DEVICE).eval()
    lengths = [90, 17, 128, 45]
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(4, 1000, (n,), generator=g) for n in lengths]
    ids = torch.zeros(len(seqs), max(lengths), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
    mask = (ids != 0).long()
    cu = PackedSequences.from_lengths(lengths).cu_seqlens
    with torch.no_grad():
        padded = model(input_ids=ids.to(DEVICE), attention_mask=mask.to(DEVICE)).logits
        packed = model(input_ids=torch.cat(seqs)[None].to(DEVICE), cu_seqlens=cu.to(DEVICE)).logits
    torch.testing.assert_close(packed, padded, rtol=1e-3, atol=1e-3)
