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
    results = []
    for fn in (reference_attention, ta.triton_attention):
        leaves = [t.float().clone().requires_grad_() if t is not None else None for t in tensors]
        inputs = [t.to(dtype) if t is not None else None for t in leaves]
        out, _ = fn(*inputs, slots, mask, 0.125)
        weights = torch.linspace(-1, 1, out.numel(), device=DEVICE).view_as(out)
        (out.float() * weights).sum().backward()
        results.append((out.detach().float(), [t.grad for t in leaves if t is not None]))
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(results[1][0], results[0][0], rtol=rtol, atol=atol)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol * 10)


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
    results = []
    for kind in ("reference", "triton"):
        leaves = [t.float().clone().requires_grad_() if t is not None else None for t in tensors]
        inputs = [t.to(dtype) if t is not None else None for t in leaves]
        if kind == "reference":
            q, k, v, pk, pq = inputs
            _, probs = reference_attention(q, k, v, pk, pq, slots, mask, 0.125, 0.0, output_attentions=True)
            out = torch.matmul(probs * keep / (1 - p), v)
        else:
            out, _ = ta.flash_attention(*inputs, slots, mask, 0.125, dropout_p=p, seed=seed)
        weights = torch.linspace(-1, 1, out.numel(), device=DEVICE).view_as(out)
        (out.float() * weights).sum().backward()
        results.append((out.detach().float(), [t.grad for t in leaves if t is not None]))
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(results[1][0], results[0][0], rtol=rtol, atol=atol)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol * 10)
