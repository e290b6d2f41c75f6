"""The Triton kernel as a PyTorch custom operator: torch.library's own checks (schema, fake tensors, autograd
registration, AOT dispatch), the fake implementation's shapes, and torch.compile keeping the op in one graph with
eager's numbers. Run by Triton's CPU interpreter (tiny shapes)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"

from test_triton_attention import case  # noqa: E402

ta = importlib.import_module("mdeberta.kernels.triton_attention")


def op_inputs(monkeypatch, packed: bool = False) -> tuple:
    """The arguments flash_attention hands the operator for a small padded (or packed) case."""
    (q, k, v, pk, pq), slots, mask = case(16, 8, 16)
    if packed:
        from mdeberta.model.attention import PackedSequences

        q, k, v = (t[:1] for t in (q, k, v))
        mask = PackedSequences.from_lengths([10, 6])
    seen = []
    original = ta.flash_forward

    def record(*args):
        seen.append(args)
        return original(*args)

    monkeypatch.setattr(ta, "flash_forward", record)
    ta.flash_attention(q, k, v, pk, pq, slots, mask, 0.25)
    monkeypatch.setattr(ta, "flash_forward", original)
    return seen[0]


@pytest.mark.parametrize("packed", [False, True])
def test_torch_library_opcheck(monkeypatch, packed):
    args = list(op_inputs(monkeypatch, packed))
    for i in range(5):  # q, k, v, c2p, p2c are differentiable
        args[i] = args[i].detach().clone().requires_grad_()
    torch.library.opcheck(torch.ops.mdeberta.flash_forward.default, tuple(args),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_fake_implementation_gives_the_shapes(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = op_inputs(monkeypatch)
    mode = FakeTensorMode()
    fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
    with mode:
        out, lse = torch.ops.mdeberta.flash_forward(*fake)
        grads = torch.ops.mdeberta.flash_backward(out, *fake[:8], out, lse, *fake[8:])
    q = args[0]
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    assert [g.shape for g in grads] == [a.shape for a in args[:5]]


def test_compiled_graph_keeps_the_kernel(monkeypatch):
    args = op_inputs(monkeypatch)

    def loss(q, k, v, c2p, p2c):
        out, _ = torch.ops.mdeberta.flash_forward(q, k, v, c2p, p2c, *args[5:])
        return (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()

    results = []
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")  # a graph break would raise
    for fn in (loss, compiled):
        leaves = [a.detach().clone().requires_grad_() for a in args[:5]]
        value = fn(*leaves)
        value.backward()
        results.append((value.detach(), [t.grad for t in leaves]))
    torch.testing.assert_close(results[1][0], results[0][0])
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want)
    explanation = torch._dynamo.explain(loss)(*[a.detach() for a in args[:5]])
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_padded_batches_reach_the_kernel_as_a_token_mask(monkeypatch):
    """The encoder builds the padding mask once per batch (PaddingMask: tokens + pairs); the Triton path takes its
    tokens as they are, so no layer re-derives them from the pair mask with a host sync (token_mask_of)."""
    import mdeberta
    from mdeberta.config import preset

    cfg = preset("deberta-v3-micro", vocab_size=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = mdeberta.DebertaModel(cfg).eval()
    ids = torch.randint(4, 40, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0
    expected = model(ids, attention_mask=mask).last_hidden_state
    calls = []
    monkeypatch.setattr(ta, "token_mask_of", lambda m: calls.append(m) or None)
    model.set_attention_backend("triton")
    got = model(ids, attention_mask=mask).last_hidden_state
    assert calls == []
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], rtol=1e-4, atol=1e-4)
