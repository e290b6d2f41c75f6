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
from pathlib import Path
from typing import Any

from mdeberta.arguments import add_alias
from mdeberta.config import PRESETS, DebertaConfig, preset
from mdeberta.data.text import ShuffleConfig
from mdeberta.errors import UsageError

logger = logging.getLogger("mdeberta.pretrain")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain DeBERTa-V3 (RTD + GDES) or an MLM baseline on text corpora",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", nargs="+", required=True, metavar="SOURCE[=WEIGHT]",
                   help="corpus folders (per-language files or sub-folders), files (.txt/.gz/.xz/.zst, .jsonl[.gz|.xz|"
                        ".zst], .parquet) or hub datasets hf:NAME[:CONFIG]; =WEIGHT scales a source's size in the "
                        "language sampling (mdeberta.data.sources)")
    d.add_argument("--text-field", default="text", help="JSON / Parquet / hub column with the text")
    d.add_argument("--language-field", default=None,
                   help="column with each record's language (mixed-language files; needs --languages)")
    d.add_argument("--documents", choices=["lines", "blank-line"], default="lines",
                   help="text files: a document per line, or runs of lines separated by blank lines (CC100)")
    d.add_argument("--languages", default=None, help="comma-separated languages to use (default: all files)")
    d.add_argument("--tokenizer", required=True, help="tokenizer folder (mdeberta tokenizer train ...) or hub id")
    d.add_argument("--max-seq-length", type=int, default=128)
    d.add_argument("--alpha", type=float, default=0.3, help="language sampling p ∝ n^alpha (XLM-R: 0.3)")
    d.add_argument("--size-by", choices=["bytes", "lines"], default="bytes", help="n_lang for the sampling rule")
    d.add_argument("--mask-prob", type=float, default=0.15)
    d.add_argument("--masking", choices=["token", "whole_word", "ngram", "original"], default="token",
                   help="token: round(15%%) of the tokens at random (ELECTRA); original: DeBERTa's own generator, one "
                        "token per window of 6 in order until the budget, at most 80 per 512-token sequence "
                        "(mdeberta.data.text.MaskingConfig)")
    d.add_argument("--max-ngram", type=int, default=3)
    d.add_argument("--num-workers", type=_workers, default=1, metavar="N|auto",
                   help="DataLoader workers per process (tokenize on the fly); auto: measure one worker's tokens/s "
                        "and the model's, start enough to keep up (kept on --resume)")
    d.add_argument("--shuffle-buffer", type=int, default=ShuffleConfig.buffer_lines, metavar="LINES",
                   help="lines per language shuffled together (0: read the files in order, unshuffled)")
    d.add_argument("--shuffle-segments", type=int, default=ShuffleConfig.segments, metavar="N",
                   help="places of each language's files read at once, so a window mixes the whole corpus")
    m = p.add_argument_group("model")
    m.add_argument("--model-preset", default="deberta-v3-tiny", choices=sorted(PRESETS))
    m.add_argument("--model-config", default=None, help="config.json (overrides --model-preset); `--config "
                   "config.json` is the deprecated spelling (--config is a run's YAML / JSON of flags)")
    m.add_argument("--objective", choices=["rtd", "mlm"], default="rtd")
    m.add_argument("--generator-layers", type=int, default=None, help="default: half the discriminator's")
    m.add_argument("--embedding-sharing", choices=["gdes", "es", "none"], default="gdes")
    m.add_argument("--rtd-lambda", type=float, default=50.0,
                   help="weight of the discriminator loss: 50 as in ELECTRA (this project's default); the original "
                        "DeBERTa code's argparse default is 10")
    m.add_argument("--decoupled-training", action="store_true",
                   help="the original code's default: each step updates the generator (MLM loss, its own optimizer "
                        "and clipping) first, then the discriminator on the same samples embedded with the updated "
                        "generator table (GDES), with its own optimizer; default: one joint loss MLM + lambda x RTD "
                        "and one optimizer (ELECTRA). gdes or none sharing, one process")
    m.add_argument("--init-discriminator", default=None, help="continue from an HF folder / hub id")
    m.add_argument("--init-generator", default=None, help="generator HF folder (DebertaV2ForMaskedLM)")
    t = p.add_argument_group("training")
    output = t.add_argument("--output-dir", required=True, help="the run folder (checkpoints, metrics, export)")
    add_alias(p, "--output", output)
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --output-dir from its newest readable checkpoint (the arguments must be "
                        "the run's; with no checkpoint yet the run starts)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --output-dir (set aside, deleted once this run finishes)")
    t.add_argument("--max-steps", type=int, default=1000)
    t.add_argument("--stop-after", type=int, default=None,
                   help="end this invocation after this step (checkpoint saved); --resume continues the run")
    t.add_argument("--batch-size", type=int, default=8, help="sequences per process and micro-batch")
    t.add_argument("--grad-accum", type=int, default=1)
    t.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: the preset's, see PRETRAINING_DEFAULTS; 5e-4 for a --config)")
    t.add_argument("--generator-lr", type=float, default=None, help="separate generator learning rate")
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--warmup-ratio", type=float, default=0.1,
                   help="linear warmup over this share of --max-steps (DeBERTa's warmup_proportion default: 0.1)")
    t.add_argument("--warmup-steps", type=int, default=None, help="warmup steps (overrides --warmup-ratio)")
    t.add_argument("--adam-betas", type=float, nargs=2, default=(0.9, 0.999), metavar=("B1", "B2"),
                   help="AdamW betas (DeBERTa's and ELECTRA's: 0.9 0.999)")
    t.add_argument("--adam-eps", type=float, default=1e-6)
    t.add_argument("--health-every", type=int, default=None, metavar="STEPS",
                   help="log embedding_common_share and token_cosine of a fixed probe batch every N steps "
                        "(default: every 10 log intervals; 0: only at the end)")
    t.add_argument("--eval-minimal-pairs", default=None, metavar="FILE",
                   help="score a fixed sample of minimal pairs (BLiMP JSON lines / good<TAB>bad TSV) every "
                        "--health-every steps: generator and discriminator accuracy in metrics.jsonl")
    t.add_argument("--eval-minimal-pairs-per-paradigm", type=int, default=20, metavar="N",
                   help="pairs per paradigm in that sample (BLiMP: 20 x 67 paradigms)")
    t.add_argument("--max-grad-norm", type=float, default=1.0)
    t.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    t.add_argument("--embedding-update", choices=["dense", "lazy"], default="dense")
    t.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    t.add_argument("--distributed", choices=["ddp", "fsdp"], default="ddp", help="strategy under torchrun")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--save-every", type=int, default=500)
    t.add_argument("--keep-last", type=int, default=3)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--no-progress", action="store_true", help="no tqdm bar")
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


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--num-workers takes a number >= 0 or 'auto', got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"--num-workers takes a number >= 0 or 'auto', got {value!r}")
    return n


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


