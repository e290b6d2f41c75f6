"""`mdeberta predict` and `mdeberta zero-shot`: JSON lines from files, stdin and arguments."""

from __future__ import annotations

import io
import json
import logging

import pytest

from mdeberta.cli import main
from mdeberta.data.nli import LABELS

pytestmark = pytest.mark.usefixtures("single_thread")


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_predict_from_tsv_file(tiny_classifier, tmp_path):
    src = tmp_path / "pairs.tsv"
    src.write_text("premise\thypothesis\nthe cat and the dog.\tthere is a cat.\nthe car.\tthere is no car.\n")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", "--model", str(tiny_classifier), "--input", str(src), "--output", str(out)]) == 0
    rows = jsonl(out.read_text())
    assert [r["premise"] for r in rows] == ["the cat and the dog.", "the car."]
    for r in rows:
        assert set(r["probabilities"]) == set(LABELS)
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)


def test_predict_from_stdin_jsonl(tiny_classifier, monkeypatch, capsys):
    lines = [{"premise": "the tree.", "hypothesis": "there is a tree."},
             {"sentence1": "the bird.", "sentence2": "there is no bird."}]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(x) + "\n" for x in lines)))
    assert main(["predict", "--model", str(tiny_classifier)]) == 0
    rows = jsonl(capsys.readouterr().out)
    assert [r["hypothesis"] for r in rows] == ["there is a tree.", "there is no bird."]


def test_predict_bad_input_names_the_line(tiny_classifier, tmp_path, caplog, stderr):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"premise": "a", "hypothesis": "b"}\n{"premise": "only"}\n')
    with caplog.at_level(logging.ERROR):
        assert main(["predict", "--model", str(tiny_classifier), "--input", str(src)]) == 2
    assert "bad.jsonl:2" in stderr.text
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with caplog.at_level(logging.ERROR):
        assert main(["predict", "--model", str(tiny_classifier), "--input", str(empty)]) == 2
    assert "no premise/hypothesis pairs" in stderr.text


def test_zero_shot_cli(tiny_classifier, tmp_path, capsys):
    assert main(["zero-shot", "--model", str(tiny_classifier), "--labels", "animals,cars,books",
                 "the cat and the dog.", "the car on the road."]) == 0
    rows = jsonl(capsys.readouterr().out)
    assert [r["sequence"] for r in rows] == ["the cat and the dog.", "the car on the road."]
    for r in rows:
        assert sorted(r["labels"]) == ["animals", "books", "cars"]
        assert sum(r["scores"]) == pytest.approx(1, abs=1e-5) and r["scores"] == sorted(r["scores"], reverse=True)

    texts = tmp_path / "texts.txt"
    texts.write_text("der Hund im Garten.\n\nthe book.\n")
    out = tmp_path / "zs.jsonl"
    assert main(["zero-shot", "--model", str(tiny_classifier), "--labels", "Tiere,Bücher", "--multi-label",
                 "--template", "Es geht um {}.", "--input", str(texts), "--output", str(out)]) == 0
    rows = jsonl(out.read_text())
    assert len(rows) == 2 and all(0 < s < 1 for r in rows for s in r["scores"])


def test_zero_shot_needs_an_nli_head(tiny_backbone, caplog, stderr):
    with caplog.at_level(logging.ERROR):
        assert main(["zero-shot", "--model", str(tiny_backbone), "--labels", "a,b", "text"]) == 2
    assert "no trained classification head" in stderr.text
