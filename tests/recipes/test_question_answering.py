"""Extractive QA: SQuAD / MLQA metrics on fixtures, windows over long contexts, fine-tuning to F1 >= 0.9 on a
learnable pattern, per-language evaluation, predictions with character spans, bad input."""

from __future__ import annotations

import json

import pytest

from mdeberta.cli import main
from mdeberta.data.qa import QADataError, QAExample, encode_qa, exact_match, f1_score, load_qa, normalize_answer
from ner_helpers import synthetic_squad

pytestmark = pytest.mark.usefixtures("single_thread")


def test_squad_and_mlqa_normalisation_and_scores():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert exact_match("the cat", "Cat.") == 1.0
    assert f1_score("the black cat", "a cat") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1_score("dog", "cat") == 0.0
    assert normalize_answer("El Gato y la casa", "es") == "gato y casa"
    assert normalize_answer("Der Hund, die Katze", "de") == "hund katze"
    assert normalize_answer("北京是中国的首都。", "zh") == "北 京 是 中 国 的 首 都"
    assert f1_score("北京", "北京市", "zh") == pytest.approx(0.8)
    assert normalize_answer("«Hello» – world", "en") == "hello world"  # Unicode punctuation in MLQA's rules


def test_windows_hold_the_answer_positions(tagging_backbone, tmp_path):
    from mdeberta.tokenizer import DebertaTokenizer

    tok = DebertaTokenizer.from_pretrained(tagging_backbone)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(synthetic_squad(20, filler=40)))
    examples = load_qa(path)
    features = encode_qa(tok, examples, max_length=32, stride=8, train=True)
    assert len(features) > len(examples)  # long contexts: several windows per question
    found = 0
    for f in features:
        if f.start_position:
            example = examples[f.example]
            begin, end = f.offsets[f.start_position][0], f.offsets[f.end_position][1]
            assert example.context[begin:end] == example.answers[0]["text"]
            found += 1
    assert found >= len(examples)  # every answer is inside at least one window


def test_finetune_learns_qa_and_predicts_spans(tagging_backbone, tmp_path, capsys, caplog):
    train, dev = tmp_path / "train.json", tmp_path / "dev.json"
    train.write_text(json.dumps(synthetic_squad(400, seed=1)))
    dev.write_text(json.dumps(synthetic_squad(60, seed=2)))
    out = tmp_path / "run"
    assert main(["finetune", "--task", "question-answering", "--model", str(tagging_backbone),
                 "--train-file", str(train),
                 "--dev-file", str(dev), "--output-dir", str(out), "--batch-size", "16", "--learning-rate", "3e-3",
                 "--epochs", "6", "--warmup-ratio", "0.1", "--eval-every", "50", "--log-every", "25",
                 "--max-seq-length", "32", "--doc-stride", "8", "--device", "cpu"]) == 0
    info = json.loads((out / "best" / "training_info.json").read_text())
    assert info["task"] == "question-answering" and info["dev_f1"] >= 90, info
    test_files = {}
    for k, lang in enumerate(("en", "de")):
        test_files[lang] = tmp_path / f"xquad.{lang}.json"
        test_files[lang].write_text(json.dumps(synthetic_squad(40, seed=5 + k)))
    report = tmp_path / "eval"
    assert main(["evaluate", "--task", "question-answering", "--model", str(out / "best"), "--eval-file",
                 *[f"{lang}={p}" for lang, p in test_files.items()], "--max-seq-length", "32", "--doc-stride", "8",
                 "--output-dir", str(report)]) == 0
    scores = json.loads((report / "qa_test.json").read_text())["scores"]
    assert set(scores) == {"en", "de"} and min(s["f1"] for s in scores.values()) >= 90
    assert (report / "qa_test.png").exists()
    item = tmp_path / "ask.jsonl"
    item.write_text(json.dumps({"question": "where is the key ?", "context": "anna met bruno . key in cairo today"})
                    + "\n")
    capsys.readouterr()
    assert main(["predict", "--task", "question-answering", "--model", str(out / "best"), "--input", str(item),
                 "--max-seq-length", "32"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["answer"] == "cairo" and answer["context"][answer["start"]:answer["end"]] == "cairo"


def test_bad_qa_input_is_clear(tmp_path):
    data = synthetic_squad(2)
    data["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] += 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(QADataError, match=r"question 'q1': answer '.*' is not the context at answer_start"):
        load_qa(path)
    (tmp_path / "notsquad.json").write_text('{"rows": []}')
    with pytest.raises(QADataError, match="expected SQuAD JSON"):
        load_qa(tmp_path / "notsquad.json")
    with pytest.raises(QADataError, match="not found"):
        load_qa(tmp_path / "missing.json")
    assert QAExample("x", "q", "c", []).answers == []


def test_hub_reader_with_a_local_dataset(monkeypatch):
    datasets = pytest.importorskip("datasets")
    local = datasets.Dataset.from_dict({"id": ["a"], "question": ["wo?"], "context": ["in oslo"],
                                        "answers": [{"text": ["oslo"], "answer_start": [3]}]})
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split: calls.append((name, config, split))
                        or local)
    examples = load_qa("google/xquad:de", "validation")
    assert calls == [("google/xquad", "xquad.de", "validation")]
    assert examples[0].answers == [{"text": "oslo", "answer_start": 3}] and examples[0].language == "de"
