"""Where pretraining text comes from: corpus discovery, file formats, and reading a corpus piece by piece.

Sources (each ``--data`` entry, optionally ``SOURCE=WEIGHT``):

* a file: text (``.txt``, ``.gz``, ``.xz``, ``.zst``), JSON lines (``.jsonl`` and its compressed forms) or Parquet
  (``.parquet``); its language is its name without the suffixes (``en.txt.xz`` -> ``en``) unless a language field
  is given;
* a folder: its files as above (one language each) and its sub-folders (one language each, named by the folder;
  their files are that language's shards);
* ``hf:NAME[:CONFIG][@LANGUAGE]``: a hub dataset (or a local folder that ``datasets.load_dataset`` reads), streamed
  with ``datasets`` and split between data shards by ``split_dataset_by_node``; its language is LANGUAGE, else
  CONFIG, else NAME's last part, unless a language field is given.

Documents are the unit that shuffling moves: a line of a text file (``documents="lines"``), a run of lines between
blank lines (``documents="blank-line"``, CC100's layout), a JSON record or a Parquet / hub row (``text_field``;
may hold several lines). A document's lines are tokenized one by one and concatenated, as DeBERTa's
``prepare_data.py`` does; documents then follow each other in the token stream with no separator (DeBERTa packs
one long stream into ``max_seq_length - 2`` chunks; RoBERTa's separator between documents is not used).

Files are cut into *pieces*: byte ranges for text / JSON lines (a line or document belongs to the piece in which it
starts; a document after a blank line to the piece in which that blank line starts), row groups for Parquet, the
whole stream for a hub dataset. A piece is read by a *cursor* whose small state (a byte offset, a row, the stream's
``state_dict``) lets a checkpoint continue exactly where it was.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdeberta.errors import MdebertaError, UsageError

logger = logging.getLogger("mdeberta.data")

HUB_PREFIX = "hf:"
COMPRESSIONS = ("", ".gz", ".xz", ".zst")
TEXT_SUFFIXES = tuple(f".txt{c}" for c in COMPRESSIONS) + (".gz", ".xz", ".zst")
JSONL_SUFFIXES = tuple(f".jsonl{c}" for c in COMPRESSIONS)
PARQUET_SUFFIXES = (".parquet",)
DOCUMENTS = ("lines", "blank-line")
SIZE_BY = ("bytes", "lines")


class DataError(MdebertaError, ValueError):
    """The corpus cannot be used; the message names the file (and line) and the problem."""


@dataclass(frozen=True)
class SourceOptions:
    """How records are read. ``text_field``: the JSON / Parquet / hub column holding the text. ``language_field``:
    a column holding each record's language (mixed-language files; the languages must then be named). ``documents``:
    what a document is in a text file (DOCUMENTS)."""

    text_field: str = "text"
    language_field: str | None = None
    documents: str = "lines"

    def __post_init__(self) -> None:
        if self.documents not in DOCUMENTS:
            raise DataError(f"documents={self.documents!r}; allowed: {list(DOCUMENTS)}")


@dataclass(frozen=True)
class CorpusFile:
    """One file (or hub dataset) of one language. ``size`` (bytes or lines) times ``weight`` is its n in the
    language-sampling rule; ``source`` numbers the ``--data`` entry it came from."""

    language: str
    path: Path | str
    size: float
    kind: str = "text"  # text | jsonl | parquet | hub
    weight: float = 1.0
    source: int = 0
    options: SourceOptions = SourceOptions()


# --------------------------------------------------------------------------- files
def kind_of(path: Path | str) -> str | None:
    name = str(path)
    if name.startswith(HUB_PREFIX):
        return "hub"
    name = Path(name).name
    for kind, suffixes in (("jsonl", JSONL_SUFFIXES), ("parquet", PARQUET_SUFFIXES), ("text", TEXT_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def language_of(path: Path) -> str:
    name = path.name
    for suffix in sorted(JSONL_SUFFIXES + PARQUET_SUFFIXES + TEXT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def open_binary(path: Path):
    """A binary reader of the decompressed bytes (gzip, xz, zstd or plain); ``seek`` forward works on all."""
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError as e:
            raise DataError(f"{path}: reading .zst needs the zstandard package (pip install zstandard)") from e
        return _ZstdReader(path, zstandard)
    return open(path, "rb")


class _ZstdReader:
    """zstandard's stream reader with ``readline`` and forward ``seek`` (what the cursors use)."""

    def __init__(self, path: Path, zstandard: Any) -> None:
        import io

        self._raw = open(path, "rb")  # noqa: SIM115
        reader = zstandard.ZstdDecompressor().stream_reader(self._raw, read_across_frames=True)
        self._buffered = io.BufferedReader(reader, buffer_size=1 << 16)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        data = self._buffered.read(n)
        self._pos += len(data)
        return data

    def readline(self) -> bytes:
        line = self._buffered.readline()
        self._pos += len(line)
        return line

    def seek(self, offset: int) -> int:
        if offset < self._pos:
            raise OSError("zstd streams only seek forward")
        while self._pos < offset:
            if not self.read(min(1 << 20, offset - self._pos)):
                break
        return self._pos

    def __iter__(self):
        return iter(self.readline, b"")

    def close(self) -> None:
        self._buffered.close()
        self._raw.close()

    def __enter__(self) -> _ZstdReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def uncompressed_size(path: Path) -> int:
    """Plain size; gzip's ISIZE trailer (size mod 2**32: exact below 4 GiB); xz's index; else an estimate
    (zstd: 4x the compressed size). Used to weight languages and cut pieces, so an estimate only shifts balance."""
    name = path.name
    if name.endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return struct.unpack("<I", f.read(4))[0] or path.stat().st_size
    if name.endswith(".xz"):
        try:
            return _xz_uncompressed_size(path)
        except (OSError, ValueError):
            return 4 * path.stat().st_size
    if name.endswith(".zst"):
        return 4 * path.stat().st_size
    return path.stat().st_size


