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
    "mdeberta.recipes.serve",
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


def command_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser | None:
    """The (sub)parser of the command ``argv`` names (``tokenizer train`` -> its nested parser), or None."""
    found = None
    for token in argv:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or token not in sub.choices:
            if token.startswith("-") or found is None:
                continue
            break
        parser = found = sub.choices[token]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    from mdeberta.arguments import apply_config, check_required, read_config_file, split_config
    from mdeberta.errors import MdebertaError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    parser = build_parser()
    argv, config_file = split_config(list(sys.argv[1:] if argv is None else argv))
    command = command_parser(parser, argv)
    if config_file is not None:
        try:
            if command is None:
                raise MdebertaError(f"--config {config_file}: name a command (mdeberta COMMAND --config FILE)")
            values = read_config_file(config_file)
            if command.prog.endswith(" pretrain") and "hidden_size" in values:  # the old meaning: a model config
                logging.getLogger("mdeberta").warning("pretrain --config CONFIG.JSON is deprecated; use "
                                                      "--model-config (--config is a run's YAML / JSON of flags)")
                argv += ["--model-config", config_file]
            else:
                apply_config(command, values, config_file)
        except MdebertaError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    check_required(command or parser, args)

    try:
        return int(args.func(args) or 0)
    except (MdebertaError, OSError) as e:  # bad input, or a file the system cannot give: one line, exit 2
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
