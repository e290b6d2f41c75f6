"""``mdeberta pretrain``: DeBERTa-V3 RTD (+GDES) or MLM pretraining on streaming multilingual text; ``mdeberta plot``.

The same command runs as one process or as N under torchrun::

    mdeberta pretrain --data corpus/ --tokenizer tok/ --output-dir runs/tiny --model-preset deberta-v3-tiny
    torchrun --nproc_per_node 8 -m mdeberta pretrain ... --distributed ddp

Outputs: ``metrics.jsonl``, ``metrics.png``, ``checkpoints/step-*.pt`` (``--resume`` continues exactly) and
``export/`` with HF folders (``discriminator``, ``generator`` or ``model``, ``tokenizer``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdeberta.arguments import TrainingConfig, add_alias, add_config_arguments, option, whole_number
from mdeberta.config import PRESETS, DebertaConfig, preset
from mdeberta.data.text import ShuffleConfig
from mdeberta.errors import UsageError

logger = logging.getLogger("mdeberta.pretrain")


@dataclass(kw_only=True)
class PretrainConfig(TrainingConfig):
    """Everything ``mdeberta pretrain`` runs on; ``run_config.json`` stores it and ``--resume`` compares it."""

    # data
    data: list[str] = option(required=True, nargs="+", metavar="SOURCE[=WEIGHT]", group="data",
                             help="corpus folders (per-language files or sub-folders), files (.txt/.gz/.xz/.zst, "
                                  ".jsonl[.gz|.xz|.zst], .parquet) or hub datasets hf:NAME[:CONFIG]; =WEIGHT scales a "
                                  "source's size in the language sampling (mdeberta.data.sources)")
    text_field: str = option("text", group="data", help="JSON / Parquet / hub column with the text")
    language_field: str | None = option(None, group="data", help="column with each record's language "
                                                                 "(mixed-language files; needs --languages)")
    documents: str = option("lines", choices=["lines", "blank-line"], group="data",
                            help="text files: a document per line, or runs of lines separated by blank lines (CC100)")
    languages: str | None = option(None, group="data", help="comma-separated languages to use (default: all files)")
    tokenizer: str | None = option(None, required=True, help="tokenizer folder (mdeberta tokenizer train ...) or "
                                                             "hub id")
    max_seq_length: int = option(128, type=int, group="data", help="tokens per packed sequence")
    alpha: float = option(0.3, type=float, group="data", help="language sampling p ∝ n^alpha (XLM-R: 0.3)")
    size_by: str = option("bytes", choices=["bytes", "lines"], group="data", help="n_lang for the sampling rule")
    mask_prob: float = option(0.15, type=float, group="data", help="share of the tokens masked")
    masking: str = option("token", choices=["token", "whole_word", "ngram", "original"], group="data",
                          help="token: round(15%%) of the tokens at random (ELECTRA); original: DeBERTa's own "
                               "generator, one token per window of 6 in order until the budget, at most 80 per "
                               "512-token sequence (mdeberta.data.text.MaskingConfig)")
    max_ngram: int = option(3, type=int, group="data", help="--masking ngram: longest span")
    num_workers: int | str = option(1, type=whole_number(0, "auto"), metavar="N|auto", group="data",
                                    help="DataLoader workers per process (tokenize on the fly); auto: measure one "
                                         "worker's tokens/s and the model's, start enough to keep up (kept on "
                                         "--resume)")
    shuffle_buffer: int = option(ShuffleConfig.buffer_lines, type=int, metavar="LINES", group="data",
                                 help="lines per language shuffled together (0: read the files in order, "
                                      "unshuffled)")
    shuffle_segments: int = option(ShuffleConfig.segments, type=int, metavar="N", group="data",
                                   help="places of each language's files read at once, so a window mixes the whole "
                                        "corpus")
    # model
    model_preset: str = option("deberta-v3-tiny", choices=sorted(PRESETS), group="model",
                               help="the architecture (mdeberta.config.PRESETS)")
    model_config: str | None = option(None, group="model",
                                      help="config.json (overrides --model-preset); `--config config.json` is the "
                                           "deprecated spelling (--config is a run's YAML / JSON of flags)")
    objective: str = option("rtd", choices=["rtd", "mlm"], group="model",
                            help="rtd: replaced token detection (generator + discriminator); mlm: the baseline")
    generator_layers: int | None = option(None, type=int, group="model", help="default: half the discriminator's")
    embedding_sharing: str = option("gdes", choices=["gdes", "es", "none"], group="model",
                                    help="gdes: stop_gradient(E_gen) + delta (DeBERTa-V3); es: one shared table; "
                                         "none: separate tables")
    rtd_lambda: float = option(50.0, type=float, group="model",
                               help="weight of the discriminator loss: 50 as in ELECTRA (this project's default); the "
                                    "original DeBERTa code's argparse default is 10")
    decoupled_training: bool = option(False, group="model",
                                      help="the original code's default: each step updates the generator (MLM loss, "
                                           "its own optimizer and clipping) first, then the discriminator on the same "
                                           "samples embedded with the updated generator table (GDES), with its own "
                                           "optimizer; default: one joint loss MLM + lambda x RTD and one optimizer "
                                           "(ELECTRA). gdes or none sharing, one process")
    init_discriminator: str | None = option(None, group="model", help="continue from an HF folder / hub id")
    init_generator: str | None = option(None, group="model", help="generator HF folder (DebertaV2ForMaskedLM)")
    # training (the shared block's flags with pretraining's defaults, and pretraining's own)
    output_dir: str | None = option(None, deprecated=("--output",))
    max_steps: int | None = option(1000)
    batch_size: int = option(8)
    warmup_ratio: float | None = option(None, help="linear warmup over this share of --max-steps (default 0.1: "
                                                   "DeBERTa's warmup_proportion)")
    stop_after: int | None = option(None, type=int, group="training",
                                    help="end this invocation after this step (checkpoint saved); --resume "
                                         "continues the run")
    lr: float | None = option(None, type=float, group="training",
                              help="peak learning rate (default: the preset's, see PRETRAINING_LR; 5e-4 for a "
                                   "--model-config)")
    generator_lr: float | None = option(None, type=float, group="training", help="separate generator learning rate")
    adam_betas: tuple[float, float] = option((0.9, 0.999), type=float, nargs=2, metavar=("B1", "B2"),
                                             group="training", help="AdamW betas (DeBERTa's and ELECTRA's: 0.9 0.999)")
    adam_eps: float = option(1e-6, type=float, group="training", help="AdamW epsilon")
    health_every: int | None = option(None, type=int, metavar="STEPS", group="training",
                                      help="log embedding_common_share and token_cosine of a fixed probe batch every "
                                           "N steps (default: every 10 log intervals; 0: only at the end)")
    eval_minimal_pairs: str | None = option(None, metavar="FILE", group="training",
                                            help="score a fixed sample of minimal pairs (BLiMP JSON lines / "
                                                 "good<TAB>bad TSV) every --health-every steps: generator and "
                                                 "discriminator accuracy in metrics.jsonl")
    eval_minimal_pairs_per_paradigm: int = option(20, type=int, metavar="N", group="training",
                                                  help="pairs per paradigm in that sample (BLiMP: 20 x 67 paradigms)")
    embedding_update: str = option("dense", choices=["dense", "lazy"], group="training",
                                   help="lazy: AdamW updates only the embedding rows a step used (LazyAdamW)")
    no_progress: bool = option(False, group="training", help="no tqdm bar")


DEFAULT_WARMUP_RATIO = 0.1  # DeBERTa's warmup_proportion, ELECTRA's too


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain DeBERTa-V3 (RTD + GDES) or an MLM baseline on text corpora",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, PretrainConfig)
    p.set_defaults(func=run_pretraining)

    e = subparsers.add_parser("export-checkpoint",
                              help="HF folders (discriminator / generator / model, tokenizer) from a pretraining "
                                   "checkpoint of RUN_DIR, e.g. for a curve over the token budget")
    e.add_argument("run_dir", help="a `mdeberta pretrain` output folder (run_config.json, checkpoints/)")
    e.add_argument("--step", type=int, default=None,
                   help="the checkpoint's step (default: the newest; 0: the run's initial weights, rebuilt from its "
                        "seed: the random-init baseline of the same run)")
    exported = e.add_argument("--output-dir", required=True, help="folder for the HF folders")
    add_alias(e, "--output", exported)
    e.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir (renamed aside first)")
    e.set_defaults(func=run_export_checkpoint)

    q = subparsers.add_parser("plot", help="PNG of the training curves in RUN_DIR/metrics.jsonl")
    q.add_argument("run_dir")
    q.add_argument("--output", default=None, help="PNG path (default RUN_DIR/metrics.png)")
    q.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from mdeberta.train.metrics import plot_metrics

    print(plot_metrics(args.run_dir, args.output))
    return 0


# Peak pretraining learning rates per preset, from the original recipes: DeBERTa-V3's rtd.sh (xsmall 3e-4, base
# and large 1e-4, AdamW betas 0.9/0.999, eps 1e-6, weight decay 0.01, clipping 1.0) and ELECTRA-Small (5e-4 at 12 x
# 256). small (no from-scratch setting in rtd.sh) sits between xsmall and base; tiny and micro follow the trend to
# smaller models (RESULTS.md: the tiny model's lr sweep).
PRETRAINING_LR = {
    "deberta-v3-micro": 1e-3,
    "deberta-v3-tiny": 5e-4,
    "deberta-v3-xsmall": 3e-4,
    "deberta-v3-small": 2e-4,
    "deberta-v3-base": 1e-4,
    "mdeberta-v3-base": 1e-4,
    "deberta-v3-large": 1e-4,
}


def learning_rate(cfg: PretrainConfig) -> float:
    """--lr, else the preset's rate (PRETRAINING_LR), else 5e-4 for a --config."""
    if cfg.lr is not None:
        return cfg.lr
    return 5e-4 if cfg.model_config else PRETRAINING_LR[cfg.model_preset]


