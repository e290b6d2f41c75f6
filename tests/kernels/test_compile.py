"""torch.compile of the encoder with the fast attention path: one graph (fullgraph=True), same numbers as eager."""

from __future__ import annotations

import pytest
import torch

import mdeberta
from mdeberta.config import preset


def test_encoder_has_no_graph_breaks():
    cfg = preset("deberta-v3-micro", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = mdeberta.DebertaModel(cfg).eval()
    x = torch.randn(2, 16, cfg.hidden_size)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0
    model.encoder(x, mask)  # builds the per-length slot tables (a compiled graph reads them as constants)
    explanation = torch._dynamo.explain(model.encoder)(x, mask)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_whole_classifier_has_no_graph_breaks():
    """Input checks that read tensor values (vocabulary range) are skipped while tracing."""
    cfg = preset("deberta-v3-micro", vocab_size=50, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = mdeberta.DebertaForSequenceClassification(cfg).eval()
    ids = torch.randint(4, 50, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    model(ids, attention_mask=mask)  # builds the per-length slot tables
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(ids, attention_mask=mask)
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.slow
def test_fullgraph_compile_matches_eager_forward_and_backward():
    torch._dynamo.reset()
    cfg = preset("deberta-v3-micro", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = mdeberta.DebertaModel(cfg).train()
    x = torch.randn(2, 12, cfg.hidden_size, requires_grad=True)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0
    eager = model.encoder(x, mask)[0][-1]
    eager.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    compiled = torch.compile(model.encoder, fullgraph=True)
    out = compiled(x, mask)[0][-1]
    out.sum().backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, grad, rtol=1e-4, atol=1e-5)
