"""One run per folder: ``pretrain`` / ``finetune`` refuse to train into another run's folder, and ``--resume``
continues only the run that was started there.

* Without ``--resume`` an existing non-empty folder is refused unless ``--overwrite`` (then set aside, deleted when
  the new run finishes: :class:`mdeberta.outputs.SetAside`).
* With ``--resume`` every argument that affects the result is compared with the stored ``run_config.json``; a
  change is refused naming each flag with its old and new value. Arguments that do not change the computation
  (logging, checkpoint cadence, the device, evaluation-only options) may change; the new config is written only
  after the checkpoint has loaded.
* ``--resume`` in a folder without a checkpoint yet (a job preempted before its first save, requeued with the same
  command line) starts the run, with a log line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdeberta.arguments import Config
from mdeberta.errors import MdebertaError
from mdeberta.files import atomic_write_text
from mdeberta.outputs import OutputPathError, SetAside, check_output_folder
from mdeberta.train.checkpointing import list_checkpoints

logger = logging.getLogger("mdeberta.train")

RUN_CONFIG = "run_config.json"
# run_config.json format: 2 = a recipe config's fields (``mdeberta.arguments.Config``), --batch-size global,
# --warmup-steps / --warmup-ratio None unless given. Older files are read in this form (read_run_config).
FORMAT_KEY, FORMAT = "run_config_format", 2
# Never part of the comparison: how the run is driven, not what it computes.
ALWAYS_SAFE = frozenset({"resume", "overwrite", "log_every", "no_progress", "stop_after", "save_every", "keep_last",
                         "device", "output_dir", FORMAT_KEY})


class RunConfigError(MdebertaError, ValueError):
    """``--resume`` with arguments that would not continue the stored run exactly."""


def read_run_config(folder: str | Path) -> dict[str, Any]:
    """A stored ``run_config.json`` in the current format: flags renamed since it was written under their current
    names (pretrain ``--output`` -> ``--output-dir``, ``--config`` -> ``--model-config``), and a format-1 file's
    values in today's meaning (pretrain's per-process ``--batch-size`` x ``--grad-accum`` x the processes resuming
    it; the warmup flag that was only a default set to None)."""
    stored = json.loads((Path(folder) / RUN_CONFIG).read_text(encoding="utf-8"))
    pretrain = "model_preset" in stored
    if "output" in stored and "output_dir" not in stored and pretrain:
        stored["output_dir"] = stored.pop("output")
    if "config" in stored and "model_config" not in stored and pretrain:
        stored["model_config"] = stored.pop("config")
    if stored.get(FORMAT_KEY, 1) < 2:
        if pretrain:
            if "batch_size" in stored:  # per process then: x accumulation x processes (those resuming it now,
                # which must be the run's own to continue exactly; the trainer checks that against the checkpoint)
                stored["batch_size"] *= stored.get("grad_accum", 1) * int(os.environ.get("WORLD_SIZE", "1"))
            if stored.get("warmup_steps") is not None or stored.get("warmup_ratio") == 0.1:
                stored["warmup_ratio"] = None  # the steps overrode it, or it was the default
        elif "train_file" in stored:  # finetune / xnli: --warmup-ratio overrode the 3000-step default
            if stored.get("warmup_ratio") is not None or stored.get("warmup_steps") == 3000:
                stored["warmup_steps"] = None
        stored[FORMAT_KEY] = FORMAT
    return stored


def run_config(config: Config) -> dict[str, Any]:
    """What ``run_config.json`` stores: the recipe config's fields as JSON, and the format."""
    return {**config.to_dict(), FORMAT_KEY: FORMAT}


def changed_arguments(stored: dict[str, Any], current: dict[str, Any], safe: Iterable[str] = ()) -> list[str]:
    """``--flag: stored -> now`` for every argument that differs and is not safe to change."""
    skip = ALWAYS_SAFE | set(safe)
    out = []
    for key in sorted(set(stored) | set(current)):
        # a flag newer than the stored run defaults to the old behaviour; one no longer a flag is not compared
        if key in skip or key not in stored or key not in current:
            continue
        old, new = stored[key], current[key]
        if old != new:
            out.append(f"--{key.replace('_', '-')}: {old!r} in the stored run, {new!r} now")
    return out


@dataclass
class RunFolder:
    path: Path
    resume: bool  # False when --resume found no checkpoint yet
    args: Config
    set_aside: SetAside | None = None

    def write_config(self) -> None:
        """``run_config.json`` from the arguments as they are now (a recipe may have resolved some, e.g.
        ``--num-workers auto``)."""
        atomic_write_text(self.path / RUN_CONFIG, json.dumps(run_config(self.args), indent=2) + "\n")

    def finished(self) -> None:
        """The run completed: the folder ``--overwrite`` set aside is deleted."""
        if self.set_aside is not None:
            self.set_aside.discard()


def prepare_run_folder(args: Config, output: str | os.PathLike, *, flag: str,
                       sources: Iterable[str | os.PathLike | None] = (), safe: Iterable[str] = (),
                       is_main: bool = True) -> RunFolder:
    """Check the run folder before any work (see the module docstring); ``safe``: this recipe's arguments that may
    change on ``--resume``. Only the main process sets a folder aside."""
    path = Path(output)
    overwrite, resume = bool(getattr(args, "overwrite", False)), bool(getattr(args, "resume", False))
    if resume and overwrite:
        raise OutputPathError(f"{flag} {output}: --resume continues the run there and --overwrite replaces it; "
                              "pass one of them")
    check_output_folder(path, sources, overwrite=overwrite, flag=flag, allow_existing=resume)
    config = run_config(args)
    if resume:
        if not list_checkpoints(path):
            logger.info("--resume: no checkpoint in %s yet; starting the run from step 0", path)
            resume = False
        elif (path / RUN_CONFIG).is_file():
            stored = read_run_config(path)
            changes = changed_arguments(stored, config, safe)
            if changes:
                raise RunConfigError(f"--resume in {path}: these arguments differ from the run stored there, so it "
                                     "could not continue exactly (use the run's own values, or a new --output "
                                     "folder):\n  " + "\n  ".join(changes))
        else:
            logger.warning("--resume: %s has checkpoints but no %s; the arguments cannot be compared", path,
                           RUN_CONFIG)
    set_aside = SetAside(path) if overwrite and is_main else None
    return RunFolder(path, resume, args, set_aside)
