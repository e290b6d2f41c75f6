"""Command-line conventions every command shares: one spelling per meaning, old spellings as deprecated aliases,
and ``--config FILE`` (YAML or JSON) for any command's flags.

* ``--output-dir`` is a folder a command fills, ``--output`` a single file it writes; ``--max-seq-length`` is the
  token limit, ``--precision`` the number format. Older spellings (``pretrain --output``, ``evaluate --bf16``,
  ``export-onnx --max-length``) still work and log a deprecation warning (:func:`add_alias`).
* ``mdeberta COMMAND --config run.yaml [flags]``: the file's keys are the command's flags (``max-seq-length`` or
  ``max_seq_length``), its values their values; flags on the command line win. An unknown key or a value outside
  a flag's choices is an error naming the file and key. The command records every value it used (the run folder's
  ``run_config.json``), so ``--resume`` compares the same values whichever way they were given.

Chosen over jsonargparse / tyro: the commands are argparse parsers already (with their help, groups and types),
and both features are ~100 lines on top of them, no new dependency but PyYAML, which huggingface_hub brings.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
from pathlib import Path
from typing import Any

from mdeberta.errors import UsageError

logger = logging.getLogger("mdeberta")

REQUIRED = "_required_flags"  # parser default: [(dest, flag)] checked after parsing (see add_alias)


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        shown = self.new if self.nargs != 0 else f"{self.new} {self.const}"
        logger.warning("%s is deprecated; use %s (same meaning)", option_string, shown)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_alias(parser: argparse.ArgumentParser, old: str, canonical: argparse.Action, const: Any = None) -> None:
    """``old`` becomes a hidden, deprecated spelling of ``canonical`` (with ``const``: a switch that sets
    ``canonical`` to that value, e.g. ``--bf16`` = ``--precision bf16``). A required ``canonical`` is checked after
    parsing instead, so that either spelling satisfies it."""
    parser.add_argument(old, dest=canonical.dest, action=_DeprecatedAlias, new=canonical.option_strings[0],
                        nargs=0 if const is not None else canonical.nargs, const=const, type=canonical.type,
                        help=argparse.SUPPRESS)
    if canonical.required:
        canonical.required = False
        required = list(parser.get_default(REQUIRED) or [])
        parser.set_defaults(**{REQUIRED: [*required, (canonical.dest, canonical.option_strings[0])]})


def check_required(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    missing = [flag for dest, flag in getattr(args, REQUIRED, None) or [] if getattr(args, dest, None) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")


# --------------------------------------------------------------------------- --config FILE
def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError, with their line numbers
        raise UsageError(f"--config {path}: cannot parse it ({type(e).__name__}: {e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of flag names to values, got {type(data).__name__}")
    return data


def apply_config(subparser: argparse.ArgumentParser, values: dict[str, Any], source: str) -> None:
    """Make ``values`` (flag name -> value) the defaults of ``subparser``; flags given on the command line still
    override them. Keys and choices are checked here, strings go through the flag's type."""
    actions = {}
    for action in subparser._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                actions[option[2:]] = action
        if not action.option_strings and action.dest != argparse.SUPPRESS:
            actions[action.dest.replace("_", "-")] = action  # positionals can come from the file too
    defaults = {}
    for key, value in values.items():
        name = str(key).removeprefix("--").replace("_", "-")
        action = actions.get(name)
        if action is None or isinstance(action, (argparse._HelpAction, _DeprecatedAlias)):
            close = difflib.get_close_matches(name, [k for k, a in actions.items()
                                                     if not isinstance(a, (argparse._HelpAction, _DeprecatedAlias))])
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"--config {source}: unknown key {key!r} for `{subparser.prog}`{hint}")
        if isinstance(value, str) and action.type is not None:
            try:
                value = action.type(value)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
                raise UsageError(f"--config {source}: {key}: {e}") from None
        if action.nargs in ("+", "*") and not isinstance(value, list):
            value = [value]
        choices = action.choices
        if choices is not None and any(v not in choices for v in (value if isinstance(value, list) else [value])):
            raise UsageError(f"--config {source}: {key} = {value!r}; allowed: {list(choices)}")
        defaults[action.dest] = value
        action.required = False  # given by the file
        if not action.option_strings:
            action.nargs = "?"  # a positional the file fills may be left out of the command line
            action.default = value
    subparser.set_defaults(**defaults)


def split_config(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` without ``--config FILE`` / ``--config=FILE``, and FILE."""
    rest, path, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config" and i + 1 < len(argv):
            path, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return rest, path


__all__ = ["add_alias", "apply_config", "check_required", "read_config_file", "split_config"]
