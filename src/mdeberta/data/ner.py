"""Named-entity recognition data: readers (CoNLL / IOB2 columns, JSON lines, hub datasets), sub-token labels, and
entity-level precision / recall / F1 with seqeval's semantics.

Readers give :class:`TaggedSentence` (tokens, tags, language, where it came from):

* CoNLL: one token per line, the tag in the last column (space or tab separated), a blank line between
  sentences, ``-DOCSTART-`` lines skipped (``.conll``, ``.txt``, ``.iob2``, ``.tsv``; ``.gz`` too). PAN-X files
  prefix tokens with their language (``en:Paris``); ``strip_language_prefix`` removes it. Every token line of a
  file has the same number of columns: a line missing its tag (``tok NN`` among ``tok NN B-PER`` lines) would
  make its POS tag an entity class.
* JSON lines: ``{"tokens": [...], "ner_tags" | "tags" | "labels": [...]}``, tokens as strings, tags as names (or
  ids with ``label_names``), as many tags as tokens.

In a file whose tags use the IOB2 / IOBES prefixes (``B-PER``, ``I-LOC``, ``E-X``, ``S-X``, ``O``), every tag must
(``NN`` among them is a column mix-up); files of plain tags (IO types, POS tags) are read as they are.
* hub datasets: ``google/xtreme`` with config ``PAN-X.<lang>`` and ``unimelb-nlp/wikiann`` with config
  ``<lang>`` (``datasets``), tag names from the dataset's ClassLabel.

Labels go on the first sub-token of each word (-100 on the others and on special tokens), as in transformers'
token-classification examples. Scoring follows seqeval's default (conlleval) chunking, which reads IOB1, IOB2,
IOE and IOBES tags: an entity is a maximal run that starts at B-/S- (or at an I-/E- whose type or predecessor
differs) and ends at E-/S- or before a tag that does not continue it; precision, recall and F1 are micro
averages over exact (type, start, end) matches.
"""

from __future__ import annotations

import collections
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeberta.data.nli import open_text
from mdeberta.errors import MdebertaError, UsageError

logger = logging.getLogger("mdeberta.data")

TAG_KEYS = ("ner_tags", "tags", "labels", "ner")
SCHEMES = ("IOB2", "IOBES")
HUB_NER = {"google/xtreme": "PAN-X.{lang}", "xtreme": "PAN-X.{lang}", "unimelb-nlp/wikiann": "{lang}",
           "wikiann": "{lang}"}
PREFIXED_TAG = re.compile(r"[BIES]-\S+")


class NERDataError(MdebertaError, ValueError):
    """A token-classification file cannot be used; the message names the file, the line and the problem."""


@dataclass
class TaggedSentence:
    tokens: list[str]
    tags: list[str]
    language: str | None = None
    where: str = ""  # file:line of the sentence's first token (for errors and predictions)
    index: int = 0


