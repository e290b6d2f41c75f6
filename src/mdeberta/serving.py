"""Serving on CPUs: ONNX export with a parity check, ONNX Runtime inference, dynamic int8 quantization.

transformers 5 no longer exports ONNX, and optimum's DeBERTa-v3 export is broken (its XSoftmax symbolic). Our
model exports as it is: the graph is traced with the reference attention backend (MatMul, GatherElements,
Softmax), and while tracing the relative-position table is computed from the traced length
(``traced_relative_position_slots``) instead of the per-length cache, so batch size and sequence length stay
dynamic, beyond 512 too. Every head is supported; models over 2 GB are written with external data files.

An exported folder holds ``model.onnx`` (and ``model_int8.onnx`` with ``--int8``), ``config.json``, the tokenizer
files and ``onnx_export.json`` (head, inputs, outputs, opset, the parity check's numbers). It is written to a
temporary folder and renamed into place only after ONNX Runtime reproduced PyTorch on random padded inputs, so a
failed export never leaves a folder behind. :class:`OnnxModel` runs it with the interface the inference code
uses (``model(input_ids=..., attention_mask=...).logits``, ``.config``), so ``load_classifier``,
``ZeroShotClassifier``, ``mdeberta predict`` and ``mdeberta zero-shot`` take an exported folder like a PyTorch one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mdeberta.checkpoint import load_state_dict
from mdeberta.config import DebertaConfig
from mdeberta.errors import CheckpointError
from mdeberta.files import atomic_write_text
from mdeberta.hub import resolve_model_dir
from mdeberta.onnx_model import (  # noqa: F401  (OnnxModel, is_onnx_folder: re-exported for older code)
    EXPORT_INFO,
    INT8_FILE,
    ONNX_FILE,
    ExportError,
    OnnxModel,
    _require_onnx,
    is_onnx_folder,
)

logger = logging.getLogger("mdeberta.serving")

TOKENIZER_FILES = ("spm.model", "tokenizer_config.json", "special_tokens_map.json")
# Output names per head (the exported graph returns them in this order).
HEAD_OUTPUTS = {
    "base": ("last_hidden_state",),
    "mlm": ("logits",),
    "sequence-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
    "multiple-choice": ("logits",),
}
UNSUPPORTED_HEADS = {"rtd": "the replaced-token-detection head is for pretraining; export the backbone "
                            "(--head base) or a fine-tuned model"}


# --------------------------------------------------------------------------- export
class _Exportable(torch.nn.Module):
    """The model with tensor inputs and a tuple of tensor outputs, what the tracer needs."""

    def __init__(self, model: torch.nn.Module, head: str) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return tuple(getattr(out, name) for name in HEAD_OUTPUTS[self.head])


def load_for_export(src: str | os.PathLike, head: str = "auto") -> tuple[torch.nn.Module, str, Path]:
    """(model in eval mode, head name, source folder) for any checkpoint ``mdeberta convert`` reads."""
    from mdeberta.model import DebertaForMaskedLM
    from mdeberta.model.auto import HEADS, detect_head, head_name

    try:
        folder = Path(resolve_model_dir(src))
    except Exception as e:
        raise ExportError(f"{src}: not a model folder or hub id ({e})") from e
    if not (folder / "config.json").is_file():
        raise ExportError(f"{src}: no config.json, not a model folder")
    config = DebertaConfig.from_json_file(folder / "config.json")
    try:
        state, _ = load_state_dict(folder)
    except CheckpointError as e:
        raise ExportError(f"{src}: {e}") from e
    if head == "auto":
        cls = detect_head(config, set(state))
        head = head_name(cls)
    if head in UNSUPPORTED_HEADS:
        raise ExportError(f"{src}: head {head!r} cannot be exported: {UNSUPPORTED_HEADS[head]}")
    if head not in HEAD_OUTPUTS:
        raise ExportError(f"unknown head {head!r}; allowed: auto, {', '.join(HEAD_OUTPUTS)}")
    cls = HEADS[head]
    if cls is DebertaForMaskedLM and any(k.startswith("lm_predictions.") for k in state):
        config = config.replace(legacy=False)
    from mdeberta.checkpoint import load_into

    model = cls(config)
    load_into(model, state, str(folder))
    return model.eval(), head, folder


def _random_inputs(config: DebertaConfig, head: str, batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 2, length) if head == "multiple-choice" else (batch, length)
    ids = torch.randint(4, max(5, min(config.vocab_size, 30000)), shape, generator=g)
    mask = torch.ones_like(ids)
    if batch > 1:  # padded rows, as real batches have
        mask[1, ..., max(1, length // 2):] = 0
        ids[1, ..., max(1, length // 2):] = config.pad_token_id
    return {"input_ids": ids, "attention_mask": mask}


def parity_check(model: torch.nn.Module, head: str, session: Any, lengths: Sequence[int] = (7, 64, 300, 600),
                 batch: int = 3) -> float:
    """Max |ONNX Runtime - PyTorch| over every output on random padded batches of several lengths."""
    worst = 0.0
    for i, length in enumerate(lengths):
        inputs = _random_inputs(model.config, head, batch, length, seed=i)
        with torch.no_grad():
            expected = _Exportable(model, head)(**inputs)
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        for want, have in zip(expected, got):  # padded positions too: both follow the reference there
            worst = max(worst, float((torch.from_numpy(have) - want.float()).abs().max()))
    return worst


@dataclass
class ExportReport:
    folder: Path
    head: str
    max_abs_diff: float
    seconds: float
    int8: dict[str, Any] | None = None


def export_onnx(src: str | os.PathLike, dst: str | os.PathLike, head: str = "auto", opset: int = 17,
                tolerance: float = 1e-4, int8: bool = False, check_file: str | os.PathLike | None = None,
                check_examples: int = 500, max_length: int = 256, require_tokenizer: bool = True,
                overwrite: bool = False) -> ExportReport:
    """Export ``src`` to the ONNX folder ``dst`` (see the module docstring); raises :class:`ExportError`.
    ``require_tokenizer=False`` allows a folder without tokenizer files (speed measurements only). An existing
    ``dst`` is replaced only with ``overwrite`` (renamed aside, deleted after the new folder is in place); ``dst``
    may never be, contain or sit inside ``src``."""
    from mdeberta.outputs import OutputPathError, check_output_folder, replace_folder, user_file_mode

    onnx, ort = _require_onnx()
    start = time.perf_counter()
    if opset < 17:
        raise ExportError(f"--opset {opset}: at least 17 (LayerNormalization)")
    dst = Path(dst)
    try:
        check_output_folder(dst, [src], overwrite=overwrite, flag="export-onnx DST")
    except OutputPathError as e:
        raise ExportError(str(e)) from None
    model, head, folder = load_for_export(src, head)
    missing = [name for name in TOKENIZER_FILES if not (folder / name).is_file()]
    if "spm.model" in missing and require_tokenizer:
        raise ExportError(f"{folder} has no tokenizer (missing {missing}): the exported folder must be "
                          "self-contained; save the tokenizer next to the model first")
    if check_file is not None and head in ("base", "mlm"):
        raise ExportError(f"--check-file scores a task's file: a {head} model has no task (export a fine-tuned one)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    os.chmod(tmp, user_file_mode(directory=True))  # mkdtemp makes 0700
    try:
        model.set_attention_backend("reference")
        example = _random_inputs(model.config, head, 2, 16, seed=0)
        dims = {0: "batch", 1: "choices", 2: "sequence"} if head == "multiple-choice" else {0: "batch", 1: "sequence"}
        outputs = HEAD_OUTPUTS[head]
        out_dims = {name: ({0: "batch"} if head in ("sequence-classification", "multiple-choice")
                           else {0: "batch", 1: "sequence"}) for name in outputs}
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(_Exportable(model, head).eval(), (example["input_ids"], example["attention_mask"]),
                              str(tmp / ONNX_FILE), input_names=["input_ids", "attention_mask"],
                              output_names=list(outputs), dynamic_axes={"input_ids": dims, "attention_mask": dims,
                                                                        **out_dims},
                              opset_version=opset, dynamo=False)
        model.set_attention_backend("auto")  # the check compares with what PyTorch users run
        onnx.checker.check_model(str(tmp / ONNX_FILE))
        session = ort.InferenceSession(str(tmp / ONNX_FILE), providers=["CPUExecutionProvider"])
        worst = parity_check(model, head, session)
        if not worst <= tolerance:
            raise ExportError(f"ONNX Runtime differs from PyTorch by {worst:.3g} (> {tolerance:g}) on random padded "
                              "inputs; nothing was written")
        model.config.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, tmp / name)
        info: dict[str, Any] = {"format": "mdeberta-onnx-v1", "head": head, "opset": opset, "file": ONNX_FILE,
                                "inputs": ["input_ids", "attention_mask"], "outputs": list(outputs),
                                "source": str(src), "max_abs_diff": worst, "tolerance": tolerance}
        atomic_write_text(tmp / EXPORT_INFO, json.dumps(info, indent=2) + "\n")
        int8_report = None
        if int8:
            int8_report = quantize_int8(tmp, head, check_file, check_examples, max_length)
            info["int8"] = {"file": INT8_FILE, **int8_report}
            atomic_write_text(tmp / EXPORT_INFO, json.dumps(info, indent=2) + "\n")
        replace_folder(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportReport(dst, head, worst, time.perf_counter() - start, int8_report)


def quantize_int8(folder: Path, head: str, check_file: str | os.PathLike | None = None,
                  check_examples: int = 500, max_length: int = 256) -> dict[str, Any]:
    """Dynamic int8 quantization of the linear layers (MatMul / Gemm weights); with a ``check_file`` of the
    model's task (NLI pairs, labelled texts, tagged sentences, ...), the agreement of the int8 predictions with
    fp32 and both scores on its first ``check_examples`` examples."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # onnxruntime logs one INFO line per tensor on the root logger
    try:
        quantize_dynamic(str(folder / ONNX_FILE), str(folder / INT8_FILE), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)
    report: dict[str, Any] = {"weight_type": "int8", "ops": ["MatMul", "Gemm"]}
    if check_file is None:
        return report
    from mdeberta.tasks import TaskOptions, task_for_model
    from mdeberta.tokenizer import DebertaTokenizer

    tokenizer = DebertaTokenizer.from_pretrained(folder)
    models = {name: OnnxModel(folder, file=name) for name in (ONNX_FILE, INT8_FILE)}
    task = task_for_model(models[ONNX_FILE].config, tokenizer, TaskOptions(max_seq_length=max_length), head)
    examples = task.read(check_file, "validation")[:check_examples]
    preds = {name: task.predict(model, examples) for name, model in models.items()}
    scores = {name: task.score(examples, p)[task.metric] for name, p in preds.items()}
    report.update(check_file=str(check_file), examples=len(examples), task=task.name, metric=task.metric,
                  **{f"{task.metric}_fp32": scores[ONNX_FILE], f"{task.metric}_int8": scores[INT8_FILE],
                     f"{task.metric}_difference": scores[INT8_FILE] - scores[ONNX_FILE]})
    if task.name != "regression":  # the same predicted label / tags / span
        same = [_decision(a) == _decision(b) for a, b in zip(preds[ONNX_FILE], preds[INT8_FILE])]
        report["argmax_agreement"] = 100.0 * sum(same) / max(1, len(same))
    return report


def _decision(prediction: Any) -> Any:
    return prediction.get("label", prediction.get("text")) if isinstance(prediction, dict) else prediction


__all__ = ["ExportError", "ExportReport", "OnnxModel", "export_onnx", "is_onnx_folder", "parity_check",
           "quantize_int8"]
