"""``mdeberta xnli``: the headline experiment in one command — fine-tune on English NLI, test on 15 languages.

    # the paper's setting (needs a GPU, internet or a hub cache, and `pip install datasets`)
    mdeberta xnli --output-dir out/xnli
    # fully local, minutes on a CPU
    mdeberta xnli --model my-pretrained/ --train-file ../shared/data/nli_en/mnli_train_subset_8999.tsv.gz \\
        --eval-dir ../shared/data/xnli --max-train-examples 2000 --max-eval-examples 200 --max-steps 100 \\
        --output-dir out/xnli-small

Steps: ``finetune`` (English train set; dev = English XNLI dev unless --dev-file) -> best checkpoint ->
``evaluate`` on every language's XNLI test split -> ``<output-dir>/eval/xnli_test.{md,json,png}`` and
``predictions_test.jsonl``, next to the published XLM-R-base and mDeBERTa-V3-base rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from mdeberta.data.nli import is_hub_name, load_xnli
from mdeberta.files import atomic_write_text
from mdeberta.recipes.evaluate import add_eval_arguments, evaluate_xnli, write_xnli_report
from mdeberta.recipes.finetune import add_finetune_arguments, finetune

logger = logging.getLogger("mdeberta.xnli")

DEFAULT_MODEL = "microsoft/mdeberta-v3-base"
DEFAULT_TRAIN = "nyu-mll/multi_nli"


def _default_dev(args: argparse.Namespace) -> list[str] | None:
    """English XNLI dev from --eval-dir when it is a local folder (the hub dev set is read by ``load_xnli``)."""
    if is_hub_name(args.eval_dir):
        return None
    folder = Path(args.eval_dir)
    for name in ("xnli.dev.en.tsv.gz", "xnli.dev.en.tsv", "xnli.dev.en.jsonl"):
        if (folder / name).is_file():
            return [str(folder / name)]
    return None


def run_xnli(args: argparse.Namespace) -> dict[str, Any]:
    from mdeberta.inference import load_classifier

    timings: dict[str, float] = {}
    # Fail fast on bad evaluation inputs before spending time on training.
    languages = args.languages
    eval_data = load_xnli(args.eval_dir, args.split, languages, args.max_eval_examples)
    if args.dev_file is None:
        args.dev_file = _default_dev(args)
        if args.dev_file is None and is_hub_name(args.eval_dir):
            args.dev_file = [args.eval_dir]  # facebook/xnli: load_nli reads the English split
        if args.max_dev_examples is None:
            args.max_dev_examples = args.max_eval_examples
    start = time.perf_counter()
    result = finetune(args)
    timings["finetune_s"] = round(time.perf_counter() - start, 1)

    from mdeberta.train import init_distributed

    env = init_distributed(args.device)
    if not env.is_main:  # evaluation is cheap next to training; rank 0 does it alone
        return {}
    start = time.perf_counter()
    model, tokenizer = load_classifier(result.model_dir, device=args.device)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and model.device.type == "cuda")
    results, records = evaluate_xnli(model, tokenizer, eval_data, args.eval_batch_size, args.max_seq_length, bf16)
    timings["evaluate_s"] = round(time.perf_counter() - start, 1)
    name = args.name or Path(str(args.model).rstrip("/")).name + (" (random init)" if args.random_init else "")
    extra = {"model": str(result.model_dir), "source_model": str(args.model), "random_init": args.random_init,
             "train_file": [str(f) for f in args.train_file], "steps": result.steps,
             "best_dev_accuracy": result.best_accuracy, "timings": timings}
    paths = write_xnli_report(results, records, Path(args.output_dir) / "eval", name, args.split, extra)
    atomic_write_text(Path(args.output_dir) / "xnli_summary.json",
                      json.dumps({**extra, "avg": results["avg"], "accuracy": results["accuracy"],
                                  "files": {k: str(v) for k, v in paths.items()}}, indent=2) + "\n")
    print(Path(paths["markdown"]).read_text(encoding="utf-8"))
    return results


def cmd_xnli(args: argparse.Namespace) -> int:
    from mdeberta.train import cleanup_distributed

    try:
        run_xnli(args)
    finally:
        cleanup_distributed()
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("xnli", help="fine-tune on English NLI, evaluate on the 15 XNLI languages",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_finetune_arguments(p, {"model": DEFAULT_MODEL, "train_file": [DEFAULT_TRAIN]})
    add_eval_arguments(p, standalone=False)
    p.add_argument("--name", default=None, help="row name in the result table")
    p.set_defaults(func=cmd_xnli)