def warmup_steps(cfg: PretrainConfig) -> int:
    """--warmup-steps, else --warmup-ratio of --max-steps (10% when neither is given)."""
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    ratio = DEFAULT_WARMUP_RATIO if cfg.warmup_ratio is None else cfg.warmup_ratio
    if not 0 <= ratio < 1:
        raise UsageError(f"--warmup-ratio {ratio}: must be in [0, 1)")
    return round(ratio * cfg.max_steps)


def model_config(cfg: PretrainConfig, vocab_size: int) -> DebertaConfig:
    """The discriminator's (or MLM model's) config; its vocabulary is the tokenizer's."""
    config = DebertaConfig.from_json_file(cfg.model_config) if cfg.model_config else preset(cfg.model_preset)
    config = config.replace(vocab_size=vocab_size)
    needs_positions = config.position_biased_input or (cfg.objective == "rtd" and config.relative_attention)
    if needs_positions and cfg.max_seq_length > config.max_position_embeddings:
        raise UsageError(f"--max-seq-length {cfg.max_seq_length} exceeds max_position_embeddings="
                         f"{config.max_position_embeddings} of the model config")
    return config


def build_model(cfg: PretrainConfig, vocab_size: int) -> Any:
    """The model the run trains (RTD generator + discriminator, or the MLM model), from the run's arguments."""
    from mdeberta.model import DebertaForMaskedLM
    from mdeberta.train.pretraining import build_rtd_model

    if cfg.objective == "rtd":
        return build_rtd_model(model_config(cfg, vocab_size), cfg.generator_layers, cfg.embedding_sharing,
                               cfg.rtd_lambda, cfg.init_discriminator, cfg.init_generator)
    if cfg.init_discriminator or cfg.init_generator:
        return DebertaForMaskedLM.from_pretrained(cfg.init_generator or cfg.init_discriminator).train()
    return DebertaForMaskedLM(model_config(cfg, vocab_size))


