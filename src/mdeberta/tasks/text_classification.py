"""Text classification: one text or a text pair, any label set, single- or multi-label (sentiment, topic, intent,
paraphrase, GLUE's classification tasks); and regression (one number per text or pair: STS-B).

Data: TSV / CSV with a header, JSON lines, or a hub dataset ``NAME[:CONFIG]`` (``nyu-mll/glue:sst2``), read by
:mod:`mdeberta.data.records`. Columns are found by name (``--text-column``, ``--text-pair-column``,
``--label-column`` override): a pair layout (sentence1/sentence2, question1/question2, premise/hypothesis,
question/sentence, text/text_pair, text_a/text_b) when both are present, else the first of text, sentence,
content, review, document, question. The label set is ``--labels``, else the head's labels when the checkpoint
has a trained classifier, else the sorted labels of the training file; it is saved in ``config.json`` as
``id2label`` / ``label2id`` as transformers does.

Multi-label (``--multi-label``): a label cell is a JSON list or a comma-separated string (an empty cell: no
label); sigmoid outputs, binary cross-entropy, a label is predicted where its probability reaches
``--threshold``; micro / macro F1. ``--class-weights balanced`` weighs each class by n / (k x its count)
(multi-label: positive weight = negatives / positives per label), or give one weight per label.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mdeberta.config import DebertaConfig
from mdeberta.data.nli import collate, collate_packed
from mdeberta.data.records import RecordsError, Table, read_table
from mdeberta.errors import UsageError
from mdeberta.tasks.base import Task, run_batches

logger = logging.getLogger("mdeberta.finetune")

PAIR_LAYOUTS = (("sentence1", "sentence2"), ("question1", "question2"), ("premise", "hypothesis"),
                ("question", "sentence"), ("text", "text_pair"), ("text_a", "text_b"))
TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "question")
LABEL_COLUMNS = ("label", "labels", "category", "gold_label", "score", "target")
NO_LABEL = ("", None, -1, "-1")  # GLUE's test splits, unlabelled rows


class TextDataError(RecordsError):
    """A text-classification / regression file whose columns or labels do not fit the task."""


@dataclass
class TextExample:
    text: str
    text_pair: str | None
    label: Any  # label name (single-label), list of names (multi-label), float (regression), or None
    where: str = ""
    language: str | None = None
    index: int = 0


def read_text_examples(source: str | Path, split: str, task: str, text_column: str | None = None,
                       text_pair_column: str | None = None, label_column: str | None = None,
                       multi_label: bool = False, language: str | None = None) -> list[TextExample]:
    """The examples of one file / hub split; errors name the file, the line and the columns it has."""
    table = read_table(source, split)
    text_key, pair_key = _text_columns(table, text_column, text_pair_column)
    label_key = table.column(label_column, LABEL_COLUMNS, "label", "--label-column")
    names = table.class_names.get(label_key or "")
    examples = []
    for row in table.rows:
        text = _text(row.values.get(text_key), text_key, row.where)
        pair = _text(row.values.get(pair_key), pair_key, row.where) if pair_key else None
        value = row.values.get(label_key) if label_key else None
        if task == "regression":
            label = _number(value, label_key, row.where)
        elif multi_label:
            label = _label_list(value, names, row.where)
        else:
            label = None if value in NO_LABEL else _label_name(value, names, row.where)
        examples.append(TextExample(text, pair, label, row.where, language, len(examples)))
    if not examples:
        raise TextDataError(f"{source}: no rows")
    logger.info("%s: %d examples (text %r%s, label %r)", source, len(examples), text_key,
                f", pair {pair_key!r}" if pair_key else "", label_key)
    return examples


def _text_columns(table: Table, text_column: str | None, pair_column: str | None) -> tuple[str, str | None]:
    if text_column is None and pair_column is None:
        for a, b in PAIR_LAYOUTS:
            if a in table.columns and b in table.columns:
                return a, b
    text = table.column(text_column, TEXT_COLUMNS, "text", "--text-column")
    if text is None:
        raise TextDataError(f"{table.source}: no text column (looked for {list(TEXT_COLUMNS)}; it has "
                            f"{table.columns}); name it with --text-column")
    return text, table.column(pair_column, (), "text pair", "--text-pair-column")


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TextDataError(f"{where}: column {key!r} is {'empty' if value in ('', None) else repr(value)[:60]}; "
                            "every row needs a text")
    return value


def _number(value: Any, key: str | None, where: str) -> float | None:
    if key is None or value in ("", None):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TextDataError(f"{where}: regression target {key!r} is {str(value)[:40]!r}, not a number") from None
    if not math.isfinite(number):
        raise TextDataError(f"{where}: regression target {key!r} is {value!r}")
    return number


def _label_name(value: Any, names: list[str] | None, where: str) -> str:
    if names is not None and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(names):
            raise TextDataError(f"{where}: label id {value} outside the dataset's {len(names)} classes {names}")
        return names[value]
    if isinstance(value, (list, dict)):
        raise TextDataError(f"{where}: label {json.dumps(value)[:60]} is a list; pass --multi-label for several "
                            "labels per example")
    return str(value).strip()


def _label_list(value: Any, names: list[str] | None, where: str) -> list[str]:
    if value in ("", None):
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise TextDataError(f"{where}: label cell {text[:60]!r} is not a JSON list") from None
        else:
            value = [s for s in (p.strip() for p in text.split(",")) if s]
    if not isinstance(value, list):
        value = [value]
    return sorted({_label_name(v, names, where) for v in value})


def input_form(examples: Sequence[TextExample]) -> str:
    """"pair" or "single" for the whole set; a mix is an error naming the first odd row."""
    if not examples:
        return "single"
    paired = examples[0].text_pair is not None
    odd = next((ex for ex in examples if (ex.text_pair is not None) != paired), None)
    if odd is not None:
        raise TextDataError(f"{odd.where}: a {'single text' if paired else 'text pair'} among "
                            f"{'pairs' if paired else 'single texts'}")
    return "pair" if paired else "single"


def sorted_labels(values: set[str]) -> list[str]:
    """Numbers in numeric order (0, 1, 2, 10), else alphabetical."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def encode_texts(tokenizer: Any, examples: Sequence[TextExample], max_length: int) -> list[dict[str, Any]]:
    """Token ids per example (pairs truncated longest-first); ``label`` left for the task to fill in."""
    if not examples:
        return []
    paired = examples[0].text_pair is not None
    features = []
    for start in range(0, len(examples), 256):
        part = examples[start:start + 256]
        enc = tokenizer([e.text for e in part], [e.text_pair for e in part] if paired else None,
                        truncation="longest_first", max_length=max_length)
        features += [{"input_ids": ids, "token_type_ids": types, "label": None}
                     for ids, types in zip(enc["input_ids"], enc["token_type_ids"])]
    return features


