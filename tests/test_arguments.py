"""One spelling per meaning across commands (old spellings: deprecated aliases that warn), and ``--config FILE``
(YAML / JSON of a command's flags; the command line wins; bad keys and values are named)."""

from __future__ import annotations

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
    assert stored == {"model_preset": "deberta-v3-tiny", "model_config": "c.json", "output_dir": "runs/x", "seed": 1}
    now = {"model_preset": "deberta-v3-tiny", "model_config": "other.json", "output_dir": "runs/x", "seed": 1}
    assert changed_arguments(stored, now) == ["--model-config: 'c.json' in the stored run, 'other.json' now"]