def build(cfg: PretrainConfig, env: Any) -> dict[str, Any]:
    """Tokenizer, data loader, model, step function, optimizer, scheduler (everything but the loop)."""
    import torch

    from mdeberta.data.sources import SourceOptions
    from mdeberta.data.text import MaskingConfig, PackedTextDataset, PretrainingLoader, discover_corpus
    from mdeberta.tokenizer import DebertaTokenizer
    from mdeberta.train import build_optimizer, linear_schedule, wrap_model
    from mdeberta.train.checkpointing import seed_everything
    from mdeberta.train.pretraining import mlm_step, rtd_step

    tokenizer = DebertaTokenizer.from_pretrained(cfg.tokenizer)
    languages = [s.strip() for s in cfg.languages.split(",") if s.strip()] if cfg.languages else None
    options = SourceOptions(text_field=cfg.text_field, language_field=cfg.language_field,
                            documents=cfg.documents)
    files = discover_corpus(cfg.data, languages, size_by=cfg.size_by, options=options)
    masking = MaskingConfig(objective=cfg.objective, mask_prob=cfg.mask_prob, mode=cfg.masking,
                            max_ngram=cfg.max_ngram)
    shuffle = ShuffleConfig(buffer_lines=cfg.shuffle_buffer, segments=cfg.shuffle_segments)
    micro_batch = cfg.micro_batch_size(env.world_size)  # --batch-size is the global batch of a step
    dataset = PackedTextDataset(files, tokenizer, cfg.max_seq_length, micro_batch, masking, cfg.alpha,
                                cfg.seed, shuffle)
    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = build_model(cfg, len(tokenizer))
    if cfg.objective == "rtd":
        step_fn = rtd_step
        lr_by_prefix = {"generator.": cfg.generator_lr} if cfg.generator_lr else None
        vocab = model.discriminator.config.vocab_size
    else:
        step_fn = mlm_step
        lr_by_prefix = None
        vocab = model.config.vocab_size
    if vocab < len(tokenizer):
        raise UsageError(f"the model's vocab_size ({vocab}) is smaller than the tokenizer's {len(tokenizer)} tokens")
    model = model.to(env.device)
    if cfg.num_workers == "auto":
        cfg.num_workers, throughput = auto_workers(dataset, model, step_fn, env, cfg.precision)
        logger.info("--num-workers auto: one data worker makes %.0f tokens/s, the model trains %.0f tokens/s per "
                    "process: %d workers", throughput["data_tokens_per_s"], throughput["model_tokens_per_s"],
                    cfg.num_workers)
    loader = PretrainingLoader(dataset, env.rank, env.world_size, cfg.num_workers)
    wrapped = wrap_model(model, env, cfg.distributed, cfg.precision)
    adam = dict(weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                embedding_update=cfg.embedding_update)
    second_phase = None
    if cfg.decoupled_training:  # the generator's optimizer first, then the discriminator's on the same samples
        from mdeberta.train.loop import SecondPhase
        from mdeberta.train.pretraining import rtd_discriminator_step, rtd_generator_step

        step_fn = rtd_generator_step
        optimizer = build_optimizer(model.generator, cfg.generator_lr or learning_rate(cfg), **adam)
        disc_optimizer = build_optimizer(model.discriminator, learning_rate(cfg), **adam)
        second_phase = SecondPhase(rtd_discriminator_step, disc_optimizer,
                                   linear_schedule(disc_optimizer, warmup_steps(cfg), cfg.max_steps),
                                   cfg.max_grad_norm)
    else:
        optimizer = build_optimizer(wrapped, learning_rate(cfg), lr_by_prefix=lr_by_prefix, **adam)
    scheduler = linear_schedule(optimizer, warmup_steps(cfg), cfg.max_steps)
    # A fixed batch of unmasked text from another seed's stream, for the health metrics.
    probe_data = PackedTextDataset(files, tokenizer, cfg.max_seq_length, min(8, micro_batch), masking,
                                   cfg.alpha, cfg.seed + 1, shuffle)
    stream = probe_data.iter_shard(0)
    first = next(stream)
    stream.close()
    probe = {"input_ids": torch.where(first["labels"] != -100, first["labels"], first["input_ids"]).to(env.device),
             "attention_mask": first["attention_mask"].to(env.device)}
    pairs = None
    if cfg.eval_minimal_pairs:
        from mdeberta.minimal_pairs import read_minimal_pairs

        pairs = read_minimal_pairs(cfg.eval_minimal_pairs, cfg.eval_minimal_pairs_per_paradigm)
        logger.info("minimal pairs: %d from %s scored every health evaluation", len(pairs), cfg.eval_minimal_pairs)
    logger.info("%s: %.2fM parameters, %d languages %s", type(model).__name__,
                sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()) / 1e6, len(files),
                {f.language: round(dataset.probabilities[f.language], 4) for f in files})
    return dict(tokenizer=tokenizer, loader=loader, model=model, wrapped=wrapped, step_fn=step_fn,
                optimizer=optimizer, scheduler=scheduler, probe=probe, pairs=pairs, second_phase=second_phase)


