"""Checkpoint I/O in the Hugging Face layout: find a model (folder or hub id), read and write its weights.

Reading accepts model.safetensors, pytorch_model.bin (``torch.load(weights_only=True)``: no code runs from a
file) and sharded indexes of either; writing is atomic (a temp file renamed into place), so a crash never leaves
a half-written file where a good one was.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mdeberta.config import DebertaConfig
from mdeberta.errors import CheckpointError

# Re-exported: the names older code imports from here.
from mdeberta.files import WriteError, atomic_save, atomic_torch_save, atomic_write_bytes, atomic_write_text  # noqa: F401
from mdeberta.hub import CONFIG_AND_TOKENIZER, PYTORCH_INDEX, SAFETENSORS_INDEX, resolve_model_dir  # noqa: F401

if TYPE_CHECKING:
    from mdeberta.model.deberta import DebertaPreTrainedModel

logger = logging.getLogger("mdeberta")

SAFETENSORS = "model.safetensors"
PYTORCH = "pytorch_model.bin"


# --------------------------------------------------------------------------- reading weights
def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read weights file {path}: it is corrupt or truncated ({e})") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"weights file {path} does not hold a state dict of tensors")
    return state


def load_state_dict(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """All tensors of the checkpoint in ``folder`` and the files they came from."""
    folder = Path(folder)
    for index_name in (SAFETENSORS_INDEX, PYTORCH_INDEX):
        index = folder / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"sharded index {index} is malformed ({e})") from e
            files = [folder / f for f in sorted(set(weight_map.values()))]
            missing = [str(f) for f in files if not f.exists()]
            if missing:
                raise CheckpointError(f"sharded index {index} names missing files: {missing}")
            state: dict[str, torch.Tensor] = {}
            for f in files:
                state.update(_load_file(f))
            return state, files
    for single in (SAFETENSORS, PYTORCH):
        if (folder / single).exists():
            return _load_file(folder / single), [folder / single]
    raise CheckpointError(
        f"no weights in {folder}: expected {SAFETENSORS}, {PYTORCH} or a sharded index "
        f"(found: {sorted(p.name for p in folder.iterdir())})"
    )


def adapt_keys(state: dict[str, torch.Tensor], model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """Add or strip the ``deberta.`` prefix so checkpoint keys match the model's."""
    if not prefix:  # backbone: accept "deberta.embeddings..." and "embeddings..."
        return {(k[len("deberta."):] if k.startswith("deberta.") else k): v for k, v in state.items()}
    own = set(model.state_dict())
    out = {}
    for k, v in state.items():
        if k not in own and f"{prefix}.{k}" in own:
            k = f"{prefix}.{k}"
        out[k] = v
    return out


def load_into(model: DebertaPreTrainedModel, state: dict[str, torch.Tensor], source: str) -> tuple[list, list]:
    """Copy matching tensors into ``model``; shape mismatches are errors, the rest is reported in one line."""
    state = adapt_keys(state, model, model.base_model_prefix)
    for k in getattr(model, "tied_keys", ()):
        state.pop(k, None)
    own = model.state_dict()
    for k, v in state.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{source}: shape mismatch for {k}: checkpoint has {tuple(v.shape)}, model expects "
                f"{tuple(own[k].shape)} (does config.json match the weights?)"
            )
    usable = {k: v for k, v in state.items() if k in own}
    missing = sorted(set(own) - set(usable))
    unused = sorted(set(state) - set(usable))
    model.load_state_dict(usable, strict=False)
    logger.info(
        "loaded %s from %s: %d tensors; missing (freshly initialised): %s; unused: %s",
        type(model).__name__, source, len(usable), _summarise(missing), _summarise(unused),
    )
    return missing, unused


def _summarise(keys: Iterable[str], limit: int = 8) -> str:
    keys = list(keys)
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} [{shown}{', ...' if len(keys) > limit else ''}]"


def load_pretrained(
    cls: type[DebertaPreTrainedModel],
    name_or_path: str | os.PathLike,
    config: DebertaConfig | None = None,
    torch_dtype: torch.dtype | None = None,
    **config_overrides: Any,
) -> DebertaPreTrainedModel:
    folder = resolve_model_dir(name_or_path)
    config_path = Path(folder) / "config.json"
    if config is None:
        if not config_path.exists():
            raise CheckpointError(f"{folder} has no config.json")
        config = DebertaConfig.from_json_file(config_path)
    if config_overrides:
        config = config.replace(**config_overrides)
    state, files = load_state_dict(folder)
    model = cls(config)
    model.loading_info = dict(zip(("missing", "unused"), load_into(model, state, str(folder)), strict=True))
    if torch_dtype is not None:
        model.to(torch_dtype)
    return model.eval()


# --------------------------------------------------------------------------- writing
def save_pretrained(model: DebertaPreTrainedModel, folder: str | os.PathLike, safe_serialization: bool = True) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    if model.hf_architecture:
        config["architectures"] = [model.hf_architecture]
    else:
        config.pop("architectures", None)
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if safe_serialization:
        from safetensors.torch import save_file

        atomic_save(folder / SAFETENSORS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        (folder / PYTORCH).unlink(missing_ok=True)
    else:
        atomic_torch_save(state, folder / PYTORCH)
        (folder / SAFETENSORS).unlink(missing_ok=True)
