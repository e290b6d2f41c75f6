"""Multiple choice: a context and N candidate endings, one correct (SWAG, COPA / XCOPA, HellaSwag-style files);
each (context, ending) pair is encoded, the head scores every ending, softmax over them; accuracy.

Layouts (TSV / CSV / JSON lines / hub, found by column names):

* generic: ``context`` and ``endings`` (a JSON list, or columns ``ending0``, ``ending1``, ...), ``label`` = the
  index of the correct ending;
* SWAG: ``sent1`` (context), ``sent2`` (the start of every ending), ``ending0``..``ending3``, ``label``;
* COPA / XCOPA: ``premise``, ``question`` (cause / effect), ``choice1``, ``choice2``, ``label`` (0 or 1); the
  question becomes "What was the cause?" / "What happened as a result?" after the premise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mdeberta.data.records import Row, read_table
from mdeberta.tasks.base import Task, run_batches
from mdeberta.tasks.text_classification import TextDataError

COPA_QUESTIONS = {"cause": "What was the cause?", "effect": "What happened as a result?"}


@dataclass
class ChoiceExample:
    context: str
    endings: list[str]
    label: int | None
    where: str = ""
    language: str | None = None
    index: int = 0


def _numbered(values: dict[str, Any], prefix: str, start: int) -> list[str] | None:
    keys = sorted((k for k in values if re.fullmatch(rf"{prefix}\d+", k)), key=lambda k: int(k[len(prefix):]))
    if not keys or int(keys[0][len(prefix):]) != start:
        return None
    return [values[k] for k in keys]


def parse_choice_row(row: Row, columns: list[str]) -> tuple[str, list[str], Any]:
    """(context, endings, raw label) of one row in any of the layouts above."""
    v = row.values
    if "premise" in v and "choice1" in v:
        question = str(v.get("question", "")).strip().lower()
        if question and question not in COPA_QUESTIONS:
            raise TextDataError(f"{row.where}: COPA question {question!r}; allowed: {list(COPA_QUESTIONS)}")
        context = f"{v['premise']} {COPA_QUESTIONS[question]}" if question else v["premise"]
        return context, _numbered(v, "choice", 1) or [], v.get("label")
    if "sent1" in v:
        endings = _numbered(v, "ending", 0) or []
        prefix = str(v.get("sent2", "")).strip()
        return v["sent1"], [f"{prefix} {e}".strip() for e in endings], v.get("label")
    if "context" in v:
        endings = v.get("endings")
        if isinstance(endings, str):
            try:
                endings = json.loads(endings)
            except json.JSONDecodeError:
                raise TextDataError(f"{row.where}: 'endings' is not a JSON list") from None
        return v["context"], endings if endings is not None else (_numbered(v, "ending", 0) or []), v.get("label")
    raise TextDataError(f"{row.where}: no multiple-choice layout in the columns {columns} (context + endings / "
                        "ending0.., sent1 + ending0.. (SWAG), or premise + choice1.. (COPA))")


def read_choices(source: str | Path, split: str, language: str | None = None) -> list[ChoiceExample]:
    table = read_table(source, split)
    examples = []
    for row in table.rows:
        context, endings, label = parse_choice_row(row, table.columns)
        if not isinstance(context, str) or not context.strip():
            raise TextDataError(f"{row.where}: empty context")
        if not isinstance(endings, list) or len(endings) < 2 or any(
                not isinstance(e, str) or not e.strip() for e in endings):
            raise TextDataError(f"{row.where}: needs two or more non-empty endings, got {str(endings)[:80]}")
        if label in ("", None, -1, "-1"):
            label_id = None
        else:
            try:
                label_id = int(label)
            except (TypeError, ValueError):
                raise TextDataError(f"{row.where}: label {label!r} is not the index of an ending") from None
            if not 0 <= label_id < len(endings):
                raise TextDataError(f"{row.where}: label {label_id} but only {len(endings)} endings (0-based)")
        examples.append(ChoiceExample(context, endings, label_id, row.where, language, len(examples)))
    if examples and len({len(e.endings) for e in examples}) > 1:
        odd = next(e for e in examples if len(e.endings) != len(examples[0].endings))
        raise TextDataError(f"{odd.where}: {len(odd.endings)} endings, but {examples[0].where} has "
                            f"{len(examples[0].endings)}: every example of a file needs the same number")
    return examples


def collate_choices(features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """(B, choices, longest) ids / types / mask; labels (B,) when every feature has one."""
    choices = len(features[0]["input_ids"])
    width = max(len(ids) for f in features for ids in f["input_ids"])
    shape = (len(features), choices, width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    token_type_ids, attention_mask = torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
    for i, f in enumerate(features):
        for c, (ids, types) in enumerate(zip(f["input_ids"], f["token_type_ids"])):
            input_ids[i, c, :len(ids)] = torch.tensor(ids)
            token_type_ids[i, c, :len(ids)] = torch.tensor(types)
            attention_mask[i, c, :len(ids)] = 1
    batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
    if all(f.get("label") is not None for f in features):
        batch["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.long)
    return batch


class MultipleChoiceTask(Task):
    name, head, metrics = "multiple-choice", "multiple-choice", ("accuracy",)
    collate = staticmethod(collate_choices)

    def read(self, source: str | Path, split: str, language: str | None = None) -> list[ChoiceExample]:
        return read_choices(source, split, language)

    def fit_labels(self, train: Sequence[ChoiceExample]) -> None:
        unlabelled = next((ex for ex in train if ex.label is None), None)
        if unlabelled is not None:
            raise TextDataError(f"{unlabelled.where}: a training example without a label")

    def encode(self, examples: Sequence[ChoiceExample]) -> list[dict[str, Any]]:
        features = []
        for ex in examples:
            enc = self.tokenizer([ex.context] * len(ex.endings), ex.endings, truncation="longest_first",
                                 max_length=self.options.max_seq_length)
            features.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                             "label": ex.label})
        return features

    def load_training(self, train_files: Sequence[str], dev_files: Sequence[str] | None) -> None:
        super().load_training(train_files, dev_files)
        unlabelled = next((ex for ex in self.dev if ex.label is None), None)
        if unlabelled is not None:
            raise TextDataError(f"{unlabelled.where}: a dev example without a label")

    def predict_dev(self, model: Any, batch_size: int) -> list[dict[str, Any]]:
        return self.predict(model, self.dev, batch_size, self.dev_features)

    def predict(self, model: Any, examples: Sequence[ChoiceExample], batch_size: int = 64,
                features: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        features = [{**f, "label": None} for f in (features if features is not None else self.encode(examples))]
        out: list[Any] = [None] * len(features)
        for idx, result in run_batches(model, features, collate_choices, batch_size, self.tokenizer.pad_token_id):
            for i, row in zip(idx, result.logits.float().softmax(-1).tolist()):
                out[i] = {"label": max(range(len(row)), key=row.__getitem__), "scores": [round(p, 6) for p in row]}
        return out

    def score(self, examples: Sequence[ChoiceExample], predictions: Sequence[dict[str, Any]]) -> dict[str, float]:
        from mdeberta.tasks.metrics import accuracy

        return {"accuracy": accuracy([ex.label for ex in examples], [p["label"] for p in predictions])}

    def record(self, example: ChoiceExample, prediction: dict[str, Any]) -> dict[str, Any]:
        return {"language": example.language, "index": example.index, "source": example.where,
                "context": example.context, "endings": example.endings, "gold": example.label,
                "predicted": prediction["label"], "scores": prediction["scores"]}


__all__ = ["ChoiceExample", "MultipleChoiceTask", "collate_choices", "read_choices"]
