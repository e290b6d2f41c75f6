"""The small CLI commands: ``mdeberta info`` and ``mdeberta convert``."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

import mdeberta
from mdeberta.cli import main
from test_checkpoint import released_layout_folder


def test_info_prints_parameter_counts(capsys):
    assert main(["info", "mdeberta-v3-base"]) == 0
    out = capsys.readouterr().out
    assert "parameters             278,218,752" in out
    assert "embedding_parameters   192,769,536" in out


def test_info_on_a_folder(tmp_path, capsys):
    mdeberta.DebertaModel(mdeberta.preset("deberta-v3-micro", vocab_size=50)).save_pretrained(tmp_path)
    assert main(["info", str(tmp_path)]) == 0
    assert "vocab_size             50" in capsys.readouterr().out


def test_convert_released_layout_to_safetensors_that_transformers_loads(tmp_path):
    transformers = pytest.importorskip("transformers")
    src, rtd, _ = released_layout_folder(tmp_path)
    dst = tmp_path / "converted"
    assert main(["convert", str(src), str(dst)]) == 0
    assert (dst / "model.safetensors").exists()
    # The released layout carries both heads; auto-detection keeps the RTD discriminator.
    converted = mdeberta.DebertaForReplacedTokenDetection.from_pretrained(dst)
    assert converted.loading_info["missing"] == []
    theirs = transformers.DebertaV2Model.from_pretrained(dst).eval()
    ids = torch.randint(4, 120, (2, 9))
    with torch.no_grad():
        assert torch.allclose(theirs(input_ids=ids).last_hidden_state, rtd.eval().deberta(ids).last_hidden_state,
                              atol=1e-5)


def test_convert_as_mlm_keeps_the_original_head(tmp_path):
    src, _, state = released_layout_folder(tmp_path)
    dst = tmp_path / "mlm"
    assert main(["convert", str(src), str(dst), "--head", "mlm"]) == 0
    mlm = mdeberta.DebertaForMaskedLM.from_pretrained(dst)
    assert mlm.config.legacy is False and mlm.loading_info["missing"] == []
    assert torch.equal(mlm.lm_predictions.lm_head.dense.weight, state["lm_predictions.lm_head.dense.weight"])


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "mdeberta", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "convert" in result.stdout and "info" in result.stdout


BAD_INPUT = {  # every command, fed an input that cannot work: the one-line message it must print
    "info": (["info", "{x}/nope"], "model folder .*nope does not exist"),
    "convert": (["convert", "{x}/nope", "{x}/out"], "model folder .*nope does not exist"),
    "tokenizer train": (["tokenizer", "train", "--input", "{x}/nope.txt", "--output-dir", "{x}/tok"],
                        "training text not found: .*nope.txt"),
    "pretrain": (["pretrain", "--data", "{x}/nope", "--tokenizer", "{x}/tok", "--output-dir", "{x}/run"],
                 "tokenizer folder not found: .*tok"),
    "export-checkpoint": (["export-checkpoint", "{x}/run", "--output-dir", "{x}/out"], "no run_config.json"),
    "plot": (["plot", "{x}"], "no metrics.jsonl in"),
    "finetune": (["finetune", "--model", "{x}/nope", "--train-file", "t.tsv", "--output-dir", "{x}/run"],
                 "tokenizer folder not found: .*nope"),
    "evaluate": (["evaluate", "--model", "{x}/nope"], "nope has no config.json"),
    "xnli": (["xnli", "--model", "{x}/nope", "--train-file", "t.tsv", "--eval-dir", "{x}", "--languages", "en,qq",
              "--output-dir", "{x}/run"], r"unknown XNLI language code\(s\) \['qq'\]"),
    "predict": (["predict", "--model", "{x}/nope", "--input", "{x}/nope.jsonl"], "input file not found"),
    "zero-shot": (["zero-shot", "--model", "{x}/nope", "--labels", "a,b", "text"],
                  "model folder .*nope does not exist"),
    "compare": (["compare", "--candidate", "{x}", "--baseline", "{x}"], "no predictions_test.jsonl"),
    "probe": (["probe", "--model", "{x}/nope", "--train-file", "t.tsv", "--eval-file", "e.tsv"],
              "tokenizer folder not found: .*nope"),
    "export-onnx": (["export-onnx", "{x}/nope", "{x}/out"], "nope: not a model folder or hub id"),
    "serve": (["serve", "{x}/nope"], "model folder .*nope does not exist"),
    "ngram train": (["ngram", "train", "--input", "{x}/nope", "--output", "{x}/lm.npz"],
                    "nope: no such file or folder"),
}


def test_every_command_is_covered_by_the_bad_input_table():
    import argparse

    from mdeberta.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    names = set()
    for name, parser in sub.choices.items():
        inner = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        names |= {f"{name} {n}" for n in inner[0].choices} if inner else {name}
    assert names == set(BAD_INPUT)


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_bad_input_is_one_error_line_and_exit_2(command, tmp_path, capsys):
    """The CLI's one error boundary: `error: <message>` naming the problem, status 2, no traceback; the commands
    catch nothing themselves."""
    argv, pattern = BAD_INPUT[command]
    argv = [a.replace("{x}", str(tmp_path)) for a in argv]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search("error: .*" + pattern, err), err
    assert "Traceback" not in err
