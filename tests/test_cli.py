"""The small CLI commands: ``mdeberta info`` and ``mdeberta convert``."""

from __future__ import annotations

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
