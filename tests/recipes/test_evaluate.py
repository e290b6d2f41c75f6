"""`mdeberta evaluate`: per-language accuracy, the published-layout table, JSON, plot and prediction files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from mdeberta.cli import main
from mdeberta.data.nli import LABELS, XNLI_LANGUAGES, load_xnli
from mdeberta.model import DebertaForSequenceClassification
from mdeberta.recipes.evaluate import PUBLISHED, evaluate_xnli, markdown_table
from mdeberta.tokenizer import DebertaTokenizer
from nli_helpers import SHARED, write_xnli_folder

pytestmark = pytest.mark.usefixtures("single_thread")

HEADER = "| model | avg | en | fr | es | de | el | bg | ru | tr | ar | vi | th | zh | hi | sw | ur |"


def recompute(predictions: Path) -> dict[str, float]:
    """Accuracy per language from the prediction file alone (independent of the library's helper)."""
    hits: dict[str, list[bool]] = {}
    for line in predictions.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        probs = r["probabilities"]
        assert set(probs) == set(LABELS) and abs(sum(probs.values()) - 1) < 1e-4
        assert r["predicted"] == max(probs, key=probs.get)
        hits.setdefault(r["language"], []).append(r["gold"] == r["predicted"])
    return {lang: 100 * sum(h) / len(h) for lang, h in hits.items()}


def test_markdown_table_has_the_published_layout():
    table = markdown_table({"run": {"avg": 40.0, "en": 41.25, "fr": 39.0}, **PUBLISHED}).splitlines()
    assert table[0] == HEADER
    assert table[2] == "| run | 40.0 | 41.2 | 39.0 | " + " | ".join(["–"] * 13) + " |"
    assert table[4].startswith("| mDeBERTa-V3-base | 79.8 | 88.2 | 82.6 |") and table[4].endswith("| 72.4 |")


@pytest.mark.skipif(not (SHARED / "reference" / "xnli_published.json").exists(), reason="shared reference absent")
def test_published_rows_match_the_reference_file():
    ref = json.loads((SHARED / "reference" / "xnli_published.json").read_text())
    for name, row in ref["rows"].items():
        assert {k: v for k, v in row.items() if k != "avg_std"} == PUBLISHED[name]
    assert tuple(ref["languages"]) == XNLI_LANGUAGES


def test_evaluate_cli_writes_table_json_plot_and_predictions(tiny_classifier, tmp_path):
    data_dir = write_xnli_folder(tmp_path / "xnli", n=9)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tiny_classifier), "--task", "xnli", "--languages", "all",
                 "--eval-dir", str(data_dir), "--output-dir", str(out), "--name", "tiny", "--device", "cpu"]) == 0
    result = json.loads((out / "xnli_test.json").read_text())
    assert list(result["accuracy"]) == list(XNLI_LANGUAGES)
    assert result["num_examples"] == dict.fromkeys(XNLI_LANGUAGES, 9)
    assert result["avg"] == pytest.approx(sum(result["accuracy"].values()) / 15)
    assert result["published"] == PUBLISHED
    # Every number can be recomputed from the prediction file.
    assert recompute(out / "predictions_test.jsonl") == pytest.approx(result["accuracy"])
    first = json.loads((out / "predictions_test.jsonl").read_text().splitlines()[0])
    assert list(first) == ["language", "index", "premise", "hypothesis", "gold", "predicted", "probabilities"]
    assert first["language"] == "en" and first["index"] == 0

    table = (out / "xnli_test.md").read_text().splitlines()
    assert HEADER in table
    row = next(line for line in table if line.startswith("| tiny |")).split("|")[2:-1]
    assert [float(v) for v in row] == pytest.approx(
        [round(result["avg"], 1)] + [round(result["accuracy"][lang], 1) for lang in XNLI_LANGUAGES], abs=0.051)
    assert any(line.startswith("| XLM-R-base | 76.2 |") for line in table)

    png = (out / "xnli_test.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_predictions_follow_the_head_label_names(tiny_classifier, tmp_path):
    """A head whose outputs are in another order (contradiction, entailment, neutral) gives the same answers."""
    model = DebertaForSequenceClassification.from_pretrained(tiny_classifier)
    tok = DebertaTokenizer.from_pretrained(tiny_classifier)
    data = load_xnli(write_xnli_folder(tmp_path / "x", n=12, languages=["en", "de"]), "test", "en,de")
    reference, ref_records = evaluate_xnli(model, tok, data)

    perm = [2, 0, 1]  # new output i = old output perm[i]
    shuffled = DebertaForSequenceClassification.from_pretrained(
        tiny_classifier, id2label={i: LABELS[p] for i, p in enumerate(perm)},
        label2id={LABELS[p]: i for i, p in enumerate(perm)})
    with torch.no_grad():
        shuffled.classifier.weight.copy_(model.classifier.weight[perm])
        shuffled.classifier.bias.copy_(model.classifier.bias[perm])
    results, records = evaluate_xnli(shuffled, tok, data)
    assert results["accuracy"] == reference["accuracy"]
    assert [r["predicted"] for r in records] == [r["predicted"] for r in ref_records]


def test_bad_inputs_are_clear_errors(tiny_backbone, tiny_classifier, tmp_path, caplog, stderr):
    data_dir = write_xnli_folder(tmp_path / "xnli", n=3, languages=["en"])
    with caplog.at_level(logging.ERROR):
        rc = main(["evaluate", "--model", str(tiny_classifier), "--languages", "en,xx", "--eval-dir", str(data_dir)])
    assert rc == 2 and "unknown XNLI language code(s) ['xx']" in stderr.text and "en, fr, es" in stderr.text
    stderr.clear()
    with caplog.at_level(logging.ERROR):
        rc = main(["evaluate", "--model", str(tiny_backbone), "--languages", "en", "--eval-dir", str(data_dir)])
    assert rc == 2 and "no trained classification head" in stderr.text
    stderr.clear()
    with caplog.at_level(logging.ERROR):
        rc = main(["evaluate", "--model", str(tiny_classifier), "--languages", "fr", "--eval-dir", str(data_dir)])
    assert rc == 2 and "no XNLI test data for language(s) ['fr']" in stderr.text


def test_nli_task_on_one_file(tiny_classifier, tmp_path):
    data_dir = write_xnli_folder(tmp_path / "xnli", n=6, languages=["en"])
    out = tmp_path / "out"
    assert main(["evaluate", "--model", str(tiny_classifier), "--task", "nli", "--eval-file",
                 str(data_dir / "xnli.test.en.tsv.gz"), "--output-dir", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert recompute(out / "predictions.jsonl") == pytest.approx({"all": result["avg"]})