def _xz_uncompressed_size(path: Path) -> int:
    """Sum of the uncompressed sizes in the index of every stream of an .xz file (read from its end, no decoding)."""
    total = 0
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        while end > 0:
            f.seek(end - 12)
            footer = f.read(12)
            if footer[-2:] != b"YZ":
                if footer == b"\x00" * 12:  # stream padding
                    end -= 4
                    continue
                raise UsageError("not an xz footer")
            backward = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
            f.seek(end - 12 - backward)
            index = f.read(backward)
            pos, count = _varint(index, 1)
            blocks_compressed = 0
            for _ in range(count):
                pos, unpadded = _varint(index, pos)
                pos, size = _varint(index, pos)
                total += size
                blocks_compressed += (unpadded + 3) // 4 * 4
            end = end - 12 - backward - blocks_compressed - 12  # minus the stream header
    return total


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return pos, value
        shift += 7


def check_file(path: Path, kind: str, options: SourceOptions, probe_bytes: int = 1 << 16) -> None:
    """Reject missing, empty, binary or corrupt files, and JSON / Parquet files without the text field."""
    if not path.is_file():
        raise DataError(f"corpus file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"corpus file {path} is empty")
    if kind == "parquet":
        fields = _parquet_fields(path)
        for field_name in filter(None, (options.text_field, options.language_field)):
            if field_name not in fields:
                raise DataError(f"{path}: no column {field_name!r} (it has {fields}); use --text-field / "
                                "--language-field")
        return
    try:
        with open_binary(path) as f:
            head = f.read(probe_bytes)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DataError(f"cannot read {path}: {e} (corrupt compressed file?)") from e
    except Exception as e:  # zstandard raises its own error type
        raise DataError(f"cannot read {path}: {e} (corrupt compressed file?)") from e
    if not head.strip():
        raise DataError(f"corpus file {path} has no text")
    nul = head.count(b"\x00")
    if nul > 1 + len(head) // 1000:  # a stray NUL in a text line is skipped when read; many mean binary data
        raise DataError(f"{path} looks binary ({nul} NUL bytes in the first {len(head)} bytes); expected UTF-8 text")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # a multi-byte character cut at the probe's end is fine
            raise DataError(f"{path} is not UTF-8 text (invalid byte at offset {e.start})") from e
    if kind == "jsonl":
        first = next((line for line in head.split(b"\n") if line.strip()), b"")
        record = _parse_record(first, f"{path}:1")
        for field_name in filter(None, (options.text_field, options.language_field)):
            if field_name not in record:
                raise DataError(f"{path}:1: no field {field_name!r} (the record has {sorted(record)}); use "
                                "--text-field / --language-field")


def _parquet_fields(path: Path) -> list[str]:
    pq = _pyarrow_parquet(path)
    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except Exception as e:
        raise DataError(f"cannot read {path} as Parquet: {e}") from e


def _pyarrow_parquet(path: Path | str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'mdeberta[datasets]')") from e
    return pq


def _parse_record(raw: bytes, where: str) -> dict:
    from mdeberta.jsonl import json_object

    return json_object(raw, where, DataError)


def count_lines(path: Path) -> int:
    with open_binary(path) as f:
        return sum(1 for line in f if line.strip())


# --------------------------------------------------------------------------- discovery
def parse_source(spec: str | os.PathLike) -> tuple[str, float]:
    """``SOURCE`` or ``SOURCE=WEIGHT``."""
    text = str(spec)
    if "=" in text and not Path(text).exists():
        head, _, tail = text.rpartition("=")
        try:
            weight = float(tail)
        except ValueError:
            weight = None
        if weight is not None:
            if not weight > 0:
                raise DataError(f"{text}: the weight after '=' must be a positive number")
            return head, weight
    return text, 1.0


def _source_files(item: str) -> list[tuple[str, Path | str, str]]:
    """(language, path, origin) of one source; a language may have one origin per source."""
    if item.startswith(HUB_PREFIX):
        name, config, language = parse_hub(item)
        return [(language or config or Path(name.rstrip("/")).name, item, item)]
    path = Path(item)
    if path.is_file():
        if kind_of(path) is None:
            raise DataError(f"corpus: {path} is not a text / JSON lines / Parquet file "
                            f"({', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES)})")
        return [(language_of(path), path, str(path))]
    if not path.is_dir():
        raise DataError(f"corpus: file or folder not found: {path}")
    found = [(language_of(p), p, str(p)) for p in sorted(path.iterdir()) if p.is_file() and kind_of(p)]
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        found += [(sub.name, p, str(sub)) for p in sorted(sub.iterdir()) if p.is_file() and kind_of(p)]
    if not found:
        raise DataError(f"corpus: no text / JSON lines / Parquet files in folder {path} or in its per-language "
                        "sub-folders")
    return found


def discover_corpus(data: str | os.PathLike | Sequence[str | os.PathLike], languages: Sequence[str] | None = None,
                    size_by: str = "bytes", options: SourceOptions | None = None) -> list[CorpusFile]:
    """Corpus files with their language, format, size and weight.

    ``data``: one source or a list (see the module docstring), each optionally ``SOURCE=WEIGHT``. Within one
    source a language has one origin (a file or a sub-folder); several sources may hold the same language.
    ``languages`` selects and orders languages (required with ``options.language_field``); a language without
    a file is an error.
    """
    options = options or SourceOptions()
    if size_by not in SIZE_BY:
        raise DataError(f"size_by={size_by!r}; allowed: {list(SIZE_BY)}")
    if options.language_field and not languages:
        raise DataError("a language field reads every language from the same files: name the languages "
                        "(--languages en,fr,...)")
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not items:
        raise DataError("corpus: no sources given")
    files: list[CorpusFile] = []
    for index, spec in enumerate(items):
        item, weight = parse_source(spec)
        origin: dict[str, str] = {}
        for lang, path, source in _source_files(item):
            if origin.setdefault(lang, source) != source:
                raise DataError(f"two origins for language {lang!r} in {item}: {origin[lang]} and {source}")
            kind = kind_of(path)
            if kind == "hub":
                size = _hub_size(str(path), options)
            else:
                check_file(path, kind, options)
                size = float(uncompressed_size(path) if size_by == "bytes" or kind == "parquet"
                             else count_lines(path))
            if size <= 0:
                raise DataError(f"corpus file {path} has no text")
            langs = languages if options.language_field else [lang]
            files += [CorpusFile(x, path, size, kind, weight, index, options) for x in langs]
    present = {f.language for f in files}
    if languages:
        missing = [lang for lang in languages if lang not in present]
        if missing:
            raise DataError(f"no corpus file for language(s) {missing}; available: {sorted(present)}")
        order = {lang: i for i, lang in enumerate(languages)}
        files = sorted((f for f in files if f.language in order), key=lambda f: order[f.language])
    return files


def parse_hub(spec: str) -> tuple[str, str | None, str | None]:
    """``hf:NAME[:CONFIG][@LANGUAGE]`` -> (NAME, CONFIG, LANGUAGE); the language defaults to CONFIG, else NAME's
    last part (``hf:uonlp/CulturaX:sw``, ``hf:HuggingFaceFW/fineweb-2:fra_Latn@fr``, ``hf:./local-folder@en``)."""
    body = spec[len(HUB_PREFIX):]
    body, at, language = body.rpartition("@") if "@" in body else (body, "", "")
    name, _, config = body.partition(":")
    if not name:
        raise DataError(f"{spec}: expected hf:NAME[:CONFIG][@LANGUAGE]")
    return name, config or None, language or None


def _hub_dataset(spec: str, options: SourceOptions) -> Any:
    """The hub dataset ``hf:NAME[:CONFIG]`` as a streaming IterableDataset (train split)."""
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"{spec}: hub datasets need the datasets package (pip install 'mdeberta[datasets]')") from e
    name, config, _ = parse_hub(spec)
    try:
        return datasets.load_dataset(name, config or None, split="train", streaming=True)
    except Exception as e:  # offline, unknown name, no train split, ...
        raise DataError(f"{spec}: cannot open the dataset ({type(e).__name__}: {e}); offline, set "
                        "HF_DATASETS_OFFLINE=1 and use a cached or local dataset") from e


