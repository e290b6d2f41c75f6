"""Run Triton kernels in Triton's CPU interpreter when there is no GPU.

``TRITON_INTERPRET`` is read when triton is first imported (torch.compile imports it too), so it is set here,
at collection time, before any test module runs.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
