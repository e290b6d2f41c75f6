"""An exported ONNX folder (``mdeberta export-onnx``) run by ONNX Runtime with the call interface of the PyTorch
models (``model(input_ids=..., attention_mask=...).logits``, ``.config``, ``.device``), so every task's
inference code takes it as it takes a PyTorch model. Loading only: the export is :mod:`mdeberta.serving`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mdeberta.config import DebertaConfig
from mdeberta.errors import MdebertaError

EXPORT_INFO = "onnx_export.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"


class ExportError(MdebertaError, RuntimeError):
    """The model cannot be exported, or ONNX Runtime does not reproduce it, or an exported folder cannot be run."""


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ExportError("ONNX export and inference need onnx and onnxruntime: pip install 'mdeberta[onnx]'") from e
    return onnx, onnxruntime


@dataclass
class OnnxOutput:
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None


def is_onnx_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / EXPORT_INFO).is_file()


class OnnxModel:
    """An exported folder run by ONNX Runtime, with the call interface of our PyTorch models."""

    training = False

    def __init__(self, folder: str | os.PathLike, file: str | None = None, threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",), memory_arena: bool = True) -> None:
        """``memory_arena=False`` makes ONNX Runtime return its working memory after every run (slower; what
        ``benchmarks/bench_model.py --serving`` uses to measure a run's peak memory, which the arena would hide)."""
        _, ort = _require_onnx()
        folder = Path(folder)
        if not is_onnx_folder(folder):
            raise ExportError(f"{folder}: not an exported ONNX folder (no {EXPORT_INFO}; `mdeberta export-onnx`)")
        self.info = json.loads((folder / EXPORT_INFO).read_text())
        self.folder, self.file = folder, file or self.info.get("file", ONNX_FILE)
        if not (folder / self.file).is_file():
            raise ExportError(f"{folder}: {self.file} is missing")
        self.config = DebertaConfig.from_json_file(folder / "config.json")
        self.head = self.info["head"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not memory_arena:
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = False
        self.session = ort.InferenceSession(str(folder / self.file), options, providers=list(providers))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        if mode:
            raise ExportError("an ONNX model is for inference; fine-tune the PyTorch checkpoint")
        return self

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> OnnxOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        feeds = {"input_ids": input_ids.to(torch.int64).cpu().numpy(),
                 "attention_mask": attention_mask.to(torch.int64).cpu().numpy()}
        values = self.session.run(None, feeds)
        return OnnxOutput(**{name: torch.from_numpy(v) for name, v in zip(self.info["outputs"], values)})


__all__ = ["EXPORT_INFO", "INT8_FILE", "ONNX_FILE", "ExportError", "OnnxModel", "OnnxOutput", "is_onnx_folder"]
