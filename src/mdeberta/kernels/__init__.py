"""Fast attention backends and optimizers; each is tested against ``mdeberta.model.attention.reference_attention``.

* ``blocked`` (:mod:`.cpu_attention`): scores, c2p and p2c computed in cache-sized tiles; the CPU default.
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

from mdeberta.kernels.cpu_attention import blocked_attention, sdpa_attention
from mdeberta.model.attention import register_attention_backend

register_attention_backend("sdpa", sdpa_attention)
register_attention_backend("blocked", blocked_attention)

TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None
if TRITON_AVAILABLE:
    from mdeberta.kernels.triton_attention import triton_attention

    register_attention_backend("triton", triton_attention)


def select_backend(query: torch.Tensor) -> Callable:
    """The fastest exact backend for this tensor: Triton on CUDA when importable, else the cache-tiled CPU path.

    Measured on mdeberta-v3-base shapes, 1 core (``benchmarks/bench_backends.py``, table in BENCHMARKS.md): per
    layer, the tiled path took 11.1 / 242 / 213 ms at 8x128 bf16 / 8x512 fp32 / 1x2048 bf16 against 14.9 / 525 /
    1140 ms for the fused SDPA with an additive (B, H, L, L) bias, and 26.5 / 443 ms against the reference's
    38.4 / 985 ms for forward + backward in bf16 at 8x128 / 8x512.
    Under ``torch.compile`` it defers to the SDPA path, whose bias Inductor fuses without graph breaks.
    """
    if query.is_cuda and TRITON_AVAILABLE and os.environ.get("MDEBERTA_DISABLE_TRITON", "") != "1":
        return triton_attention
    return blocked_attention
