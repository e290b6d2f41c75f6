"""Token classification (NER and other word tagging): CoNLL / JSON lines / hub sentences, the label on each word's
first sub-token, entity-level F1 (seqeval semantics) on the dev set."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mdeberta.config import DebertaConfig
from mdeberta.data.nli import collate, collate_packed
from mdeberta.tasks.base import Task, run_batches

logger = logging.getLogger("mdeberta.finetune")


def _feature(feature: Any) -> dict[str, Any]:
    return {"input_ids": feature.input_ids, "token_type_ids": [0] * len(feature.input_ids), "labels": feature.labels}


def collate_tagged(features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    batch = collate([{**f, "label": None} for f in features], pad_token_id)
    width = batch["input_ids"].shape[1]
    if all(f.get("labels") is not None for f in features):
        batch["labels"] = torch.tensor([f["labels"] + [-100] * (width - len(f["labels"])) for f in features])
    return batch


def collate_tagged_packed(features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    batch = collate_packed([{**f, "label": None} for f in features], pad_token_id)
    batch["labels"] = torch.tensor([t for f in features for t in f["labels"]], dtype=torch.long)[None]
    return batch


@torch.no_grad()
def predict_tags(model: Any, tokenizer: Any, encoded: list, n_words: list[int], batch_size: int = 64) -> list:
    """Per sentence, the tag predicted for each word (at its first sub-token)."""
    from mdeberta.data.ner import word_predictions

    id2label = model.config.id2label
    features = [{"input_ids": f.input_ids, "token_type_ids": [0] * len(f.input_ids), "labels": None}
                for f in encoded]
    out: list = [None] * len(encoded)
    for idx, result in run_batches(model, features, collate_tagged, batch_size, tokenizer.pad_token_id):
        for row, i in zip(result.logits.argmax(-1).tolist(), idx):
            out[i] = word_predictions(encoded[i], row, id2label, n_words[i])
    return out


class TokenClassificationTask(Task):
    """NER and other word tagging; entity-level F1 (seqeval chunking) on the dev set."""

    name, head, metrics, packable = "token-classification", "token-classification", ("f1", "precision", "recall"), True
    collate = staticmethod(collate_tagged)
    collate_packed = staticmethod(collate_tagged_packed)

    def read(self, source: str | Path, split: str, language: str | None = None) -> list:
        from mdeberta.data.ner import load_tagged

        return load_tagged(source, split, language)

    def encode(self, examples: Sequence[Any]) -> list[dict[str, Any]]:
        return [_feature(f) for f in self._encoded(examples)]

    def predict_dev(self, model: Any, batch_size: int) -> list[list[str]]:
        return predict_tags(model, self.tokenizer, self.dev_encoded, [len(s.tokens) for s in self.dev], batch_size)

    def _encoded(self, examples: Sequence[Any]) -> list:
        from mdeberta.data.ner import encode_tagged

        return encode_tagged(self.tokenizer, examples, self.label2id, self.options.max_seq_length)

    def load_training(self, train_files: Sequence[str], dev_files: Sequence[str] | None) -> None:
        from mdeberta.data.ner import check_labels, label_list

        o = self.options
        train = [s for f in train_files for s in self.read(f, "train")][:o.max_train_examples]
        self.dev = [s for f in dev_files or [] for s in self.read(f, "validation")][:o.max_dev_examples]
        self.labels = self._labels(o.model, train, label_list)
        self.label2id = {t: i for i, t in enumerate(self.labels)}
        check_labels(train + self.dev, self.label2id)
        self.train_features = self.encode(train)
        self.dev_encoded = self._encoded(self.dev)
        self.dev_features = [_feature(f) for f in self.dev_encoded]
        logger.info("train: %d sentences, dev: %d; labels %s", len(train), len(self.dev), self.labels)
        self.info = {"train_file": [str(f) for f in train_files], "train_examples": len(train),
                     "labels": self.labels}

    @staticmethod
    def _labels(model: str | None, train: list, label_list: Any) -> list[str]:
        """The head's labels when the checkpoint has a token-classification head, else those of the data."""
        if model and Path(model).is_dir() and (Path(model) / "config.json").is_file():
            config = DebertaConfig.from_pretrained(model)
            if any("TokenClassification" in a for a in config.extra.get("architectures") or []):
                return [config.id2label[i] for i in range(config.num_labels)]
        return label_list(train)

    def model_labels(self) -> dict[str, Any]:
        return {"num_labels": len(self.labels), "id2label": dict(enumerate(self.labels)),
                "label2id": dict(self.label2id)}

    def predict(self, model: Any, examples: Sequence[Any], batch_size: int = 64) -> list[list[str]]:
        self.label2id = {v: k for k, v in model.config.id2label.items()}
        return predict_tags(model, self.tokenizer, self._encoded(examples), [len(s.tokens) for s in examples],
                            batch_size)

    def score(self, examples: Sequence[Any], predictions: Sequence[list[str]]) -> dict[str, float]:
        from mdeberta.data.ner import entity_scores

        scores = entity_scores([s.tags for s in examples], predictions)
        return {"f1": 100 * scores["f1"], "precision": 100 * scores["precision"], "recall": 100 * scores["recall"]}

    def record(self, example: Any, prediction: list[str]) -> dict[str, Any]:
        return {"language": example.language, "index": example.index, "source": example.where,
                "tokens": example.tokens, "gold": example.tags, "predicted": prediction}


__all__ = ["TokenClassificationTask", "collate_tagged", "predict_tags"]
