"""Which head a checkpoint was saved with, and loading it as that class (``mdeberta convert``, minimal pairs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mdeberta.config import DebertaConfig
from mdeberta.model import heads
from mdeberta.model.deberta import DebertaModel

HEADS: dict[str, type] = {
    "base": DebertaModel,
    "mlm": heads.DebertaForMaskedLM,
    "rtd": heads.DebertaForReplacedTokenDetection,
    "sequence-classification": heads.DebertaForSequenceClassification,
    "token-classification": heads.DebertaForTokenClassification,
    "question-answering": heads.DebertaForQuestionAnswering,
    "multiple-choice": heads.DebertaForMultipleChoice,
}
_BY_ARCHITECTURE = {cls.hf_architecture: cls for cls in HEADS.values() if cls.hf_architecture}


def head_name(cls: type) -> str:
    return next(name for name, c in HEADS.items() if c is cls)


def config_head(config: DebertaConfig) -> str | None:
    """The head named by a config's "architectures" (what ``save_pretrained`` writes), or None."""
    for arch in config.extra.get("architectures") or []:
        if arch in _BY_ARCHITECTURE:
            return head_name(_BY_ARCHITECTURE[arch])
    return None


def detect_head(config: DebertaConfig, keys: set[str]) -> type:
    """The model class a checkpoint was saved from: config "architectures" first, then its head keys."""
    for arch in config.extra.get("architectures") or []:
        if arch in _BY_ARCHITECTURE:
            return _BY_ARCHITECTURE[arch]
    probes = [("classifier.weight", None), ("qa_outputs.weight", heads.DebertaForQuestionAnswering),
              ("mask_predictions.classifier.weight", heads.DebertaForReplacedTokenDetection),
              ("lm_predictions.lm_head.bias", heads.DebertaForMaskedLM),
              ("cls.predictions.bias", heads.DebertaForMaskedLM)]
    for key, cls in probes:
        if key in keys:
            if cls is None:  # sequence vs token classification: the pooler tells
                return heads.DebertaForSequenceClassification if "pooler.dense.weight" in keys else (
                    heads.DebertaForTokenClassification)
            return cls
    return DebertaModel


def load_detected(name_or_path: str | os.PathLike) -> Any:
    """The checkpoint as the class it was saved from (its head detected), in eval mode."""
    from mdeberta.checkpoint import load_state_dict
    from mdeberta.hub import resolve_model_dir

    folder = resolve_model_dir(name_or_path)
    config = DebertaConfig.from_json_file(Path(folder) / "config.json")
    state, _ = load_state_dict(folder)
    cls = detect_head(config, set(state))
    overrides = {"legacy": False} if cls is heads.DebertaForMaskedLM and any(
        k.startswith("lm_predictions.") for k in state) else {}
    return cls.from_pretrained(folder, **overrides).eval()
