"""NLI readers: every layout, the label map, malformed rows, hub loading, encoding and batching."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import types
from pathlib import Path

import pytest

from mdeberta.data import nli
from mdeberta.data.nli import (
    LABEL2ID,
    LABELS,
    XNLI_LANGUAGES,
    NLIDataError,
    NLIExample,
    collate,
    encode_examples,
    label_to_id,
    length_grouped_batches,
    load_hub_nli,
    load_nli,
    load_xnli,
    read_nli_file,
    resolve_languages,
    scan_nli_file,
    shard_batches,
)
from nli_helpers import write_text

SHARED = Path(os.environ.get("MDEBERTA_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
XNLI_1_0_HEADER = ("language gold_label sentence1_binary_parse sentence2_binary_parse sentence1_parse sentence2_parse "
                   "sentence1 sentence2 promptID pairID genre label1 label2 label3 label4 label5 "
                   "sentence1_tokenized sentence2_tokenized match").split()




def xnli_1_0_row(lang: str, label: str, s1: str, s2: str) -> str:
    values = dict.fromkeys(XNLI_1_0_HEADER, "x")
    values.update(language=lang, gold_label=label, sentence1=s1, sentence2=s2)
    return "\t".join(values[k] for k in XNLI_1_0_HEADER) + "\n"


# --------------------------------------------------------------------------- label map
def test_one_label_map_in_hub_order():
    assert LABELS == ("entailment", "neutral", "contradiction")
    assert LABEL2ID == {"entailment": 0, "neutral": 1, "contradiction": 2}
    assert len(XNLI_LANGUAGES) == 15 and XNLI_LANGUAGES[0] == "en"


@pytest.mark.parametrize("value, expected", [
    ("entailment", 0), ("Neutral", 1), ("CONTRADICTION ", 2), (0, 0), (2, 2), ("1", 1), (2.0, 2),
    ("-", None), (-1, None), ("", None),
])
def test_label_to_id(value, expected):
    assert label_to_id(value) == expected


@pytest.mark.parametrize("value", ["entails", 3, "not_entailment", True])
def test_unknown_label_is_an_error_naming_place_and_allowed_values(value):
    with pytest.raises(NLIDataError) as e:
        label_to_id(value, "f.tsv:7")
    assert "f.tsv:7" in str(e.value) and "entailment, neutral, contradiction" in str(e.value)


# --------------------------------------------------------------------------- layouts
def test_per_language_tsv_gz_folder(tmp_path):
    for lang in XNLI_LANGUAGES:
        rows = "".join(f"{lang} premise {i}\t{lang} hypothesis {i}\t{LABELS[i % 3]}\n" for i in range(5))
        write_text(tmp_path / f"xnli.test.{lang}.tsv.gz", "premise\thypothesis\tlabel\n" + rows)
    data = load_xnli(tmp_path, "test", "all", max_examples_per_language=4)
    assert list(data) == list(XNLI_LANGUAGES)
    assert all(len(v) == 4 for v in data.values())
    fr = data["fr"]
    assert [e.index for e in fr] == [0, 1, 2, 3] and {e.language for e in fr} == {"fr"}
    assert fr[2] == NLIExample("fr premise 2", "fr hypothesis 2", 2, "fr", 2)
    assert list(load_xnli(tmp_path, "test", "de,sw")) == ["de", "sw"]


def test_xnli_1_0_layout_with_language_column(tmp_path):
    text = "\t".join(XNLI_1_0_HEADER) + "\n"
    for lang in ("en", "fr", "de"):
        for i in range(3):
            text += xnli_1_0_row(lang, LABELS[i], f"{lang} p{i}", f"{lang} h{i}")
    write_text(tmp_path / "xnli.dev.tsv", text)
    data = load_xnli(tmp_path, "dev", "fr,en")  # the folder has no per-language files: the combined one is used
    assert list(data) == ["fr", "en"]
    assert [(e.premise, e.hypothesis, e.label, e.index) for e in data["fr"]] == [
        ("fr p0", "fr h0", 0, 0), ("fr p1", "fr h1", 1, 1), ("fr p2", "fr h2", 2, 2)]
    assert load_xnli(tmp_path / "xnli.dev.tsv", "dev", "de")["de"][1].premise == "de p1"  # the file itself
    with pytest.raises(NLIDataError, match=r"no examples for language\(s\) \['sw'\]"):
        load_xnli(tmp_path, "dev", "en,sw")


def test_missing_split_lists_expected_names(tmp_path):
    with pytest.raises(NLIDataError, match=r"xnli\.test\.\{lang\}\.tsv"):
        load_xnli(tmp_path, "test", "en")


@pytest.mark.parametrize("name", ["multinli_1.0_dev_matched.jsonl", "mnli.jsonl.gz"])
def test_multinli_jsonl_skips_rows_without_gold_label(tmp_path, name):
    rows = [
        {"gold_label": "neutral", "sentence1": "A man sleeps.", "sentence2": "He is tired.", "genre": "x"},
        {"gold_label": "-", "sentence1": "Unsure.", "sentence2": "Maybe."},
        {"gold_label": "contradiction", "sentence1": "It is day.", "sentence2": "It is night."},
    ]
    path = write_text(tmp_path / name, "".join(json.dumps(r) + "\n" for r in rows))
    examples, report = scan_nli_file(path)
    assert [(e.premise, e.label) for e in examples] == [("A man sleeps.", 1), ("It is day.", 2)]
    assert report.no_gold_label == [2] and report.malformed == []


def test_plain_tsv_with_integer_labels_and_single_sequence(tmp_path):
    pairs = write_text(tmp_path / "p.tsv", "sentence1\tsentence2\tlabel\na\tb\t0\nc\td\t2\n")
    assert [e.label for e in read_nli_file(pairs)] == [0, 2]
    single = write_text(tmp_path / "s.tsv", "text\tlabel\nonly one text\tneutral\n")
    assert read_nli_file(single) == [NLIExample("only one text", None, 1, None, 0)]


def test_malformed_rows_are_skipped_and_logged_with_line_numbers(tmp_path, caplog):
    text = ("premise\thypothesis\tlabel\n"
            "good one\thyp\tentailment\n"          # line 2
            "too\tmany\tfields\there\n"            # line 3
            "\thyp\tneutral\n"                     # line 4: empty premise
            "missing fields\n"                     # line 5
            "\n"                                   # blank lines are ignored
            "good two\thyp\tcontradiction\n")      # line 7
    path = write_text(tmp_path / "bad.tsv", text)
    with caplog.at_level(logging.INFO, logger="mdeberta.data.nli"):
        examples, report = scan_nli_file(path)
    assert [e.premise for e in examples] == ["good one", "good two"]
    assert [n for n, _ in report.malformed] == [3, 4, 5]
    assert "skipped 3 malformed row(s)" in caplog.text and "line 3" in caplog.text and "line 5" in caplog.text

    jsonl = write_text(tmp_path / "bad.jsonl", '{"premise": "a", "hypothesis": "b", "label": 0}\n{not json\n[1, 2]\n'
                                          '{"hypothesis": "no premise", "label": 1}\n')
    examples, report = scan_nli_file(jsonl)
    assert len(examples) == 1 and [n for n, _ in report.malformed] == [2, 3, 4]


def test_unknown_label_in_a_file_names_file_and_line(tmp_path):
    path = write_text(tmp_path / "x.tsv", "premise\thypothesis\tlabel\na\tb\tentailment\nc\td\tmaybe\n")
    with pytest.raises(NLIDataError, match=r"x\.tsv:3: unknown NLI label 'maybe'"):
        read_nli_file(path)


def test_empty_and_unusable_files(tmp_path):
    with pytest.raises(NLIDataError, match="empty file"):
        read_nli_file(write_text(tmp_path / "e.tsv", ""))
    with pytest.raises(NLIDataError, match="empty file"):
        read_nli_file(write_text(tmp_path / "e.jsonl.gz", "\n"))
    with pytest.raises(NLIDataError, match="no usable NLI examples"):
        read_nli_file(write_text(tmp_path / "h.tsv", "premise\thypothesis\tlabel\n"))
    with pytest.raises(NLIDataError, match="no premise column"):
        read_nli_file(write_text(tmp_path / "c.tsv", "foo\tbar\n1\t2\n"))
    with pytest.raises(NLIDataError, match="not found"):
        read_nli_file(tmp_path / "nope.tsv")


def test_load_nli_concatenates_and_samples_every_source(tmp_path):
    a = write_text(tmp_path / "a.tsv", "premise\thypothesis\tlabel\n" + "a\tb\tneutral\n" * 50)
    b = write_text(tmp_path / "b.tsv", "premise\thypothesis\tlabel\n" + "c\td\tentailment\n" * 50)
    assert len(load_nli([a, b])) == 100
    capped = load_nli([a, b], max_examples=20, seed=3)
    assert len(capped) == 20 and {e.premise for e in capped} == {"a", "c"}
    assert [e.index for e in capped] == list(range(20))
    assert [e.premise for e in capped] == [e.premise for e in load_nli([a, b], max_examples=20, seed=3)]


# --------------------------------------------------------------------------- languages and hub
def test_resolve_languages():
    assert resolve_languages("all") == list(XNLI_LANGUAGES)
    assert resolve_languages("fr, de,fr") == ["fr", "de"]
    with pytest.raises(NLIDataError) as e:
        resolve_languages("fr,xx")
    assert "['xx']" in str(e.value) and "en, fr, es" in str(e.value)


def test_hub_without_datasets_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(NLIDataError, match="needs the `datasets` package"):
        load_hub_nli("facebook/xnli", "test", "fr")


def test_hub_loading_maps_splits_and_skips_unlabelled(monkeypatch):
    calls = []

    def load_dataset(name, *args, split):
        calls.append((name, args, split))
        return [{"premise": "p", "hypothesis": "h", "label": 2}, {"premise": "q", "hypothesis": "h", "label": -1}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    data = load_xnli("facebook/xnli", "dev", "fr")
    assert calls == [("facebook/xnli", ("fr",), "validation")]
    assert data["fr"] == [NLIExample("p", "h", 2, "fr", 0)]
    assert len(load_nli("nyu-mll/multi_nli", "dev")) == 1
    assert calls[-1] == ("nyu-mll/multi_nli", (), "validation_matched")

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(NLIDataError, match="Offline"):
        load_hub_nli("facebook/xnli", "test", "en")


# --------------------------------------------------------------------------- encoding and batching
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from mdeberta.tokenizer import DebertaTokenizer, train_tokenizer

    root = tmp_path_factory.mktemp("tok")
    text = root / "t.txt"
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(2, 8))) for _ in range(400)]
    lines = [" ".join(rng.sample(words, 8)) for _ in range(500)] + ["the cat sat on the mat"] * 50
    text.write_text("\n".join(lines))
    return DebertaTokenizer.from_pretrained(train_tokenizer(text, root / "tok", vocab_size=150, num_threads=1))


def test_encode_truncates_longest_first(tokenizer):
    long_premise = " ".join(["the cat sat on the mat"] * 20)
    ex = [NLIExample(long_premise, "the cat", 0), NLIExample("the mat", "the cat sat", 1)]
    feats = encode_examples(tokenizer, ex, max_length=24)
    assert len(feats[0]["input_ids"]) == 24
    hyp_ids = tokenizer.encode("the cat", add_special_tokens=False)
    assert feats[0]["input_ids"][-len(hyp_ids) - 1:-1] == hyp_ids  # the short hypothesis is kept whole
    assert feats[1]["input_ids"] == tokenizer.encode("the mat", "the cat sat")
    assert [f["label"] for f in feats] == [0, 1]


def test_collate_pads_dynamically():
    feats = [{"input_ids": [1, 5, 2], "token_type_ids": [0, 0, 0], "label": 2},
             {"input_ids": [1, 5, 6, 7, 2], "token_type_ids": [0, 0, 1, 1, 1], "label": 0}]
    batch = collate(feats, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 5, 2, 0, 0], [1, 5, 6, 7, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["token_type_ids"].tolist()[1] == [0, 0, 1, 1, 1]
    assert batch["labels"].tolist() == [2, 0]
    assert "labels" not in collate([{**f, "label": None} for f in feats])


def test_length_grouped_batches():
    lengths = [random.Random(i).randrange(5, 200) for i in range(1000)]
    batches = length_grouped_batches(lengths, 16, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == length_grouped_batches(lengths, 16, seed=1, epoch=0)
    assert batches != length_grouped_batches(lengths, 16, seed=1, epoch=1)

    def padding(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    rng = random.Random(0)
    order = list(range(1000))
    rng.shuffle(order)
    random_batches = [order[i:i + 16] for i in range(0, 1000, 16)]
    assert padding(batches) < padding(random_batches) / 5


def test_shard_batches_disjoint_and_equal():
    batches = [[i] for i in range(10)]
    shards = [shard_batches(batches, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    flat = [b[0] for s in shards for b in s]
    assert len(set(flat)) == 9


# --------------------------------------------------------------------------- the real data
@pytest.mark.skipif(not (SHARED / "data" / "xnli").is_dir(), reason=f"shared XNLI data not found at {SHARED}")
def test_shared_xnli_files_read_completely():
    data = load_xnli(SHARED / "data" / "xnli", "dev", "en,zh,sw")
    assert {k: len(v) for k, v in data.items()} == {"en": 2490, "zh": 2490, "sw": 2490}
    counts = [sum(e.label == i for e in data["zh"]) for i in range(3)]
    assert counts == [830, 830, 830]
    assert nli.XNLI_LANGUAGES == tuple(json.loads((SHARED / "reference" / "xnli_published.json").read_text())
                                       ["languages"])
