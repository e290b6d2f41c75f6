"""One spelling per meaning across commands (old spellings: deprecated aliases that warn), and ``--config FILE``
(YAML / JSON of a command's flags; the command line wins; bad keys and values are named)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

import pytest

from cli_helpers import assert_cli_error
from mdeberta.cli import build_parser, command_parser, main


def _parse(argv, caplog):
    parser = build_parser()
    with caplog.at_level(logging.WARNING, logger="mdeberta"):
        return parser.parse_args(argv)


def test_deprecated_spellings_warn_and_mean_the_same(caplog):
    args = _parse(["evaluate", "--model", "m", "--bf16"], caplog)
    assert args.precision == "bf16" and "--bf16 is deprecated; use --precision bf16" in caplog.text
    assert _parse(["evaluate", "--model", "m"], caplog).precision == "fp32"
    caplog.clear()
    args = _parse(["export-onnx", "a", "b", "--max-length", "64"], caplog)
    assert args.max_seq_length == 64 and "--max-length is deprecated; use --max-seq-length" in caplog.text
    caplog.clear()
    args = _parse(["pretrain", "--data", "d", "--tokenizer", "t", "--output", "run"], caplog)
    assert args.output_dir == "run" and "--output is deprecated; use --output-dir" in caplog.text
    caplog.clear()
    args = _parse(["tokenizer", "train", "--input", "x.txt", "--output", "tok"], caplog)
    assert args.output_dir == "tok" and "deprecated" in caplog.text
    args = _parse(["export-checkpoint", "run", "--output-dir", "out"], caplog)
    assert args.output_dir == "out"


def test_a_required_flag_is_still_required_under_either_spelling(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--data", "d", "--tokenizer", "t"])
    assert exit_info.value.code == 2 and "required: --output-dir" in capsys.readouterr().err


def test_config_file_values_and_command_line_override(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("mdeberta.recipes.finetune.finetune", lambda args: seen.setdefault("args", args) and 1 / 0)
    (tmp_path / "run.yaml").write_text("task: text-classification\nmodel: deberta-v3-tiny\nrandom_init: true\n"
                                       "max-steps: 7\nlearning-rate: '1e-3'\ntrain-file: a.tsv\n")
    with pytest.raises(ZeroDivisionError):  # the stub stops the command once the arguments are parsed
        main(["finetune", "--config", str(tmp_path / "run.yaml"), "--output-dir", "o", "--max-steps", "9"])
    args = seen["args"]
    assert (args.task, args.model, args.random_init) == ("text-classification", "deberta-v3-tiny", True)
    assert args.max_steps == 9  # the command line wins
    assert args.learning_rate == 1e-3 and args.train_file == ["a.tsv"]  # the flag's type; nargs="+" as a list
    (tmp_path / "run.json").write_text(json.dumps({"max_steps": 5, "model": "m", "train_file": ["x", "y"]}))
    seen.clear()
    with pytest.raises(ZeroDivisionError):
        main(["finetune", "--config", str(tmp_path / "run.json"), "--output-dir", "o"])
    assert seen["args"].max_steps == 5 and seen["args"].train_file == ["x", "y"]


def test_config_file_errors_name_the_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max-stpes: 3\n")
    assert_cli_error(capsys, ["finetune", "--config", str(bad), "--model", "m", "--train-file", "t", "--output-dir",
                              "o"], r"bad.yaml: unknown key 'max-stpes' for `mdeberta finetune`; did you mean "
                                    r"'max-steps'\?")
    bad.write_text("task: sentiment\n")
    assert_cli_error(capsys, ["finetune", "--config", str(bad)], r"bad.yaml: task = 'sentiment'; allowed: \['nli',")
    bad.write_text("max-steps: many\n")
    assert_cli_error(capsys, ["finetune", "--config", str(bad)], r"bad.yaml: max-steps: invalid literal")
    bad.write_text("- a\n- b\n")
    assert_cli_error(capsys, ["finetune", "--config", str(bad)], r"expected a mapping of flag names")
    bad.write_text("a: [1,\n")
    assert_cli_error(capsys, ["finetune", "--config", str(bad)], r"bad.yaml: cannot parse it")
    assert_cli_error(capsys, ["finetune", "--config", str(tmp_path / "none.yaml")], r"none.yaml: no such file")
    assert_cli_error(capsys, ["--config", str(bad)], r"name a command")


def test_pretrain_config_json_keeps_its_old_meaning(tmp_path, caplog, monkeypatch):
    seen = {}
    monkeypatch.setattr("mdeberta.recipes.pretrain.run_pretraining",
                        lambda args: seen.setdefault("args", args) and 1 / 0)
    model_config = tmp_path / "config.json"
    model_config.write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 1}))
    with caplog.at_level(logging.WARNING, logger="mdeberta"), pytest.raises(ZeroDivisionError):
        main(["pretrain", "--data", "d", "--tokenizer", "t", "--output-dir", "o", "--config", str(model_config)])
    assert seen["args"].model_config == str(model_config)
    assert "pretrain --config CONFIG.JSON is deprecated; use --model-config" in caplog.text


def test_command_parser_finds_nested_commands():
    parser = build_parser()
    assert command_parser(parser, ["tokenizer", "train", "--input", "x"]).prog.endswith("tokenizer train")
    assert command_parser(parser, ["-v", "finetune", "--model", "m"]).prog.endswith("finetune")
    assert command_parser(parser, ["--debug"]) is None


def test_runs_stored_under_the_old_flag_names_still_resume_and_export(tmp_path):
    from mdeberta.train.run_folder import RUN_CONFIG, changed_arguments, read_run_config

    (tmp_path / RUN_CONFIG).write_text(json.dumps({"model_preset": "deberta-v3-tiny", "config": "c.json",
                                                   "output": "runs/x", "seed": 1}))
    stored = read_run_config(tmp_path)
    assert stored == {"model_preset": "deberta-v3-tiny", "model_config": "c.json", "output_dir": "runs/x", "seed": 1,
                      "run_config_format": 2}
    now = {"model_preset": "deberta-v3-tiny", "model_config": "other.json", "output_dir": "runs/x", "seed": 1}
    assert changed_arguments(stored, now) == ["--model-config: 'c.json' in the stored run, 'other.json' now"]


def _actions(command: str) -> dict:
    parser = command_parser(build_parser(), command.split())
    return {a.dest: a for a in parser._actions if a.help != argparse.SUPPRESS}  # not the deprecated spellings


def test_training_recipes_share_one_common_block():
    """pretrain, finetune and xnli take the shared block's flags from one definition: the same spelling, type and
    meaning (the help text of --batch-size says "global" in all three); only the defaults differ."""
    from mdeberta.arguments import TrainingConfig
    from mdeberta.recipes.finetune import FinetuneConfig
    from mdeberta.recipes.pretrain import PretrainConfig

    assert issubclass(PretrainConfig, TrainingConfig) and issubclass(FinetuneConfig, TrainingConfig)
    commands = {name: _actions(name) for name in ("pretrain", "finetune", "xnli")}
    for field in dataclasses.fields(TrainingConfig):
        spelled = {name: actions[field.name].option_strings[0] for name, actions in commands.items()}
        assert set(spelled.values()) == {"--" + field.name.replace("_", "-")}, spelled
        types = {actions[field.name].type for actions in commands.values()}
        assert len(types) == 1, (field.name, types)
    for actions in commands.values():
        assert "global batch" in actions["batch_size"].help
    assert commands["pretrain"]["batch_size"].default == 8 and commands["finetune"]["batch_size"].default == 32
    # The inference commands take --tokenizer / --device (and probe --seed) from the same block.
    from mdeberta.arguments import CommonConfig, _merged_metadata

    for command, names in {"evaluate": ("tokenizer", "device"), "predict": ("tokenizer", "device"),
                           "zero-shot": ("tokenizer", "device"), "serve": ("tokenizer", "device"),
                           "probe": ("tokenizer", "seed"), "finetune": ("tokenizer", "device", "seed")}.items():
        actions = _actions(command)
        for name in names:
            assert actions[name].help == _merged_metadata(CommonConfig, name)["help"], (command, name)


def test_stored_runs_of_the_first_format_are_read_in_todays_meaning(tmp_path, monkeypatch):
    """run_config.json written before the configs: pretrain's per-process --batch-size x --grad-accum becomes the
    global batch; a warmup flag that was only the default is unset, so resuming those runs compares equal."""
    from mdeberta.train.run_folder import RUN_CONFIG, read_run_config

    (tmp_path / RUN_CONFIG).write_text(json.dumps({"model_preset": "deberta-v3-tiny", "batch_size": 8,
                                                   "grad_accum": 4, "warmup_ratio": 0.1, "warmup_steps": None}))
    stored = read_run_config(tmp_path)
    assert stored["batch_size"] == 32 and stored["warmup_ratio"] is None
    (tmp_path / RUN_CONFIG).write_text(json.dumps({"train_file": ["t.tsv"], "batch_size": 32, "warmup_ratio": 0.1,
                                                   "warmup_steps": 3000}))
    stored = read_run_config(tmp_path)
    assert stored["batch_size"] == 32 and stored["warmup_steps"] is None and stored["warmup_ratio"] == 0.1
    (tmp_path / RUN_CONFIG).write_text(json.dumps({"model_preset": "x", "batch_size": 8, "grad_accum": 4,
                                                   "run_config_format": 2}))
    assert read_run_config(tmp_path)["batch_size"] == 8  # today's files are taken as they are
    # A first-format run resumed under torchrun x 2: its per-process batch was per each of those processes.
    monkeypatch.setenv("WORLD_SIZE", "2")
    (tmp_path / RUN_CONFIG).write_text(json.dumps({"model_preset": "x", "batch_size": 8, "grad_accum": 1}))
    assert read_run_config(tmp_path)["batch_size"] == 16


def test_config_fields_become_flags_with_their_types_groups_and_aliases(caplog):
    """add_config_arguments: store_true for bools, nargs lists, tuples of two, the group, an alias of the same
    meaning (--lr) and a deprecated one that warns (--output); a subclass changes a default, not the help."""
    from mdeberta.arguments import Config, add_config_arguments, option

    @dataclasses.dataclass(kw_only=True)
    class Base(Config):
        steps: int = option(10, type=int, group="schedule", help="how many")
        output_dir: str | None = option(None, required=True, deprecated=("--output",), help="where")

    @dataclasses.dataclass(kw_only=True)
    class Job(Base):
        steps: int = option(20)
        files: list[str] = option(["a"], nargs="+", help="inputs")
        betas: tuple[float, float] = option((0.9, 0.99), type=float, nargs=2, help="two numbers")
        fast: bool = option(False, help="a switch")
        rate: float = option(0.1, type=float, aliases=("--lr",), help="the rate")

    parser = argparse.ArgumentParser()
    actions = add_config_arguments(parser, Job)
    assert actions["steps"].help == "how many" and actions["steps"].default == 20
    assert actions["steps"].container.title == "schedule"
    with caplog.at_level(logging.WARNING, logger="mdeberta"):
        args = parser.parse_args(["--output", "o", "--lr", "0.5", "--fast", "--betas", "1", "2"])
    assert "--output is deprecated" in caplog.text
    job = Job.from_args(args)
    assert job == Job(output_dir="o", rate=0.5, fast=True, betas=(1.0, 2.0)) and job.betas == (1.0, 2.0)
    assert Job.from_dict({**job.to_dict(), "gone": 1}) == job  # a key that is no longer a field is ignored
    assert Job().files == ["a"] and Job().files is not Job().files
    from mdeberta.arguments import check_required

    with pytest.raises(SystemExit):
        check_required(parser, parser.parse_args([]))  # --output-dir is required (either spelling)
