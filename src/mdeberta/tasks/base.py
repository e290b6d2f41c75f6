"""The Task interface, the options every task reads, and the one batched-inference loop.

A task says how to read its data (``read``), turn examples into token features (``encode``), batch them
(``collate``, and ``collate_packed`` when one label per sequence lets a batch become one packed row), which head
it trains (``head``, ``model_labels``), how to predict (``predict``, built on :func:`run_batches`), score
(``score``) and write a prediction record (``record``). ``finetune``, ``evaluate``, ``predict`` and the exported
ONNX models all go through these methods, so a new task is one file in this package and one line in the
registry (``mdeberta.tasks.TASKS``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from mdeberta.arguments import Config, add_config_arguments, option
from mdeberta.config import PRESETS, DebertaConfig, preset
from mdeberta.data.nli import collate, length_grouped_batches, shard_batches
from mdeberta.errors import CheckpointError, UsageError

logger = logging.getLogger("mdeberta.tasks")

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "cu_seqlens")


@dataclass
class TaskOptions:
    """What a task needs to know beyond its data; built from a command's arguments by :meth:`from_args` (every
    field a flag of the same name) or directly in Python."""

    model: str | None = None  # the checkpoint fine-tuned (its head's labels are kept where it has one)
    max_seq_length: int = 256
    seed: int = 42
    max_train_examples: int | None = None
    max_dev_examples: int | None = None
    # question answering
    doc_stride: int = 128
    max_answer_length: int = 30
    # text classification / regression / multiple choice
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    labels: list[str] | None = None
    multi_label: bool = False
    threshold: float = 0.5
    class_weights: str | None = None
    metric: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TaskOptions:
        values = {f.name: getattr(args, f.name) for f in fields(cls) if f.name != "extra" and hasattr(args, f.name)}
        if isinstance(values.get("labels"), str):
            values["labels"] = [s.strip() for s in values["labels"].split(",") if s.strip()]
        return cls(**values)


class Task:
    """One fine-tuning task. Subclasses set the class attributes and implement the data methods."""

    name: ClassVar[str]
    head: ClassVar[str]  # key of mdeberta.model.auto.HEADS
    metrics: ClassVar[tuple[str, ...]]  # what ``score`` returns; the first is the default best-model metric
    packable: ClassVar[bool] = False  # one label per sequence: a batch can be one packed row (cu_seqlens)

    def __init__(self, options: TaskOptions, tokenizer: Any) -> None:
        self.options, self.tokenizer = options, tokenizer
        self.metric = options.metric or self.metrics[0]
        if self.metric not in self.metrics:
            raise UsageError(f"--metric {self.metric!r} for --task {self.name}; allowed: {list(self.metrics)}")
        self.train_features: list[dict[str, Any]] = []
        self.dev: list[Any] = []
        self.dev_features: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------ data
    def read(self, source: str | Path, split: str, language: str | None = None) -> list[Any]:
        raise NotImplementedError

    def encode(self, examples: Sequence[Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    @staticmethod
    def collate(features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
        return collate(features, pad_token_id)

    def load_training(self, train_files: Sequence[str], dev_files: Sequence[str] | None) -> None:
        """Read and encode the training and dev data into ``train_features``, ``dev`` / ``dev_features``; set
        ``info`` (recorded in training_info.json). The default reads each file, keeps the first examples."""
        o = self.options
        train = [ex for f in train_files for ex in self.read(f, "train")][:o.max_train_examples]
        self.dev = [ex for f in dev_files or [] for ex in self.read(f, "validation")][:o.max_dev_examples]
        if not train:
            raise UsageError(f"--train-file {' '.join(map(str, train_files))}: no training examples")
        self.fit_labels(train)
        self.train_features, self.dev_features = self.encode(train), self.encode(self.dev)
        self.info = {"train_file": [str(f) for f in train_files], "train_examples": len(train), **self.info}

    def fit_labels(self, train: Sequence[Any]) -> None:
        """Decide the label set from the training data (or options / the checkpoint); tasks with labels override."""

    # ------------------------------------------------------------------ model
    def model_labels(self) -> dict[str, Any]:
        """Config fields of the head (num_labels, id2label, label2id, problem_type)."""
        return {}

    def build_model(self, model: str, tokenizer: Any, random_init: bool) -> Any:
        """The head on a pretrained checkpoint (a fresh head where it has none) or, with ``random_init``, on the
        same architecture untrained (a preset name or a folder)."""
        from mdeberta.model.auto import HEADS

        cls, labels = HEADS[self.head], self.model_labels()
        if random_init:
            return random_init_model(cls, model, tokenizer, labels)
        if model in PRESETS and not Path(model).exists():
            raise CheckpointError(f"{model!r} is a preset name, not a checkpoint; pass --random-init to train it "
                                  "from scratch, or a model folder / hub id")
        check_vocab(DebertaConfig.from_pretrained(model), tokenizer, model)
        return cls.from_pretrained(model, **labels)

    def training_loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        """(loss, outputs) of one training batch; the head's own loss unless a task weighs it."""
        out = model(**batch)
        return out.loss, out

    # ------------------------------------------------------------------ evaluation
    def predict(self, model: Any, examples: Sequence[Any], batch_size: int = 64) -> list[Any]:
        raise NotImplementedError

    def score(self, examples: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
        raise NotImplementedError

    def record(self, example: Any, prediction: Any) -> dict[str, Any]:
        """One line of a predictions file: enough to recompute every score."""
        raise NotImplementedError

    def predict_dev(self, model: Any, batch_size: int) -> list[Any]:
        """Predictions for the dev set; tasks whose ``predict`` encodes override this to reuse ``dev_features``
        (encoded once in ``load_training``, not again at every evaluation)."""
        return self.predict(model, self.dev, batch_size)

    def evaluate(self, model: Any, batch_size: int, env: Any = None) -> dict[str, float]:
        """Scores on the dev set (every rank computes them in full: dev sets are small, and equal on every rank)."""
        return self.score(self.dev, self.predict_dev(model, batch_size))


@dataclass(kw_only=True)
class TextColumns(Config):
    """Where text-classification / regression files keep their texts and labels (finetune, evaluate, predict)."""

    text_column: str | None = option(None, help="text-classification / regression: the text's column (default: "
                                                "text, sentence, ... or a pair layout sentence1/sentence2, "
                                                "question1/question2, ...)")
    text_pair_column: str | None = option(None, help="the second text's column (pair classification)")
    label_column: str | None = option(None, help="default: label, labels, category, gold_label, score")


@dataclass(kw_only=True)
class TextLabelOptions(TextColumns):
    """How a text classifier is trained on those labels (finetune only)."""

    labels: str | None = option(None, help="comma list fixing the label set and its order (default: the checkpoint "
                                           "head's labels, else the sorted labels of the training file)")
    multi_label: bool = option(False, help="text-classification: any subset of the labels per text (sigmoid, binary "
                                           "cross-entropy)")
    threshold: float = option(0.5, type=float, help="multi-label: a label is predicted where its probability reaches "
                                                    "this (kept in config.json)")
    class_weights: str | None = option(None, help="text-classification: 'balanced' (n / (k x count); multi-label: "
                                                  "negatives / positives) or one weight per label, comma-separated")


def add_text_task_arguments(p: argparse.ArgumentParser, training: bool = True) -> None:
    """The flags of :class:`TextLabelOptions` (training) or :class:`TextColumns` (evaluate, predict)."""
    add_config_arguments(p, TextLabelOptions if training else TextColumns)


def random_init_model(cls: type, model: str, tokenizer: Any, labels: dict[str, Any]) -> Any:
    """``cls`` with the architecture of ``model`` (a preset name or a folder) and ``labels``, untrained: the
    no-pretraining baseline."""
    config = (preset(model, vocab_size=len(tokenizer), **labels) if model in PRESETS
              else DebertaConfig.from_pretrained(model).replace(**labels))
    check_vocab(config, tokenizer, model)
    logger.info("random init: %s architecture, no pretrained weights", model)
    return cls(config)


def check_vocab(config: DebertaConfig, tokenizer: Any, model: str) -> None:
    if len(tokenizer) > config.vocab_size:
        raise CheckpointError(f"the tokenizer has {len(tokenizer)} tokens but {model} has vocab_size "
                              f"{config.vocab_size}: pass the tokenizer the model was trained with (--tokenizer)")


def model_device(model: Any) -> torch.device:
    return model.device if hasattr(model, "device") else next(model.parameters()).device


@torch.no_grad()
def run_batches(
    model: Any, features: Sequence[dict[str, Any]], collate_fn: Callable[..., dict[str, torch.Tensor]],
    batch_size: int = 64, pad_token_id: int = 0, *, bf16: bool = False, progress: bool = False,
    desc: str = "predict", forward: Callable[[Any, dict[str, torch.Tensor]], Any] | None = None,
) -> Iterator[tuple[list[int], Any]]:
    """The one batched-inference loop: ``(indices, outputs)`` per batch of ``features`` taken in order of length
    (little padding), the model in eval mode (its mode restored after). Works for PyTorch models and
    :class:`mdeberta.serving.OnnxModel` alike; only the model inputs of a collated batch are passed, to
    ``forward(model, inputs)`` when given (e.g. to ask for hidden states), else ``model(**inputs)``."""
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    order = sorted(range(len(features)), key=lambda i: _length(features[i]))
    device = model_device(model)
    was_training = getattr(model, "training", False)
    model.eval()
    starts: Any = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    try:
        for start in starts:
            idx = order[start:start + batch_size]
            batch = collate_fn([features[i] for i in idx], pad_token_id)
            inputs = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                yield idx, forward(model, inputs) if forward is not None else model(**inputs)
    finally:
        model.train(was_training)


def _length(feature: dict[str, Any]) -> int:
    ids = feature["input_ids"]
    return sum(len(c) for c in ids) if ids and isinstance(ids[0], list) else len(ids)


class LengthGroupedBatches:
    """Dynamically padded training batches of similar-length examples; this rank's share of a seeded epoch.

    ``set_epoch`` reshuffles deterministically, so the loop's resume (replay the epoch to the saved batch)
    sees exactly the same batches.
    """

    def __init__(self, features: list[dict[str, Any]], batch_size: int, seed: int, pad_token_id: int,
                 rank: int = 0, world_size: int = 1, collate_fn: Any = None) -> None:
        self.features, self.batch_size, self.seed = features, batch_size, seed
        self.pad_token_id, self.rank, self.world_size = pad_token_id, rank, world_size
        self.collate = collate_fn or collate
        self.lengths = [_length(f) for f in features]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        all_batches = length_grouped_batches(self.lengths, self.batch_size, self.seed, self.epoch)
        return shard_batches(all_batches, self.rank, self.world_size)

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self):
        for idx in self.batches():
            yield self.collate([self.features[i] for i in idx], self.pad_token_id)


def training_accuracy(out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Percent of scored labels predicted in a training batch (QA: start and end positions; multi-label: every
    label decision at 0.5); None for regression, which has no accuracy."""
    if "start_positions" in batch:
        hits = [(getattr(out, f"{k}_logits").detach().argmax(-1) == batch[f"{k}_positions"]).float()
                for k in ("start", "end")]
        return 100.0 * torch.cat(hits).mean()
    labels, logits = batch["labels"], out.logits.detach()
    if labels.is_floating_point():
        if logits.shape[-1] == 1:
            return None
        return 100.0 * ((logits > 0) == (labels > 0.5)).float().mean()
    scored = labels != -100
    return 100.0 * (logits.argmax(-1)[scored] == labels[scored]).float().mean()


__all__ = ["LengthGroupedBatches", "Task", "TaskOptions", "TextColumns", "TextLabelOptions", "add_text_task_arguments",
           "check_vocab", "run_batches", "training_accuracy"]