def data_throughput(dataset: Any, batches: int = 30, min_seconds: float = 1.0) -> tuple[float, list[dict]]:
    """Tokens/s of one data worker (read + shuffle + tokenize + pack + mask) on this process, after the first
    batch (which fills the shuffle windows); also returns the batches, for timing the model on real inputs."""
    import time

    stream = dataset.iter_shard(0)
    kept = [next(stream)]
    start, produced = time.perf_counter(), 0
    while produced < batches or time.perf_counter() - start < min_seconds:
        kept.append(next(stream))
        produced += 1
        if produced >= 4 * batches:
            break
    seconds = time.perf_counter() - start
    stream.close()
    tokens = produced * dataset.batch_size * dataset.max_seq_length
    return tokens / max(seconds, 1e-9), kept[:4]


def model_throughput(model: Any, step_fn: Any, batches: list[dict], env: Any, precision: str) -> float:
    """Training tokens/s of the model (forward + backward, no update) on real batches; RNG and gradients are left as
    they were, so a run with ``auto`` trains exactly like one given the same worker count."""
    import contextlib
    import time

    import torch

    device = env.device
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
                if precision != "fp32" else contextlib.nullcontext())
    devices = [device] if device.type == "cuda" else []
    times = []
    with torch.random.fork_rng(devices=devices):
        model.train()
        for batch in batches[:3]:
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            with autocast:
                loss, _ = step_fn(model, batch)
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    tokens = batches[0]["input_ids"].numel()
    return tokens / max(min(times[1:] or times), 1e-9)


