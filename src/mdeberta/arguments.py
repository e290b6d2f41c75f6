"""Command-line conventions every command shares: typed run configs, one spelling per meaning, old spellings as
deprecated aliases, and ``--config FILE`` (YAML or JSON) for any command's flags.

* **Configs are dataclasses.** A recipe's options are one dataclass (``PretrainConfig``, ``FinetuneConfig``) built
  from blocks every recipe shares: :class:`CommonConfig` (tokenizer, device, seed, precision, output folder) and
  :class:`TrainingConfig` (the schedule, batch, checkpoint and resume flags of every training run). A field
  declared with :func:`option` is a flag (``max_seq_length`` -> ``--max-seq-length``) with its help, type and
  choices; :func:`add_config_arguments` turns a config class into parser arguments and ``Config.from_args`` turns
  the parsed namespace back into the typed object the recipe runs on, so Python callers build the same object
  directly. A subclass redeclares a field to change its default (``option(500)``); the help stays the block's.
* ``--batch-size`` is the global batch everywhere: sequences per optimizer step over all processes and
  accumulation steps (each process runs ``batch_size / (grad_accum x processes)`` per micro-batch).

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
import dataclasses
import difflib
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

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


def whole_number(minimum: int, *words: str) -> Callable[[str], int | str]:
    """An argparse ``type``: a whole number >= ``minimum``, or one of ``words`` (``--num-workers auto``)."""
    allowed = f"a whole number >= {minimum}" + "".join(f" or {w!r}" for w in words)

    def parse(value: str) -> int | str:
        if value in words:
            return value
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {value!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {value!r}")
        return n

    parse.__name__ = "whole_number"  # argparse names the type in its messages
    return parse


# --------------------------------------------------------------------------- typed configs
C = TypeVar("C", bound="Config")


def option(default: Any = dataclasses.MISSING, *, help: str | None = None, **flag: Any) -> Any:
    """A config field that is a command-line flag. ``flag`` holds argparse's keywords (``type``, ``choices``,
    ``nargs``, ``metavar``, ``action``) and the project's: ``group`` (the help section), ``aliases`` (other
    spellings with the same meaning, e.g. ``--lr``), ``deprecated`` (old spellings that warn), ``required``.
    A mutable default (a list) is copied per instance. Without ``help`` a redeclared field keeps its base's."""
    metadata = {"help": help, **flag}
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _merged_metadata(cls: type, name: str) -> dict[str, Any]:
    """A field's flag settings, a subclass's redeclaration over its bases' (``help`` only where it gives one)."""
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get("__dataclass_fields__", {})
        if name in own and name in klass.__dict__.get("__annotations__", {}):
            merged |= {k: v for k, v in own[name].metadata.items() if v is not None or k not in merged}
    return merged


@dataclasses.dataclass(kw_only=True)
class Config:
    """Base of the recipe configs: built from parsed flags, from a stored ``run_config.json`` or in Python."""

    @classmethod
    def from_args(cls: type[C], args: argparse.Namespace | Config) -> C:
        """The config from a parsed namespace (or another config): every field the namespace has, the field's
        default for the rest (a parser may leave a block's flag out, as ``xnli`` leaves out ``--task``)."""
        if isinstance(args, cls):
            return args
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        return cls(**values)

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """The config from stored values (``run_config.json``); keys that are no longer fields are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # argparse and JSON give lists where the field is a fixed-size tuple
            if isinstance(f.default, tuple) and isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))

    def to_dict(self) -> dict[str, Any]:
        """JSON values of every field (what a run folder's ``run_config.json`` stores)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[Config], *,
                         defaults: dict[str, Any] | None = None, exclude: Iterable[str] = (),
                         only: Iterable[str] | None = None) -> dict[str, argparse.Action]:
    """One flag per :func:`option` field of ``cls`` (declaration order, bases first), each in its help group;
    ``defaults`` overrides some defaults for this command (a default given there satisfies ``required``);
    ``exclude`` / ``only`` pick the fields. Returns the actions by field name."""
    defaults, exclude = dict(defaults or {}), set(exclude)
    groups: dict[str, argparse._ArgumentGroup] = {}
    actions: dict[str, argparse.Action] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or (only is not None and f.name not in only):
            continue
        meta = _merged_metadata(cls, f.name)
        group, aliases, deprecated = meta.pop("group", None), meta.pop("aliases", ()), meta.pop("deprecated", ())
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None if f.default is dataclasses.MISSING else f.default
        required = bool(meta.pop("required", False)) and default is None
        kwargs = {"dest": f.name, "default": default, "help": meta.pop("help", None) or ""}
        if isinstance(default, bool) and "action" not in meta:
            kwargs["action"] = "store_true"
        else:
            kwargs["required"] = required
        kwargs.update(meta)
        target = parser if group is None else groups.get(group) or groups.setdefault(
            group, parser.add_argument_group(group))
        actions[f.name] = target.add_argument("--" + f.name.replace("_", "-"), *aliases, **kwargs)
        for old in deprecated:
            add_alias(parser, old, actions[f.name])
    return actions


