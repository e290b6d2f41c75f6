"""Extractive question answering: SQuAD / XQuAD / MLQA JSON, JSON lines or hub; windows over long contexts; dev
exact match and F1 (SQuAD v1.1's answer normalisation)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mdeberta.data.nli import collate
from mdeberta.tasks.base import Task, run_batches

logger = logging.getLogger("mdeberta.finetune")


def collate_windows(features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    batch = collate([{"input_ids": f["input_ids"], "token_type_ids": [0] * len(f["input_ids"]), "label": None}
                     for f in features], pad_token_id)
    for key in ("start_positions", "end_positions"):
        if key in features[0]:
            batch[key] = torch.tensor([f[key] for f in features])
    return batch


@torch.no_grad()
def answer_questions(model: Any, tokenizer: Any, examples: list, encoded: list, batch_size: int = 64,
                     max_answer_length: int = 30) -> list[dict[str, Any]]:
    """The best answer span per question over its windows (``mdeberta.data.qa.decode_answers``)."""
    from mdeberta.data.qa import decode_answers

    starts: list = [None] * len(encoded)
    ends: list = [None] * len(encoded)
    features = [{"input_ids": f.input_ids} for f in encoded]
    for idx, out in run_batches(model, features, collate_windows, batch_size, tokenizer.pad_token_id):
        for k, (s_row, e_row) in zip(idx, zip(out.start_logits.float().tolist(), out.end_logits.float().tolist())):
            n = len(encoded[k].input_ids)
            starts[k], ends[k] = s_row[:n], e_row[:n]
    return decode_answers(examples, encoded, starts, ends, max_answer_length=max_answer_length)


class QuestionAnsweringTask(Task):
    """Extractive QA; dev exact match and F1."""

    name, head, metrics = "question-answering", "question-answering", ("f1", "exact_match")
    collate = staticmethod(collate_windows)

    def read(self, source: str | Path, split: str, language: str | None = None) -> list:
        from mdeberta.data.qa import load_qa

        return load_qa(source, split, language)

    def encode(self, examples: Sequence[Any], train: bool = False) -> list[dict[str, Any]]:
        from mdeberta.data.qa import encode_qa

        features = encode_qa(self.tokenizer, examples, self.options.max_seq_length, self.options.doc_stride,
                             train=train)
        if not train:
            return [{"input_ids": f.input_ids} for f in features]
        return [{"input_ids": f.input_ids, "token_type_ids": [0] * len(f.input_ids),
                 "start_positions": f.start_position, "end_positions": f.end_position} for f in features]

    def load_training(self, train_files: Sequence[str], dev_files: Sequence[str] | None) -> None:
        o = self.options
        train = [e for f in train_files for e in self.read(f, "train")][:o.max_train_examples]
        self.dev = [e for f in dev_files or [] for e in self.read(f, "validation")][:o.max_dev_examples]
        from mdeberta.data.qa import encode_qa

        self.train_features = self.encode(train, train=True)
        self.dev_encoded = encode_qa(self.tokenizer, self.dev, o.max_seq_length, o.doc_stride)
        self.dev_features = [{"input_ids": f.input_ids} for f in self.dev_encoded]
        logger.info("train: %d questions in %d windows (%d without the answer); dev: %d questions", len(train),
                    len(self.train_features), sum(f["start_positions"] == 0 for f in self.train_features),
                    len(self.dev))
        self.info = {"train_file": [str(f) for f in train_files], "train_examples": len(train),
                     "doc_stride": o.doc_stride, "max_answer_length": o.max_answer_length}

    def model_labels(self) -> dict[str, Any]:
        return {"num_labels": 2}

    def predict(self, model: Any, examples: Sequence[Any], batch_size: int = 64) -> list[dict[str, Any]]:
        from mdeberta.data.qa import encode_qa

        encoded = encode_qa(self.tokenizer, examples, self.options.max_seq_length, self.options.doc_stride)
        return answer_questions(model, self.tokenizer, list(examples), encoded, batch_size,
                                self.options.max_answer_length)

    def predict_dev(self, model: Any, batch_size: int) -> list[dict[str, Any]]:
        return answer_questions(model, self.tokenizer, self.dev, self.dev_encoded, batch_size,
                                self.options.max_answer_length)

    def score(self, examples: Sequence[Any], predictions: Sequence[dict[str, Any]],
              language: str | None = None) -> dict[str, float]:
        from mdeberta.data.qa import qa_scores

        scores = qa_scores(examples, [a["text"] for a in predictions], language)
        return {"f1": scores["f1"], "exact_match": scores["exact_match"]}

    def record(self, example: Any, prediction: dict[str, Any]) -> dict[str, Any]:
        return {"language": example.language, "id": example.id, "question": example.question,
                "gold": [g["text"] for g in example.answers], "predicted": prediction["text"],
                "start": prediction["start"], "end": prediction["end"]}


__all__ = ["QuestionAnsweringTask", "answer_questions", "collate_windows"]
