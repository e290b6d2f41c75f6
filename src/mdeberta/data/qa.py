"""Extractive question answering data: SQuAD v1.1 / XQuAD / MLQA JSON, JSON lines and hub datasets, windows over long
contexts, n-best span decoding, and SQuAD / MLQA exact match and F1.

Readers check every record up front: a missing key, a value of the wrong type, or an answer whose ``answer_start``
is negative or past the context (Python's negative slicing would let ``-9`` pass a text check and the question
train as unanswerable) is an error naming the file, the question id (JSON lines: the line) and the keys it has.
JSON lines files (``.jsonl``, ``.jsonl.gz``) hold one question per line, ``{"id", "question", "context",
"answers"}`` with the answers as SQuAD's list of ``{"text", "answer_start"}`` or the hub's
``{"text": [...], "answer_start": [...]}`` (what ``datasets`` exports).

Examples become features with the tokenizer's offsets: ``[CLS] question [SEP] context window [SEP]``, windows of
``max_length`` tokens over the context that overlap by ``stride`` tokens; in training a window that does not hold
the whole answer points at [CLS] (position 0), as in the BERT / transformers recipe. Decoding takes, per example,
the ``n_best`` start and end logits of every window, keeps spans inside the context with end >= start and at most
``max_answer_length`` tokens, and returns the context text between the character offsets of the best one.

Scores: SQuAD v1.1's official normalisation (lower case, punctuation and English articles removed, whitespace
folded) for English; MLQA's per-language rules (Unicode punctuation, the language's articles, character-level
segmentation of Chinese) with ``language=``. Exact match and token F1 take the best gold answer per question.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import string
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdeberta.data.nli import open_text
from mdeberta.errors import MdebertaError
from mdeberta.jsonl import json_object

logger = logging.getLogger("mdeberta.data")

HUB_QA = {"rajpurkar/squad": None, "squad": None, "google/xquad": "xquad.{lang}", "xquad": "xquad.{lang}",
          "facebook/mlqa": "mlqa.{lang}.{lang}", "mlqa": "mlqa.{lang}.{lang}"}


class QADataError(MdebertaError, ValueError):
    """A question-answering file cannot be used; the message names the file, the question id and the problem."""


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[dict[str, Any]]  # {"text": str, "answer_start": int}
    language: str | None = None


# --------------------------------------------------------------------------- reading
def read_squad(path: str | Path, language: str | None = None, check_answers: bool = True) -> list[QAExample]:
    """SQuAD v1.1 layout (also XQuAD and MLQA): data -> paragraphs -> qas. An answer whose text is not the context
    at ``answer_start`` is an error naming the question id (``check_answers``); an answer outside the context, a
    missing key or a wrong type always is."""
    path = Path(path)
    try:
        with open_text(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        hint = " (a JSON lines file must be named .jsonl)" if e.msg == "Extra data" else ""
        raise QADataError(f"{path}: cannot read SQuAD JSON ({e}){hint}") from e
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise QADataError(f"{path}: cannot read SQuAD JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise QADataError(f"{path}: expected SQuAD JSON ({{'data': [{{'paragraphs': [...]}}]}})")
    examples = []
    for i, article in enumerate(data["data"]):
        at_article = f"{path}: article {i}"
        if isinstance(article, dict) and isinstance(article.get("title"), str):
            at_article += f" ({article['title']!r})"
        for j, paragraph in enumerate(_list(_object(article, at_article), "paragraphs", at_article)):
            at_paragraph = f"{at_article} paragraph {j}"
            paragraph = _object(paragraph, at_paragraph)
            context = _string(paragraph, "context", at_paragraph)
            for k, qa in enumerate(_list(paragraph, "qas", at_paragraph)):
                qa = _object(qa, f"{at_paragraph} question {k}")
                where = f"{path}: question {qa['id']!r}" if "id" in qa else f"{at_paragraph} question {k}"
                examples.append(_example(qa, context, where, str(qa.get("id", len(examples))), language,
                                         check_answers))
    if not examples:
        raise QADataError(f"{path}: no questions")
    return examples


def read_qa_jsonl(path: str | Path, language: str | None = None, check_answers: bool = True) -> list[QAExample]:
    """One question per line: ``{"id", "question", "context", "answers"}`` (answers as in SQuAD or the hub);
    the same checks as :func:`read_squad`, errors naming the line and the question id."""
    path = Path(path)
    examples = []
    try:
        with open_text(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                record = json_object(line, where, QADataError)
                if "id" in record:
                    where += f" (question {record['id']!r})"
                context = _string(record, "context", where)
                lang = _string(record, "language", where) if "language" in record else language
                examples.append(_example(record, context, where, str(record.get("id", len(examples))), lang,
                                         check_answers))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise QADataError(f"{path}: cannot read ({e})") from e
    if not examples:
        raise QADataError(f"{path}: no questions")
    return examples


def _example(qa: dict[str, Any], context: str, where: str, qid: str, language: str | None,
             check_answers: bool) -> QAExample:
    question = _string(qa, "question", where)
    answers = _answers(_field(qa, "answers", where), context, where, check_answers)
    return QAExample(qid, question, context, answers, language)


def _answers(raw: Any, context: str, where: str, check_answers: bool) -> list[dict[str, Any]]:
    """SQuAD's list of {"text", "answer_start"} (or the hub's dict of two lists), checked against the context."""
    if isinstance(raw, dict) and isinstance(raw.get("text"), list) and isinstance(raw.get("answer_start"), list):
        if len(raw["text"]) != len(raw["answer_start"]):
            raise QADataError(f"{where}: {len(raw['text'])} answer texts but {len(raw['answer_start'])} "
                              "answer_start values")
        raw = [{"text": t, "answer_start": s} for t, s in zip(raw["text"], raw["answer_start"])]
    if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
        raise QADataError(f"{where}: 'answers' must be a list of {{'text', 'answer_start'}} objects (or "
                          f"{{'text': [...], 'answer_start': [...]}}), got {type(raw).__name__} {_short(raw)}")
    answers = []
    for k, a in enumerate(raw):
        text = _string(a, "text", f"{where} answer {k}")
        start = _field(a, "answer_start", f"{where} answer {k}")
        if isinstance(start, float) and start.is_integer():
            start = int(start)
        if isinstance(start, bool) or not isinstance(start, int):
            raise QADataError(f"{where} answer {k}: 'answer_start' must be an integer, got {type(start).__name__} "
                              f"{_short(start)}")
        if not text:
            raise QADataError(f"{where}: answer {k} has an empty text (a question without an answer has "
                              "'answers': [])")
        if not 0 <= start < len(context):
            raise QADataError(f"{where}: answer_start {start} is outside the context (0 to {len(context) - 1}) for "
                              f"answer {text!r}")
        if start + len(text) > len(context):
            raise QADataError(f"{where}: answer {text!r} at answer_start {start} ends at {start + len(text)}, past "
                              f"the end of the context ({len(context)} characters)")
        if check_answers:
            got = context[start:start + len(text)]
            if got != text:
                raise QADataError(f"{where}: answer {text!r} is not the context at answer_start {start} "
                                  f"(found {got!r})")
        answers.append({"text": text, "answer_start": start})
    return answers


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise QADataError(f"{where}: expected a JSON object, got {type(value).__name__} {_short(value)}")
    return value


def _field(record: dict[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise QADataError(f"{where}: no key {key!r} (it has keys {sorted(record)})")
    return record[key]


def _string(record: dict[str, Any], key: str, where: str) -> str:
    value = _field(record, key, where)
    if not isinstance(value, str):
        raise QADataError(f"{where}: {key!r} must be a string, got {type(value).__name__} {_short(value)}")
    return value


def _list(record: dict[str, Any], key: str, where: str) -> list[Any]:
    value = _field(record, key, where)
    if not isinstance(value, list):
        raise QADataError(f"{where}: {key!r} must be a list, got {type(value).__name__} {_short(value)}")
    return value


def read_hub(name: str, language: str | None, split: str) -> list[QAExample]:
    try:
        import datasets
    except ImportError as e:
        raise QADataError(f"{name}: hub datasets need the datasets package (pip install 'mdeberta[datasets]')") from e
    config = HUB_QA.get(name)
    config = config.format(lang=language) if config and language else None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:
        raise QADataError(f"{name} ({config}, {split}): cannot load ({type(e).__name__}: {e})") from e
    return [QAExample(str(r["id"]), r["question"], r["context"],
                      [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"],
                                                                      r["answers"]["answer_start"])], language)
            for r in ds]


def load_qa(source: str | Path, split: str = "train", language: str | None = None) -> list[QAExample]:
    """A SQuAD-layout JSON file, a JSON lines file (``.jsonl``), or ``hub-name[:lang]`` (``rajpurkar/squad``,
    ``google/xquad:de``)."""
    text = str(source)
    if not Path(text).exists() and text.split(":", 1)[0] in HUB_QA:
        name, _, lang = text.partition(":")
        return read_hub(name, lang or language, split)
    if not Path(text).is_file():
        raise QADataError(f"question-answering data not found: {source}")
    if Path(text).name.removesuffix(".gz").endswith(".jsonl"):
        return read_qa_jsonl(text, language)
    return read_squad(text, language)


# --------------------------------------------------------------------------- features
@dataclass
class QAFeature:
    input_ids: list[int]
    example: int  # index of its example
    offsets: list[tuple[int, int] | None]  # character span in the context, None outside the context
    start_position: int = 0
    end_position: int = 0


def encode_qa(tokenizer: Any, examples: Sequence[QAExample], max_length: int = 384, stride: int = 128,
              train: bool = False) -> list[QAFeature]:
    """Windows over the contexts; in training each gets the token positions of the answer (0 when it is not
    entirely in the window)."""
    if not examples:
        return []
    enc = tokenizer([e.question for e in examples], [e.context for e in examples], truncation="only_second",
                    max_length=max_length, stride=stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True)
    features = []
    for row, example_index in enumerate(enc["overflow_to_sample_mapping"]):
        seqs = enc.sequence_ids(row)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][row], seqs)]
        feature = QAFeature(enc["input_ids"][row], example_index, offsets)
        example = examples[example_index]
        if train and example.answers:
            answer = example.answers[0]
            first, last = answer["answer_start"], answer["answer_start"] + len(answer["text"])
            inside = [k for k, o in enumerate(offsets) if o is not None]
            if inside and offsets[inside[0]][0] <= first and offsets[inside[-1]][1] >= last:
                feature.start_position = next(k for k in inside if offsets[k][1] > first)
                feature.end_position = max(k for k in inside if offsets[k][0] < last)
        features.append(feature)
    return features


def decode_answers(examples: Sequence[QAExample], features: Sequence[QAFeature], start_logits: Sequence,
                   end_logits: Sequence, n_best: int = 20, max_answer_length: int = 30) -> list[dict[str, Any]]:
    """Per example the best span over all its windows: {"text", "start", "end", "score"} (empty text if none)."""
    by_example: dict[int, list[int]] = collections.defaultdict(list)
    for k, f in enumerate(features):
        by_example[f.example].append(k)
    answers = []
    for e, example in enumerate(examples):
        best = {"text": "", "start": 0, "end": 0, "score": float("-inf")}
        for k in by_example.get(e, []):
            offsets, starts, ends = features[k].offsets, list(start_logits[k]), list(end_logits[k])
            top_starts = sorted(range(len(offsets)), key=lambda i: -starts[i])[:n_best]
            top_ends = sorted(range(len(offsets)), key=lambda i: -ends[i])[:n_best]
            for i in top_starts:
                for j in top_ends:
                    if offsets[i] is None or offsets[j] is None or j < i or j - i + 1 > max_answer_length:
                        continue
                    score = starts[i] + ends[j]
                    if score > best["score"]:
                        begin, end = offsets[i][0], offsets[j][1]
                        best = {"text": example.context[begin:end], "start": begin, "end": end, "score": score}
        answers.append(best)
    return answers


# --------------------------------------------------------------------------- scoring
_PUNCT = None


def _unicode_punctuation() -> set[str]:
    global _PUNCT
    if _PUNCT is None:
        _PUNCT = {chr(i) for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i)).startswith("P")}
        _PUNCT |= set(string.punctuation)
    return _PUNCT


MLQA_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"\sال^|ال",
}
MIXED_SEGMENTATION = ("zh",)


def _mixed_segmentation(text: str, punct: set[str]) -> list[str]:
    out, run = [], ""
    for char in text:
        if re.search(r"[\u4e00-\u9fa5]", char) or char in punct:
            out += run.split()
            run = ""
            out.append(char)
        else:
            run += char
    return out + run.split()


def normalize_answer(text: str, language: str | None = None) -> str:
    """SQuAD v1.1's normalisation (``language`` None), or MLQA's for ``language`` (en es hi vi de ar zh)."""
    if language is None:
        text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())
    punct = _unicode_punctuation()
    text = "".join(ch for ch in text.lower() if ch not in punct)
    if language in MLQA_ARTICLES:
        text = re.sub(MLQA_ARTICLES[language], " ", text)
    tokens = _mixed_segmentation(text, punct) if language in MIXED_SEGMENTATION else text.split()
    return " ".join(t for t in tokens if t.strip())


def f1_score(prediction: str, gold: str, language: str | None = None) -> float:
    pred_tokens = normalize_answer(prediction, language).split()
    gold_tokens = normalize_answer(gold, language).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str, language: str | None = None) -> float:
    return float(normalize_answer(prediction, language) == normalize_answer(gold, language))


def qa_scores(examples: Sequence[QAExample], predictions: Sequence[str], language: str | None = None
              ) -> dict[str, float]:
    """Exact match and F1 in percent, the best gold answer per question (questions without answers skipped)."""
    em = f1 = n = 0.0
    for example, prediction in zip(examples, predictions):
        golds = [a["text"] for a in example.answers]
        if not golds:
            continue
        n += 1
        em += max(exact_match(prediction, g, language) for g in golds)
        f1 += max(f1_score(prediction, g, language) for g in golds)
    return {"exact_match": 100 * em / max(n, 1), "f1": 100 * f1 / max(n, 1), "questions": int(n)}


__all__ = ["QADataError", "QAExample", "QAFeature", "decode_answers", "encode_qa", "exact_match", "f1_score",
           "load_qa", "normalize_answer", "qa_scores", "read_qa_jsonl", "read_squad"]
