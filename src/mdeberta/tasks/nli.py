"""NLI: sentence pairs (or single texts) with the three labels entailment / neutral / contradiction; accuracy.

The XNLI recipe's task, and the one zero-shot classification builds on (``mdeberta.inference``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mdeberta.config import PRESETS, DebertaConfig
from mdeberta.data.nli import (
    ID2LABEL,
    LABEL2ID,
    LABELS,
    NLIDataError,
    NLIExample,
    collate,
    collate_packed,
    encode_examples,
    input_form,
    load_nli,
    read_nli_file,
)
from mdeberta.errors import CheckpointError, UsageError
from mdeberta.tasks.base import Task, check_vocab, random_init_model, run_batches

logger = logging.getLogger("mdeberta.finetune")


def model_label_names(config: Any) -> list[str]:
    """The label name of each output index of a classifier, lower-cased.

    A head trained here or by most hub NLI models names its labels; a generic head (LABEL_0, ...) with three
    outputs is assumed to follow this project's order (entailment, neutral, contradiction).
    """
    names = [str(config.id2label[i]).lower() for i in range(config.num_labels)]
    if all(n.startswith("label_") for n in names) and len(names) == len(LABELS):
        logger.warning("model labels are generic (%s); assuming the order %s", names, list(LABELS))
        return list(LABELS)
    return names


def nli_output_order(config: Any) -> list[int]:
    """For each canonical label id (entailment, neutral, contradiction) the model's output index.

    Raises ValueError when the head does not have exactly those three labels.
    """
    names = model_label_names(config)
    if sorted(names) != sorted(LABELS):
        raise UsageError(
            f"the model's classification head has labels {names}; NLI needs exactly {list(LABELS)} "
            "(fine-tune a new head with `mdeberta finetune`)"
        )
    return [names.index(label) for label in LABELS]


def load_model_for_nli(model: str, tokenizer: Any, random_init: bool = False) -> Any:
    """A 3-way NLI classifier from a folder / hub id (or, with ``random_init``, the same architecture untrained).

    A checkpoint without a classification head gets a fresh one (logged); one whose head has other labels is
    an error, because its outputs would be silently mislabelled.
    """
    from mdeberta.model import DebertaForSequenceClassification

    labels = {"num_labels": len(LABELS), "id2label": dict(ID2LABEL), "label2id": dict(LABEL2ID)}
    if random_init:
        return random_init_model(DebertaForSequenceClassification, model, tokenizer, labels)
    if model in PRESETS and not Path(model).exists():
        raise CheckpointError(f"{model!r} is a preset name, not a checkpoint; pass --random-init to train it "
                              "from scratch, or a model folder / hub id")
    config = DebertaConfig.from_pretrained(model)
    architectures = config.extra.get("architectures") or []
    if any("SequenceClassification" in a for a in architectures):
        names = [str(config.id2label[i]).lower() for i in range(config.num_labels)]
        generic = all(n.startswith("label_") for n in names)
        if config.num_labels != len(LABELS) or (not generic and names != list(LABELS)):
            raise CheckpointError(
                f"{model} has a classification head with {config.num_labels} labels {names}; NLI fine-tuning needs "
                f"{list(LABELS)} in this order. Start from the backbone checkpoint instead."
            )
    else:
        logger.warning("%s has no sequence-classification head (architectures=%s): a fresh %d-way head %s is "
                       "initialised", model, architectures or "unknown", len(LABELS), list(LABELS))
    check_vocab(config, tokenizer, model)
    return DebertaForSequenceClassification.from_pretrained(model, **labels)


@torch.no_grad()
def nli_logits(model: Any, tokenizer: Any, examples: Sequence[NLIExample], batch_size: int = 64,
               max_length: int = 256, bf16: bool = False, progress: bool = False) -> torch.Tensor:
    """(N, num_labels) float32 logits in the order of ``examples`` (the model's own output order)."""
    if not examples:
        return torch.zeros((0, model.config.num_labels))
    return feature_logits(model, encode_examples(tokenizer, examples, max_length), batch_size, tokenizer.pad_token_id,
                          bf16, progress)


@torch.no_grad()
def feature_logits(model: Any, features: Sequence[dict[str, Any]], batch_size: int = 64, pad_token_id: int = 0,
                   bf16: bool = False, progress: bool = False) -> torch.Tensor:
    """(N, num_labels) logits of already encoded features, in their order."""
    features = [{**f, "label": None} for f in features]
    out = torch.empty((len(features), model.config.num_labels))
    for idx, result in run_batches(model, features, collate, batch_size, pad_token_id, bf16=bf16,
                                   progress=progress):
        out[torch.tensor(idx)] = result.logits.float().cpu()
    return out


class NLITask(Task):
    """Sentence-pair classification (NLI): pairs, a 3-way head, dev accuracy."""

    name, head, metrics, packable = "nli", "sequence-classification", ("accuracy",), True
    collate = staticmethod(collate)
    collate_packed = staticmethod(collate_packed)

    def read(self, source: str | Path, split: str, language: str | None = None) -> list[NLIExample]:
        return read_nli_file(source, [language] if language else None)

    def encode(self, examples: Sequence[NLIExample]) -> list[dict[str, Any]]:
        return encode_examples(self.tokenizer, examples, self.options.max_seq_length) if examples else []

    def load_training(self, train_files: Sequence[str], dev_files: Sequence[str] | None) -> None:
        o = self.options
        train = load_nli(train_files, "train", o.max_train_examples, o.seed)
        dev = load_nli(dev_files, "dev", o.max_dev_examples, o.seed) if dev_files else []
        if not train:
            raise NLIDataError(f"--train-file {' '.join(map(str, train_files))}: no training examples")
        form = input_form(train, "--train-file")
        if dev and input_form(dev, "--dev-file") != form:
            kinds = {"pair": "pairs", "single": "single texts"}
            raise NLIDataError(f"--dev-file holds {kinds[input_form(dev)]} but --train-file holds {kinds[form]}: a "
                               "model is trained and evaluated on one input form")
        for flag, data in (("--train-file", train), ("--dev-file", dev)):
            if any(ex.label is None for ex in data):
                raise NLIDataError(f"{flag}: examples without a label (no 'gold_label' or 'label' column): cannot "
                                   "train or score on them")
        self.dev = dev
        self.train_features, self.dev_features = self.encode(train), self.encode(dev)
        truncated = sum(len(f["input_ids"]) >= o.max_seq_length for f in self.train_features)
        logger.info("train: %d examples (%d at the %d-token limit, truncated longest-first); dev: %d",
                    len(self.train_features), truncated, o.max_seq_length, len(self.dev_features))
        self.info = {"train_file": [str(f) for f in train_files], "train_examples": len(self.train_features),
                     "input_form": form}

    def build_model(self, model: str, tokenizer: Any, random_init: bool) -> Any:
        return load_model_for_nli(model, tokenizer, random_init)

    def predict(self, model: Any, examples: Sequence[NLIExample], batch_size: int = 64) -> list[int]:
        """Canonical label ids (entailment 0, neutral 1, contradiction 2) whatever the head's output order."""
        order = nli_output_order(model.config)
        logits = nli_logits(model, self.tokenizer, examples, batch_size, self.options.max_seq_length)
        return logits[:, order].argmax(-1).tolist()

    def predict_dev(self, model: Any, batch_size: int) -> list[int]:
        logits = feature_logits(model, self.dev_features, batch_size, self.tokenizer.pad_token_id)
        return logits[:, nli_output_order(model.config)].argmax(-1).tolist()

    def score(self, examples: Sequence[NLIExample], predictions: Sequence[int]) -> dict[str, float]:
        from mdeberta.tasks.metrics import accuracy

        return {"accuracy": accuracy([ex.label for ex in examples], predictions)}

    def record(self, example: NLIExample, prediction: int) -> dict[str, Any]:
        return {"language": example.language, "index": example.index, "premise": example.premise,
                "hypothesis": example.hypothesis,
                "gold": LABELS[example.label] if example.label is not None else None, "predicted": LABELS[prediction]}


__all__ = ["NLITask", "load_model_for_nli", "model_label_names", "nli_logits", "nli_output_order"]
