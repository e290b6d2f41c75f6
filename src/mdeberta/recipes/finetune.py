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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from mdeberta.arguments import TrainingConfig, add_config_arguments, option
from mdeberta.config import PRESETS
from mdeberta.errors import UsageError
from mdeberta.files import atomic_write_text
from mdeberta.tasks import TASKS, LengthGroupedBatches, training_accuracy
from mdeberta.tasks.base import TextLabelOptions
from mdeberta.tasks.nli import load_model_for_nli
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
RESUME_SAFE = ("eval_every", "eval_batch_size", "metric")


def check_schedule_arguments(cfg: FinetuneConfig) -> None:
    """Clear errors for bad sizes and schedule options, checked before any data is read (a bad
    ``--eval-batch-size`` used to fail only after the whole training run)."""
    for name in ("batch_size", "grad_accum", "eval_batch_size", "max_seq_length", "log_every", "eval_every"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be >= 1")
    for name in ("max_steps", "max_train_examples", "max_dev_examples"):
        if getattr(cfg, name, None) is not None and getattr(cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be >= 1")
    for name in ("save_every", "keep_last", "warmup_steps"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be >= 0")
    if not cfg.epochs > 0:
        raise UsageError(f"--epochs {cfg.epochs}: must be > 0")
    if cfg.max_seq_length > 512:
        logger.warning("--max-seq-length %d: attention costs grow with the square of the length (%.0fx that of 512)",
                       cfg.max_seq_length, (cfg.max_seq_length / 512) ** 2)
    if cfg.warmup_steps is not None and cfg.warmup_ratio is not None:
        raise UsageError(f"--warmup-steps {cfg.warmup_steps} and --warmup-ratio {cfg.warmup_ratio}: give one of them")
    if cfg.warmup_ratio is not None and not 0 <= cfg.warmup_ratio < 1:
        raise UsageError(f"--warmup-ratio {cfg.warmup_ratio}: must be in [0, 1)")
    if cfg.layerwise_lr_decay is not None and not 0 < cfg.layerwise_lr_decay <= 1:
        raise UsageError(f"--layerwise-lr-decay {cfg.layerwise_lr_decay}: must be in (0, 1]")


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


def make_task(cfg: FinetuneConfig, tokenizer: Any) -> Any:
    """The task of ``--task`` with the command's options, its training and dev data loaded."""
    from mdeberta.tasks import TaskOptions
    from mdeberta.tasks import make_task as make

    task = make(cfg.task, TaskOptions.from_args(cfg), tokenizer)
    task.load_training(cfg.train_file, cfg.dev_file)
    return task


def whole_model(model: torch.nn.Module, fsdp: bool) -> torch.nn.Module | None:
    """The model to export: itself, or under FSDP2 a plain copy on rank 0 built from the gathered shards (a
    collective: every rank calls it; the others get None)."""
    if not fsdp:
        return model
    from mdeberta.train.distributed import full_model_state

    state = full_model_state(model)  # lands on rank 0's CPU
    if not state:
        return None
    with torch.random.fork_rng(devices=[]):  # building the copy must not move rank 0's RNG (dropout after it)
        copy = type(model)(model.config)
    copy.load_state_dict(state)
    return copy


# --------------------------------------------------------------------------- the recipe
def finetune(args: argparse.Namespace | FinetuneConfig) -> FinetuneResult:
    """Run fine-tuning as configured: the parsed flags or a config built in Python (also called by ``mdeberta
    xnli``, whose namespace has the evaluation flags besides)."""
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
    cfg = FinetuneConfig.from_args(args)
    missing = [f"--{n.replace('_', '-')}" for n in ("model", "train_file", "output_dir") if not getattr(cfg, n)]
    if missing:  # the CLI requires them; a config built in Python may leave them out
        raise UsageError(f"fine-tuning needs {', '.join(missing)}")
    if cfg.model in PRESETS and not cfg.tokenizer and not Path(cfg.model).exists():
        raise UsageError(f"--model {cfg.model} is a preset (an architecture without a tokenizer); pass --tokenizer")
    check_schedule_arguments(cfg)  # before minutes of data loading, not after
    env = init_distributed(cfg.device)
    seed_everything(cfg.seed)
    output_dir = Path(cfg.output_dir)
    folder = prepare_run_folder(cfg, output_dir, flag="--output-dir", safe=RESUME_SAFE, is_main=env.is_main,
                                sources=[cfg.model, cfg.tokenizer, *cfg.train_file, *(cfg.dev_file or [])])
    tokenizer = DebertaTokenizer.from_pretrained(cfg.tokenizer or cfg.model)

    task = make_task(cfg, tokenizer)
    train_features, dev_features = task.train_features, task.dev_features

    per_step = cfg.micro_batch_size(env.world_size)
    pack = cfg.pack_sequences == "on" or (cfg.pack_sequences == "auto" and env.device.type == "cuda"
                                           and task.packable)
    if pack and not task.packable:
        raise UsageError(f"--pack-sequences on: the {task.name} task cannot be packed (its labels are per window "
                         "position); use --pack-sequences off")
    data = LengthGroupedBatches(train_features, per_step, cfg.seed, tokenizer.pad_token_id, env.rank,
                                env.world_size, collate_fn=task.collate_packed if pack else task.collate)
    steps_per_epoch = max(1, len(data) // cfg.grad_accum)
    max_steps = cfg.max_steps or max(1, round(cfg.epochs * steps_per_epoch))
    warmup = RECIPE["warmup_steps"] if cfg.warmup_steps is None else cfg.warmup_steps
    if cfg.warmup_ratio is not None:
        warmup = round(cfg.warmup_ratio * max_steps)
    elif warmup * 2 > max_steps:
        logger.warning("--warmup-steps %d is more than half of the %d training steps; using %d (10%%)",
                       warmup, max_steps, max(0, max_steps // 10))
        warmup = max(0, max_steps // 10)
    logger.info("%d steps (%.2f epochs of %d steps), global batch %d = %d x %d accum x %d procs, warmup %d",
                max_steps, max_steps / steps_per_epoch, steps_per_epoch, cfg.batch_size, per_step, cfg.grad_accum,
                env.world_size, warmup)

    model = task.build_model(cfg.model, tokenizer, cfg.random_init).to(env.device)
    config = model.config
    if config.position_biased_input and cfg.max_seq_length > config.max_position_embeddings:
        raise UsageError(f"--max-seq-length {cfg.max_seq_length} exceeds the {config.max_position_embeddings} "
                         f"absolute positions of {cfg.model}")
    model.train()
    fsdp = env.distributed and cfg.distributed == "fsdp"
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if env.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    wrapped = wrap_model(model, env, cfg.distributed, precision)
    optimizer = build_optimizer(wrapped, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=(0.9, 0.999),
                                eps=1e-6, layerwise_lr_decay=cfg.layerwise_lr_decay,
                                num_layers=model.config.num_hidden_layers)
    scheduler = linear_schedule(optimizer, warmup, max_steps)

    info = {"task": task.name, "source_model": str(cfg.model), "random_init": bool(cfg.random_init),
            "train_file": [str(f) for f in cfg.train_file], "train_examples": len(train_features),
            "learning_rate": cfg.learning_rate, "layerwise_lr_decay": cfg.layerwise_lr_decay,
            "batch_size": cfg.batch_size, "max_seq_length": cfg.max_seq_length,
            "warmup_steps": warmup, "max_steps": max_steps, "seed": cfg.seed, "precision": precision,
            "packed_sequences": pack}
    info.update(task.info)
    best_dir, final_dir = output_dir / "best", output_dir / "final"
    metric = task.metric  # NLI: accuracy (%), token classification: entity F1 (%)
    best = {"value": None}
    if folder.resume and (best_dir / "training_info.json").exists():
        best["value"] = json.loads((best_dir / "training_info.json").read_text()).get(f"dev_{metric}")

    def step_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        loss, out = task.training_loss(m, batch)
        tokens = batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
        accuracy = training_accuracy(out, batch)
        return loss, {"num_tokens": tokens, **({} if accuracy is None else {"accuracy": accuracy})}

    def eval_fn(trainer: Any) -> dict[str, float]:
        results = task.evaluate(trainer.unwrapped, cfg.eval_batch_size, trainer.env)
        value = results[metric]  # the same on every rank: each scores the whole dev set
        if value == value and (best["value"] is None or value > best["value"]):  # a NaN (constant output) never wins
            best["value"] = value
            whole = whole_model(trainer.unwrapped, fsdp)  # FSDP: gathered from the shards (every rank takes part)
            if trainer.env.is_main:
                export_model(whole, tokenizer, best_dir, {**info, "step": trainer.step, f"dev_{metric}": value})
                logger.info("step %d: dev %s %.2f%% is the best so far; exported %s", trainer.step, metric, value,
                            best_dir)
        return {**results, f"best_{metric}": best["value"]}

    targs = TrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, grad_accum=cfg.grad_accum, precision=precision,
        log_every=cfg.log_every, save_every=cfg.save_every, eval_every=cfg.eval_every if dev_features else 0,
        keep_last=cfg.keep_last, seed=cfg.seed, extra={"recipe": "finetune", **info},
    )
    trainer = Trainer(wrapped, step_fn, optimizer, scheduler, data, targs, env=env,
                      eval_fn=eval_fn if dev_features else None,
                      on_resume=lambda t, _: folder.write_config() if env.is_main else None)
    if env.is_main and not folder.resume:
        folder.write_config()
    history = trainer.fit(resume=folder.resume)
    whole = whole_model(trainer.unwrapped, fsdp)
    if env.is_main:
        export_model(whole, tokenizer, final_dir, {**info, "step": trainer.step})
        folder.finished()
    env.barrier()
    seconds = time.perf_counter() - start
    model_dir = best_dir if dev_features and best_dir.exists() else final_dir
    logger.info("fine-tuning done in %.0fs: %s (best dev %s %s)", seconds, model_dir, metric,
                "n/a" if best["value"] is None else f"{best['value']:.2f}%")
    return FinetuneResult(output_dir, model_dir, best["value"], trainer.step, seconds, history)


TASK_FLAGS = ("task", "doc_stride", "max_answer_length", "metric", *(f.name for f in fields(TextLabelOptions)))


@dataclass(kw_only=True)
class FinetuneConfig(TrainingConfig, TextLabelOptions):
    """Everything ``mdeberta finetune`` (and the training half of ``mdeberta xnli``) runs on; ``run_config.json``
    stores it and ``--resume`` compares it."""

    task: str = option("nli", choices=list(TASKS),
                       help="nli: sentence pairs (TSV/JSONL/hub); text-classification: one text or a pair, any labels "
                            "(TSV/CSV/JSONL/hub NAME[:CONFIG]); regression: one number per text (STS-B); "
                            "multiple-choice: context + endings (SWAG / COPA layouts); token-classification: CoNLL / "
                            "IOB2 columns, JSON lines (tokens + ner_tags) or hub google/xtreme:LANG; "
                            "question-answering: SQuAD v1.1 / XQuAD / MLQA JSON or hub rajpurkar/squad")
    doc_stride: int = option(128, type=int, help="question-answering: overlap of context windows")
    max_answer_length: int = option(30, type=int, help="question-answering: longest answer (tokens)")
    metric: str | None = option(None, help="dev metric that picks best/ (default: the task's first: nli / "
                                           "text-classification / multiple-choice accuracy, multi-label micro_f1, "
                                           "regression pearson, NER / QA f1; also macro_f1, mcc, spearman, "
                                           "exact_match)")
    model: str | None = option(None, required=True,
                               help="checkpoint folder or hub id (a preset name with --random-init)")
    random_init: bool = option(False, help="same architecture as --model (folder or preset) but untrained: the "
                                           "no-pretraining baseline")
    train_file: list[str] | None = option(None, required=True, nargs="+",
                                          help="training files (TSV/CSV/JSONL, .gz ok) or a hub dataset "
                                               "(nyu-mll/multi_nli)")
    dev_file: list[str] | None = option(None, nargs="+", help="dev file(s) for evaluation / best checkpoint")
    max_train_examples: int | None = option(None, type=int, help="cap training examples (seeded sample)")
    max_dev_examples: int | None = option(None, type=int, help="cap dev examples (seeded sample)")
    learning_rate: float = option(RECIPE["learning_rate"], type=float, aliases=("--lr",), help="peak learning rate")
    epochs: float = option(RECIPE["epochs"], type=float, help="passes over the training data")
    max_steps: int | None = option(None, help="stop after this many steps (overrides --epochs)")
    warmup_steps: int | None = option(None, help="linear warmup steps (default: the recipe's 3000, capped at 10%% of "
                                                 "training when more than half of it)")
    layerwise_lr_decay: float | None = option(None, type=float, metavar="DECAY",
                                              help="layer i of N trains at lr * DECAY**(N - i), the embeddings at lr "
                                                   "* DECAY**(N + 1), the head at lr (ELECTRA fine-tuning: 0.8 for "
                                                   "small, 0.9 for large models)")
    batch_size: int = option(RECIPE["batch_size"])
    max_seq_length: int = option(RECIPE["max_seq_length"], type=int,
                                 help="pairs longer than this are truncated longest-first")
    precision: str = option("auto", choices=["auto", "fp32", "bf16", "fp16"],
                            help="auto: bf16 on a GPU that supports it, else fp32")
    pack_sequences: str = option("auto", choices=["auto", "on", "off"],
                                 help="train on each batch's sequences packed into one row (cu_seqlens: no padding "
                                      "computed; the Triton kernel's varlen path). auto: on CUDA for NLI and token "
                                      "classification; on CPU the other backends apply it as a block-diagonal mask, "
                                      "exact but not faster")
    eval_every: int = option(1000, type=int, help="dev evaluation every N steps (and at the end)")
    eval_batch_size: int = option(64, type=int, help="sequences per dev forward pass")
    save_every: int = option(1000)
    keep_last: int = option(2)
    log_every: int = option(50)


def add_finetune_arguments(p: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """The flags of :class:`FinetuneConfig`; ``defaults`` (xnli: the hub sources) overrides some and leaves out the
    task flags (xnli is NLI only)."""
    add_config_arguments(p, FinetuneConfig, defaults=defaults, exclude=TASK_FLAGS if defaults is not None else ())


def cmd_finetune(args: argparse.Namespace) -> int:
    from mdeberta.train import cleanup_distributed

    try:
        result = finetune(args)
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
    p.set_defaults(func=cmd_finetune)


__all__ = ["RECIPE", "FinetuneResult", "LengthGroupedBatches", "finetune", "load_model_for_nli", "make_task"]
