"""``mdeberta finetune``: NLI (sequence-pair) or single-sequence classification from any checkpoint.

    mdeberta finetune --model microsoft/mdeberta-v3-base --train-file nyu-mll/multi_nli --output-dir out/mnli \\
        --dev-file dev.tsv
    torchrun --nproc-per-node 8 -m mdeberta finetune ...   # same command, data-parallel

Defaults follow the mDeBERTa-V3 XNLI recipe: lr 2e-5, 6 epochs, 3000 warmup steps, max_seq_length 256, global
batch 32 (= per-device micro-batch x --grad-accum x processes). Training runs on the project's single loop
(:mod:`mdeberta.train`): bf16 autocast, gradient accumulation, torchrun, checkpoints every --save-every steps
(``--resume`` continues exactly), metrics.jsonl / metrics.png / tqdm. Batches are padded dynamically and built
from examples of similar length (much less padding than padding everything to 256).

Every --eval-every steps (and at the end) the dev set is scored; when accuracy improves the model is exported
with its tokenizer to ``<output-dir>/best`` (``save_pretrained`` layout, loadable by transformers too). The last
model goes to ``<output-dir>/final``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mdeberta.checkpoint import CheckpointError, atomic_write_text
from mdeberta.config import PRESETS, DebertaConfig, preset
from mdeberta.data.nli import (
    ID2LABEL,
    LABEL2ID,
    LABELS,
    NLIDataError,
    collate,
    collate_packed,
    encode_examples,
    input_form,
    length_grouped_batches,
    load_nli,
    shard_batches,
)
from mdeberta.errors import UsageError
from mdeberta.train.run_folder import prepare_run_folder

logger = logging.getLogger("mdeberta.finetune")

RECIPE = {"learning_rate": 2e-5, "epochs": 6, "warmup_steps": 3000, "max_seq_length": 256, "batch_size": 32}


@dataclass
class FinetuneResult:
    output_dir: Path
    model_dir: Path  # best/ when a dev set was given, else final/
    best_accuracy: float | None
    steps: int
    seconds: float
    history: list[dict[str, Any]]


# --------------------------------------------------------------------------- model
# Arguments that may change on --resume: logging, evaluation and reporting only (the training is the same).
RESUME_SAFE = ("eval_every", "eval_batch_size", "languages", "split", "eval_dir", "max_eval_examples", "name")


def check_schedule_arguments(args: argparse.Namespace) -> None:
    """Clear errors for bad sizes and schedule options, checked before any data is read (a bad
    ``--eval-batch-size`` used to fail only after the whole training run)."""
    for name in ("batch_size", "grad_accum", "eval_batch_size", "max_seq_length", "log_every", "eval_every"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    for name in ("max_steps", "max_train_examples", "max_dev_examples"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    for name in ("save_every", "keep_last", "warmup_steps"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 0")
    if not args.epochs > 0:
        raise UsageError(f"--epochs {args.epochs}: must be > 0")
    if args.max_seq_length > 512:
        logger.warning("--max-seq-length %d: attention costs grow with the square of the length (%.0fx that of 512)",
                       args.max_seq_length, (args.max_seq_length / 512) ** 2)
    if args.warmup_ratio is not None and not 0 <= args.warmup_ratio < 1:
        raise UsageError(f"--warmup-ratio {args.warmup_ratio}: must be in [0, 1)")
    if args.layerwise_lr_decay is not None and not 0 < args.layerwise_lr_decay <= 1:
        raise UsageError(f"--layerwise-lr-decay {args.layerwise_lr_decay}: must be in (0, 1]")


def load_model_for_nli(model: str, tokenizer: Any, random_init: bool = False) -> Any:
    """A 3-way NLI classifier from a folder / hub id (or, with ``random_init``, the same architecture untrained).

    A checkpoint without a classification head gets a fresh one (logged); one whose head has other labels is
    an error, because its outputs would be silently mislabelled.
    """
    return _load_model_for_nli(model, tokenizer, random_init)


def _load_model_for_nli(model: str, tokenizer: Any, random_init: bool) -> Any:
    from mdeberta.model import DebertaForSequenceClassification

    labels = {"num_labels": len(LABELS), "id2label": dict(ID2LABEL), "label2id": dict(LABEL2ID)}
    if random_init:
        if model in PRESETS:
            config = preset(model, vocab_size=len(tokenizer), **labels)
        else:
            config = DebertaConfig.from_pretrained(model).replace(**labels)
        _check_vocab(config, tokenizer, model)
        logger.info("random init: %s architecture, no pretrained weights", model)
        return DebertaForSequenceClassification(config)
    if model in PRESETS and not Path(model).exists():
        raise CheckpointError(f"{model!r} is a preset name, not a checkpoint; pass --random-init to train it "
                              "from scratch, or a model folder / hub id")
    config = DebertaConfig.from_pretrained(model)
    architectures = config.extra.get("architectures") or []
    has_head = any("SequenceClassification" in a for a in architectures)
    if has_head:
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
    _check_vocab(config, tokenizer, model)
    return DebertaForSequenceClassification.from_pretrained(model, **labels)


def _check_vocab(config: DebertaConfig, tokenizer: Any, model: str) -> None:
    if len(tokenizer) > config.vocab_size:
        raise CheckpointError(f"the tokenizer has {len(tokenizer)} tokens but {model} has vocab_size "
                              f"{config.vocab_size}: pass the tokenizer the model was trained with (--tokenizer)")


def export_model(model: Any, tokenizer: Any, folder: Path, info: dict[str, Any]) -> None:
    """save_pretrained + tokenizer into ``folder`` via a temp folder swapped in, so a crash never leaves half a
    model where a complete one was."""
    from mdeberta.outputs import replace_folder

    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    atomic_write_text(tmp / "training_info.json", json.dumps(info, indent=2) + "\n")
    replace_folder(tmp, folder)


# --------------------------------------------------------------------------- data
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
        self.lengths = [len(f["input_ids"]) for f in features]
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


def dev_accuracy(model: Any, tokenizer: Any, features: list[dict[str, Any]], batch_size: int, env: Any) -> float:
    """Accuracy (percent) on this rank's share of ``features``, summed over ranks."""
    device = next(model.parameters()).device
    mine = list(range(env.rank, len(features), env.world_size))
    mine.sort(key=lambda i: len(features[i]["input_ids"]))
    correct = 0
    for start in range(0, len(mine), batch_size):
        batch = collate([features[i] for i in mine[start:start + batch_size]], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        correct += int((model(**batch).logits.argmax(-1) == labels).sum())
    totals = env.all_reduce_mean({"correct": float(correct)})
    return 100.0 * totals["correct"] * env.world_size / len(features)


# --------------------------------------------------------------------------- tasks
class NLITask:
    """Sentence-pair classification (NLI): pairs, a 3-way head, dev accuracy."""

    name, metric = "nli", "accuracy"

    def __init__(self, args: argparse.Namespace, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        train = load_nli(args.train_file, "train", args.max_train_examples, args.seed)
        dev = load_nli(args.dev_file, "dev", args.max_dev_examples, args.seed) if args.dev_file else []
        if not train:
            raise NLIDataError(f"--train-file {' '.join(map(str, args.train_file))}: no training examples")
        form = input_form(train, "--train-file")
        if dev and input_form(dev, "--dev-file") != form:
            kinds = {"pair": "pairs", "single": "single texts"}
            raise NLIDataError(f"--dev-file holds {kinds[input_form(dev)]} but --train-file holds {kinds[form]}: a "
                               "model is trained and evaluated on one input form")
        for flag, data in (("--train-file", train), ("--dev-file", dev)):
            if any(ex.label is None for ex in data):
                raise NLIDataError(f"{flag}: examples without a label (no 'gold_label' or 'label' column): cannot "
                                   "train or score on them")
        self.train_features = encode_examples(tokenizer, train, args.max_seq_length)
        self.dev_features = encode_examples(tokenizer, dev, args.max_seq_length) if dev else []
        truncated = sum(len(f["input_ids"]) >= args.max_seq_length for f in self.train_features)
        logger.info("train: %d examples (%d at the %d-token limit, truncated longest-first); dev: %d",
                    len(self.train_features), truncated, args.max_seq_length, len(self.dev_features))
        self.info = {"train_file": [str(f) for f in args.train_file], "train_examples": len(self.train_features),
                     "input_form": form}

    collate = staticmethod(collate)
    collate_packed = staticmethod(collate_packed)

    def build_model(self, model: str, tokenizer: Any, random_init: bool) -> Any:
        return load_model_for_nli(model, tokenizer, random_init)

    def evaluate(self, model: Any, batch_size: int, env: Any) -> dict[str, float]:
        return {"accuracy": dev_accuracy(model, self.tokenizer, self.dev_features, batch_size, env)}


class TokenClassificationTask:
    """NER and other word tagging: CoNLL / JSON lines / hub sentences, the label on each word's first sub-token,
    entity-level F1 (seqeval semantics) on the dev set."""

    name, metric = "token-classification", "f1"

    def __init__(self, args: argparse.Namespace, tokenizer: Any) -> None:
        from mdeberta.data.ner import check_labels, encode_tagged, label_list, load_tagged

        self.tokenizer = tokenizer
        train = [s for f in args.train_file for s in load_tagged(f, "train")][:args.max_train_examples]
        self.dev = [s for f in args.dev_file or [] for s in load_tagged(f, "validation")][:args.max_dev_examples]
        self.labels = self._labels(args.model, train, label_list)
        self.label2id = {t: i for i, t in enumerate(self.labels)}
        check_labels(train + self.dev, self.label2id)
        self.train_features = [_ner_dict(f) for f in encode_tagged(tokenizer, train, self.label2id,
                                                                   args.max_seq_length)]
        self.dev_encoded = encode_tagged(tokenizer, self.dev, self.label2id, args.max_seq_length)
        self.dev_features = [_ner_dict(f) for f in self.dev_encoded]
        logger.info("train: %d sentences, dev: %d; labels %s", len(train), len(self.dev), self.labels)
        self.info = {"train_file": [str(f) for f in args.train_file], "train_examples": len(train),
                     "labels": self.labels}

    @staticmethod
    def _labels(model: str, train: list, label_list: Any) -> list[str]:
        """The head's labels when the checkpoint has a token-classification head, else those of the data."""
        if Path(model).is_dir() and (Path(model) / "config.json").is_file():
            config = DebertaConfig.from_pretrained(model)
            if any("TokenClassification" in a for a in config.extra.get("architectures") or []):
                return [config.id2label[i] for i in range(config.num_labels)]
        return label_list(train)

    @staticmethod
    def collate(features: list[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
        batch = collate([{**f, "label": None} for f in features], pad_token_id)
        width = batch["input_ids"].shape[1]
        batch["labels"] = torch.tensor([f["labels"] + [-100] * (width - len(f["labels"])) for f in features])
        return batch

    @staticmethod
    def collate_packed(features: list[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
        batch = collate_packed([{**f, "label": None} for f in features], pad_token_id)
        batch["labels"] = torch.tensor([t for f in features for t in f["labels"]], dtype=torch.long)[None]
        return batch

    def build_model(self, model: str, tokenizer: Any, random_init: bool) -> Any:
        from mdeberta.model import DebertaForTokenClassification

        labels = {"num_labels": len(self.labels), "id2label": dict(enumerate(self.labels)),
                  "label2id": dict(self.label2id)}
        if random_init:
            config = (preset(model, vocab_size=len(tokenizer), **labels) if model in PRESETS
                      else DebertaConfig.from_pretrained(model).replace(**labels))
            _check_vocab(config, tokenizer, model)
            return DebertaForTokenClassification(config)
        _check_vocab(DebertaConfig.from_pretrained(model), tokenizer, model)
        return DebertaForTokenClassification.from_pretrained(model, **labels)

    def evaluate(self, model: Any, batch_size: int, env: Any) -> dict[str, float]:
        from mdeberta.data.ner import entity_scores

        predicted = predict_tags(model, self.tokenizer, self.dev_encoded, [len(s.tokens) for s in self.dev],
                                 batch_size)
        scores = entity_scores([s.tags for s in self.dev], predicted)
        return {"f1": 100 * scores["f1"], "precision": 100 * scores["precision"], "recall": 100 * scores["recall"]}


def training_accuracy(out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Percent of scored labels predicted in a training batch (QA: start and end positions)."""
    if "start_positions" in batch:
        hits = [(getattr(out, f"{k}_logits").detach().argmax(-1) == batch[f"{k}_positions"]).float()
                for k in ("start", "end")]
        return 100.0 * torch.cat(hits).mean()
    labels = batch["labels"]
    scored = labels != -100
    return 100.0 * (out.logits.detach().argmax(-1)[scored] == labels[scored]).float().mean()


class QuestionAnsweringTask:
    """Extractive QA: SQuAD / XQuAD / MLQA JSON or hub, windows over long contexts, dev exact match and F1."""

    name, metric = "question-answering", "f1"

    def __init__(self, args: argparse.Namespace, tokenizer: Any) -> None:
        from mdeberta.data.qa import encode_qa, load_qa

        self.tokenizer, self.stride = tokenizer, args.doc_stride
        self.max_answer_length = args.max_answer_length
        train = [e for f in args.train_file for e in load_qa(f, "train")][:args.max_train_examples]
        self.dev = [e for f in args.dev_file or [] for e in load_qa(f, "validation")][:args.max_dev_examples]
        features = encode_qa(tokenizer, train, args.max_seq_length, args.doc_stride, train=True)
        self.train_features = [{"input_ids": f.input_ids, "token_type_ids": [0] * len(f.input_ids),
                                "start_positions": f.start_position, "end_positions": f.end_position}
                               for f in features]
        self.dev_encoded = encode_qa(tokenizer, self.dev, args.max_seq_length, args.doc_stride)
        self.dev_features = [{"input_ids": f.input_ids} for f in self.dev_encoded]
        logger.info("train: %d questions in %d windows (%d without the answer); dev: %d questions", len(train),
                    len(features), sum(f.start_position == 0 for f in features), len(self.dev))
        self.info = {"train_file": [str(f) for f in args.train_file], "train_examples": len(train),
                     "doc_stride": args.doc_stride, "max_answer_length": args.max_answer_length}

    @staticmethod
    def collate(features: list[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
        batch = collate([{"input_ids": f["input_ids"], "token_type_ids": [0] * len(f["input_ids"]), "label": None}
                         for f in features], pad_token_id)
        for key in ("start_positions", "end_positions"):
            if key in features[0]:
                batch[key] = torch.tensor([f[key] for f in features])
        return batch

    def build_model(self, model: str, tokenizer: Any, random_init: bool) -> Any:
        from mdeberta.model import DebertaForQuestionAnswering

        if random_init:
            config = (preset(model, vocab_size=len(tokenizer), num_labels=2) if model in PRESETS
                      else DebertaConfig.from_pretrained(model).replace(num_labels=2))
            _check_vocab(config, tokenizer, model)
            return DebertaForQuestionAnswering(config)
        _check_vocab(DebertaConfig.from_pretrained(model), tokenizer, model)
        return DebertaForQuestionAnswering.from_pretrained(model, num_labels=2)

    def evaluate(self, model: Any, batch_size: int, env: Any) -> dict[str, float]:
        from mdeberta.data.qa import qa_scores

        answers = answer_questions(model, self.tokenizer, self.dev, self.dev_encoded, batch_size,
                                   self.max_answer_length)
        scores = qa_scores(self.dev, [a["text"] for a in answers])
        return {"f1": scores["f1"], "exact_match": scores["exact_match"]}


@torch.no_grad()
def answer_questions(model: Any, tokenizer: Any, examples: list, encoded: list, batch_size: int = 64,
                     max_answer_length: int = 30) -> list[dict[str, Any]]:
    """The best answer span per question over its windows (``mdeberta.data.qa.decode_answers``)."""
    from mdeberta.data.qa import decode_answers

    device = model.device if hasattr(model, "device") else next(model.parameters()).device
    was_training = getattr(model, "training", False)
    model.eval()
    starts: list = [None] * len(encoded)
    ends: list = [None] * len(encoded)
    for start in range(0, len(encoded), batch_size):
        part = encoded[start:start + batch_size]
        batch = collate([{"input_ids": f.input_ids, "token_type_ids": [0] * len(f.input_ids), "label": None}
                         for f in part], tokenizer.pad_token_id)
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        for k, (s_row, e_row) in enumerate(zip(out.start_logits.float().tolist(), out.end_logits.float().tolist())):
            n = len(part[k].input_ids)
            starts[start + k], ends[start + k] = s_row[:n], e_row[:n]
    model.train(was_training)
    return decode_answers(examples, encoded, starts, ends, max_answer_length=max_answer_length)


def _ner_dict(feature: Any) -> dict[str, Any]:
    return {"input_ids": feature.input_ids, "token_type_ids": [0] * len(feature.input_ids), "labels": feature.labels}


@torch.no_grad()
def predict_tags(model: Any, tokenizer: Any, encoded: list, n_words: list[int], batch_size: int = 64) -> list:
    """Per sentence, the tag predicted for each word (at its first sub-token)."""
    from mdeberta.data.ner import word_predictions

    device = model.device if hasattr(model, "device") else next(model.parameters()).device
    id2label = model.config.id2label
    was_training = getattr(model, "training", False)
    model.eval()
    out: list = [None] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate([{"input_ids": encoded[i].input_ids, "token_type_ids": [0] * len(encoded[i].input_ids),
                          "label": None} for i in idx], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits
        for row, i in zip(logits.argmax(-1).tolist(), idx):
            out[i] = word_predictions(encoded[i], row, id2label, n_words[i])
    model.train(was_training)
    return out


TASKS = {"nli": NLITask, "token-classification": TokenClassificationTask, "question-answering": QuestionAnsweringTask}


def make_task(args: argparse.Namespace, tokenizer: Any) -> Any:
    task = getattr(args, "task", "nli")
    if task not in TASKS:
        raise ValueError(f"--task {task!r}; allowed: {list(TASKS)}")
    return TASKS[task](args, tokenizer)


# --------------------------------------------------------------------------- the recipe
def finetune(args: argparse.Namespace) -> FinetuneResult:
    """Run fine-tuning as configured by the CLI arguments (also called by ``mdeberta xnli``)."""
    from mdeberta.tokenizer import DebertaTokenizer
    from mdeberta.train import (
        Trainer,
        TrainingArguments,
        build_optimizer,
        init_distributed,
        linear_schedule,
        seed_everything,
        wrap_model,
    )

    start = time.perf_counter()
    if args.model in PRESETS and not args.tokenizer and not Path(args.model).exists():
        raise ValueError(f"--model {args.model} is a preset (an architecture without a tokenizer); pass --tokenizer")
    check_schedule_arguments(args)  # before minutes of data loading, not after
    env = init_distributed(args.device)
    seed_everything(args.seed)
    output_dir = Path(args.output_dir)
    folder = prepare_run_folder(args, output_dir, flag="--output-dir", safe=RESUME_SAFE, is_main=env.is_main,
                                sources=[args.model, args.tokenizer, *args.train_file, *(args.dev_file or [])])
    tokenizer = DebertaTokenizer.from_pretrained(args.tokenizer or args.model)

    task = make_task(args, tokenizer)
    train_features, dev_features = task.train_features, task.dev_features

    per_step = args.batch_size // (args.grad_accum * env.world_size)
    if per_step * args.grad_accum * env.world_size != args.batch_size:
        raise ValueError(f"--batch-size {args.batch_size} must be a multiple of --grad-accum ({args.grad_accum}) x "
                         f"processes ({env.world_size})")
    pack = args.pack_sequences == "on" or (args.pack_sequences == "auto" and env.device.type == "cuda"
                                           and hasattr(task, "collate_packed"))
    if pack and not hasattr(task, "collate_packed"):
        raise ValueError(f"--pack-sequences on: the {task.name} task cannot be packed (its labels are per window "
                         "position); use --pack-sequences off")
    data = LengthGroupedBatches(train_features, per_step, args.seed, tokenizer.pad_token_id, env.rank,
                                env.world_size, collate_fn=task.collate_packed if pack else task.collate)
    steps_per_epoch = max(1, len(data) // args.grad_accum)
    max_steps = args.max_steps or max(1, round(args.epochs * steps_per_epoch))
    warmup = args.warmup_steps
    if args.warmup_ratio is not None:
        warmup = round(args.warmup_ratio * max_steps)
    elif warmup * 2 > max_steps:
        warmup = max(0, max_steps // 10)
        logger.warning("--warmup-steps %d is more than half of the %d training steps; using %d (10%%)",
                       args.warmup_steps, max_steps, warmup)
    logger.info("%d steps (%.2f epochs of %d steps), global batch %d = %d x %d accum x %d procs, warmup %d",
                max_steps, max_steps / steps_per_epoch, steps_per_epoch, args.batch_size, per_step, args.grad_accum,
                env.world_size, warmup)

    model = task.build_model(args.model, tokenizer, args.random_init).to(env.device)
    config = model.config
    if config.position_biased_input and args.max_seq_length > config.max_position_embeddings:
        raise UsageError(f"--max-seq-length {args.max_seq_length} exceeds the {config.max_position_embeddings} "
                         f"absolute positions of {args.model}")
    model.train()
    wrapped = wrap_model(model, env)
    optimizer = build_optimizer(wrapped, lr=args.learning_rate, weight_decay=args.weight_decay, betas=(0.9, 0.999),
                                eps=1e-6, layerwise_lr_decay=args.layerwise_lr_decay,
                                num_layers=model.config.num_hidden_layers)
    scheduler = linear_schedule(optimizer, warmup, max_steps)
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if env.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"

    info = {"task": task.name, "source_model": str(args.model), "random_init": bool(args.random_init),
            "train_file": [str(f) for f in args.train_file], "train_examples": len(train_features),
            "learning_rate": args.learning_rate, "layerwise_lr_decay": args.layerwise_lr_decay,
            "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
            "warmup_steps": warmup, "max_steps": max_steps, "seed": args.seed, "precision": precision,
            "packed_sequences": pack}
    info.update(task.info)
    best_dir, final_dir = output_dir / "best", output_dir / "final"
    metric = task.metric  # NLI: accuracy (%), token classification: entity F1 (%)
    best = {"value": None}
    if folder.resume and (best_dir / "training_info.json").exists():
        best["value"] = json.loads((best_dir / "training_info.json").read_text()).get(f"dev_{metric}")

    def step_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        out = m(**batch)
        tokens = batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
        return out.loss, {"accuracy": training_accuracy(out, batch), "num_tokens": tokens}

    def eval_fn(trainer: Any) -> dict[str, float]:
        results = task.evaluate(trainer.unwrapped, args.eval_batch_size, trainer.env)
        value = results[metric]
        if best["value"] is None or value > best["value"]:
            best["value"] = value
            if trainer.env.is_main:
                export_model(trainer.unwrapped, tokenizer, best_dir,
                             {**info, "step": trainer.step, f"dev_{metric}": value})
                logger.info("step %d: dev %s %.2f%% is the best so far; exported %s", trainer.step, metric, value,
                            best_dir)
        return {**results, f"best_{metric}": best["value"]}

    targs = TrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, grad_accum=args.grad_accum, precision=precision,
        log_every=args.log_every, save_every=args.save_every, eval_every=args.eval_every if dev_features else 0,
        keep_last=args.keep_last, seed=args.seed, extra={"recipe": "finetune", **info},
    )
    trainer = Trainer(wrapped, step_fn, optimizer, scheduler, data, targs, env=env,
                      eval_fn=eval_fn if dev_features else None,
                      on_resume=lambda t, _: folder.write_config() if env.is_main else None)
    if env.is_main and not folder.resume:
        folder.write_config()
    history = trainer.fit(resume=folder.resume)
    if env.is_main:
        export_model(trainer.unwrapped, tokenizer, final_dir, {**info, "step": trainer.step})
        folder.finished()
    env.barrier()
    seconds = time.perf_counter() - start
    model_dir = best_dir if dev_features and best_dir.exists() else final_dir
    logger.info("fine-tuning done in %.0fs: %s (best dev %s %s)", seconds, model_dir, metric,
                "n/a" if best["value"] is None else f"{best['value']:.2f}%")
    return FinetuneResult(output_dir, model_dir, best["value"], trainer.step, seconds, history)


def add_finetune_arguments(p: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """Options shared by ``finetune`` and ``xnli`` (``defaults`` overrides some, e.g. the hub sources)."""
    d = {"model": None, "train_file": None, **(defaults or {})}
    if defaults is None:  # finetune; xnli is NLI only
        p.add_argument("--task", choices=list(TASKS), default="nli",
                       help="nli: sentence pairs (TSV/JSONL/hub); token-classification: CoNLL / IOB2 columns, JSON "
                            "lines (tokens + ner_tags) or hub google/xtreme:LANG / unimelb-nlp/wikiann:LANG; "
                            "question-answering: SQuAD v1.1 / XQuAD / MLQA JSON or hub rajpurkar/squad")
        p.add_argument("--doc-stride", type=int, default=128, help="question-answering: overlap of context windows")
        p.add_argument("--max-answer-length", type=int, default=30, help="question-answering: longest answer (tokens)")
    p.add_argument("--model", default=d["model"], required=d["model"] is None,
                   help="checkpoint folder or hub id (a preset name with --random-init)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model's)")
    p.add_argument("--random-init", action="store_true",
                   help="same architecture as --model (folder or preset) but untrained: the no-pretraining baseline")
    p.add_argument("--train-file", nargs="+", default=d["train_file"], required=d["train_file"] is None,
                   help="NLI training files (TSV/JSONL, .gz ok) or a hub dataset (nyu-mll/multi_nli)")
    p.add_argument("--dev-file", nargs="+", default=None, help="dev NLI file(s) for evaluation / best checkpoint")
    p.add_argument("--max-train-examples", type=int, default=None, help="cap training pairs (seeded sample)")
    p.add_argument("--max-dev-examples", type=int, default=None)
    p.add_argument("--learning-rate", "--lr", type=float, default=RECIPE["learning_rate"])
    p.add_argument("--epochs", type=float, default=RECIPE["epochs"])
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    p.add_argument("--warmup-steps", type=int, default=RECIPE["warmup_steps"],
                   help="linear warmup steps (capped at 10%% of training when more than half of it)")
    p.add_argument("--warmup-ratio", type=float, default=None,
                   help="warmup as a share of the training steps (ELECTRA: 0.1); overrides --warmup-steps")
    p.add_argument("--layerwise-lr-decay", type=float, default=None, metavar="DECAY",
                   help="layer i of N trains at lr * DECAY**(N - i), the embeddings at lr * DECAY**(N + 1), the head "
                        "at lr (ELECTRA fine-tuning: 0.8 for small, 0.9 for large models)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=RECIPE["batch_size"], help="global batch size")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--max-seq-length", type=int, default=RECIPE["max_seq_length"],
                   help="pairs longer than this are truncated longest-first")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 on a GPU that supports it, else fp32")
    p.add_argument("--pack-sequences", default="auto", choices=["auto", "on", "off"],
                   help="train on each batch's sequences packed into one row (cu_seqlens: no padding computed; the "
                        "Triton kernel's varlen path). auto: on CUDA for NLI and token classification; on CPU the "
                        "other backends apply it as a block-diagonal mask, exact but not faster")
    p.add_argument("--eval-every", type=int, default=1000, help="dev evaluation every N steps (and at the end)")
    p.add_argument("--save-every", type=int, default=1000, help="resumable checkpoint every N steps")
    p.add_argument("--keep-last", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output-dir from its newest checkpoint (the arguments must be the run's; "
                        "with no checkpoint yet the run starts)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --output-dir (set aside, deleted once this run finishes)")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available; torchrun sets it)")


def cmd_finetune(args: argparse.Namespace) -> int:
    from mdeberta.train import cleanup_distributed

    try:
        result = finetune(args)
    except (NLIDataError, CheckpointError, ValueError, FileNotFoundError) as e:
        logger.error("%s", e)
        return 2
    finally:
        cleanup_distributed()
    if int(os.environ.get("RANK", "0")) == 0:  # one line, not one per torchrun process
        print(f"model: {result.model_dir}" + (f" (dev accuracy {result.best_accuracy:.2f}%)"
                                              if result.best_accuracy is not None else ""))
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a classifier on NLI pairs (XNLI recipe defaults)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_finetune_arguments(p)
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_finetune)


__all__ = ["RECIPE", "FinetuneResult", "LengthGroupedBatches", "finetune", "load_model_for_nli"]
