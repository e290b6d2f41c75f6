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
    NLIExample,
    collate,
    encode_examples,
    length_grouped_batches,
    load_nli,
    shard_batches,
)

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
def check_schedule_arguments(args: argparse.Namespace) -> None:
    """Clear errors for bad schedule options (checked before any data is read)."""
    if args.warmup_ratio is not None and not 0 <= args.warmup_ratio < 1:
        raise ValueError(f"--warmup-ratio {args.warmup_ratio}: must be in [0, 1)")
    if args.layerwise_lr_decay is not None and not 0 < args.layerwise_lr_decay <= 1:
        raise ValueError(f"--layerwise-lr-decay {args.layerwise_lr_decay}: must be in (0, 1]")


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
    tmp = folder.with_name(f".{folder.name}.tmp")
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    atomic_write_text(tmp / "training_info.json", json.dumps(info, indent=2) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- data
class LengthGroupedBatches:
    """Dynamically padded training batches of similar-length examples; this rank's share of a seeded epoch.

    ``set_epoch`` reshuffles deterministically, so the loop's resume (replay the epoch to the saved batch)
    sees exactly the same batches.
    """

    def __init__(self, features: list[dict[str, Any]], batch_size: int, seed: int, pad_token_id: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.features, self.batch_size, self.seed = features, batch_size, seed
        self.pad_token_id, self.rank, self.world_size = pad_token_id, rank, world_size
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
            yield collate([self.features[i] for i in idx], self.pad_token_id)


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
    tokenizer = DebertaTokenizer.from_pretrained(args.tokenizer or args.model)

    train_examples = load_nli(args.train_file, "train", args.max_train_examples, args.seed)
    dev_examples: list[NLIExample] = []
    if args.dev_file:
        dev_examples = load_nli(args.dev_file, "dev", args.max_dev_examples, args.seed)
    train_features = encode_examples(tokenizer, train_examples, args.max_seq_length)
    dev_features = encode_examples(tokenizer, dev_examples, args.max_seq_length) if dev_examples else []
    truncated = sum(len(f["input_ids"]) >= args.max_seq_length for f in train_features)
    logger.info("train: %d examples (%d at the %d-token limit, truncated longest-first); dev: %d",
                len(train_features), truncated, args.max_seq_length, len(dev_features))

    per_step = args.batch_size // (args.grad_accum * env.world_size)
    if per_step < 1 or per_step * args.grad_accum * env.world_size != args.batch_size:
        raise ValueError(f"--batch-size {args.batch_size} must be a multiple of --grad-accum ({args.grad_accum}) x "
                         f"processes ({env.world_size})")
    data = LengthGroupedBatches(train_features, per_step, args.seed, tokenizer.pad_token_id, env.rank,
                                env.world_size)
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

    model = load_model_for_nli(args.model, tokenizer, args.random_init).to(env.device)
    model.train()
    wrapped = wrap_model(model, env)
    optimizer = build_optimizer(wrapped, lr=args.learning_rate, weight_decay=args.weight_decay, betas=(0.9, 0.999),
                                eps=1e-6, layerwise_lr_decay=args.layerwise_lr_decay,
                                num_layers=model.config.num_hidden_layers)
    scheduler = linear_schedule(optimizer, warmup, max_steps)
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if env.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"

    info = {"source_model": str(args.model), "random_init": bool(args.random_init),
            "train_file": [str(f) for f in args.train_file], "train_examples": len(train_features),
            "learning_rate": args.learning_rate, "layerwise_lr_decay": args.layerwise_lr_decay,
            "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
            "warmup_steps": warmup, "max_steps": max_steps, "seed": args.seed, "precision": precision}
    best_dir, final_dir = output_dir / "best", output_dir / "final"
    best = {"accuracy": None}
    if args.resume and (best_dir / "training_info.json").exists():
        best["accuracy"] = json.loads((best_dir / "training_info.json").read_text()).get("dev_accuracy")

    def step_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        out = m(**batch)
        acc = 100.0 * (out.logits.detach().argmax(-1) == batch["labels"]).float().mean()
        return out.loss, {"accuracy": acc, "num_tokens": batch["attention_mask"].sum()}

    def eval_fn(trainer: Any) -> dict[str, float]:
        acc = dev_accuracy(trainer.unwrapped, tokenizer, dev_features, args.eval_batch_size, trainer.env)
        if best["accuracy"] is None or acc > best["accuracy"]:
            best["accuracy"] = acc
            if trainer.env.is_main:
                export_model(trainer.unwrapped, tokenizer, best_dir,
                             {**info, "step": trainer.step, "dev_accuracy": acc})
                logger.info("step %d: dev accuracy %.2f%% is the best so far; exported %s", trainer.step, acc,
                            best_dir)
        return {"accuracy": acc, "best_accuracy": best["accuracy"]}

    targs = TrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, grad_accum=args.grad_accum, precision=precision,
        log_every=args.log_every, save_every=args.save_every, eval_every=args.eval_every if dev_features else 0,
        keep_last=args.keep_last, seed=args.seed, extra={"recipe": "finetune", **info},
    )
    trainer = Trainer(wrapped, step_fn, optimizer, scheduler, data, targs, env=env,
                      eval_fn=eval_fn if dev_features else None)
    history = trainer.fit(resume=args.resume)
    if env.is_main:
        export_model(trainer.unwrapped, tokenizer, final_dir, {**info, "step": trainer.step})
    env.barrier()
    seconds = time.perf_counter() - start
    model_dir = best_dir if dev_features and best_dir.exists() else final_dir
    logger.info("fine-tuning done in %.0fs: %s (best dev accuracy %s)", seconds, model_dir,
                "n/a" if best["accuracy"] is None else f"{best['accuracy']:.2f}%")
    return FinetuneResult(output_dir, model_dir, best["accuracy"], trainer.step, seconds, history)


def add_finetune_arguments(p: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """Options shared by ``finetune`` and ``xnli`` (``defaults`` overrides some, e.g. the hub sources)."""
    d = {"model": None, "train_file": None, **(defaults or {})}
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
    p.add_argument("--eval-every", type=int, default=1000, help="dev evaluation every N steps (and at the end)")
    p.add_argument("--save-every", type=int, default=1000, help="resumable checkpoint every N steps")
    p.add_argument("--keep-last", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
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