def _hub_size(spec: str, options: SourceOptions) -> float:
    """Bytes of the train split from the dataset's metadata, else 1 (then weights set the share)."""
    ds = _hub_dataset(spec, options)
    fields = list(ds.features) if ds.features is not None else None
    if fields is not None:
        for field_name in filter(None, (options.text_field, options.language_field)):
            if field_name not in fields:
                raise DataError(f"{spec}: no field {field_name!r} (it has {fields}); use --text-field / "
                                "--language-field")
    split = (ds.info.splits or {}).get("train") if ds.info is not None else None
    size = getattr(split, "num_bytes", None) or getattr(ds.info, "dataset_size", None)
    if not size:
        logger.warning("%s: size unknown (no dataset metadata); it counts as 1 byte times its weight in the "
                       "language sampling; give it a weight (%s=N)", spec, spec)
        return 1.0
    return float(size)


# --------------------------------------------------------------------------- pieces and cursors
@dataclass(frozen=True)
class Piece:
    """A part of one file read by one cursor: the documents of ``file`` that start in the uncompressed byte range
    [start, end) (text / JSON lines), row group ``start`` (Parquet), or the whole stream (hub)."""

    file: CorpusFile
    start: int
    end: float  # math.inf for a file's last piece, so a wrong size estimate never loses text


