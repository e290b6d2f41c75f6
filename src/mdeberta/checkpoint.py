"""Checkpoint I/O in the Hugging Face layout: find a model (folder or hub id), read and write its weights.

Reading accepts model.safetensors, pytorch_model.bin (``torch.load(weights_only=True)``: no code runs from a
file) and sharded indexes of either; writing is atomic (a temp file renamed into place), so a crash never leaves
a half-written file where a good one was.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mdeberta.config import DebertaConfig
from mdeberta.errors import MdebertaError

if TYPE_CHECKING:
    from mdeberta.model.deberta import DebertaPreTrainedModel

logger = logging.getLogger("mdeberta")

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH = "pytorch_model.bin"
PYTORCH_INDEX = "pytorch_model.bin.index.json"
CONFIG_AND_TOKENIZER = ["config.json", "*.model", "tokenizer_config.json", "special_tokens_map.json"]


class CheckpointError(MdebertaError, RuntimeError):
    """A checkpoint cannot be read or does not fit the model; the message names the file or key."""


# --------------------------------------------------------------------------- atomic writes
class WriteError(MdebertaError, OSError):
    """Writing a file failed (disk full, permissions); the message names the path."""


def _write_failure(error: BaseException, path: Path) -> WriteError | None:
    """A clear error for a failed write, or None when ``error`` is not about the disk. torch.save reports a full disk
    as ``RuntimeError: ... inline_container.cc ... unexpected pos`` / ``file write failed``: told apart by the free
    space left on the device."""
    import errno
    import shutil

    code = getattr(error, "errno", None)
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return WriteError(code, f"no space left on the device of {path} while writing it ({error})")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(code, f"permission denied writing {path} ({error})")
    if isinstance(error, RuntimeError) and any(s in str(error) for s in ("unexpected pos", "write failed")):
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = 0
        if free < 64 * 2**20:
            return WriteError(errno.ENOSPC, f"no space left on the device of {path} while writing it "
                                            f"({free / 2**20:.1f} MiB free)")
    return None


def atomic_save(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Run ``write(temp_path)`` for a temp file beside ``path``, then rename it into place atomically.

    The file gets the mode ``open`` would give it under the user's umask (``mkstemp`` creates 0600, which others on
    a shared machine could not read); a full disk or a permission problem is a :class:`WriteError` naming ``path``.
    """
    from mdeberta.outputs import user_file_mode

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise (_write_failure(e, path) or e) from e
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, user_file_mode())  # after the write: some writers (safetensors) create the file anew
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        clear = _write_failure(e, path)
        if clear is not None:
            raise clear from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_save(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    atomic_save(path, lambda tmp: torch.save(obj, tmp))


# --------------------------------------------------------------------------- finding a model
def resolve_model_dir(name_or_path: str | os.PathLike, allow_patterns: list[str] | None = None) -> str:
    """A local folder for ``name_or_path``: the folder itself, or a hub snapshot (downloaded or cached).

    Only the files a model needs are fetched: config, tokenizer, and one weights format (safetensors if the
    repository has it, else pytorch_model.bin).
    """
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return name
    if os.path.exists(name):
        raise CheckpointError(f"{name} is a file; expected a model folder (config.json + weights) or a hub id")
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise CheckpointError(f"model folder {name} does not exist")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency
        raise CheckpointError(f"{name} is not a folder and huggingface_hub is not installed") from e

    def fetch(patterns: list[str]) -> str:
        try:
            return snapshot_download(repo_id=name, allow_patterns=patterns)
        except Exception as online_error:  # offline, unknown repo, network down: try the local cache
            try:
                return snapshot_download(repo_id=name, allow_patterns=patterns, local_files_only=True)
            except Exception:
                raise CheckpointError(
                    f"{name!r} is not a local folder, could not be fetched from the Hugging Face hub "
                    f"({type(online_error).__name__}: {str(online_error).splitlines()[0] if str(online_error) else ''})"
                    f" and is not in the local cache. Download it where there is internet "
                    f"(`hf download {name}`) or pass a local folder."
                ) from online_error

    if allow_patterns is not None:
        return fetch(allow_patterns)
    folder = fetch(CONFIG_AND_TOKENIZER + ["*.safetensors", SAFETENSORS_INDEX])
    if not any(f.endswith(".safetensors") for f in os.listdir(folder)):
        folder = fetch(CONFIG_AND_TOKENIZER + ["pytorch_model*.bin", PYTORCH_INDEX])
    return folder


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
