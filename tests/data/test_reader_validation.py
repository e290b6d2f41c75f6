"""The NLI, NER and QA readers check columns, keys and types up front: a misspelled column, a missing tag column,
a wrong type or an answer outside its context is an error naming the file and the line (or question), never a
silently different data set."""

from __future__ import annotations

import json
import logging
import re

import pytest

from mdeberta.data.ner import NERDataError, load_tagged, read_conll
from mdeberta.data.nli import (
    NLIDataError,
    NLIExample,
    encode_examples,
    input_form,
    load_nli,
    nli_input_form,
    read_nli_file,
    scan_nli_file,
)
from mdeberta.data.qa import QADataError, load_qa
from nli_helpers import write_text


def jsonl(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


# --------------------------------------------------------------------------- NLI: columns
@pytest.mark.parametrize("name", ["h.tsv", "h.tsv.gz"])
def test_misspelled_hypothesis_column_is_an_error_with_a_suggestion(tmp_path, name):
    path = write_text(tmp_path / name, "premise\thypotesis\tlabel\na\tb\tneutral\n")
    with pytest.raises(NLIDataError) as e:
        read_nli_file(path)
    message = str(e.value)
    assert f"{name}:1: column 'hypotesis' is not known; did you mean 'hypothesis'?" in message
    assert "['premise', 'hypotesis', 'label']" in message  # the columns the file has


@pytest.mark.parametrize("header, wrong, right", [
    ("premise\thypothesis\tlable", "lable", "label"),
    ("sentence1\tsentence2\tgold_lable", "gold_lable", "gold_label"),
    ("premise\thypothesis\tlabels", "labels", "label"),
    ("premis\thypothesis\tlabel", "premis", "premise"),
    ("premise\thypothesis\tlabel\tlangauge", "langauge", "language"),
])
def test_misspelled_label_premise_language_columns_are_errors_with_suggestions(tmp_path, header, wrong, right):
    path = write_text(tmp_path / "x.tsv", f"{header}\na\tb\tneutral{chr(9) + 'en' if 'lang' in header else ''}\n")
    with pytest.raises(NLIDataError, match=re.escape(f"x.tsv:1: column {wrong!r} is not known; did you mean "
                                                     f"{right!r}?")):
        scan_nli_file(path)


def test_misspelled_keys_in_json_lines_are_errors_naming_the_line(tmp_path):
    path = write_text(tmp_path / "m.jsonl", jsonl({"premise": "a", "hypothesis": "b", "label": 0},
                                                  {"premise": "c", "hypotesis": "d", "label": 1}))
    with pytest.raises(NLIDataError, match=r"m\.jsonl:2: key 'hypotesis' is not known; did you mean 'hypothesis'\?"):
        read_nli_file(path)
    path = write_text(tmp_path / "l.jsonl", jsonl({"premise": "a", "hypothesis": "b", "lable": "neutral"}))
    with pytest.raises(NLIDataError, match=r"l\.jsonl:1: key 'lable' is not known; did you mean 'label'\?"):
        read_nli_file(path)


def test_known_extra_columns_and_unrelated_columns_are_not_errors(tmp_path, caplog):
    # XNLI-1.0 / MultiNLI carry label1..label5 beside gold_label and parse columns beside the sentences.
    header = "gold_label\tsentence1\tsentence2\tsentence1_parse\tlabel1\tlabel2\tpairID\tsource"
    path = write_text(tmp_path / "m.tsv", header + "\nneutral\ta\tb\t(a)\tneutral\tneutral\t7\tx1\n")
    with caplog.at_level(logging.WARNING, logger="mdeberta.data.nli"):
        examples, report = scan_nli_file(path)
    assert examples == [NLIExample("a", "b", 1, None, 0)] and report.form == "pair" and report.labelled
    assert "ignoring column(s) ['source']" in caplog.text  # unknown columns are named, not silently dropped


# --------------------------------------------------------------------------- NLI: pairs or single texts, per file
def test_pair_file_row_with_empty_hypothesis_is_an_error(tmp_path):
    path = write_text(tmp_path / "p.tsv", "premise\thypothesis\tlabel\na\tb\tneutral\nc\t \tentailment\n")
    with pytest.raises(NLIDataError, match=r"p\.tsv:3: empty hypothesis in a pair file"):
        read_nli_file(path)
    # A row without a gold label is skipped whatever its text (it is never used).
    path = write_text(tmp_path / "g.tsv", "premise\thypothesis\tlabel\na\tb\tneutral\nc\t\t-\n")
    examples, report = scan_nli_file(path)
    assert len(examples) == 1 and report.no_gold_label == [3] and report.malformed == []


@pytest.mark.parametrize("second", [{"premise": "c", "label": 1}, {"premise": "c", "hypothesis": None, "label": 1},
                                    {"premise": "c", "hypothesis": "", "label": 1}])
def test_json_lines_pair_file_never_yields_single_texts(tmp_path, second):
    path = write_text(tmp_path / "p.jsonl", jsonl({"premise": "a", "hypothesis": "b", "label": 0}, second))
    with pytest.raises(NLIDataError, match=r"p\.jsonl:2: "):
        read_nli_file(path)


def test_json_lines_single_file_with_a_pair_and_label_presence_are_per_file(tmp_path):
    path = write_text(tmp_path / "s.jsonl", jsonl({"text": "a", "label": 0}, {"text": "c", "hypothesis": "d",
                                                                                "label": 1}))
    with pytest.raises(NLIDataError, match=r"s\.jsonl:2: .*'hypothesis'.*single-text file"):
        read_nli_file(path)
    path = write_text(tmp_path / "u.jsonl", jsonl({"premise": "a", "hypothesis": "b", "label": 0},
                                                  {"premise": "c", "hypothesis": "d"}))
    with pytest.raises(NLIDataError, match=r"u\.jsonl:2: no label key .* line 1 has one"):
        read_nli_file(path)


def test_input_form_is_exposed_per_file_and_for_examples(tmp_path):
    pairs = write_text(tmp_path / "p.tsv", "premise\thypothesis\tlabel\na\tb\t0\n")
    single = write_text(tmp_path / "s.jsonl.gz", jsonl({"text": "a", "label": 0}))
    assert nli_input_form(pairs) == "pair" and nli_input_form(single) == "single"
    assert scan_nli_file(pairs)[1].form == "pair" and scan_nli_file(single)[1].form == "single"
    assert input_form(read_nli_file(pairs)) == "pair" and input_form(read_nli_file(single)) == "single"
    with pytest.raises(NLIDataError, match="mixing pairs and single texts"):
        input_form([NLIExample("a", "b", 0), NLIExample("c", None, 0)])


def test_load_nli_refuses_pair_and_single_text_files_together(tmp_path):
    pairs = write_text(tmp_path / "p.tsv", "premise\thypothesis\tlabel\n" + "a\tb\t0\n" * 256)
    single = write_text(tmp_path / "s.tsv", "text\tlabel\n" + "c\t1\n" * 256)
    with pytest.raises(NLIDataError, match=r"s\.tsv holds single texts but .*p\.tsv holds pairs"):
        load_nli([pairs, single])


def test_encode_examples_refuses_a_mix_even_across_chunks():
    def tokenizer(first, second=None, **kwargs):
        return {"input_ids": [[1]] * len(first), "token_type_ids": [[0]] * len(first)}

    examples = [NLIExample("a", None, 0)] * 256 + [NLIExample("a", "b", 0)] * 256  # each 256-chunk is uniform
    with pytest.raises(NLIDataError, match="mixing pairs and single texts"):
        encode_examples(tokenizer, examples, 16)


# --------------------------------------------------------------------------- NLI: JSON lines types
@pytest.mark.parametrize("record, message", [
    ({"premise": 123, "hypothesis": "b", "label": 0}, "'premise' must be a string, got int 123"),
    ({"text": 5, "label": 0}, "'text' must be a string, got int 5"),
    ({"premise": None, "hypothesis": "b", "label": 0}, "'premise' must be a string, got NoneType None"),
    ({"premise": "a", "hypothesis": ["b"], "label": 0}, "'hypothesis' must be a string, got list ['b']"),
    ({"premise": "a", "hypothesis": "b", "label": [0]}, "'label' must be a string or an integer, got list [0]"),
    ({"premise": "a", "hypothesis": "b", "label": True}, "'label' must be a string or an integer, got bool True"),
    ({"premise": "a", "hypothesis": "b", "label": 0, "language": 3}, "'language' must be a string, got int 3"),
])
def test_json_lines_types_are_checked_per_field_with_the_line(tmp_path, record, message):
    first = {"premise": "ok", "label": 0} if "text" in record else {"premise": "ok", "hypothesis": "fine", "label": 0}
    if "language" in record:
        first["language"] = "en"
    path = write_text(tmp_path / "t.jsonl", jsonl(first, record))
    with pytest.raises(NLIDataError, match=re.escape(f"t.jsonl:2: {message}")):
        read_nli_file(path)


# --------------------------------------------------------------------------- NER
def test_conll_line_without_its_tag_column_is_an_error(tmp_path):
    path = tmp_path / "pos.conll"
    path.write_text("EU NNP B-ORG\nrejects VBZ O\ngerman NN\ncall NN O\n")
    with pytest.raises(NERDataError, match=r"pos\.conll:3: 2 columns, but the file's other token lines have 3"):
        read_conll(path)
    path.write_text("EU NNP\nrejects VBZ O\ngerman JJ B-MISC\ncall NN O\n")  # the odd line first
    with pytest.raises(NERDataError, match=r"pos\.conll:1: 2 columns, but the file's other token lines have 3"):
        load_tagged(path)


def test_conll_tag_that_is_not_iob_among_iob_tags_is_an_error(tmp_path):
    path = tmp_path / "t.conll"
    path.write_text("anna B-PER\nsmith I-PER\n\nwent NN\nhome O\n")
    with pytest.raises(NERDataError, match=r"t\.conll:4: tag 'NN' is not an IOB2 / IOBES tag"):
        load_tagged(path)


def test_conll_with_plain_tags_only_still_reads(tmp_path):
    path = tmp_path / "io.conll"
    path.write_text("anna PER\nwent O\n\nthe DT\ncat NN\n")
    assert [s.tags for s in load_tagged(path)] == [["PER", "O"], ["DT", "NN"]]
    path.write_text("a O\nb S-LOC\n\nc B-PER\nd E-PER\n")
    assert [s.tags for s in load_tagged(path)] == [["O", "S-LOC"], ["B-PER", "E-PER"]]


@pytest.mark.parametrize("record, message", [
    ({"tokens": ["a", 1], "ner_tags": ["O", "O"]}, r"'tokens' must be a list of strings; item 1 is int 1"),
    ({"tokens": "a b c", "ner_tags": ["O", "O", "O"]}, r"'tokens' must be a list of strings, got str"),
    ({"tokens": ["a", "b", "c"], "ner_tags": "O O"}, r"'ner_tags' must be a list, got str"),
    ({"tokens": ["a", "b"], "tags": ["O", None]}, r"tag None is"),
    ([1, 2], r"expected a JSON object with .tokens. and tags, got list"),
])
def test_ner_json_lines_records_are_type_checked(tmp_path, record, message):
    path = tmp_path / "n.jsonl"
    path.write_text(jsonl({"tokens": ["x"], "ner_tags": ["O"]}, record))
    with pytest.raises(NERDataError, match=r"n\.jsonl:2: " + message):
        load_tagged(path)


def test_ner_json_lines_tag_that_is_not_iob_among_iob_tags(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text(jsonl({"tokens": ["anna"], "ner_tags": ["B-PER"]}, {"tokens": ["x", "y"], "ner_tags": ["O", "NN"]}))
    with pytest.raises(NERDataError, match=r"n\.jsonl:2: tag 'NN' of token 1 \('y'\) is not an IOB2 / IOBES tag"):
        load_tagged(path)


# --------------------------------------------------------------------------- QA
CONTEXT = "anna met bruno . key in cairo today"


def squad(answers: object = None, **qa: object) -> dict:
    record = {"id": "q7", "question": "where is the key ?",
              "answers": [{"text": "cairo", "answer_start": CONTEXT.index("cairo")}] if answers is None else answers}
    record.update(qa)
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": [record]}]}]}


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_negative_answer_start_is_refused(tmp_path):
    start = CONTEXT.index("cairo") - len(CONTEXT)  # context[start:start + 5] == "cairo" by negative slicing
    assert CONTEXT[start:start + 5] == "cairo"
    path = write_json(tmp_path / "neg.json", squad([{"text": "cairo", "answer_start": start}]))
    with pytest.raises(QADataError, match=rf"neg\.json: question 'q7': answer_start {start} is outside the context"):
        load_qa(path)


def test_answer_start_past_the_context_and_empty_answers_are_refused(tmp_path):
    path = write_json(tmp_path / "far.json", squad([{"text": "cairo", "answer_start": 33}]))
    with pytest.raises(QADataError, match=r"far\.json: question 'q7': answer 'cairo' at answer_start 33 ends at 38, "
                                          r"past the end of the context \(35 characters\)"):
        load_qa(path)
    path = write_json(tmp_path / "empty.json", squad([{"text": "", "answer_start": 3}]))
    with pytest.raises(QADataError, match=r"empty\.json: question 'q7': answer 0 has an empty text"):
        load_qa(path)


@pytest.mark.parametrize("drop, where, has", [
    ("question", "question 'q7'", "['answers', 'id']"),
    ("answers", "question 'q7'", "['id', 'question']"),
    ("answer_start", "question 'q7' answer 0", "['text']"),
    ("text", "question 'q7' answer 0", "['answer_start']"),
    ("context", "article 0 ('t') paragraph 0", "['qas']"),
])
def test_missing_squad_keys_name_the_key_the_record_and_its_keys(tmp_path, drop, where, has):
    data = squad()
    paragraph = data["data"][0]["paragraphs"][0]
    for record in (paragraph, paragraph["qas"][0], paragraph["qas"][0]["answers"][0]):
        record.pop(drop, None)
    path = write_json(tmp_path / "miss.json", data)
    with pytest.raises(QADataError, match=re.escape(f"miss.json: {where}: no key {drop!r} (it has keys {has})")):
        load_qa(path)


@pytest.mark.parametrize("field, value, message", [
    ("context", 5, "'context' must be a string, got int 5"),
    ("question", 7, "'question' must be a string, got int 7"),
    ("answers", "cairo", "'answers' must be a list of {'text', 'answer_start'} objects"),
    ("answer_start", 1.5, "'answer_start' must be an integer, got float 1.5"),
    ("text", ["cairo"], "'text' must be a string, got list ['cairo']"),
])
def test_wrong_squad_types_are_errors(tmp_path, field, value, message):
    data = squad()
    paragraph = data["data"][0]["paragraphs"][0]
    for record in (paragraph, paragraph["qas"][0], paragraph["qas"][0]["answers"][0]):
        if field in record:
            record[field] = value
    path = write_json(tmp_path / "types.json", data)
    with pytest.raises(QADataError, match=re.escape(message)):
        load_qa(path)


def test_qa_json_lines_read_and_checked_with_the_line(tmp_path):
    start = CONTEXT.index("cairo")
    good = {"id": "a", "question": "where ?", "context": CONTEXT, "answers": [{"text": "cairo", "answer_start": start}]}
    hub = {**good, "id": "b", "answers": {"text": ["cairo"], "answer_start": [start]}}  # a `datasets` export
    path = tmp_path / "qa.jsonl"
    path.write_text(jsonl(good, hub))
    assert [(e.id, e.question, e.context, e.answers) for e in load_qa(path)] == [
        (qid, "where ?", CONTEXT, [{"text": "cairo", "answer_start": start}]) for qid in ("a", "b")]
    path.write_text(jsonl(good, {"id": "c", "question": "where ?", "answers": []}))
    with pytest.raises(QADataError, match=re.escape("qa.jsonl:2 (question 'c'): no key 'context' (it has keys "
                                                    "['answers', 'id', 'question'])")):
        load_qa(path)
    path.write_text(jsonl(good, {**good, "id": "d", "answers": [{"text": "cairo", "answer_start": -11}]}))
    with pytest.raises(QADataError, match=r"qa\.jsonl:2 \(question 'd'\): answer_start -11 is outside the context"):
        load_qa(path)