def split_into_pieces(files: Sequence[CorpusFile], segments: int) -> list[Piece]:
    """About ``segments`` pieces over ``files`` (at least one per file)."""
    per_file = max(1, -(-segments // len(files)))
    pieces = []
    for f in files:
        if f.kind == "hub":
            pieces.append(Piece(f, 0, float("inf")))
        elif f.kind == "parquet":
            groups = _pyarrow_parquet(f.path).ParquetFile(f.path).num_row_groups
            pieces += [Piece(f, g, g + 1) for g in range(groups)]
        else:
            size = uncompressed_size(Path(f.path))
            k = max(1, min(per_file, size))
            bounds: list[float] = [size * j // k for j in range(k)] + [float("inf")]
            pieces += [Piece(f, int(bounds[j]), bounds[j + 1]) for j in range(k)]
    return pieces


class Cursor:
    """Reads the documents of one piece. ``next_document()`` returns (index in the piece, text, language or None)
    or None at the piece's end; ``state()`` / the ``state`` argument continue exactly. ``presharded``: the source
    already gives each data shard its own part (hub), so the shard rule is not applied."""

    presharded = False

    def __init__(self, index: int, piece: Piece) -> None:
        self.index, self.piece = index, piece
        self.file = piece.file
        self.options = piece.file.options

    def state(self) -> list:
        raise NotImplementedError

    def next_document(self) -> tuple[int, str, str | None] | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _record_text(self, record: dict, where: str) -> tuple[str, str | None]:
        text = record.get(self.options.text_field)
        if not isinstance(text, str):
            if self.options.text_field not in record:
                raise DataError(f"{where}: no field {self.options.text_field!r} (the record has {sorted(record)})")
            text = "" if text is None else str(text)
        lang = None
        if self.options.language_field:
            lang = record.get(self.options.language_field)
            lang = None if lang is None else str(lang)
        return text, lang


def make_cursor(index: int, piece: Piece, state: list | None = None, shard: int = 0, num_shards: int = 1) -> Cursor:
    kind = piece.file.kind
    if kind == "parquet":
        return ParquetCursor(index, piece, state)
    if kind == "hub":
        return HubCursor(index, piece, state, shard, num_shards)
    return TextCursor(index, piece, state)


class TextCursor(Cursor):
    """Lines (or blank-line separated documents) of a byte range of a text or JSON lines file.

    State: [piece, offset of the next line (None: not yet aligned to the piece's first document), documents read,
    phase]. Phases of blank-line documents: "seek" (skip to the first separator of the piece), "doc", "done".
    """

    def __init__(self, index: int, piece: Piece, state: list | None = None) -> None:
        super().__init__(index, piece)
        self.path = Path(piece.file.path)
        self.blocks = self.options.documents == "blank-line" and piece.file.kind == "text"
        if state:
            _, self.offset, self.line, self.phase = state
        else:
            self.offset = 0 if piece.start == 0 else None
            self.line = 0
            self.phase = "doc" if piece.start == 0 else "seek"
        self._handle = None

    def state(self) -> list:
        return [self.index, self.offset, self.line, self.phase]

    def _readline(self) -> tuple[int, bytes]:
        start = self.offset
        raw = self._handle.readline()
        self.offset += len(raw)
        return start, raw

    def _open(self) -> None:
        self._handle = open_binary(self.path)
        if self.offset is None:  # skip the end of the line that started in the previous piece
            self._handle.seek(self.piece.start - 1)
            self.offset = self.piece.start - 1 + len(self._handle.readline())
        elif self.offset:
            self._handle.seek(self.offset)

    def _where(self, index: int, start: int) -> str:
        return f"{self.path}:{index + 1}" if self.piece.start == 0 and not self.blocks else (
            f"{self.path} (line at byte {start})")

    def next_document(self) -> tuple[int, str, str | None] | None:
        if self._handle is None:
            self._open()
        while True:
            got = self._next_block() if self.blocks else self._next_line()
            if got is None:
                self.close()
                return None
            index, start, raw = got
            if b"\x00" in raw:  # a stray NUL in real text (../shared's bg corpus has one): skip, don't kill the run
                logger.warning("%s: NUL byte in the line; line skipped", self._where(index, start))
                continue
            if self.piece.file.kind == "jsonl":
                if not raw.strip():
                    continue
                record = _parse_record(raw, self._where(index, start))
                text, lang = self._record_text(record, self._where(index, start))
                return index, text, lang
            return index, raw.decode("utf-8", errors="replace").rstrip("\r\n"), None

    def _next_line(self) -> tuple[int, int, bytes] | None:
        if self.offset >= self.piece.end:
            return None
        start, raw = self._readline()
        if not raw:
            return None
        index = self.line
        self.line += 1
        return index, start, raw

    def _next_block(self) -> tuple[int, int, bytes] | None:
        """The next document of blank-line separated text that belongs to this piece."""
        if self.phase == "seek":  # documents of this piece begin after a blank line that starts in it
            while True:
                start, raw = self._readline()
                if not raw or start >= self.piece.end:
                    self.phase = "done"
                    break
                if not raw.strip():
                    self.phase = "doc"
                    break
        if self.phase == "done":
            return None
        lines: list[bytes] = []
        first = self.offset
        while True:
            start, raw = self._readline()
            if not raw:
                self.phase = "done"
                break
            if raw.strip():
                if not lines:
                    first = start
                lines.append(raw)
            elif lines:  # the separator ends the document; the next one is ours if it starts in the piece
                self.phase = "doc" if start < self.piece.end else "done"
                break
            elif start >= self.piece.end:  # blank lines only, into the next piece
                self.phase = "done"
                break
        if not lines:
            return None
        index = self.line
        self.line += 1
        return index, first, b"".join(lines)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ParquetCursor(Cursor):
    """The rows of one row group of a Parquet file, read in batches. State: [piece, rows read]."""

    def __init__(self, index: int, piece: Piece, state: list | None = None) -> None:
        super().__init__(index, piece)
        self.row = int(state[1]) if state else 0
        self._batches = None
        self._buffer: list[tuple[str, str | None]] = []

    def state(self) -> list:
        return [self.index, self.row]

    def next_document(self) -> tuple[int, str, str | None] | None:
        if self._batches is None:
            pq = _pyarrow_parquet(self.file.path)
            columns = [c for c in (self.options.text_field, self.options.language_field) if c]
            self._batches = pq.ParquetFile(self.file.path).iter_batches(
                batch_size=1024, row_groups=[self.piece.start], columns=columns)
            skip = self.row
            while skip > 0 and self._fill():
                dropped = min(skip, len(self._buffer))
                del self._buffer[:dropped]
                skip -= dropped
        if not self._buffer and not self._fill():
            return None
        text, lang = self._buffer.pop(0)
        index = self.row
        self.row += 1
        return index, text, lang

    def _fill(self) -> bool:
        batch = next(self._batches, None)
        if batch is None:
            return False
        data = batch.to_pydict()
        texts = data[self.options.text_field]
        langs = data[self.options.language_field] if self.options.language_field else [None] * len(texts)
        self._buffer = [("" if t is None else str(t), None if g is None else str(g)) for t, g in zip(texts, langs)]
        return True


class HubCursor(Cursor):
    """A hub dataset streamed with ``datasets``, this data shard's part of it (``split_dataset_by_node``).
    State: [piece, the stream's state_dict (None: the beginning), rows read]."""

    presharded = True

    def __init__(self, index: int, piece: Piece, state: list | None = None, shard: int = 0,
                 num_shards: int = 1) -> None:
        super().__init__(index, piece)
        self.shard, self.num_shards = shard, num_shards
        self.stream_state = state[1] if state else None
        self.row = int(state[2]) if state else 0
        self._dataset = None
        self._iterator = None

    def state(self) -> list:
        if self._dataset is not None:
            self.stream_state = self._dataset.state_dict()
        return [self.index, self.stream_state, self.row]

    def next_document(self) -> tuple[int, str, str | None] | None:
        if self._iterator is None:
            from datasets.distributed import split_dataset_by_node

            self._dataset = split_dataset_by_node(_hub_dataset(str(self.file.path), self.options),
                                                  rank=self.shard, world_size=self.num_shards)
            if self.stream_state is not None:
                self._dataset.load_state_dict(self.stream_state)
            # .iter(), not iter(): inside a DataLoader worker, datasets' __iter__ would split the stream between the
            # workers a second time (this shard already is one worker's part).
            self._iterator = self._dataset.iter(batch_size=1)
        batch = next(self._iterator, None)
        if batch is None:
            return None
        record = {k: v[0] for k, v in batch.items()}
        text, lang = self._record_text(record, f"{self.file.path} (row {self.row + 1} of this shard)")
        index = self.row
        self.row += 1
        return index, text, lang