def auto_workers(dataset: Any, model: Any, step_fn: Any, env: Any, precision: str) -> tuple[int, dict[str, float]]:
    """Data workers per process that keep up with training: ceil(1.25 x model tokens/s / one worker's tokens/s),
    at least 1 and at most the cores left per process."""
    import math
    import os

    data_tps, batches = data_throughput(dataset)
    model_tps = model_throughput(model, step_fn, batches, env, precision)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))
    cap = max(1, (os.cpu_count() or 1) // max(1, local) - (1 if env.device.type == "cpu" else 0))
    workers = max(1, min(cap, math.ceil(1.25 * model_tps / max(data_tps, 1e-9))))
    workers = int(env.broadcast_object(workers))  # every rank must cut the stream into the same shards
    return workers, {"data_tokens_per_s": data_tps, "model_tokens_per_s": model_tps}


def export(model: Any, tokenizer: Any, folder: Path) -> Path:
    """HF folders: RTD -> discriminator/ generator/ tokenizer/; MLM -> model/ tokenizer/."""
    from mdeberta.train.pretraining import RTDPretrainingModel

    if isinstance(model, RTDPretrainingModel):
        return model.save_pretrained(folder, tokenizer)
    model.save_pretrained(folder / "model")
    for sub in ("model", "tokenizer"):
        tokenizer.save_pretrained(folder / sub)
    return folder


def export_checkpoint(run_dir: str | Path, step: int | None, output: str | Path, overwrite: bool = False) -> Path:
    """Rebuild the run's model from ``run_config.json``, load one checkpoint's weights and export HF folders."""
    import shutil

    from mdeberta.errors import CheckpointError
    from mdeberta.outputs import check_output_folder, replace_folder
    from mdeberta.tokenizer import DebertaTokenizer
    from mdeberta.train.checkpointing import checkpoint_dir, load_latest_checkpoint, seed_everything

    run_dir = Path(run_dir)
    output = check_output_folder(output, [run_dir], overwrite=overwrite, flag="export-checkpoint --output-dir")
    config_file = run_dir / "run_config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{run_dir}: no run_config.json, not a `mdeberta pretrain` output folder")
    from mdeberta.train.run_folder import read_run_config

    cfg = PretrainConfig.from_dict(read_run_config(run_dir))
    path = None if step is None else checkpoint_dir(run_dir) / f"step-{step:08d}.pt"
    if step == 0:
        found, state = f"the initialization (seed {cfg.seed})", None
    elif path is not None and not path.is_file():
        raise CheckpointError(f"{run_dir}: no checkpoint for step {step} ({path})")
    else:
        found, state = load_latest_checkpoint(run_dir, path)
    tokenizer_dir = next((p for p in (Path(cfg.tokenizer), run_dir.parent / cfg.tokenizer,
                                      run_dir / "export" / "tokenizer") if (p / "spm.model").is_file()), None)
    if tokenizer_dir is None:
        raise CheckpointError(f"{run_dir}: the run's tokenizer {cfg.tokenizer!r} is not found (from here or beside "
                              "the run folder)")
    tokenizer = DebertaTokenizer.from_pretrained(tokenizer_dir)
    seed_everything(cfg.seed)  # as build() does: step 0 is exactly the run's initial weights
    model = build_model(cfg, len(tokenizer))
    if state is not None:
        model.load_state_dict(state["model"])
    tmp = output.with_name(f".{output.name}.exporting")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        export(model.eval(), tokenizer, tmp)
        replace_folder(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported step %d (%s) to %s", state["step"] if state else 0, found, output)
    return output


def run_export_checkpoint(args: argparse.Namespace) -> int:
    print(export_checkpoint(args.run_dir, args.step, args.output_dir, args.overwrite))
    return 0


# Arguments that may change on --resume: they do not change what is computed.
RESUME_SAFE = ("health_every", "eval_minimal_pairs", "eval_minimal_pairs_per_paradigm")


def run_pretraining(args: argparse.Namespace | PretrainConfig) -> int:
    """``mdeberta pretrain``: the parsed flags (or a config built in Python) -> a finished, exported run."""
    from mdeberta.train import Trainer, TrainingArguments, cleanup_distributed, init_distributed
    from mdeberta.train.distributed import configure_cpu_threads, full_model_state
    from mdeberta.train.pretraining import minimal_pairs_health, representation_health
    from mdeberta.train.run_folder import RUN_CONFIG, prepare_run_folder

    cfg = PretrainConfig.from_args(args)
    check_arguments(cfg)
    env = init_distributed(cfg.device)
    cfg.micro_batch_size(env.world_size)  # the global batch divides over the processes, or a clear error now
    out = Path(cfg.output_dir)
    if cfg.num_workers == "auto" and cfg.resume and (out / RUN_CONFIG).exists():
        # The data stream depends on the number of workers: a resumed run keeps the count it measured.
        cfg.num_workers = int(json.loads((out / RUN_CONFIG).read_text())["num_workers"])
    try:
        sources = [d.rsplit("=", 1)[0] if "=" in d and not Path(d).exists() else d for d in cfg.data]
        folder = prepare_run_folder(cfg, out, flag="--output-dir", safe=RESUME_SAFE, is_main=env.is_main,
                                    sources=[*sources, cfg.tokenizer, cfg.init_discriminator, cfg.init_generator,
                                             cfg.model_config])
        if cfg.num_workers == "auto":
            parts = build(cfg, env)  # measures, then sets cfg.num_workers
            threads = configure_cpu_threads(env, cfg.num_workers)
        else:
            threads = configure_cpu_threads(env, cfg.num_workers)
            parts = build(cfg, env)
        if env.device.type == "cpu":
            logger.info("CPU training: %d intra-op threads, %d data workers", threads, cfg.num_workers)
        health_every = 10 * cfg.log_every if cfg.health_every is None else cfg.health_every
        if env.is_main and not folder.resume:
            out.mkdir(parents=True, exist_ok=True)
            folder.write_config()
        targs = TrainingArguments(
            output_dir=str(out), max_steps=cfg.max_steps, grad_accum=cfg.grad_accum,
            max_grad_norm=cfg.max_grad_norm, precision=cfg.precision, log_every=cfg.log_every,
            save_every=cfg.save_every, keep_last=cfg.keep_last, seed=cfg.seed, eval_every=health_every,
            progress=False if cfg.no_progress else None, stop_after=cfg.stop_after,
            extra={"objective": cfg.objective, "embedding_sharing": cfg.embedding_sharing},
        )

        def health(t: Trainer) -> dict[str, float]:
            out = representation_health(t.unwrapped, parts["probe"])
            if parts["pairs"]:
                out |= minimal_pairs_health(t.unwrapped, parts["tokenizer"], parts["pairs"], cfg.max_seq_length)
            return out

        trainer = Trainer(parts["wrapped"], parts["step_fn"], parts["optimizer"], parts["scheduler"],
                          parts["loader"], targs, env=env, eval_fn=health,
                          on_resume=lambda t, _: folder.write_config() if env.is_main else None,
                          second_phase=parts["second_phase"])
        trainer.fit(resume=folder.resume)
        if trainer.step >= cfg.max_steps:
            model = parts["model"]
            if env.distributed and cfg.distributed == "fsdp":  # export a whole copy, gathered from the shards
                state = full_model_state(model)  # collective; the values land on rank 0
                if env.is_main:
                    model = build_model(cfg, len(parts["tokenizer"]))
                    model.load_state_dict(state)
            if env.is_main:
                exported = export(model, parts["tokenizer"], out / "export")
                logger.info("exported HF folders to %s", exported)
                folder.finished()
        env.barrier()
    finally:
        cleanup_distributed()
    return 0


def check_arguments(cfg: PretrainConfig) -> None:
    """Sizes and counts checked at once, before data or models are loaded."""
    for name in ("max_steps", "batch_size", "grad_accum", "max_seq_length", "log_every",
                 "eval_minimal_pairs_per_paradigm"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be >= 1")
    for name in ("save_every", "keep_last", "shuffle_buffer"):
        if getattr(cfg, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be >= 0")
    if cfg.warmup_steps is not None and cfg.warmup_ratio is not None:
        raise UsageError(f"--warmup-steps {cfg.warmup_steps} and --warmup-ratio {cfg.warmup_ratio}: give one of them")
    if cfg.decoupled_training:
        if cfg.objective != "rtd" or cfg.embedding_sharing == "es":
            raise UsageError("--decoupled-training updates the generator and the discriminator separately: it needs "
                             "--objective rtd and --embedding-sharing gdes or none (es shares one table between both "
                             "optimizers)")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError("--decoupled-training runs in one process for now (under torchrun use the joint loss)")
        if cfg.precision == "fp16":
            raise UsageError("--decoupled-training supports --precision fp32 and bf16")
    if cfg.max_seq_length > 512:
        logger.warning("--max-seq-length %d: attention costs grow with the square of the length (%.0fx that of 512)",
                       cfg.max_seq_length, (cfg.max_seq_length / 512) ** 2)