def learning_rate(args: argparse.Namespace) -> float:
    """--lr, else the preset's rate (PRETRAINING_LR), else 5e-4 for a --config."""
    if args.lr is not None:
        return args.lr
    return 5e-4 if args.model_config else PRETRAINING_LR[args.model_preset]


def warmup_steps(args: argparse.Namespace) -> int:
    """--warmup-steps, else --warmup-ratio of --max-steps."""
    if args.warmup_steps is not None:
        return args.warmup_steps
    if not 0 <= args.warmup_ratio < 1:
        raise UsageError(f"--warmup-ratio {args.warmup_ratio}: must be in [0, 1)")
    return round(args.warmup_ratio * args.max_steps)


def model_config(args: argparse.Namespace, vocab_size: int) -> DebertaConfig:
    """The discriminator's (or MLM model's) config; its vocabulary is the tokenizer's."""
    config = DebertaConfig.from_json_file(args.model_config) if args.model_config else preset(args.model_preset)
    config = config.replace(vocab_size=vocab_size)
    needs_positions = config.position_biased_input or (args.objective == "rtd" and config.relative_attention)
    if needs_positions and args.max_seq_length > config.max_position_embeddings:
        raise UsageError(f"--max-seq-length {args.max_seq_length} exceeds max_position_embeddings="
                         f"{config.max_position_embeddings} of the model config")
    return config


def build_model(args: argparse.Namespace, vocab_size: int) -> Any:
    """The model the run trains (RTD generator + discriminator, or the MLM model), from the run's arguments."""
    from mdeberta.model import DebertaForMaskedLM
    from mdeberta.train.pretraining import build_rtd_model

    if args.objective == "rtd":
        return build_rtd_model(model_config(args, vocab_size), args.generator_layers, args.embedding_sharing,
                               args.rtd_lambda, args.init_discriminator, args.init_generator)
    if args.init_discriminator or args.init_generator:
        return DebertaForMaskedLM.from_pretrained(args.init_generator or args.init_discriminator).train()
    return DebertaForMaskedLM(model_config(args, vocab_size))


