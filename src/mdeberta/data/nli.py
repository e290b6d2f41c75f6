"""NLI data: one label map, readers for every layout XNLI / MultiNLI ship in, and batching for fine-tuning.

Layouts read (plain or gzip, chosen by file name):

* TSV with a header naming premise / hypothesis / label columns. Accepted names: ``premise`` or ``sentence1``
  (or ``text_a``/``text``), ``hypothesis`` or ``sentence2`` (or ``text_b``), ``gold_label`` or ``label``, and
  optionally ``language`` (or ``lang``). This covers the per-language files ``xnli.{split}.{lang}.tsv.gz``, the
  original XNLI-1.0 ``xnli.dev.tsv`` / ``xnli.test.tsv`` (all languages in one file, a ``language`` column) and
  MultiNLI's ``.txt`` / GLUE ``.tsv`` files.
* JSONL, one object per line with the same keys (MultiNLI's ``multinli_1.0_train.jsonl``); the premise and the
  hypothesis must be strings, the label a string or an integer.
* Hugging Face hub datasets (``facebook/xnli``, ``nyu-mll/multi_nli``), when ``datasets`` is installed and online.

A file is either pairs or single texts, decided once for the whole file: it holds pairs iff it has a hypothesis
column (JSONL: iff its first record has a hypothesis key), so that a missing or empty hypothesis on one row is an
error instead of a single text among pairs (:func:`nli_input_form`, ``ReadReport.form``). A column that is not
known but close to the name of a missing one (``hypotesis``, ``lable``) is an error with the suggestion: read as
is, it would silently train a premise-only or an unlabelled model.

Labels are always entailment=0, neutral=1, contradiction=2 (the order of XNLI/MultiNLI on the hub), so a model
fine-tuned here, the hub datasets and every prediction file agree. Rows that cannot be read (wrong number of
fields, empty premise, bad JSON) are skipped and reported with their line numbers; a label outside the map is an
error, because silently dropping a whole class would corrupt every number computed afterwards.
"""

from __future__ import annotations

import difflib
import gzip
import io
import json
import logging
import math
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mdeberta.errors import MdebertaError, UsageError

logger = logging.getLogger("mdeberta.data.nli")

LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
LABEL2ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
ID2LABEL: dict[int, str] = dict(enumerate(LABELS))
# The order of the published XNLI tables (English first, then by resource size as in the XLM-R paper).
XNLI_LANGUAGES: tuple[str, ...] = (
    "en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur",
)
# Gold labels meaning "annotators did not agree": MultiNLI writes "-", the hub datasets -1. Such rows are skipped.
NO_GOLD_LABELS = {"-", "-1", ""}

PREMISE_KEYS = ("premise", "sentence1", "text_a", "text")
HYPOTHESIS_KEYS = ("hypothesis", "sentence2", "text_b")
LABEL_KEYS = ("gold_label", "label")
LANGUAGE_KEYS = ("language", "lang")
ROLE_KEYS: dict[str, tuple[str, ...]] = {
    "premise": PREMISE_KEYS, "hypothesis": HYPOTHESIS_KEYS, "label": LABEL_KEYS, "language": LANGUAGE_KEYS,
}
# Columns of XNLI-1.0, MultiNLI, SNLI, GLUE and the hub exports that are not read: never suspected of being a typo
# (label1..label5 are close to "label", the parse columns to the sentences).
KNOWN_EXTRA_COLUMNS = frozenset(
    {"index", "idx", "id", "promptid", "pairid", "captionid", "genre", "annotator_labels", "match"}
    | {f"label{i}" for i in range(1, 6)}
    | {f"{s}_{kind}" for s in ("sentence1", "sentence2", "premise", "hypothesis")
       for kind in ("binary_parse", "parse", "tokenized")}
)
COLUMNS_NEEDED = ("a pair file needs the columns 'premise' (or 'sentence1', 'text_a', 'text') and 'hypothesis' "
                  "(or 'sentence2', 'text_b'), a single-text file only the first; labels are read from 'gold_label' "
                  "or 'label', languages from 'language' or 'lang'")
