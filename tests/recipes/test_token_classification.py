"""Token classification (NER): readers, seqeval-style metrics on fixtures, fine-tuning to F1 >= 0.9 on a learnable
pattern, per-language evaluation and entity predictions with character spans, bad input."""

from __future__ import annotations

import json

import pytest

from mdeberta.cli import main
from mdeberta.data.ner import NERDataError, entity_scores, get_entities, load_tagged
from ner_helpers import synthetic_sentences, write_conll, write_ner_jsonl

pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------- metrics (fixtures with known values)
def test_entities_follow_seqeval_chunking():
    assert get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    # Broken IOB2: an I- without a B- starts an entity; a type change inside a run splits it.
    assert get_entities(["I-PER", "I-PER", "I-LOC", "O", "I-ORG"]) == [("PER", 0, 1), ("LOC", 2, 2), ("ORG", 4, 4)]
    assert get_entities(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 0), ("PER", 1, 2)]
    # IOBES.
    assert get_entities(["S-LOC", "B-PER", "I-PER", "E-PER", "O", "B-ORG", "E-ORG"]) == [
        ("LOC", 0, 0), ("PER", 1, 3), ("ORG", 5, 6)]
    assert get_entities(["E-PER", "I-PER"]) == [("PER", 0, 0), ("PER", 1, 1)]


def test_entity_scores_known_values():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    s = entity_scores(gold, pred)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert s["per_type"]["PER"]["f1"] == 1.0
    assert entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0  # boundaries must match exactly
    with pytest.raises(ValueError, match="2 gold tags but 1"):
        entity_scores([["O", "O"]], [["O"]])


# --------------------------------------------------------------------------- readers and bad input
def test_readers_and_bad_input(tmp_path):
    sentences = synthetic_sentences(5)
    conll = load_tagged(write_conll(tmp_path / "a.conll", sentences, prefix="en:"))
    jsonl = load_tagged(write_ner_jsonl(tmp_path / "a.jsonl", sentences))
    assert [(s.tokens, s.tags) for s in conll] == [(s.tokens, s.tags) for s in jsonl] == [
        (t, g) for t, g in sentences]  # PAN-X language prefixes removed, -DOCSTART- skipped
    (tmp_path / "bad.jsonl").write_text('{"tokens": ["a", "b"], "ner_tags": ["O"]}\n')
    with pytest.raises(NERDataError, match=r"bad.jsonl:1: 2 tokens but 1 tags"):
        load_tagged(tmp_path / "bad.jsonl")
    (tmp_path / "bad.conll").write_text("word O\nlonely\n")
    with pytest.raises(NERDataError, match=r"bad.conll:2: expected a token and a tag"):
        load_tagged(tmp_path / "bad.conll")
    with pytest.raises(NERDataError, match="not found"):
        load_tagged(tmp_path / "missing.conll")


