"""Finding a model: a local folder, or a Hugging Face hub snapshot (downloaded, or from the local cache when
offline). A leaf module (config, checkpoint and the tokenizer resolve names through it)."""

from __future__ import annotations

import os

from mdeberta.errors import CheckpointError

SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_INDEX = "pytorch_model.bin.index.json"
CONFIG_AND_TOKENIZER = ["config.json", "*.model", "tokenizer_config.json", "special_tokens_map.json"]


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


__all__ = ["CONFIG_AND_TOKENIZER", "resolve_model_dir"]
