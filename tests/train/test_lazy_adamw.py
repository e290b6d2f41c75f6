"""LazyAdamW: exactly AdamW on dense parameters and on rows touched every step; lazy on untouched rows."""

from __future__ import annotations

import pytest
import torch

from mdeberta.train.lazy_adamw import LazyAdamW

KW = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)


def run(opt_cls, params, grads_per_step, groups=None, **kw):
    opt = opt_cls(groups if groups is not None else params, **kw)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    return opt


def test_dense_params_and_always_touched_rows_match_adamw():
    torch.manual_seed(0)
    init = [torch.randn(20, 4), torch.randn(7), torch.randn(3, 5)]
    grads = [[torch.randn_like(t) for t in init] for _ in range(5)]
    a = [t.clone().requires_grad_() for t in init]
    b = [t.clone().requires_grad_() for t in init]
    run(torch.optim.AdamW, a, grads, **KW)
    # The first tensor is forced lazy: every row has a gradient every step, so the result equals AdamW.
    run(LazyAdamW, b, grads, groups=[{"params": [b[0]], "lazy": True}, {"params": b[1:]}], **KW)
    for x, y in zip(a, b):
        torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-7)


def test_untouched_rows_are_left_alone_and_touched_rows_count_their_own_steps():
    torch.manual_seed(1)
    rows, dim = 6, 3
    init = torch.randn(rows, dim)
    grads = []
    for step in range(4):
        g = torch.zeros(rows, dim)
        g[0] = torch.randn(dim)  # row 0: every step
        if step in (1, 3):
            g[2] = torch.randn(dim)  # row 2: steps 1 and 3 only
        grads.append(g)
    p = init.clone().requires_grad_()
    opt = run(LazyAdamW, [p], [[g] for g in grads], groups=[{"params": [p], "lazy": True}], **KW)
    # Rows never touched (1, 3, 4, 5): no weight decay, no update, no state.
    for r in (1, 3, 4, 5):
        assert torch.equal(p[r], init[r])
        assert opt.state[p]["exp_avg"][r].abs().sum() == 0
    assert opt.state[p]["row_step"].tolist() == [4, 0, 2, 0, 0, 0]
    # Row 2 equals AdamW run on just its two gradients (lazy = skip the steps without gradient).
    q = init[2].clone().requires_grad_()
    run(torch.optim.AdamW, [q], [[grads[1][2]], [grads[3][2]]], **KW)
    torch.testing.assert_close(p[2], q, rtol=1e-6, atol=1e-7)
    # A dense AdamW would have decayed and moved row 2 at steps 2 and 4 too: the documented difference.
    dense = init.clone().requires_grad_()
    run(torch.optim.AdamW, [dense], [[g] for g in grads], **KW)
    assert not torch.allclose(dense[2], p[2])
    torch.testing.assert_close(dense[0], p[0], rtol=1e-6, atol=1e-7)


def test_embedding_rows_auto_detected_sparse_and_dense_grads_agree():
    torch.manual_seed(2)
    ids = torch.tensor([[1, 5, 5, 9], [0, 2, 9, 3]])
    results = []
    for sparse in (False, True):
        torch.manual_seed(3)
        emb = torch.nn.Embedding(40, 4, padding_idx=0, sparse=sparse)
        lin = torch.nn.Linear(4, 1)
        opt = LazyAdamW([{"params": emb.parameters(), "lazy": True}, {"params": lin.parameters()}], **KW)
        before = emb.weight.detach().clone()
        for _ in range(3):
            opt.zero_grad()
            lin(emb(ids)).sum().backward()
            opt.step()
        touched = sorted(set(ids.flatten().tolist()) - {0})
        changed = (emb.weight.detach() != before).any(1).nonzero().flatten().tolist()
        assert changed == touched  # padding row 0 and the rest of the vocabulary are untouched
        results.append(emb.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1])


def test_default_lazy_choice_is_by_rows():
    big = torch.zeros(LazyAdamW.LAZY_MIN_ROWS, 2, requires_grad=True)
    small = torch.zeros(10, 2, requires_grad=True)
    opt = LazyAdamW([big, small], **KW)
    big.grad = torch.zeros_like(big)
    big.grad[3] = 1.0
    small.grad = torch.ones_like(small)
    opt.step()
    assert (big.detach() != 0).any(1).nonzero().flatten().tolist() == [3]
    assert (small.detach() != 0).all()  # dense AdamW path
    with pytest.raises(ValueError, match="2-D"):
        bad = torch.zeros(3, requires_grad=True)
        bad.grad = torch.ones(3)
        LazyAdamW([{"params": [bad], "lazy": True}]).step()


def test_closure_and_amsgrad_maximize():
    torch.manual_seed(4)
    init = torch.randn(5, 2)
    a, b = init.clone().requires_grad_(), init.clone().requires_grad_()
    grads = [torch.randn(5, 2) for _ in range(3)]
    kw = dict(KW, amsgrad=True, maximize=True)
    run(torch.optim.AdamW, [a], [[g] for g in grads], **kw)
    opt = LazyAdamW([{"params": [b], "lazy": True}], **kw)
    for g in grads:
        def closure(g=g):
            b.grad = g.clone()
            return 1.5
        assert opt.step(closure) == 1.5
    torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