HUB_DATASETS = {"facebook/xnli": "xnli", "xnli": "xnli", "nyu-mll/multi_nli": "mnli", "multi_nli": "mnli"}


class NLIDataError(MdebertaError, ValueError):
    """NLI data cannot be used; the message names the file, the line and what was expected."""


@dataclass
class NLIExample:
    """One pair (or one text when ``hypothesis`` is None). ``index`` is its position in its source, so that a
    prediction file can always be traced back to the input row."""

    premise: str
    hypothesis: str | None
    label: int | None
    language: str | None = None
    index: int = 0


@dataclass
class ReadReport:
    """What a reader kept and skipped; ``malformed`` holds (line number, reason) pairs."""

    source: str
    read: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    no_gold_label: list[int] = field(default_factory=list)
    form: str | None = None  # "pair" (a hypothesis column) or "single", for the whole file
    labelled: bool | None = None  # a label column (JSONL: the first record has a label key)
    form_line: int = 1  # the line that decided form and labelled (the header, or the first JSONL record)

    def log(self) -> None:
        if self.malformed:
            shown = ", ".join(f"line {n}: {why}" for n, why in self.malformed[:10])
            more = f" (and {len(self.malformed) - 10} more)" if len(self.malformed) > 10 else ""
            logger.warning("%s: skipped %d malformed row(s): %s%s", self.source, len(self.malformed), shown, more)
        if self.no_gold_label:
            lines = ", ".join(map(str, self.no_gold_label[:10]))
            logger.info("%s: skipped %d row(s) without a gold label (lines %s%s)", self.source,
                        len(self.no_gold_label), lines, ", ..." if len(self.no_gold_label) > 10 else "")
        logger.info("%s: read %d examples", self.source, self.read)


