"""`mdeberta export-onnx`: every head, dynamic shapes past 512, the parity gate, int8, ONNX folders in predict /
zero-shot / load_classifier, and clear errors that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mdeberta.cli import main
from mdeberta.config import preset
from mdeberta.tokenizer import DebertaTokenizer
from nli_helpers import synthetic_pairs, write_tsv

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'mdeberta[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'mdeberta[onnx]')")
pytestmark = pytest.mark.usefixtures("single_thread")

HEADS = ["base", "sequence-classification", "token-classification", "question-answering", "multiple-choice", "mlm"]


def _save(model, tokenizer_dir: Path, folder: Path) -> Path:
    model.save_pretrained(folder)
    DebertaTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("head", HEADS)
def test_every_head_exports_with_dynamic_shapes(tiny_backbone, tmp_path, head):
    from mdeberta.model.auto import HEADS as CLASSES
    from mdeberta.serving import OnnxModel

    torch.manual_seed(0)
    config = preset("deberta-v3-micro", vocab_size=len(DebertaTokenizer.from_pretrained(tiny_backbone)),
                    num_labels=3 if head != "question-answering" else 2, max_position_embeddings=1024)
    model = CLASSES[head](config).eval()
    src = _save(model, tiny_backbone, tmp_path / "src")
    assert main(["export-onnx", str(src), str(tmp_path / "onnx")]) == 0
    info = json.loads((tmp_path / "onnx" / "onnx_export.json").read_text())
    assert info["head"] == head and info["max_abs_diff"] <= 1e-4 and info["opset"] >= 17
    assert (tmp_path / "onnx" / "spm.model").is_file()  # self-contained for serving
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    for batch, length in ((1, 5), (4, 900)):  # other batch sizes, and lengths past 512
        shape = (batch, 2, length) if head == "multiple-choice" else (batch, length)
        ids = torch.randint(4, config.vocab_size, shape)
        mask = torch.ones_like(ids)
        mask[-1, ..., length // 2:] = 0
        got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask)
        names = info["outputs"]
        for name, value in zip(names, got):
            torch.testing.assert_close(torch.from_numpy(value), getattr(out, name).float(), rtol=1e-4, atol=1e-4)
    assert OnnxModel(tmp_path / "onnx").head == head


def test_failed_parity_check_writes_nothing(tiny_classifier, tmp_path, monkeypatch, caplog, stderr):
    import mdeberta.serving as serving

    monkeypatch.setattr(serving, "parity_check", lambda *a, **k: 0.5)
    assert main(["export-onnx", str(tiny_classifier), str(tmp_path / "onnx")]) == 2
    assert "differs from PyTorch by 0.5" in stderr.text
    assert not list(tmp_path.iterdir())  # no folder, no temporary left behind


def test_int8_and_onnx_folders_in_predict_and_zero_shot(tiny_classifier, tmp_path, capsys):
    from mdeberta.inference import ZeroShotClassifier, classify_pairs, load_classifier

    check = write_tsv(tmp_path / "check.tsv", synthetic_pairs(40, seed=3))
    out = tmp_path / "onnx"
    assert main(["export-onnx", str(tiny_classifier), str(out), "--int8", "--check-file", str(check)]) == 0
    info = json.loads((out / "onnx_export.json").read_text())["int8"]
    assert info["examples"] == 40 and 0 <= info["argmax_agreement"] <= 100
    assert "argmax agreement with fp32" in capsys.readouterr().out
    pairs = [("the cat and the dog.", "there is a cat."), ("the car.", "there is no car.")]
    torch_model, tokenizer = load_classifier(tiny_classifier, device="cpu")
    onnx_model, _ = load_classifier(out)
    int8_model, _ = load_classifier(out / "model_int8.onnx")
    assert int8_model.file == "model_int8.onnx"
    want = classify_pairs(torch_model, tokenizer, pairs)
    got = classify_pairs(onnx_model, tokenizer, pairs)
    for a, b in zip(want, got):
        assert a.label == b.label
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-4)
    scores = ZeroShotClassifier.from_pretrained(out)("a cat on a table", ["animals", "cars"])["scores"]
    assert scores == pytest.approx(ZeroShotClassifier(torch_model, tokenizer)("a cat on a table",
                                                                              ["animals", "cars"])["scores"], abs=1e-4)
    pairs_file = write_tsv(tmp_path / "pairs.tsv", [(p, h, "entailment") for p, h in pairs])
    assert main(["predict", "--model", str(out), "--input", str(pairs_file)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["label"] for r in lines] == [p.label for p in want]


def test_bad_exports_are_clear_and_write_nothing(tiny_backbone, tiny_classifier, tmp_path, caplog, stderr):
    from mdeberta.model import DebertaForReplacedTokenDetection, DebertaModel
    from mdeberta.serving import ExportError, OnnxModel

    assert main(["export-onnx", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "not a model folder" in stderr.text
    config = DebertaModel.from_pretrained(tiny_backbone).config
    rtd = _save(DebertaForReplacedTokenDetection(config), tiny_backbone, tmp_path / "rtd")
    stderr.clear()
    assert main(["export-onnx", str(rtd), str(tmp_path / "out")]) == 2
    assert "cannot be exported" in stderr.text
    bare = tmp_path / "bare"
    DebertaModel(config).save_pretrained(bare)  # no tokenizer files
    stderr.clear()
    assert main(["export-onnx", str(bare), str(tmp_path / "out")]) == 2
    assert "has no tokenizer" in stderr.text
    stderr.clear()
    assert main(["export-onnx", str(tiny_backbone), str(tmp_path / "out"), "--check-file", "x.tsv"]) == 2
    assert "a base model has no task" in stderr.text  # --check-file needs a fine-tuned head of any task
    assert not (tmp_path / "out").exists()
    assert main(["export-onnx", str(tiny_backbone), str(tmp_path / "base")]) == 0
    (tmp_path / "base" / "spm.model").unlink()
    from mdeberta.inference import load_classifier

    with pytest.raises(ValueError, match="exported base model"):
        load_classifier(tmp_path / "base")
    assert main(["export-onnx", str(tiny_classifier), str(tmp_path / "cls")]) == 0
    (tmp_path / "cls" / "spm.model").unlink()
    with pytest.raises(ValueError, match="has no tokenizer files"):
        load_classifier(tmp_path / "cls")
    with pytest.raises(ExportError, match="not an exported ONNX folder"):
        OnnxModel(tmp_path)
