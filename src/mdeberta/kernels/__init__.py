"""Fast attention backends and optimizers; each is tested against ``mdeberta.model.attention.reference_attention``.

* ``sdpa`` (:mod:`.cpu_attention`): one additive bias + PyTorch's fused scaled-dot-product attention; any device.
* ``triton`` (:mod:`.triton_attention`): a flash-attention style Triton kernel (forward and backward) that never
  materialises an L x L tensor; CUDA only (tested on CPU with ``TRITON_INTERPRET=1``).
* :class:`.lazy_adamw.LazyAdamW`: AdamW that updates only the touched rows of large embeddings.

``select_backend`` is what the default backend "auto" uses.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import torch

from mdeberta.kernels.cpu_attention import sdpa_attention
from mdeberta.model.attention import reference_attention, register_attention_backend

register_attention_backend("sdpa", sdpa_attention)

TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None
if TRITON_AVAILABLE:
    from mdeberta.kernels.triton_attention import triton_attention

    register_attention_backend("triton", triton_attention)


def select_backend(query: torch.Tensor) -> Callable:
    """The fastest exact backend for this tensor: Triton on CUDA when importable; on CPU fused SDPA for inference
    and the reference for training.

    Measured on mdeberta-v3-base, 2 cores, bf16-autocast training step (``benchmarks/bench_backends.py``): the
    reference ran 838 / 808 / 435 tokens/s at 8x128 / 8x256 / 8x512 against 826 / 750 / 370 for SDPA, whose
    additive (B, H, L, L) bias and its gradient also cost memory; at inference SDPA is faster at every shape.
    """
    if query.is_cuda and TRITON_AVAILABLE and os.environ.get("MDEBERTA_DISABLE_TRITON", "") != "1":
        return triton_attention
    if query.requires_grad and torch.is_grad_enabled():
        return reference_attention
    return sdpa_attention