def label_to_id(value: Any, where: str = "") -> int | None:
    """Map a label (name in any case, or 0/1/2 as int or string) to its id; None for "no gold label".

    Anything else raises, naming ``where`` (file:line) and the allowed values.
    """
    if isinstance(value, bool):  # bool is an int subclass; True is not a label
        value = str(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if value == -1:
            return None
        if value in ID2LABEL:
            return value
    elif isinstance(value, str):
        text = value.strip()
        if text in NO_GOLD_LABELS:
            return None
        if text.lower() in LABEL2ID:
            return LABEL2ID[text.lower()]
        if text in ("0", "1", "2"):
            return int(text)
    raise NLIDataError(
        f"{where + ': ' if where else ''}unknown NLI label {value!r}; allowed: "
        f"{', '.join(LABELS)} (or their ids 0, 1, 2; '-' / -1 for rows without a gold label)"
    )


# --------------------------------------------------------------------------- files
def open_text(path: Path) -> io.TextIOBase:
    """A UTF-8 text file, gzip-compressed when its name ends in .gz (the NLI, NER and predict readers)."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _pick(keys: Iterable[str], names: Sequence[str]) -> str | None:
    return next((k for k in names if k in keys), None)


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith((".jsonl", ".json"))


def scan_nli_file(
    path: str | os.PathLike,
    languages: Sequence[str] | None = None,
    max_examples: int | None = None,
) -> tuple[list[NLIExample], ReadReport]:
    """Read an NLI TSV or JSONL file (plain or .gz); keep rows of ``languages`` when the file has a language column.

    Returns the examples and a report of skipped rows (with the file's form, pairs or single texts). Raises
    NLIDataError for a missing or empty file, a header without a premise column, a column that looks like a
    misspelled known one, an empty hypothesis in a pair file, a JSONL value of the wrong type or a record whose
    form differs from the file's, or an unknown label.
    """
    path = Path(path)
    if not path.is_file():
        raise NLIDataError(f"NLI file not found: {path}")
    report = ReadReport(str(path))
    wanted = set(languages) if languages else None
    examples: list[NLIExample] = []
    try:
        with open_text(path) as f:
            rows = _jsonl_rows(f, path, report) if _is_jsonl(path) else _tsv_rows(f, path, report)
            for line_no, row in rows:
                if isinstance(row, str):  # a reason: the row is malformed
                    report.malformed.append((line_no, row))
                    continue
                language = row.get("language") or None
                if wanted is not None and language is not None and language not in wanted:
                    continue
                premise, hypothesis = row["premise"], row.get("hypothesis")
                if not premise.strip():
                    report.malformed.append((line_no, "empty premise"))
                    continue
                if "label" not in row:
                    label = None  # unlabelled input (prediction)
                else:
                    label = label_to_id(row["label"], f"{path}:{line_no}")
                    if label is None:
                        report.no_gold_label.append(line_no)
                        continue
                if report.form == "pair" and not hypothesis.strip():
                    # Skipping it would be silent data loss, keeping it a single text among pairs. (Rows without
                    # a gold label are skipped first, whatever their text: they are never used.)
                    raise NLIDataError(
                        f"{path}:{line_no}: empty hypothesis in a pair file (line {report.form_line} names a "
                        "hypothesis, so every row is a pair); fill it in or remove the row"
                    )
                examples.append(NLIExample(premise, hypothesis, label, language, index=len(examples)))
                if max_examples is not None and len(examples) >= max_examples:
                    break
    except (EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
        raise NLIDataError(f"{path}: cannot read the file ({type(e).__name__}: {e})") from e
    report.read = len(examples)
    report.log()
    if not examples:
        detail = f" for languages {sorted(wanted)}" if wanted else ""
        raise NLIDataError(f"{path}: no usable NLI examples{detail} ({len(report.malformed)} malformed, "
                           f"{len(report.no_gold_label)} without gold label)")
    return examples, report


def read_nli_file(
    path: str | os.PathLike, languages: Sequence[str] | None = None, max_examples: int | None = None
) -> list[NLIExample]:
    """The examples of :func:`scan_nli_file` (the report goes to the log)."""
    return scan_nli_file(path, languages, max_examples)[0]


def nli_input_form(source: str | os.PathLike) -> str:
    """"pair" or "single": what a file holds, from its header (JSONL: its first record) alone; hub datasets hold
    pairs. For checking that dev / test files have the form a model was trained on, before reading them."""
    if is_hub_name(source):
        return "pair"
    path = Path(source)
    if not path.is_file():
        raise NLIDataError(f"NLI file not found: {path}")
    report = ReadReport(str(path))
    try:
        with open_text(path) as f:
            for _ in _jsonl_rows(f, path, report) if _is_jsonl(path) else _tsv_rows(f, path, report):
                if report.form is not None:
                    break
    except (EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
        raise NLIDataError(f"{path}: cannot read the file ({type(e).__name__}: {e})") from e
    if report.form is None:
        raise NLIDataError(f"{path}: no record with a premise key, so neither pairs nor single texts")
    return report.form


def input_form(examples: Sequence[NLIExample], where: str = "") -> str:
    """"pair" or "single" for a data set; a mix is an error: a model is trained (and evaluated) on one form."""
    if not examples:
        raise NLIDataError(f"{where + ': ' if where else ''}no examples, so neither pairs nor single texts")
    paired = examples[0].hypothesis is not None
    odd = next((k for k, ex in enumerate(examples) if (ex.hypothesis is not None) != paired), None)
    if odd is not None:
        raise NLIDataError(
            f"{where + ': ' if where else ''}mixing pairs and single texts in one data set is not supported "
            f"(example 0 is {'a pair' if paired else 'a single text'}, example {odd} is not)"
        )
    return "pair" if paired else "single"


def _value(value: Any) -> str:
    """A value for an error message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _columns(names: Sequence[str], where: str, kind: str) -> dict[str, str | None]:
    """The column (JSONL: key) of each role among ``names``. A name that is not known but close to one of a role
    the file lacks is an error with the suggestion: ``hypotesis`` would otherwise make a pair file single texts,
    ``lable`` an unlabelled one (KeyError 'labels' at the first training step)."""
    columns = {role: _pick(names, keys) for role, keys in ROLE_KEYS.items()}
    missing = [key for role, keys in ROLE_KEYS.items() if columns[role] is None for key in keys]
    known = {key for keys in ROLE_KEYS.values() for key in keys} | KNOWN_EXTRA_COLUMNS
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, missing, n=1, cutoff=0.7)
        if close:
            what = "the header has columns" if kind == "column" else "the record has keys"
            raise NLIDataError(f"{where}: {kind} {name!r} is not known; did you mean {close[0]!r}? ({what} "
                               f"{list(names)}; {COLUMNS_NEEDED})")
    return columns


def _tsv_rows(f: io.TextIOBase, path: Path, report: ReadReport) -> Iterator[tuple[int, dict | str]]:
    """(line number, row dict with premise/hypothesis/label/language keys) or (line number, reason). The header
    decides ``report.form`` and ``report.labelled`` for every row."""
    header_line = f.readline()
    if not header_line.strip():
        raise NLIDataError(f"{path}: empty file (expected a header line with premise/hypothesis/label columns)")
    header = [h.strip().lower() for h in header_line.rstrip("\r\n").split("\t")]
    columns = _columns(header, f"{path}:1", "column")
    if columns["premise"] is None:
        raise NLIDataError(f"{path}:1: the header {header} has no premise column; {COLUMNS_NEEDED}")
    report.form = "pair" if columns["hypothesis"] is not None else "single"
    report.labelled = columns["label"] is not None
    ignored = [h for h in header if h not in columns.values() and h not in KNOWN_EXTRA_COLUMNS]
    if ignored:
        logger.warning("%s: ignoring column(s) %s (%s)", path, ignored, COLUMNS_NEEDED)
    index = {key: header.index(name) for key, name in columns.items() if name is not None}
    for line_no, line in enumerate(f, start=2):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            yield line_no, f"{len(fields)} tab-separated fields, header has {len(header)}"
            continue
        yield line_no, {key: fields[i] for key, i in index.items()}


def _jsonl_rows(f: io.TextIOBase, path: Path, report: ReadReport) -> Iterator[tuple[int, dict | str]]:
    """Like :func:`_tsv_rows`; the first record with a premise key decides ``report.form`` and
    ``report.labelled``, and every later record must agree. Values are type-checked here: ``"premise": 123``
    is not an empty row and ``"text": 5`` not the text "5"."""
    seen_any = False
    checked: set[frozenset[str]] = set()  # key sets already checked for near-miss names
    for line_no, line in enumerate(f, start=1):
        if not line.strip():
            continue
        seen_any = True
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield line_no, f"invalid JSON ({e.msg})"
            continue
        if not isinstance(obj, dict):
            yield line_no, f"expected a JSON object, got {type(obj).__name__}"
            continue
        keys = {k.lower(): v for k, v in obj.items()}
        where = f"{path}:{line_no}"
        if frozenset(keys) not in checked:
            _columns(list(keys), where, "key")
            checked.add(frozenset(keys))
        premise_key = _pick(keys, PREMISE_KEYS)
        if premise_key is None:
            yield line_no, f"no premise key (one of {PREMISE_KEYS})"
            continue
        row: dict[str, Any] = {"premise": _string(keys, premise_key, where)}
        hypothesis_key, label_key = _pick(keys, HYPOTHESIS_KEYS), _pick(keys, LABEL_KEYS)
        if report.form is None:
            report.form = "pair" if hypothesis_key is not None else "single"
            report.labelled, report.form_line = label_key is not None, line_no
        if (hypothesis_key is not None) != (report.form == "pair"):
            if hypothesis_key is None:
                raise NLIDataError(f"{where}: no hypothesis key (one of {HYPOTHESIS_KEYS}), but line "
                                   f"{report.form_line} has one: a pair file cannot hold single texts (the record "
                                   f"has keys {sorted(obj)})")
            raise NLIDataError(f"{where}: key {hypothesis_key!r}, but line {report.form_line} has none: a "
                               f"single-text file cannot hold pairs (the record has keys {sorted(obj)})")
        if (label_key is not None) != report.labelled:
            if label_key is None:
                raise NLIDataError(f"{where}: no label key (one of {LABEL_KEYS}), but line {report.form_line} has "
                                   f"one (the record has keys {sorted(obj)})")
            raise NLIDataError(f"{where}: label key {label_key!r}, but line {report.form_line} has none: a file is "
                               f"either labelled or not")
        if hypothesis_key is not None:
            row["hypothesis"] = _string(keys, hypothesis_key, where)
        if label_key is not None:
            label = keys[label_key]
            if isinstance(label, bool) or not isinstance(label, (str, int, float)):
                raise NLIDataError(f"{where}: {label_key!r} must be a string or an integer, got "
                                   f"{type(label).__name__} {_value(label)}")
            row["label"] = label
        language_key = _pick(keys, LANGUAGE_KEYS)
        if language_key is not None and keys[language_key] is not None:
            row["language"] = _string(keys, language_key, where)
        yield line_no, row
    if not seen_any:
        raise NLIDataError(f"{path}: empty file (expected JSON lines with premise/hypothesis/label keys)")


def _string(keys: dict[str, Any], key: str, where: str) -> str:
    value = keys[key]
    if not isinstance(value, str):
        raise NLIDataError(f"{where}: {key!r} must be a string, got {type(value).__name__} {_value(value)}")
    return value


# --------------------------------------------------------------------------- languages and sources
def resolve_languages(spec: str | Sequence[str] | None) -> list[str]:
    """"all" (or None) -> the 15 XNLI languages in table order; else a comma list / sequence, checked."""
    if spec is None or spec == "all" or (not isinstance(spec, str) and list(spec) == ["all"]):
        return list(XNLI_LANGUAGES)
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [s.strip() for s in spec]
    items = [s for s in items if s]
    unknown = [s for s in items if s not in XNLI_LANGUAGES]
    if unknown or not items:
        raise NLIDataError(
            f"unknown XNLI language code(s) {unknown or items}; known: {', '.join(XNLI_LANGUAGES)} (or 'all')"
        )
    return list(dict.fromkeys(items))


def is_hub_name(source: str | os.PathLike) -> bool:
    return str(source) in HUB_DATASETS and not Path(source).exists()


def _find_language_file(folder: Path, split: str, language: str) -> Path | None:
    for name in (f"xnli.{split}.{language}.tsv.gz", f"xnli.{split}.{language}.tsv",
                 f"xnli.{split}.{language}.jsonl.gz", f"xnli.{split}.{language}.jsonl",
                 f"{split}.{language}.tsv.gz", f"{split}.{language}.tsv"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_xnli(
    source: str | os.PathLike,
    split: str = "test",
    languages: str | Sequence[str] | None = "all",
    max_examples_per_language: int | None = None,
) -> dict[str, list[NLIExample]]:
    """XNLI examples per language, in table order, from any supported source.

    ``source`` is a folder of per-language files (``xnli.{split}.{lang}.tsv[.gz]``), a folder or a file in the
    XNLI-1.0 layout (``xnli.{split}.tsv`` with a language column), or the hub name ``facebook/xnli``.
    """
    langs = resolve_languages(languages)
    if is_hub_name(source):
        return {lang: load_hub_nli("facebook/xnli", split, lang, max_examples_per_language) for lang in langs}
    path = Path(source)
    if path.is_dir():
        per_language = {lang: _find_language_file(path, split, lang) for lang in langs}
        if all(per_language.values()):
            return {lang: _reindexed(read_nli_file(p, max_examples=max_examples_per_language), lang)
                    for lang, p in per_language.items()}
        combined = next((path / n for n in (f"xnli.{split}.tsv", f"xnli.{split}.tsv.gz", f"xnli.{split}.jsonl")
                         if (path / n).is_file()), None)
        if combined is None:
            missing = [lang for lang, p in per_language.items() if p is None]
            raise NLIDataError(
                f"{path}: no XNLI {split} data for language(s) {missing}: expected xnli.{split}.{{lang}}.tsv[.gz] "
                f"per language or one xnli.{split}.tsv with a language column"
            )
        path = combined
    if not path.is_file():
        raise NLIDataError(f"XNLI source {source} is neither a folder, a file nor a known hub dataset "
                           f"({', '.join(sorted(HUB_DATASETS))})")
    examples = read_nli_file(path, languages=langs)
    by_language: dict[str, list[NLIExample]] = {lang: [] for lang in langs}
    for ex in examples:
        if ex.language is None:
            raise NLIDataError(f"{path} has no language column; pass a folder of per-language files instead")
        if max_examples_per_language is None or len(by_language[ex.language]) < max_examples_per_language:
            by_language[ex.language].append(ex)
    empty = [lang for lang, exs in by_language.items() if not exs]
    if empty:
        raise NLIDataError(f"{path}: no examples for language(s) {empty}")
    return {lang: _reindexed(exs, lang) for lang, exs in by_language.items()}


def _reindexed(examples: list[NLIExample], language: str) -> list[NLIExample]:
    for i, ex in enumerate(examples):
        ex.index, ex.language = i, language
    return examples


def load_hub_nli(
    name: str, split: str, language: str | None = None, max_examples: int | None = None
) -> list[NLIExample]:
    """Examples of a hub NLI dataset (``facebook/xnli`` per language, ``nyu-mll/multi_nli``).

    ``datasets`` is imported only here: the rest of the project works without it. Hub labels are already
    0/1/2 = entailment/neutral/contradiction; -1 (no gold label) rows are skipped.
    """
    try:
        import datasets
    except ImportError as e:
        raise NLIDataError(
            f"reading the hub dataset {name!r} needs the `datasets` package (pip install 'mdeberta[datasets]'); "
            "or pass local files (--train-file / --eval-dir)"
        ) from e
    kind = HUB_DATASETS.get(name)
    hub_split = {"dev": "validation", "validation": "validation", "test": "test", "train": "train"}.get(split, split)
    try:
        if kind == "xnli":
            ds = datasets.load_dataset("facebook/xnli", language or "en", split=hub_split)
        elif kind == "mnli":
            if hub_split == "validation":
                hub_split = "validation_matched"
            ds = datasets.load_dataset("nyu-mll/multi_nli", split=hub_split)
        else:
            raise NLIDataError(f"unknown hub NLI dataset {name!r}; known: {', '.join(sorted(HUB_DATASETS))}")
    except NLIDataError:
        raise
    except Exception as e:
        raise NLIDataError(
            f"cannot load hub dataset {name!r} (split {hub_split!r}{', ' + language if language else ''}): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Offline? Pass local files instead."
        ) from e
    examples = []
    for row in ds:
        label = label_to_id(row["label"], f"{name}[{hub_split}]")
        if label is None:
            continue
        examples.append(NLIExample(row["premise"], row["hypothesis"], label, language, index=len(examples)))
        if max_examples is not None and len(examples) >= max_examples:
            break
    logger.info("%s (%s%s): read %d examples", name, hub_split, f", {language}" if language else "", len(examples))
    return examples


def load_nli(
    sources: str | os.PathLike | Sequence[str | os.PathLike], split: str = "train", max_examples: int | None = None,
    seed: int = 0,
) -> list[NLIExample]:
    """Examples from one or more files (or one hub name), concatenated.

    With ``max_examples`` and several sources, a seeded random subset of the concatenation is kept, so that a
    capped run still sees every source (e.g. both MultiNLI and SNLI) rather than only the first file.
    """
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not items:
        raise NLIDataError("no NLI data source given")
    examples: list[NLIExample] = []
    first: tuple[str, str] | None = None  # (source, form) of the first source: every other one must match
    for src in items:
        if is_hub_name(src):
            if HUB_DATASETS[str(src)] == "xnli":
                part = load_hub_nli(str(src), split, "en", max_examples if len(items) == 1 else None)
            else:
                part = load_hub_nli(str(src), split, None, max_examples if len(items) == 1 else None)
        else:
            part = read_nli_file(src, max_examples=max_examples if len(items) == 1 else None)
        form = input_form(part, str(src)) if part else None
        if first is None and form is not None:
            first = (str(src), form)
        elif first is not None and form is not None and form != first[1]:
            names = {"pair": "pairs", "single": "single texts"}
            raise NLIDataError(f"{src} holds {names[form]} but {first[0]} holds {names[first[1]]}: the sources of "
                               "one data set must all be pairs or all single texts")
        examples += part
    if max_examples is not None and len(examples) > max_examples:
        keep = sorted(random.Random(seed).sample(range(len(examples)), max_examples))
        examples = [examples[i] for i in keep]
    for i, ex in enumerate(examples):
        ex.index = i
    return examples


# --------------------------------------------------------------------------- encoding and batching
def encode_examples(tokenizer: Any, examples: Sequence[NLIExample], max_length: int) -> list[dict[str, Any]]:
    """Token ids per example, truncated longest-first to ``max_length`` (special tokens included). The form is
    checked over the whole data set, not per chunk: uniform chunks of a mixed set would train on both."""
    features: list[dict[str, Any]] = []
    if not examples:
        return features
    paired = input_form(examples) == "pair"
    chunk = 256
    for start in range(0, len(examples), chunk):
        part = examples[start:start + chunk]
        enc = tokenizer(
            [ex.premise for ex in part], [ex.hypothesis for ex in part] if paired else None,
            truncation="longest_first", max_length=max_length,
        )
        for i, ex in enumerate(part):
            features.append({
                "input_ids": enc["input_ids"][i],
                "token_type_ids": enc["token_type_ids"][i],
                "label": ex.label,
            })
    return features


def collate(features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest member (dynamic padding): far less compute than padding to max_length."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(features), width), dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[i, :n] = torch.tensor(f["input_ids"])
        token_type_ids[i, :n] = torch.tensor(f["token_type_ids"])
        attention_mask[i, :n] = 1
    batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
    if all(f.get("label") is not None for f in features):
        batch["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.long)
    return batch


def collate_packed(features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """The batch as one row of its sequences back to back, with ``cu_seqlens`` (see ``DebertaModel.forward``):
    no padding token is computed. ``labels`` stay one per sequence."""
    from mdeberta.model.attention import PackedSequences

    lengths = [len(f["input_ids"]) for f in features]
    batch = {"input_ids": torch.tensor([t for f in features for t in f["input_ids"]], dtype=torch.long)[None],
             "token_type_ids": torch.tensor([t for f in features for t in f["token_type_ids"]], dtype=torch.long)[None],
             "cu_seqlens": PackedSequences.from_lengths(lengths).cu_seqlens}
    if all(f.get("label") is not None for f in features):
        batch["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.long)
    return batch


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int = 0, megabatch_factor: int = 50,
) -> list[list[int]]:
    """Shuffled batches of indices whose members have similar lengths.

    Indices are shuffled (seed + epoch), cut into "megabatches" of ``megabatch_factor`` batches, sorted by length
    inside each megabatch and cut into batches; the batch order is shuffled again. This keeps randomness across
    epochs while wasting little padding (the transformers ``group_by_length`` recipe).
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * megabatch_factor
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        group = sorted(order[start:start + mega], key=lambda i: lengths[i], reverse=True)
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Rank ``rank``'s share: every world_size-th batch, trimmed so every rank runs the same number of steps."""
    n = (len(batches) // world_size) * world_size if len(batches) >= world_size else len(batches)
    mine = batches[rank:n:world_size] if world_size > 1 else batches
    return mine or batches[:1]


def steps_per_epoch(num_examples: int, batch_size: int, world_size: int = 1) -> int:
    return max(1, math.ceil(num_examples / batch_size) // max(1, world_size))
