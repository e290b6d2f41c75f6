"""Fast attention backends; each is tested against ``mdeberta.model.attention.reference_attention``.

* ``blocked`` (:mod:`.cpu_attention`): scores, c2p and p2c computed in cache-sized tiles; the CPU default.
* ``sdpa`` (:mod:`.cpu_attention`): one additive bias + PyTorch's fused scaled-dot-product attention; any device.
* ``triton`` (:mod:`.triton_attention`): a flash-attention style Triton kernel (forward and backward) that never
  materialises an L x L tensor; CUDA only (tested on CPU with ``TRITON_INTERPRET=1``).

``select_backend`` is what the default backend "auto" uses. On a GPU the Triton kernel checks itself on its first
use per (device, dtype, head size, dropout, packed): a small forward + backward against the SDPA path; an exception
or a mismatch beyond tolerance logs one warning with the error, and that process uses SDPA for that case from then
on (:class:`CheckedKernel`). ``MDEBERTA_ATTENTION=triton|sdpa|blocked|reference`` forces a backend (no check).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from typing import Any

import torch

from mdeberta.errors import UsageError
from mdeberta.kernels.cpu_attention import blocked_attention, sdpa_attention
from mdeberta.model.attention import ATTENTION_BACKENDS, PackedSequences, is_tracing, register_attention_backend

logger = logging.getLogger("mdeberta.kernels")

register_attention_backend("sdpa", sdpa_attention)
register_attention_backend("blocked", blocked_attention)

TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None
if TRITON_AVAILABLE:
    from mdeberta.kernels.triton_attention import triton_attention

    register_attention_backend("triton", triton_attention)


# Tolerances of the self-check (max |kernel - SDPA| over outputs and input gradients, relative to the largest value).
SELF_CHECK_TOLERANCE = {torch.float32: 2e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}


class CheckedKernel:
    """A fast kernel that proves itself against a trusted backend on the first call of each case, else steps aside.

    A case is (device, dtype, head size, dropout on, packed). The check runs a small forward + backward on random
    inputs of that case (its own generator: the caller's RNG is untouched) with dropout off, and with dropout on
    only for errors and non-finite results (the two backends draw different dropout masks).
    """

    def __init__(self, kernel: Callable, fallback: Callable, name: str) -> None:
        self.kernel, self.fallback, self.name = kernel, fallback, name
        self.verdicts: dict[tuple, bool] = {}

    def case(self, query: torch.Tensor, mask: Any, dropout_p: float) -> tuple:
        return (str(query.device), query.dtype, query.shape[-1], dropout_p > 0, isinstance(mask, PackedSequences))

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, pos_key: Any, pos_query: Any,
                 slots: Any, mask: Any, scale: float, dropout_p: float = 0.0, output_attentions: bool = False):
        if is_tracing():  # no eager self-check inside a graph being recorded
            return self.kernel(query, key, value, pos_key, pos_query, slots, mask, scale, dropout_p, output_attentions)
        case = self.case(query, mask, dropout_p)
        if case not in self.verdicts:
            self.verdicts[case] = self.check(*case)
        chosen = self.kernel if self.verdicts[case] else self.fallback
        return chosen(query, key, value, pos_key, pos_query, slots, mask, scale, dropout_p, output_attentions)

    def check(self, device: str, dtype: torch.dtype, head_size: int, dropout: bool, packed: bool) -> bool:
        from mdeberta.config import preset
        from mdeberta.model.attention import compact_relative_position_slots

        gen = torch.Generator(device="cpu").manual_seed(0)
        heads = 2
        lengths = [19, 13] if packed else [32, 32]
        batch, length = (1, sum(lengths)) if packed else (2, 32)
        rows, slots = compact_relative_position_slots(length, length, preset("deberta-v3-micro", position_buckets=16,
                                                                             max_relative_positions=64))
        slots = slots.to(device)

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_()

        q, k, v = (rand(batch, heads, length, head_size) for _ in range(3))
        pos_key, pos_query = rand(heads, len(rows), head_size), rand(heads, len(rows), head_size)
        if packed:
            mask = PackedSequences.from_lengths(lengths, device=device)
        else:
            tokens = torch.ones(batch, length, dtype=torch.bool, device=device)
            tokens[1, 25:] = False
            mask = (tokens[:, None, :, None] & tokens[:, None, None, :])
        scale = 1.0 / (3 * head_size) ** 0.5
        inputs = (q, k, v, pos_key, pos_query)
        try:
            with torch.random.fork_rng(devices=[torch.device(device)] if device.startswith("cuda") else []):
                results = []
                for fn, p in ((self.kernel, 0.0), (self.fallback, 0.0)) + (((self.kernel, 0.1),) if dropout else ()):
                    out, _ = fn(q, k, v, pos_key, pos_query, slots, mask, scale, p)
                    grads = torch.autograd.grad(out.float().square().sum(), inputs)
                    results.append([out.detach().float(), *(g.float() for g in grads)])
        except Exception as e:  # a compile, launch or runtime failure on this device
            logger.warning("attention backend %r failed its self-check on %s %s (head size %d%s%s): %s: %s; this "
                           "process uses %r for that case instead", self.name, device, dtype, head_size,
                           ", dropout" if dropout else "", ", packed" if packed else "", type(e).__name__, e,
                           getattr(self.fallback, "__name__", "the fallback"))
            return False
        worst = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-6)) for a, b in zip(*results[:2]))
        finite = all(bool(torch.isfinite(t).all()) for r in results for t in r)
        if not finite or worst > SELF_CHECK_TOLERANCE.get(dtype, 5e-2):
            logger.warning("attention backend %r differs from %r on %s %s (head size %d%s%s): max relative "
                           "difference %.3g%s; this process uses the latter for that case instead", self.name,
                           getattr(self.fallback, "__name__", "the fallback"), device, dtype, head_size,
                           ", dropout" if dropout else "", ", packed" if packed else "", worst,
                           "" if finite else " and non-finite values")
            return False
        logger.debug("attention backend %r passed its self-check on %s %s, head size %d (max relative difference "
                     "%.2g)", self.name, device, dtype, head_size, worst)
        return True


checked_triton = CheckedKernel(triton_attention, sdpa_attention, "triton") if TRITON_AVAILABLE else None
FORCED = ("triton", "sdpa", "blocked", "reference")


def select_backend(query: torch.Tensor) -> Callable:
    """The fastest exact backend for this tensor: the self-checked Triton kernel on CUDA when importable, else the
    cache-tiled CPU path (speeds: BENCHMARKS.md). ``MDEBERTA_ATTENTION`` forces one (``MDEBERTA_DISABLE_TRITON=1``
    keeps working: no Triton). Under ``torch.compile`` the CPU path defers to SDPA, whose bias Inductor fuses."""
    forced = os.environ.get("MDEBERTA_ATTENTION", "")
    if forced:
        if forced not in FORCED or forced not in ATTENTION_BACKENDS:
            available = [f for f in FORCED if f in ATTENTION_BACKENDS]
            raise UsageError(f"MDEBERTA_ATTENTION={forced!r}; allowed here: {available}")
        return ATTENTION_BACKENDS[forced]
    if query.is_cuda and checked_triton is not None and os.environ.get("MDEBERTA_DISABLE_TRITON", "") != "1":
        return checked_triton
    return blocked_attention


def auto_attention(query: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The default backend: the fastest exact one for ``query``'s device (:func:`select_backend`)."""
    return select_backend(query)(query, *args, **kwargs)


register_attention_backend("auto", auto_attention)