def build(args: argparse.Namespace, env: Any) -> dict[str, Any]:
    """Tokenizer, data loader, model, step function, optimizer, scheduler (everything but the loop)."""
    import torch

    from mdeberta.data.sources import SourceOptions
    from mdeberta.data.text import MaskingConfig, PackedTextDataset, PretrainingLoader, discover_corpus
    from mdeberta.tokenizer import DebertaTokenizer
    from mdeberta.train import build_optimizer, linear_schedule, wrap_model
    from mdeberta.train.checkpointing import seed_everything
    from mdeberta.train.pretraining import mlm_step, rtd_step

    tokenizer = DebertaTokenizer.from_pretrained(args.tokenizer)
    languages = [s.strip() for s in args.languages.split(",") if s.strip()] if args.languages else None
    options = SourceOptions(text_field=args.text_field, language_field=args.language_field,
                            documents=args.documents)
    files = discover_corpus(args.data, languages, size_by=args.size_by, options=options)
    masking = MaskingConfig(objective=args.objective, mask_prob=args.mask_prob, mode=args.masking,
                            max_ngram=args.max_ngram)
    shuffle = ShuffleConfig(buffer_lines=args.shuffle_buffer, segments=args.shuffle_segments)
    dataset = PackedTextDataset(files, tokenizer, args.max_seq_length, args.batch_size, masking, args.alpha,
                                args.seed, shuffle)
    seed_everything(args.seed)  # identical initial weights on every rank
    model = build_model(args, len(tokenizer))
    if args.objective == "rtd":
        step_fn = rtd_step
        lr_by_prefix = {"generator.": args.generator_lr} if args.generator_lr else None
        vocab = model.discriminator.config.vocab_size
    else:
        step_fn = mlm_step
        lr_by_prefix = None
        vocab = model.config.vocab_size
    if vocab < len(tokenizer):
        raise ValueError(f"the model's vocab_size ({vocab}) is smaller than the tokenizer's {len(tokenizer)} tokens")
    model = model.to(env.device)
    if args.num_workers == "auto":
        args.num_workers, throughput = auto_workers(dataset, model, step_fn, env, args.precision)
        logger.info("--num-workers auto: one data worker makes %.0f tokens/s, the model trains %.0f tokens/s per "
                    "process: %d workers", throughput["data_tokens_per_s"], throughput["model_tokens_per_s"],
                    args.num_workers)
    loader = PretrainingLoader(dataset, env.rank, env.world_size, args.num_workers)
    wrapped = wrap_model(model, env, args.distributed, args.precision)
    adam = dict(weight_decay=args.weight_decay, betas=tuple(args.adam_betas), eps=args.adam_eps,
                embedding_update=args.embedding_update)
    second_phase = None
    if args.decoupled_training:  # the generator's optimizer first, then the discriminator's on the same samples
        from mdeberta.train.loop import SecondPhase
        from mdeberta.train.pretraining import rtd_discriminator_step, rtd_generator_step

        step_fn = rtd_generator_step
        optimizer = build_optimizer(model.generator, args.generator_lr or learning_rate(args), **adam)
        disc_optimizer = build_optimizer(model.discriminator, learning_rate(args), **adam)
        second_phase = SecondPhase(rtd_discriminator_step, disc_optimizer,
                                   linear_schedule(disc_optimizer, warmup_steps(args), args.max_steps),
                                   args.max_grad_norm)
    else:
        optimizer = build_optimizer(wrapped, learning_rate(args), lr_by_prefix=lr_by_prefix, **adam)
    scheduler = linear_schedule(optimizer, warmup_steps(args), args.max_steps)
    # A fixed batch of unmasked text from another seed's stream, for the health metrics.
    probe_data = PackedTextDataset(files, tokenizer, args.max_seq_length, min(8, args.batch_size), masking,
                                   args.alpha, args.seed + 1, shuffle)
    stream = probe_data.iter_shard(0)
    first = next(stream)
    stream.close()
    probe = {"input_ids": torch.where(first["labels"] != -100, first["labels"], first["input_ids"]).to(env.device),
             "attention_mask": first["attention_mask"].to(env.device)}
    pairs = None
    if args.eval_minimal_pairs:
        from mdeberta.minimal_pairs import read_minimal_pairs

        pairs = read_minimal_pairs(args.eval_minimal_pairs, args.eval_minimal_pairs_per_paradigm)
        logger.info("minimal pairs: %d from %s scored every health evaluation", len(pairs), args.eval_minimal_pairs)
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

    args = argparse.Namespace(**read_run_config(run_dir))
    path = None if step is None else checkpoint_dir(run_dir) / f"step-{step:08d}.pt"
    if step == 0:
        found, state = f"the initialization (seed {args.seed})", None
    elif path is not None and not path.is_file():
        raise CheckpointError(f"{run_dir}: no checkpoint for step {step} ({path})")
    else:
        found, state = load_latest_checkpoint(run_dir, path)
    tokenizer_dir = next((p for p in (Path(args.tokenizer), run_dir.parent / args.tokenizer,
                                      run_dir / "export" / "tokenizer") if (p / "spm.model").is_file()), None)
    if tokenizer_dir is None:
        raise CheckpointError(f"{run_dir}: the run's tokenizer {args.tokenizer!r} is not found (from here or beside "
                              "the run folder)")
    tokenizer = DebertaTokenizer.from_pretrained(tokenizer_dir)
    seed_everything(args.seed)  # as build() does: step 0 is exactly the run's initial weights
    model = build_model(args, len(tokenizer))
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