class TextClassificationTask(Task):
    """One text or a pair -> one label (softmax) or any subset of the labels (``--multi-label``, sigmoid)."""

    name, head, packable = "text-classification", "sequence-classification", True
    metrics = ("accuracy", "macro_f1", "mcc", "micro_f1")

    def __init__(self, options: Any, tokenizer: Any) -> None:
        if options.multi_label and options.metric is None:
            options.metric = "micro_f1"
        super().__init__(options, tokenizer)
        if options.multi_label and self.metric in ("accuracy", "mcc"):
            raise UsageError(f"--metric {self.metric}: multi-label scores are micro_f1 / macro_f1")
        if not 0 < options.threshold < 1:
            raise UsageError(f"--threshold {options.threshold}: must be in (0, 1)")
        self.labels: list[str] = list(options.labels or [])
        self.weights: torch.Tensor | None = None

    @property
    def multi_label(self) -> bool:
        return self.options.multi_label

    # ------------------------------------------------------------------ data
    def read(self, source: str | Path, split: str, language: str | None = None) -> list[TextExample]:
        o = self.options
        return read_text_examples(source, split, self.name, o.text_column, o.text_pair_column, o.label_column,
                                  self.multi_label, language)

    def fit_labels(self, train: Sequence[TextExample]) -> None:
        if not train:
            raise TextDataError("--train-file: no training examples")
        if any(ex.label is None for ex in train):
            first = next(ex for ex in train if ex.label is None)
            raise TextDataError(f"{first.where}: a training example without a label")
        if self.labels:
            self.check_labels(train)
        else:
            self.labels = self._head_labels() or sorted_labels(
                {x for ex in train for x in (ex.label if self.multi_label else [ex.label])})
        if len(self.labels) < 2 and not self.multi_label:
            raise TextDataError(f"the training data has one label ({self.labels}); classification needs two or more")
        self.weights = self._class_weights(train)

    def _head_labels(self) -> list[str] | None:
        model = self.options.model
        if not (model and Path(model).is_dir() and (Path(model) / "config.json").is_file()):
            return None
        config = DebertaConfig.from_pretrained(model)
        if not any("SequenceClassification" in a for a in config.extra.get("architectures") or []):
            return None
        names = [config.id2label[i] for i in range(config.num_labels)]
        return None if all(str(n).startswith("LABEL_") for n in names) else names

    def check_labels(self, examples: Sequence[TextExample]) -> None:
        known = set(self.labels)
        for ex in examples:
            for label in (ex.label or []) if self.multi_label else ([] if ex.label is None else [ex.label]):
                if label not in known:
                    raise TextDataError(f"{ex.where}: unknown label {label!r}; the model's labels are {self.labels}")

    def _class_weights(self, train: Sequence[TextExample]) -> torch.Tensor | None:
        spec = self.options.class_weights
        if spec in (None, "", "none"):
            return None
        k, n = len(self.labels), len(train)
        if spec == "balanced":
            counts = Counter(x for ex in train for x in (ex.label if self.multi_label else [ex.label]))
            if self.multi_label:  # pos_weight: negatives / positives of each label
                return torch.tensor([(n - counts[lab]) / max(1, counts[lab]) for lab in self.labels])
            return torch.tensor([n / (k * counts[lab]) if counts[lab] else 0.0 for lab in self.labels])
        try:
            weights = [float(w) for w in spec.split(",")]
        except ValueError:
            raise UsageError(f"--class-weights {spec!r}: 'balanced', 'none' or {k} comma-separated numbers") from None
        if len(weights) != k or any(w < 0 for w in weights):
            raise UsageError(f"--class-weights {spec!r}: {k} non-negative numbers, one per label {self.labels}")
        return torch.tensor(weights)

    def load_training(self, train_files: Sequence[str], dev_files: Sequence[str] | None) -> None:
        o = self.options
        train = [ex for f in train_files for ex in self.read(f, "train")][:o.max_train_examples]
        self.dev = [ex for f in dev_files or [] for ex in self.read(f, "validation")][:o.max_dev_examples]
        self.fit_labels(train)
        self.check_labels(self.dev)
        unlabelled = next((ex for ex in self.dev if ex.label is None), None)
        if unlabelled is not None:
            raise TextDataError(f"{unlabelled.where}: a dev example without a label")
        form = input_form(train)
        if self.dev and input_form(self.dev) != form:
            raise TextDataError(f"--dev-file holds {'single texts' if form == 'pair' else 'text pairs'} but "
                                f"--train-file holds {'text pairs' if form == 'pair' else 'single texts'}")
        self.train_features, self.dev_features = self.encode(train), self.encode(self.dev)
        self.info = {"train_file": [str(f) for f in train_files], "train_examples": len(train), "input_form": form,
                     **self.label_info()}
        logger.info("%s: train %d, dev %d", self.label_info(), len(train), len(self.dev))

    def label_info(self) -> dict[str, Any]:
        return {"labels": self.labels, "multi_label": self.multi_label,
                "class_weights": None if self.weights is None else self.weights.tolist()}

    def encode(self, examples: Sequence[TextExample]) -> list[dict[str, Any]]:
        input_form(examples)
        features = encode_texts(self.tokenizer, examples, self.options.max_seq_length)
        for f, ex in zip(features, examples):
            f["label"] = self.target(ex.label)
        return features

    def target(self, label: Any) -> Any:
        if label is None:
            return None
        if self.multi_label:
            chosen = set(label)
            return [1.0 if lab in chosen else 0.0 for lab in self.labels]
        return self.labels.index(label)

    def collate(self, features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
        return self._with_labels(collate([{**f, "label": None} for f in features], pad_token_id), features)

    def collate_packed(self, features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
        return self._with_labels(collate_packed([{**f, "label": None} for f in features], pad_token_id), features)

    def _with_labels(self, batch: dict[str, torch.Tensor], features: Sequence[dict[str, Any]]) -> dict:
        if all(f.get("label") is not None for f in features):
            dtype = torch.float32 if self.name == "regression" or self.multi_label else torch.long
            batch["labels"] = torch.tensor([f["label"] for f in features], dtype=dtype)
        return batch

    # ------------------------------------------------------------------ model
    def model_labels(self) -> dict[str, Any]:
        return {"num_labels": len(self.labels), "id2label": dict(enumerate(self.labels)),
                "label2id": {lab: i for i, lab in enumerate(self.labels)},
                "problem_type": "multi_label_classification" if self.multi_label else "single_label_classification"}

    def build_model(self, model: str, tokenizer: Any, random_init: bool) -> Any:
        built = super().build_model(model, tokenizer, random_init)
        if self.multi_label:  # predict / evaluate / the server apply the threshold the model was trained with
            built.config.extra["multi_label_threshold"] = self.options.threshold
        return built

    def training_loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        if self.weights is None:
            return super().training_loss(model, batch)
        labels = batch["labels"]
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
        weights = self.weights.to(out.logits.device)
        if self.multi_label:
            loss = F.binary_cross_entropy_with_logits(out.logits.float(), labels.float(), pos_weight=weights)
        else:
            loss = F.cross_entropy(out.logits.float(), labels, weight=weights)
        return loss, out

    @classmethod
    def for_model(cls, config: Any, tokenizer: Any, options: Any) -> TextClassificationTask:
        """The task of a trained classifier (labels and multi-label from its config), for evaluate / predict."""
        options.multi_label = config.problem_type == "multi_label_classification"
        task = cls(options, tokenizer)
        task.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        task.options.threshold = float(config.extra.get("multi_label_threshold", options.threshold))
        return task

    # ------------------------------------------------------------------ evaluation
    def probabilities(self, model: Any, examples: Sequence[TextExample], batch_size: int = 64,
                      features: Sequence[dict[str, Any]] | None = None) -> torch.Tensor:
        """(N, labels): softmax, or per-label sigmoid for multi-label models (``features``: already encoded)."""
        if features is None:
            features = encode_texts(self.tokenizer, examples, self.options.max_seq_length)
        features = [{**f, "label": None} for f in features]  # inputs only
        out = torch.empty((len(features), model.config.num_labels))
        for idx, result in run_batches(model, features, collate, batch_size, self.tokenizer.pad_token_id):
            out[torch.tensor(idx)] = self.probabilities_of(result.logits.float().cpu())
        return out

    def predict_dev(self, model: Any, batch_size: int) -> list[dict[str, Any]]:
        return self.predict(model, self.dev, batch_size, self.dev_features)

    def predict(self, model: Any, examples: Sequence[TextExample], batch_size: int = 64,
                features: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        return [self.answer(row) for row in self.probabilities(model, examples, batch_size, features).tolist()]

    def answer(self, probabilities: Sequence[float]) -> dict[str, Any]:
        """One text's label(s) and per-label scores from its probabilities (also what ``mdeberta serve`` returns)."""
        row = list(probabilities)
        if self.multi_label:
            label: Any = [lab for lab, p in zip(self.labels, row) if p >= self.options.threshold]
        else:
            label = self.labels[max(range(len(row)), key=row.__getitem__)]
        return {"label": label, "scores": {lab: round(p, 6) for lab, p in zip(self.labels, row)}}

    def probabilities_of(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> probabilities: per-label sigmoid (multi-label) or softmax."""
        return logits.sigmoid() if self.multi_label else logits.softmax(-1)

    def score(self, examples: Sequence[TextExample], predictions: Sequence[dict[str, Any]]) -> dict[str, float]:
        from mdeberta.tasks import metrics

        self.check_labels(examples)
        if self.multi_label:
            gold = [self.target(ex.label) for ex in examples]
            predicted = [self.target(p["label"]) for p in predictions]
            return metrics.multi_label_f1(gold, predicted) if gold else {"micro_f1": 0.0, "macro_f1": 0.0}
        index = {lab: i for i, lab in enumerate(self.labels)}
        gold = [index[ex.label] for ex in examples]
        return metrics.classification_scores(gold, [index[p["label"]] for p in predictions], len(self.labels))

    def record(self, example: TextExample, prediction: dict[str, Any]) -> dict[str, Any]:
        return {"language": example.language, "index": example.index, "source": example.where,
                "text": example.text, **({"text_pair": example.text_pair} if example.text_pair is not None else {}),
                "gold": example.label, "predicted": prediction["label"], "scores": prediction["scores"]}


__all__ = ["TextClassificationTask", "TextDataError", "TextExample", "encode_texts", "read_text_examples"]
