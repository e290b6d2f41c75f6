"""Rows of a labelled data file: TSV / CSV with a header (standard CSV quoting: a field in double quotes may hold
the delimiter, doubled quotes are one quote), JSON lines (one object per line), each plain or ``.gz``; or a hub
dataset ``NAME[:CONFIG]`` (``nyu-mll/glue:sst2``) through ``datasets``. The reader under text classification,
regression and multiple choice: every row keeps where it came from (``file:line``) so that a later error about
one value names it.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeberta.errors import MdebertaError
from mdeberta.jsonl import json_object


class RecordsError(MdebertaError, ValueError):
    """A data file that cannot be read as rows of named fields."""


@dataclass
class Row:
    values: dict[str, Any]
    where: str  # "path:line" or "name[split] row i"


@dataclass
class Table:
    source: str
    columns: list[str]
    rows: list[Row]
    class_names: dict[str, list[str]] = field(default_factory=dict)  # hub ClassLabel columns: name of each id

    def column(self, wanted: str | None, candidates: tuple[str, ...], what: str, flag: str) -> str | None:
        """``wanted`` if the table has it (an error naming the columns it has if not), else the first of
        ``candidates`` present, else None."""
        if wanted is not None:
            if wanted not in self.columns:
                raise RecordsError(f"{self.source}: no column {wanted!r} ({flag}); it has {self.columns}")
            return wanted
        return next((c for c in candidates if c in self.columns), None)


def is_local(source: str | os.PathLike) -> bool:
    return Path(source).exists() or Path(str(source)).suffix in (".tsv", ".csv", ".jsonl", ".json", ".gz")


def read_table(source: str | os.PathLike, split: str = "train") -> Table:
    """All rows of ``source`` (a file, or a hub dataset's ``split``)."""
    if not is_local(source):
        return _read_hub(str(source), split)
    path = Path(source)
    if not path.is_file():
        raise RecordsError(f"{path}: no such file")
    raw = gzip.open(path, "rb").read() if path.name.endswith(".gz") else path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise RecordsError(f"{path}:{line}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        raise RecordsError(f"{path}: cannot read the file ({type(e).__name__}: {e})") from None
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json")):
        return _read_jsonl(text, path)
    return _read_delimited(text, path, "," if name.endswith(".csv") else "\t")


def _read_delimited(text: str, path: Path, delimiter: str) -> Table:
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise RecordsError(f"{path}: empty file, or no header line naming the columns")
        columns = [h.strip() for h in header]
        duplicated = sorted({c for c in columns if columns.count(c) > 1})
        if duplicated:
            raise RecordsError(f"{path}:1: the header names {duplicated} more than once")
        rows = []
        for values in reader:
            if not values or (len(values) == 1 and not values[0].strip()):
                continue  # blank line
            where = f"{path}:{reader.line_num}"
            if len(values) != len(columns):
                raise RecordsError(f"{where}: {len(values)} fields but the header has {len(columns)} ({columns}); "
                                   "a field holding the delimiter or a quote must be in double quotes")
            rows.append(Row(dict(zip(columns, values)), where))
    except csv.Error as e:
        raise RecordsError(f"{path}:{reader.line_num}: {e}") from None
    return Table(str(path), columns, rows)


def _read_jsonl(text: str, path: Path) -> Table:
    rows, columns = [], {}
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        if not line.strip():
            continue
        record = json_object(line, f"{path}:{number}", RecordsError)
        columns.update(dict.fromkeys(record))
        rows.append(Row(record, f"{path}:{number}"))
    if not rows:
        raise RecordsError(f"{path}: no records")
    return Table(str(path), list(columns), rows)


def _read_hub(spec: str, split: str) -> Table:
    try:
        import datasets
    except ImportError:
        raise RecordsError(f"{spec}: hub datasets need the datasets package (pip install 'mdeberta[datasets]')"
                           ) from None
    name, _, config = spec.partition(":")
    try:
        data = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # offline, unknown name or split
        raise RecordsError(f"{spec}: cannot load split {split!r} ({type(e).__name__}: {e}); offline, set "
                           "HF_DATASETS_OFFLINE=1 and use a cached dataset, or a local file") from None
    class_names = {}
    for column, feature in data.features.items():
        inner = getattr(feature, "feature", feature)  # Sequence(ClassLabel) for multi-label columns
        if isinstance(inner, datasets.ClassLabel):
            class_names[column] = list(inner.names)
    rows = [Row(dict(record), f"{spec}[{split}] row {i}") for i, record in enumerate(data)]
    return Table(spec, list(data.column_names), rows, class_names)


__all__ = ["RecordsError", "Row", "Table", "read_table"]