@dataclasses.dataclass(kw_only=True)
class CommonConfig(Config):
    """The block every recipe shares: one spelling, type and meaning of each of these flags in every command."""

    tokenizer: str | None = option(None, help="tokenizer folder (mdeberta tokenizer train ...) or hub id (default: "
                                              "the model's)")
    device: str | None = option(None, help="cpu, cuda, cuda:1 (default: cuda when available; torchrun sets each "
                                           "process's)")
    seed: int = option(42, type=int, help="seed of the initialization, the data order, dropout and sampling")
    precision: str = option("fp32", choices=["fp32", "bf16", "fp16"],
                            help="number format of the forward and backward passes (autocast; weights stay fp32)")
    output_dir: str | None = option(None, required=True, help="the folder this command fills")


@dataclasses.dataclass(kw_only=True)
class TrainingConfig(CommonConfig):
    """What every training run shares: the schedule, the batch, checkpoints, resuming and the distributed strategy.
    ``batch_size`` is global (see the module docstring), so a run means the same with 1 or N processes."""

    output_dir: str | None = option(None, group="training", help="the run folder (checkpoints, metrics, exports)")
    resume: bool = option(False, group="training",
                          help="continue the run in --output-dir from its newest checkpoint (the arguments must be "
                               "the run's; with no checkpoint yet the run starts)")
    overwrite: bool = option(False, group="training",
                             help="replace a non-empty --output-dir (set aside, deleted once this run finishes)")
    max_steps: int | None = option(None, group="training", type=int, help="optimizer steps")
    batch_size: int = option(32, group="training", type=int,
                             help="global batch: sequences per optimizer step over all processes and --grad-accum "
                                  "micro-batches")
    grad_accum: int = option(1, group="training", type=int, help="micro-batches per optimizer step")
    weight_decay: float = option(0.01, group="training", type=float,
                                 help="AdamW weight decay (not on biases and LayerNorm)")
    warmup_ratio: float | None = option(None, group="training", type=float,
                                        help="linear warmup as a share of the steps (ELECTRA: 0.1); give this or "
                                             "--warmup-steps")
    warmup_steps: int | None = option(None, group="training", type=int, help="linear warmup steps")
    max_grad_norm: float = option(1.0, group="training", type=float, help="gradient clipping (global L2 norm)")
    save_every: int = option(500, group="training", type=int, help="resumable checkpoint every N steps")
    keep_last: int = option(3, group="training", type=int, help="checkpoints kept (0: all)")
    log_every: int = option(10, group="training", type=int, help="metrics line every N steps")
    distributed: str = option("ddp", group="training", choices=["ddp", "fsdp"],
                              help="strategy under torchrun: ddp (every process holds the model) or fsdp (FSDP2, "
                                   "parameters sharded per layer; the exports are gathered whole)")

    def micro_batch_size(self, world_size: int) -> int:
        """Sequences per process and micro-batch; the global batch must divide evenly."""
        per = self.batch_size // (self.grad_accum * world_size)
        if per < 1 or per * self.grad_accum * world_size != self.batch_size:
            raise UsageError(f"--batch-size {self.batch_size} (the global batch) must be a multiple of --grad-accum "
                             f"({self.grad_accum}) x processes ({world_size})")
        return per


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


__all__ = ["CommonConfig", "Config", "TrainingConfig", "add_alias", "add_config_arguments", "apply_config",
           "check_required", "option", "read_config_file", "split_config", "whole_number"]
