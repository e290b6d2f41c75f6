"""Shared test setup.

* The tests folder is importable (helpers shared between test files).
* One intra-op thread: the test models are tiny, and on a 2-core machine two OpenMP threads spin-wait against
  DataLoader workers and subprocesses (a 64x64 matmul went from 0.04 ms to 2 ms under such contention).
  Subprocesses inherit OMP_NUM_THREADS=1. Set MDEBERTA_TEST_THREADS to override.
* Without a GPU, Triton kernels run in Triton's CPU interpreter. TRITON_INTERPRET is read when triton is first
  imported (transformers, torch.compile and our kernels import it), so it is set here, before any test module.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

_threads = int(os.environ.get("MDEBERTA_TEST_THREADS", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
torch.set_num_threads(_threads)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


class _Stderr:
    """What the commands printed on stderr (the CLI's ``error:`` lines), read through ``capsys``: ``.text`` is all
    of it since the last ``.clear()``."""

    def __init__(self, capsys) -> None:
        self.capsys, self.seen = capsys, ""

    @property
    def text(self) -> str:
        self.seen += self.capsys.readouterr().err
        return self.seen

    def clear(self) -> None:
        self.capsys.readouterr()
        self.seen = ""


@pytest.fixture
def stderr(capsys) -> _Stderr:
    return _Stderr(capsys)