def test_finetune_learns_ner_and_evaluates_per_language(tagging_backbone, tmp_path, capsys, caplog, stderr):
    train = write_conll(tmp_path / "train.conll", synthetic_sentences(400, seed=1))
    dev = write_ner_jsonl(tmp_path / "dev.jsonl", synthetic_sentences(60, seed=2))
    out = tmp_path / "run"
    assert main(["finetune", "--task", "token-classification", "--model", str(tagging_backbone),
                 "--train-file", str(train),
                 "--dev-file", str(dev), "--output-dir", str(out), "--batch-size", "16", "--learning-rate", "3e-3",
                 "--epochs", "4", "--warmup-ratio", "0.1", "--eval-every", "50", "--log-every", "20",
                 "--max-seq-length", "32", "--device", "cpu"]) == 0
    info = json.loads((out / "best" / "training_info.json").read_text())
    assert info["task"] == "token-classification" and info["dev_f1"] >= 90, info
    assert info["labels"] == ["O", "B-LOC", "B-PER", "I-PER"]
    # Per-language evaluation: one file per language (the language from --languages order).
    files = {lang: write_conll(tmp_path / f"test.{lang}.conll", synthetic_sentences(40, seed=3 + k))
             for k, lang in enumerate(("en", "de"))}
    report = tmp_path / "eval"
    assert main(["evaluate", "--task", "token-classification", "--model", str(out / "best"), "--eval-file",
                 *[f"{lang}={path}" for lang, path in files.items()], "--output-dir", str(report)]) == 0
    results = json.loads((report / "ner_test.json").read_text())
    assert set(results["f1"]) == {"en", "de"} and min(results["f1"].values()) >= 90
    assert (report / "ner_test.md").read_text().startswith("|") and (report / "ner_test.png").exists()
    # Entities with character spans in the original text.
    capsys.readouterr()
    assert main(["predict", "--task", "token-classification", "--model", str(out / "best"), "--text",
                 "yesterday anna smith went to oslo"]) == 0
    entities = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["entities"]
    assert [(e["label"], e["text"], e["start"], e["end"]) for e in entities] == [
        ("PER", "anna smith", 10, 20), ("LOC", "oslo", 29, 33)]
    # A tag the head does not know is an error naming the file and line.
    bad = tmp_path / "bad.conll"
    bad.write_text("anna B-PER\nparis B-CITY\n")
    stderr.clear()
    assert main(["finetune", "--task", "token-classification", "--model", str(out / "best"), "--train-file", str(bad),
                 "--output-dir", str(tmp_path / "bad"), "--max-steps", "1", "--device", "cpu"]) == 2
    assert "bad.conll:1: tag 'B-CITY' of token 1" in stderr.text


def test_hub_readers_with_a_local_dataset(monkeypatch):
    """The hub path (google/xtreme PAN-X, unimelb-nlp/wikiann) reads tag names from the dataset's ClassLabel."""
    datasets = pytest.importorskip("datasets")
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    local = datasets.Dataset.from_dict({"tokens": [["anna", "in", "oslo"]], "ner_tags": [[1, 0, 3]]}, features)
    calls = []

    def fake_load(name, config, split):
        calls.append((name, config, split))
        return local

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    sentences = load_tagged("google/xtreme:de", "validation")
    assert calls == [("google/xtreme", "PAN-X.de", "validation")]
    assert (sentences[0].tokens, sentences[0].tags, sentences[0].language) == (
        ["anna", "in", "oslo"], ["B-PER", "O", "B-LOC"], "de")
    load_tagged("unimelb-nlp/wikiann:sw", "test")
    assert calls[-1] == ("unimelb-nlp/wikiann", "sw", "test")


def test_packed_token_classification_trains_like_padded(tagging_backbone, tmp_path, caplog, stderr):
    """--pack-sequences on: tags (1, T) over the packed row; with dropout off, 3 steps give the padded weights.
    QA cannot be packed and says so."""
    import shutil

    import torch

    from mdeberta.checkpoint import load_state_dict

    backbone = tmp_path / "no_dropout"
    shutil.copytree(tagging_backbone, backbone)
    config = json.loads((backbone / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (backbone / "config.json").write_text(json.dumps(config))
    train = write_conll(tmp_path / "train.conll", synthetic_sentences(48, seed=1))
    states = {}
    for mode in ("off", "on"):
        assert main(["finetune", "--task", "token-classification", "--model", str(backbone), "--train-file",
                     str(train), "--output-dir", str(tmp_path / mode), "--batch-size", "16", "--max-steps", "3",
                     "--max-seq-length", "32", "--device", "cpu", "--pack-sequences", mode]) == 0
        states[mode] = load_state_dict(tmp_path / mode / "final")[0]
    for k in states["off"]:
        torch.testing.assert_close(states["on"][k], states["off"][k], rtol=1e-4, atol=1e-5, msg=k)
    stderr.clear()
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "anna met bruno", "qas": [
        {"id": "q", "question": "who ?", "answers": [{"text": "anna", "answer_start": 0}]}]}]}]}))
    assert main(["finetune", "--task", "question-answering", "--model", str(backbone), "--train-file", str(squad),
                 "--output-dir", str(tmp_path / "qa"), "--max-steps", "1", "--device", "cpu",
                 "--pack-sequences", "on"]) == 2
    assert "cannot be packed" in stderr.text
