"""The ``mdeberta`` command line: one subcommand per job; each module registers its own parser."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence


def _add_info(subparsers: argparse._SubParsersAction) -> None:
    from mdeberta.commands import cmd_info

    p = subparsers.add_parser("info", help="config summary and parameter counts of a model folder, hub id or preset")
    p.add_argument("path", help="model folder, hub id, config.json or preset name")
    p.set_defaults(func=cmd_info)


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    from mdeberta.commands import cmd_convert

    p = subparsers.add_parser("convert", help="any supported checkpoint -> an HF safetensors folder")
    p.add_argument("src", help="model folder or hub id (safetensors, pytorch_model.bin or sharded)")
    p.add_argument("dst", help="output folder")
    p.add_argument("--head", default="auto",
                   help="model class to convert as: auto (from config 'architectures' and the keys), base, mlm, rtd, "
                        "sequence-classification, token-classification, question-answering, multiple-choice")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST (renamed aside, deleted last)")
    p.set_defaults(func=cmd_convert)


# Modules that register their own subcommands through ``add_cli(subparsers)``.
COMMAND_MODULES = (
    "mdeberta.recipes.pretrain",
    "mdeberta.recipes.finetune",
    "mdeberta.recipes.evaluate",
    "mdeberta.recipes.xnli",
    "mdeberta.recipes.predict",
    "mdeberta.recipes.compare",
    "mdeberta.recipes.probe",
    "mdeberta.recipes.export_onnx",
    "mdeberta.ngram",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdeberta", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also MDEBERTA_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    from mdeberta.tokenizer import add_tokenizer_cli

    add_tokenizer_cli(subparsers)
    _add_info(subparsers)
    _add_convert(subparsers)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.add_cli(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from mdeberta.errors import MdebertaError

    try:
        return int(args.func(args) or 0)
    except MdebertaError as e:
        if args.debug or os.environ.get("MDEBERTA_DEBUG", "") not in ("", "0"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        _destroy_process_group()


def _destroy_process_group() -> None:
    """A command that fails under torchrun must not leave its process group behind (gloo/NCCL hang at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