def run_pretraining(args: argparse.Namespace) -> int:
    from mdeberta.train import Trainer, TrainingArguments, cleanup_distributed, init_distributed
    from mdeberta.train.distributed import configure_cpu_threads, full_model_state
    from mdeberta.train.pretraining import minimal_pairs_health, representation_health
    from mdeberta.train.run_folder import RUN_CONFIG, prepare_run_folder

    check_arguments(args)
    env = init_distributed(args.device)
    out = Path(args.output_dir)
    if args.num_workers == "auto" and args.resume and (out / RUN_CONFIG).exists():
        # The data stream depends on the number of workers: a resumed run keeps the count it measured.
        args.num_workers = int(json.loads((out / RUN_CONFIG).read_text())["num_workers"])
    try:
        sources = [d.rsplit("=", 1)[0] if "=" in d and not Path(d).exists() else d for d in args.data]
        folder = prepare_run_folder(args, out, flag="--output-dir", safe=RESUME_SAFE, is_main=env.is_main,
                                    sources=[*sources, args.tokenizer, args.init_discriminator, args.init_generator,
                                             args.model_config])
        if args.num_workers == "auto":
            parts = build(args, env)  # measures, then sets args.num_workers
            threads = configure_cpu_threads(env, args.num_workers)
        else:
            threads = configure_cpu_threads(env, args.num_workers)
            parts = build(args, env)
        if env.device.type == "cpu":
            logger.info("CPU training: %d intra-op threads, %d data workers", threads, args.num_workers)
        health_every = 10 * args.log_every if args.health_every is None else args.health_every
        if env.is_main and not folder.resume:
            out.mkdir(parents=True, exist_ok=True)
            folder.write_config()
        targs = TrainingArguments(
            output_dir=str(out), max_steps=args.max_steps, grad_accum=args.grad_accum,
            max_grad_norm=args.max_grad_norm, precision=args.precision, log_every=args.log_every,
            save_every=args.save_every, keep_last=args.keep_last, seed=args.seed, eval_every=health_every,
            progress=False if args.no_progress else None, stop_after=args.stop_after,
            extra={"objective": args.objective, "embedding_sharing": args.embedding_sharing},
        )

        def health(t: Trainer) -> dict[str, float]:
            out = representation_health(t.unwrapped, parts["probe"])
            if parts["pairs"]:
                out |= minimal_pairs_health(t.unwrapped, parts["tokenizer"], parts["pairs"], args.max_seq_length)
            return out

        trainer = Trainer(parts["wrapped"], parts["step_fn"], parts["optimizer"], parts["scheduler"],
                          parts["loader"], targs, env=env, eval_fn=health,
                          on_resume=lambda t, _: folder.write_config() if env.is_main else None,
                          second_phase=parts["second_phase"])
        trainer.fit(resume=folder.resume)
        if trainer.step >= args.max_steps:
            model = parts["model"]
            if env.distributed and args.distributed == "fsdp":  # export a whole copy, gathered from the shards
                state = full_model_state(model)  # collective; the values land on rank 0
                if env.is_main:
                    model = build_model(args, len(parts["tokenizer"]))
                    model.load_state_dict(state)
            if env.is_main:
                exported = export(model, parts["tokenizer"], out / "export")
                logger.info("exported HF folders to %s", exported)
                folder.finished()
        env.barrier()
    finally:
        cleanup_distributed()
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """Sizes and counts checked at once, before data or models are loaded."""
    for name in ("max_steps", "batch_size", "grad_accum", "max_seq_length", "log_every",
                 "eval_minimal_pairs_per_paradigm"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    for name in ("save_every", "keep_last", "shuffle_buffer"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 0")
    if args.decoupled_training:
        if args.objective != "rtd" or args.embedding_sharing == "es":
            raise UsageError("--decoupled-training updates the generator and the discriminator separately: it needs "
                             "--objective rtd and --embedding-sharing gdes or none (es shares one table between both "
                             "optimizers)")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError("--decoupled-training runs in one process for now (under torchrun use the joint loss)")
        if args.precision == "fp16":
            raise UsageError("--decoupled-training supports --precision fp32 and bf16")
    if args.max_seq_length > 512:
        logger.warning("--max-seq-length %d: attention costs grow with the square of the length (%.0fx that of 512)",
                       args.max_seq_length, (args.max_seq_length / 512) ** 2)
