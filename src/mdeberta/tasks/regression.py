"""Regression: one number per text or text pair (STS-B similarity, ratings); one output, mean squared error;
Pearson and Spearman correlation (GLUE reports both for STS-B). Same files and columns as text classification."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mdeberta.errors import UsageError
from mdeberta.tasks.text_classification import TextClassificationTask, TextDataError, TextExample


class RegressionTask(TextClassificationTask):
    name = "regression"
    metrics = ("pearson", "spearman")

    def __init__(self, options: Any, tokenizer: Any) -> None:
        if options.multi_label or options.class_weights not in (None, "", "none"):
            raise UsageError("--task regression takes neither --multi-label nor --class-weights")
        super().__init__(options, tokenizer)

    def fit_labels(self, train: Sequence[TextExample]) -> None:
        if not train:
            raise TextDataError("--train-file: no training examples")
        missing = next((ex for ex in train if ex.label is None), None)
        if missing is not None:
            raise TextDataError(f"{missing.where}: a training example without a target")
        if len({ex.label for ex in train}) < 2:
            raise TextDataError(f"every training target is {train[0].label}: nothing to learn")
        self.labels, self.weights = ["value"], None

    def check_labels(self, examples: Sequence[TextExample]) -> None:
        """Targets are checked to be numbers when read."""

    def label_info(self) -> dict[str, Any]:
        return {"targets": "regression"}

    def target(self, label: Any) -> Any:
        return label

    def model_labels(self) -> dict[str, Any]:
        return {"num_labels": 1, "id2label": {0: "value"}, "label2id": {"value": 0}, "problem_type": "regression"}

    @classmethod
    def for_model(cls, config: Any, tokenizer: Any, options: Any) -> RegressionTask:
        task = cls(options, tokenizer)
        task.labels = ["value"]
        return task

    def probabilities(self, model: Any, examples: Sequence[TextExample], batch_size: int = 64,
                      features: Sequence[dict[str, Any]] | None = None) -> torch.Tensor:
        """(N, 1) predicted values (the head's output as is)."""
        from mdeberta.tasks.base import run_batches
        from mdeberta.tasks.text_classification import collate, encode_texts

        if features is None:
            features = encode_texts(self.tokenizer, examples, self.options.max_seq_length)
        out = torch.empty((len(features), 1))
        for idx, result in run_batches(model, features, collate, batch_size, self.tokenizer.pad_token_id):
            out[torch.tensor(idx)] = result.logits.float().cpu()
        return out

    def predict(self, model: Any, examples: Sequence[TextExample], batch_size: int = 64,
                features: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        return [{"value": v} for v in self.probabilities(model, examples, batch_size, features)[:, 0].tolist()]

    def score(self, examples: Sequence[TextExample], predictions: Sequence[dict[str, Any]]) -> dict[str, float]:
        from mdeberta.tasks.metrics import regression_scores

        missing = next((ex for ex in examples if ex.label is None), None)
        if missing is not None:
            raise TextDataError(f"{missing.where}: no target to score against")
        return regression_scores([ex.label for ex in examples], [p["value"] for p in predictions])

    def record(self, example: TextExample, prediction: dict[str, Any]) -> dict[str, Any]:
        return {"language": example.language, "index": example.index, "source": example.where,
                "text": example.text, **({"text_pair": example.text_pair} if example.text_pair is not None else {}),
                "gold": example.label, "predicted": round(prediction["value"], 6)}


__all__ = ["RegressionTask"]
