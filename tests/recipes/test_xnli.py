"""`mdeberta xnli` end to end: fine-tune a tiny model on English NLI, evaluate all 15 XNLI languages."""

from __future__ import annotations

import json

import pytest

from mdeberta.cli import main
from mdeberta.data.nli import XNLI_LANGUAGES
from mdeberta.recipes.evaluate import accuracy_from_predictions
from nli_helpers import NLI_EN_DIR, XNLI_DIR, write_xnli_folder

pytestmark = pytest.mark.usefixtures("single_thread")

needs_shared = pytest.mark.skipif(not (XNLI_DIR.is_dir() and NLI_EN_DIR.is_dir()),
                                  reason=f"shared NLI data not found under {XNLI_DIR.parent}")


@needs_shared
def test_xnli_end_to_end_on_shared_data(tiny_backbone, tmp_path):
    out = tmp_path / "xnli"
    rc = main(["xnli", "--model", str(tiny_backbone),
               "--train-file", str(NLI_EN_DIR / "mnli_train_subset_8999.tsv.gz"),
               str(NLI_EN_DIR / "snli_train_subset_8999.tsv.gz"),
               "--eval-dir", str(XNLI_DIR), "--max-train-examples", "200", "--max-eval-examples", "30",
               "--max-steps", "8", "--batch-size", "16", "--learning-rate", "1e-3", "--eval-every", "4",
               "--save-every", "4", "--max-seq-length", "64", "--output-dir", str(out), "--name", "tiny",
               "--device", "cpu"])
    assert rc == 0
    summary = json.loads((out / "xnli_summary.json").read_text())
    assert summary["model"].endswith("best") and summary["steps"] == 8
    assert summary["train_file"][1].endswith("snli_train_subset_8999.tsv.gz")
    assert set(summary["timings"]) == {"finetune_s", "evaluate_s"}

    report = json.loads((out / "eval" / "xnli_test.json").read_text())
    assert list(report["accuracy"]) == list(XNLI_LANGUAGES)
    assert report["num_examples"] == dict.fromkeys(XNLI_LANGUAGES, 30)
    preds = out / "eval" / "predictions_test.jsonl"
    assert len(preds.read_text().splitlines()) == 15 * 30
    assert accuracy_from_predictions(preds) == pytest.approx(report["accuracy"])
    table = (out / "eval" / "xnli_test.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| tiny |"))
    assert "–" not in row and len(row.split("|")) == 2 + 16 + 1
    assert (out / "eval" / "xnli_test.png").read_bytes()[:4] == b"\x89PNG"

    # The dev set defaulted to the English XNLI dev file (capped like the evaluation).
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if "eval/accuracy" in r] == [4, 8]
    assert (out / "metrics.png").exists()

    # `evaluate` on the exported model reproduces the numbers for a subset of languages.
    again = tmp_path / "again"
    assert main(["evaluate", "--model", summary["model"], "--languages", "fr,sw", "--eval-dir", str(XNLI_DIR),
                 "--max-eval-examples", "30", "--max-seq-length", "64", "--output-dir", str(again)]) == 0
    sub = json.loads((again / "xnli_test.json").read_text())["accuracy"]
    assert sub == pytest.approx({k: report["accuracy"][k] for k in ("fr", "sw")})


def test_xnli_checks_evaluation_inputs_before_training(tiny_backbone, tmp_path, caplog, stderr):
    data = write_xnli_folder(tmp_path / "x", n=3, languages=["en"])
    rc = main(["xnli", "--model", str(tiny_backbone), "--train-file", str(data / "xnli.test.en.tsv.gz"),
               "--eval-dir", str(data), "--languages", "en,klingon", "--output-dir", str(tmp_path / "o")])
    assert rc == 2 and "unknown XNLI language code(s) ['klingon']" in stderr.text
    assert not (tmp_path / "o").exists()  # nothing was trained
