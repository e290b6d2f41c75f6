"""The Triton kernel checks itself before it is trusted (issue 20, item 2): a failing or wrong kernel is replaced by
SDPA with one warning per case; MDEBERTA_ATTENTION forces a backend. Run on CPU with the interpreter's kernel."""

from __future__ import annotations

import importlib.util
import logging
import os

import pytest
import torch

import mdeberta.kernels as kernels
from mdeberta.kernels import CheckedKernel, select_backend
from mdeberta.kernels.cpu_attention import blocked_attention, sdpa_attention
from mdeberta.model.attention import reference_attention

HAS_TRITON = importlib.util.find_spec("triton") is not None and os.environ.get("TRITON_INTERPRET") == "1"


def _call(guard, dropout_p=0.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 8, 16, generator=g, dtype=dtype) for _ in range(3))
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    return guard(q, k, v, None, None, None, mask, 0.25, dropout_p)


def test_a_failing_kernel_falls_back_with_one_warning(caplog):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("out of resource: shared memory, Required: 200704, Hardware limit: 166912")

    guard = CheckedKernel(broken, sdpa_attention, "triton")
    with caplog.at_level(logging.WARNING, logger="mdeberta.kernels"):
        out, _ = _call(guard)
        again, _ = _call(guard)
    expected, _ = sdpa_attention(*_call_inputs(), 0.25)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(again, expected)
    warnings = [r for r in caplog.records if "failed its self-check" in r.getMessage()]
    assert len(warnings) == 1 and "out of resource: shared memory" in warnings[0].getMessage()
    assert len(calls) == 1  # checked once, never called again for that case


def _call_inputs():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 8, 16, generator=g) for _ in range(3))
    return q, k, v, None, None, None, torch.ones(2, 1, 8, 8, dtype=torch.bool)


def test_a_wrong_kernel_falls_back_and_each_case_is_checked(caplog):
    def wrong(q, k, v, *args, **kwargs):
        out, probs = sdpa_attention(q, k, v, *args, **kwargs)
        return out * 1.5, probs

    guard = CheckedKernel(wrong, sdpa_attention, "triton")
    with caplog.at_level(logging.WARNING, logger="mdeberta.kernels"):
        _call(guard)
        _call(guard, dtype=torch.bfloat16)
    assert sum("differs from" in r.getMessage() for r in caplog.records) == 2  # fp32 and bf16: two cases
    assert set(guard.verdicts.values()) == {False}


def test_a_correct_kernel_passes_and_the_callers_rng_is_untouched():
    guard = CheckedKernel(reference_attention, sdpa_attention, "reference")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    _call(guard)
    assert torch.equal(torch.rand(3), expected)
    assert list(guard.verdicts.values()) == [True]


@pytest.mark.skipif(not HAS_TRITON, reason="triton (interpreter) not available")
@pytest.mark.parametrize("dropout_p, packed", [(0.0, False), (0.1, False), (0.0, True)])
def test_the_real_kernel_passes_its_check(dropout_p, packed):
    from mdeberta.kernels.triton_attention import triton_attention

    guard = CheckedKernel(triton_attention, sdpa_attention, "triton")
    assert guard.check("cpu", torch.float32, 16, dropout_p > 0, packed)


def test_mdeberta_attention_forces_a_backend(monkeypatch):
    q = torch.zeros(1, 1, 4, 16)
    monkeypatch.delenv("MDEBERTA_ATTENTION", raising=False)
    assert select_backend(q) is blocked_attention
    monkeypatch.setenv("MDEBERTA_ATTENTION", "sdpa")
    assert select_backend(q) is sdpa_attention
    monkeypatch.setenv("MDEBERTA_ATTENTION", "reference")
    assert select_backend(q) is reference_attention
    monkeypatch.setenv("MDEBERTA_ATTENTION", "flash")
    with pytest.raises(ValueError, match=r"MDEBERTA_ATTENTION='flash'; allowed here: \['triton', 'sdpa'"):
        select_backend(q)
    if kernels.checked_triton is not None:
        monkeypatch.setenv("MDEBERTA_ATTENTION", "triton")
        assert select_backend(q) is kernels.ATTENTION_BACKENDS["triton"]
