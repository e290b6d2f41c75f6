"""Training checkpoints: everything needed to continue a run exactly, written atomically, last K kept.

One file per save, ``<output>/checkpoints/step-00000100.pt``, holding the model, optimizer, scheduler and
grad-scaler states, the trainer's counters and, per rank, the RNG states (python, numpy, torch, cuda) and the
data position. Files are written to a temp name and renamed, so a crash mid-save leaves the previous
checkpoints intact; a corrupt newest file on resume falls back to the one before it.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mdeberta.errors import CheckpointError
from mdeberta.files import atomic_torch_save

logger = logging.getLogger("mdeberta.train")

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """RNG states as plain containers and tensors (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(output_dir: str | Path, step: int, state: dict[str, Any], keep_last: int = 3) -> Path:
    """Write ``state`` atomically as step-<step>.pt and delete all but the newest ``keep_last`` files."""
    path = checkpoint_dir(output_dir) / f"step-{step:08d}.pt"
    atomic_torch_save(state, path)
    if keep_last > 0:
        for old in list_checkpoints(output_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a mdeberta training checkpoint (no 'step' / 'model' entries)")
    return state


def load_latest_checkpoint(output_dir: str | Path, path: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The newest readable checkpoint (or ``path``); unreadable newer files are reported and skipped."""
    if path is not None:
        return Path(path), read_checkpoint(path)
    candidates = list_checkpoints(output_dir)
    if not candidates:
        raise CheckpointError(f"--resume: no checkpoints in {checkpoint_dir(output_dir)}")
    errors = []
    for candidate in reversed(candidates):
        try:
            state = read_checkpoint(candidate)
        except CheckpointError as e:
            logger.error("%s; falling back to an earlier checkpoint", e)
            errors.append(str(e))
            continue
        return candidate, state
    raise CheckpointError("no readable checkpoint in " f"{checkpoint_dir(output_dir)}: " + "; ".join(errors))