# --------------------------------------------------------------------------- reading
def read_conll(path: str | Path, language: str | None = None, strip_language_prefix: bool = True
               ) -> list[TaggedSentence]:
    """Sentences of a CoNLL file. The tag is the last column and every token line must have as many columns as
    the file's others; tags are checked against the file's scheme (:func:`check_tag_scheme`)."""
    path = Path(path)
    sentences: list[TaggedSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    tag_lines: list[int] = []  # the line of each tag, for errors
    widths: collections.Counter[int] = collections.Counter()
    first_of_width: dict[int, tuple[int, int, str]] = {}  # columns -> (its first line, columns, text)
    start = 0

    def flush() -> None:
        if tokens:
            sentences.append(TaggedSentence(list(tokens), list(tags), language, f"{path}:{start}",
                                            len(sentences)))
            tokens.clear()
            tags.clear()

    with open_text(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                flush()
                continue
            if line.startswith("-DOCSTART-"):
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) < 2:
                raise NERDataError(f"{path}:{n}: expected a token and a tag, got {line!r}")
            widths[len(parts)] += 1
            first_of_width.setdefault(len(parts), (n, len(parts), line))
            token, tag = parts[0], parts[-1]
            if strip_language_prefix and ":" in token[:4] and token.split(":", 1)[0].isalpha():
                prefix, rest = token.split(":", 1)
                if len(prefix) in (2, 3) and rest:  # PAN-X: "en:Paris"
                    token = rest
            if not tokens:
                start = n
            tokens.append(token)
            tags.append(tag)
            tag_lines.append(n)
    flush()
    if len(widths) > 1:
        usual = max(widths, key=lambda k: (widths[k], k))  # ties: the wider, a missing column is the usual slip
        n, odd, line = min(first_of_width[k] for k in widths if k != usual)
        raise NERDataError(f"{path}:{n}: {odd} columns, but the file's other token lines have {usual} "
                           f"({widths[usual]} of {sum(widths.values())} lines; the tag is the last column, so a "
                           f"missing column would make another one the tag): {line!r}")
    all_tags = (tag for s in sentences for tag in s.tags)
    check_tag_scheme(((f"{path}:{n}", tag, None) for n, tag in zip(tag_lines, all_tags)), path)
    return sentences


def check_tag_scheme(tags: Iterable[tuple[str, str, str | None]], source: str | Path) -> None:
    """Tags given as (where, tag, description or None): when any uses an IOB2 / IOBES prefix (``B-PER``), each must
    be such a tag or ``O``. A ``NN`` among IOB tags means a column mix-up; plain-tag files (IO, POS) pass."""
    prefixed: tuple[str, str] | None = None
    plain: tuple[str, str, str | None] | None = None
    for where, tag, what in tags:
        if tag == "O" or PREFIXED_TAG.fullmatch(tag):
            if prefixed is None and tag != "O":
                prefixed = (where, tag)
        elif plain is None:
            plain = (where, tag, what)
        if prefixed is not None and plain is not None:
            where, tag, what = plain
            at = prefixed[0].removeprefix(f"{source}:")
            raise NERDataError(f"{where}: tag {tag!r}{' of ' + what if what else ''} is not an IOB2 / IOBES tag "
                               f"(B-, I-, E- or S- and a type, or O), but the file's other tags are (e.g. "
                               f"{prefixed[1]!r} at line {at}); is a column missing or shifted?")


def read_jsonl(path: str | Path, language: str | None = None, label_names: Sequence[str] | None = None
               ) -> list[TaggedSentence]:
    """Sentences of a JSON lines file: ``tokens`` a list of strings, the tags a list as long of names (or ids
    with ``label_names``); anything else is an error naming the line rather than a stringified token."""
    path = Path(path)
    sentences = []
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise NERDataError(f"{where}: not a JSON record ({e})") from e
            if not isinstance(record, dict):
                raise NERDataError(f"{where}: expected a JSON object with 'tokens' and tags, got "
                                   f"{type(record).__name__}")
            tokens = record.get("tokens")
            key = next((k for k in TAG_KEYS if k in record), None)
            if tokens is None or key is None:
                raise NERDataError(f"{where}: expected 'tokens' and one of {list(TAG_KEYS)}, the record has "
                                   f"{sorted(record)}")
            if not isinstance(tokens, list):
                raise NERDataError(f"{where}: 'tokens' must be a list of strings, got {type(tokens).__name__} "
                                   f"{_short(tokens)}")
            bad = next((k for k, t in enumerate(tokens) if not isinstance(t, str)), None)
            if bad is not None:
                raise NERDataError(f"{where}: 'tokens' must be a list of strings; item {bad} is "
                                   f"{type(tokens[bad]).__name__} {_short(tokens[bad])}")
            if not isinstance(record[key], list):
                raise NERDataError(f"{where}: {key!r} must be a list, got {type(record[key]).__name__} "
                                   f"{_short(record[key])}")
            tags = [_tag_name(t, label_names, where) for t in record[key]]
            if len(tags) != len(tokens):
                raise NERDataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
            lang = record.get("language", language)
            if lang is not None and not isinstance(lang, str):
                raise NERDataError(f"{where}: 'language' must be a string, got {type(lang).__name__} {_short(lang)}")
            sentences.append(TaggedSentence(tokens, tags, lang, where, len(sentences)))
    check_tag_scheme(((s.where, tag, f"token {k} ({s.tokens[k]!r})") for s in sentences
                      for k, tag in enumerate(s.tags)), path)
    return sentences


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _tag_name(tag: Any, names: Sequence[str] | None, where: str) -> str:
    if isinstance(tag, str):
        return tag
    if isinstance(tag, int) and not isinstance(tag, bool):
        if names is not None and 0 <= tag < len(names):
            return names[tag]
        raise NERDataError(f"{where}: tag {tag!r} is an id but no label names were given (or it is out of range)")
    raise NERDataError(f"{where}: tag {_short(tag)} is {type(tag).__name__}; tags are names (strings) or ids "
                       "(integers, with label names)")


def read_hub(name: str, language: str, split: str) -> list[TaggedSentence]:
    try:
        import datasets
    except ImportError as e:
        raise NERDataError(f"{name}: hub datasets need the datasets package (pip install 'mdeberta[datasets]')") from e
    config = HUB_NER.get(name, "{lang}").format(lang=language)
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:
        raise NERDataError(f"{name} ({config}, {split}): cannot load ({type(e).__name__}: {e})") from e
    feature = ds.features["ner_tags"].feature
    names = list(feature.names)
    return [TaggedSentence(list(r["tokens"]), [names[t] for t in r["ner_tags"]], language,
                           f"{name}/{config}/{split}:{i}", i) for i, r in enumerate(ds)]


def load_tagged(source: str | Path, split: str = "train", language: str | None = None,
                label_names: Sequence[str] | None = None) -> list[TaggedSentence]:
    """Sentences from a CoNLL or JSON lines file, or ``hub-name:lang`` (e.g. ``google/xtreme:de``)."""
    text = str(source)
    path = Path(text)
    if not path.exists() and ":" in text and text.split(":", 1)[0] in HUB_NER:
        name, lang = text.split(":", 1)
        return read_hub(name, lang, split)
    if not path.is_file():
        raise NERDataError(f"token-classification data not found: {source}")
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    sentences = read_jsonl(path, language, label_names) if name.endswith((".jsonl", ".json")) else read_conll(
        path, language)
    if not sentences:
        raise NERDataError(f"{path}: no sentences")
    return sentences


def label_list(sentences: Iterable[TaggedSentence]) -> list[str]:
    """The tags seen, "O" first, then by entity type and B/I/E/S order: a stable label set for a new head."""
    tags = {t for s in sentences for t in s.tags}
    order = {"B": 0, "I": 1, "E": 2, "S": 3}

    def key(tag: str) -> tuple:
        if tag == "O":
            return (0, "", 0)
        prefix, _, kind = tag.partition("-")
        return (1, kind, order.get(prefix, 9))

    return sorted(tags, key=key)


def check_labels(sentences: Iterable[TaggedSentence], label2id: dict[str, int]) -> None:
    for s in sentences:
        for k, tag in enumerate(s.tags):
            if tag not in label2id:
                raise NERDataError(f"{s.where}: tag {tag!r} of token {k} ({s.tokens[k]!r}) is not in the label set "
                                   f"{sorted(label2id)}")


# --------------------------------------------------------------------------- encoding
@dataclass
class NERFeature:
    input_ids: list[int]
    labels: list[int]
    word_ids: list[int | None]
    offsets: list[tuple[int, int]] = field(default_factory=list)
    truncated: bool = False


def encode_tagged(tokenizer: Any, sentences: Sequence[TaggedSentence], label2id: dict[str, int],
                  max_length: int) -> list[NERFeature]:
    """Token ids with the word label on each word's first sub-token; longer sentences are truncated (counted)."""
    features = []
    truncated = 0
    for s in sentences:
        enc = tokenizer(s.tokens, is_split_into_words=True, truncation=True, max_length=max_length,
                        return_offsets_mapping=True)
        word_ids = enc.word_ids()
        labels, previous = [], None
        for w in word_ids:
            labels.append(-100 if w is None or w == previous else label2id[s.tags[w]])
            previous = w
        cut = max((w for w in word_ids if w is not None), default=-1) < len(s.tokens) - 1
        truncated += cut
        features.append(NERFeature(enc["input_ids"], labels, word_ids, enc["offset_mapping"], cut))
    if truncated:
        logger.warning("%d of %d sentences are longer than %d tokens and were truncated (their last words get no "
                       "prediction)", truncated, len(features), max_length)
    return features


def word_predictions(feature: NERFeature, token_predictions: Sequence[int], id2label: dict[int, str],
                     n_words: int) -> list[str]:
    """Per word the label predicted at its first sub-token; words cut by truncation get "O"."""
    tags = ["O"] * n_words
    previous = None
    for w, p in zip(feature.word_ids, token_predictions):
        if w is not None and w != previous:
            tags[w] = id2label[int(p)]
        previous = w
    return tags


# --------------------------------------------------------------------------- scoring (seqeval semantics)
def _split(tag: str) -> tuple[str, str]:
    if tag in ("O", "", None):
        return "O", ""
    prefix, _, kind = tag.partition("-")
    if not kind:  # "PER" without a prefix: inside of that type
        return "I", prefix
    return prefix, kind


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag != "O" and prev_type != type_))


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("I", "E"))
            or (tag != "O" and prev_type != type_))


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first token, last token) of every entity in a tag sequence (conlleval / seqeval chunking)."""
    entities = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, raw in enumerate([*tags, "O"]):
        tag, type_ = _split(raw)
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            entities.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return entities


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Micro precision, recall and F1 (0-1) over exact entity matches, plus per type."""
    if len(gold) != len(predicted):
        raise UsageError(f"{len(gold)} gold sequences but {len(predicted)} predicted")
    true, pred = set(), set()
    for k, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise UsageError(f"sequence {k}: {len(g)} gold tags but {len(p)} predicted")
        true |= {(k, *e) for e in get_entities(g)}
        pred |= {(k, *e) for e in get_entities(p)}

    def prf(t: set, q: set) -> dict[str, float]:
        hit = len(t & q)
        precision = hit / len(q) if q else 0.0
        recall = hit / len(t) if t else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": len(t)}

    types = sorted({e[1] for e in true | pred})
    return {**prf(true, pred), "per_type": {t: prf({e for e in true if e[1] == t}, {e for e in pred if e[1] == t})
                                            for t in types}}


__all__ = ["NERDataError", "NERFeature", "TaggedSentence", "check_labels", "check_tag_scheme", "encode_tagged",
           "entity_scores", "get_entities", "label_list", "load_tagged", "read_conll", "read_jsonl",
           "word_predictions"]
