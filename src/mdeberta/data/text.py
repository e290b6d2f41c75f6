"""Streaming multilingual text for pretraining: read, shuffle, tokenize on the fly, pack, mask - in DataLoader workers.

Corpus: a folder of per-language files (``en.txt.gz``, ``fr.txt`` ...) and/or per-language sub-folders of shards
(``en/part-000.txt.gz`` ...), or a list of those; plain or gzip text, one sentence or document per line. Nothing
is loaded into memory: each data *shard* (one per rank x DataLoader worker) streams every file and keeps the
lines whose index within their piece of the file falls in its shard (``index % S == s``).

Shuffling (DeBERTa and ELECTRA train on shuffled documents; corpora are often stored in source order, e.g. one
book or one source after another). Per language and epoch, the files are cut into *pieces* (``segments`` byte
ranges per language, split at line boundaries), the pieces are visited in a seeded random order, and up to
``segments`` of them are read at once, round-robin, into a *shuffle window* of ``buffer_lines`` lines, which is
emitted in a seeded random permutation. So even the first batch mixes text from all over a source-ordered file,
memory stays at one window per language, and the state needed for exact resumption is small: where each open
piece stood when the window was filled, and how many of its lines were emitted (the window is re-read and
re-permuted on resume instead of being written into every checkpoint).

Each packed sequence is ``[CLS] t1 ... t_{L-2} [SEP]`` from ONE language, drawn with probability
``p(lang) ∝ n_lang ** alpha`` (XLM-R's rule: alpha < 1 flattens the distribution and upsamples thin
languages). Lines are concatenated; a line longer than a sequence continues in the next sequence of that
language, so no text is dropped. Masking happens here too (numpy, in the worker), as does the uniform noise the
RTD generator uses to sample replacements, so the whole batch is a deterministic function of the shard's state.

Determinism and resumption: a shard's state (its RNG, and per language the reading position, window and leftover
tokens) travels with every batch; :class:`PretrainingLoader` keeps the state of the last consumed batch of each
shard, so a checkpoint continues the exact stream. The global stream depends only on the number of shards S
(= world_size x max(1, num_workers)): 1 process x 2 workers and 2 processes x 1 worker read the same batches.
"""

from __future__ import annotations

import copy
import gzip
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mdeberta.tokenizer import expand_text_inputs

logger = logging.getLogger("mdeberta.data")

MASKING_MODES = ("token", "whole_word", "ngram")
OBJECTIVES = ("rtd", "mlm")
SIZE_BY = ("bytes", "lines")
_SUFFIXES = (".txt.gz", ".txt", ".gz")


class DataError(ValueError):
    """The corpus cannot be used; the message names the file (and line) and the problem."""


# --------------------------------------------------------------------------- corpus discovery and sampling
@dataclass(frozen=True)
class CorpusFile:
    language: str
    path: Path
    size: float  # bytes (uncompressed) or lines, the n_lang of the sampling rule


def _language_of(path: Path) -> str:
    name = path.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _uncompressed_size(path: Path) -> int:
    """Plain size, or for gzip the ISIZE trailer (size mod 2**32: exact below 4 GiB, a fair weight above)."""
    if path.suffix != ".gz":
        return path.stat().st_size
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0] or path.stat().st_size


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def check_text_file(path: Path, probe_bytes: int = 1 << 16) -> None:
    """Reject empty, binary (NUL bytes / undecodable) or corrupt gzip files with a clear message."""
    if not path.is_file():
        raise DataError(f"corpus file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"corpus file {path} is empty")
    try:
        with _open(path) as f:
            head = f.read(probe_bytes)
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e} (corrupt gzip?)") from e
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


def count_lines(path: Path) -> int:
    with _open(path) as f:
        return sum(1 for line in f if line.strip())


def _corpus_paths(data: str | os.PathLike | Sequence[str | os.PathLike]) -> list[tuple[str, Path, Path]]:
    """(language, file, origin) triples: files as given or in a folder (origin = the file), and the files of a
    folder's sub-folders as one language's shards (origin = the sub-folder)."""
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    found: list[tuple[str, Path, Path]] = []
    for item in map(Path, items):
        if not item.is_dir():
            try:
                found += [(_language_of(p), p, p) for p in expand_text_inputs(item, _SUFFIXES)]
            except (FileNotFoundError, ValueError) as e:
                raise DataError(f"corpus: {e}") from e
            continue
        before = len(found)
        found += [(_language_of(p), p, p) for p in sorted(item.iterdir())
                  if p.is_file() and p.name.endswith(_SUFFIXES)]
        for sub in sorted(p for p in item.iterdir() if p.is_dir()):
            found += [(sub.name, p, sub) for p in sorted(sub.iterdir()) if p.is_file() and p.name.endswith(_SUFFIXES)]
        if len(found) == before:
            raise DataError(f"corpus: no {' / '.join('*' + x for x in _SUFFIXES)} files in folder {item} or in its "
                            "per-language sub-folders")
    return found


def discover_corpus(data: str | os.PathLike | Sequence[str | os.PathLike], languages: Sequence[str] | None = None,
                    size_by: str = "bytes") -> list[CorpusFile]:
    """Corpus files with their language and size.

    ``data``: a folder, a file, or a list of those. A folder's text files are one language each (file name
    without .txt/.gz); its sub-folders are one language each (the folder name), their files that language's
    shards. ``languages`` selects and orders languages; a language without a file is an error.
    """
    if size_by not in SIZE_BY:
        raise DataError(f"size_by={size_by!r}; allowed: {list(SIZE_BY)}")
    by_lang: dict[str, list[Path]] = {}
    origin: dict[str, Path] = {}
    for lang, path, source in _corpus_paths(data):
        if origin.setdefault(lang, source) != source:
            raise DataError(f"two sources for language {lang!r}: {origin[lang]} and {source}")
        by_lang.setdefault(lang, []).append(path)
    if languages:
        missing = [lang for lang in languages if lang not in by_lang]
        if missing:
            raise DataError(f"no corpus file for language(s) {missing}; available: {sorted(by_lang)}")
        by_lang = {lang: by_lang[lang] for lang in languages}
    files = []
    for lang, paths in by_lang.items():
        for p in paths:
            check_text_file(p)
            size = float(_uncompressed_size(p) if size_by == "bytes" else count_lines(p))
            if size <= 0:
                raise DataError(f"corpus file {p} has no text")
            files.append(CorpusFile(lang, p, size))
    return files


def language_probabilities(sizes: dict[str, float], alpha: float = 0.3) -> dict[str, float]:
    """``p(lang) = n_lang**alpha / sum(n**alpha)``: alpha=1 keeps the natural distribution, 0 makes it uniform."""
    if not 0 <= alpha <= 1:
        raise DataError(f"alpha must be in [0, 1], got {alpha}")
    weights = {lang: float(n) ** alpha for lang, n in sizes.items()}
    total = sum(weights.values())
    return {lang: w / total for lang, w in weights.items()}


# --------------------------------------------------------------------------- masking
@dataclass
class MaskingConfig:
    """``objective="rtd"``: every selected token becomes [MASK] (the generator's input). ``"mlm"``: BERT's
    80% [MASK] / 10% random / 10% unchanged. ``mode``: token, whole_word (all pieces of a word) or ngram
    (spans of 1..max_ngram tokens)."""

    objective: str = "rtd"
    mask_prob: float = 0.15
    mode: str = "token"
    max_ngram: int = 3

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise DataError(f"objective={self.objective!r}; allowed: {list(OBJECTIVES)}")
        if self.mode not in MASKING_MODES:
            raise DataError(f"masking mode={self.mode!r}; allowed: {list(MASKING_MODES)}")
        if not 0 < self.mask_prob < 1:
            raise DataError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.max_ngram < 1:
            raise DataError(f"max_ngram must be >= 1, got {self.max_ngram}")


class Masker:
    """Chooses masked positions and builds model inputs for one sequence (numpy, deterministic per RNG)."""

    def __init__(self, config: MaskingConfig, vocab_size: int, mask_id: int, special_ids: Sequence[int],
                 word_start: np.ndarray | None = None) -> None:
        self.config = config
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.special = np.zeros(vocab_size, dtype=bool)
        self.special[list(special_ids)] = True
        self.word_start = word_start  # (V,) bool: the piece begins a word (starts with "▁")
        # Random replacements (MLM 10%) are drawn from the ordinary pieces only.
        self.ordinary = np.flatnonzero(~self.special)

    def select(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Boolean mask of the positions to predict: round(mask_prob * candidates), never special tokens."""
        candidates = ~self.special[ids]
        n_cand = int(candidates.sum())
        budget = int(round(self.config.mask_prob * n_cand))
        if n_cand and budget == 0:
            budget = 1
        chosen = np.zeros(len(ids), dtype=bool)
        if budget == 0:
            return chosen
        mode = self.config.mode
        if mode == "token":
            chosen[rng.choice(np.flatnonzero(candidates), size=budget, replace=False)] = True
            return chosen
        if mode == "whole_word":
            starts = candidates & (self.word_start[ids] if self.word_start is not None else True)
            starts |= candidates & ~np.concatenate([[False], candidates[:-1]])  # a word never spans a special
            word_id = np.cumsum(starts) - 1
            words = [np.flatnonzero((word_id == w) & candidates) for w in range(int(starts.sum()))]
            count = 0
            for w in rng.permutation(len(words)):
                if count >= budget:
                    break
                if count + len(words[w]) > budget and count > 0:
                    continue  # BERT's rule: skip words that overshoot the budget
                chosen[words[w]] = True
                count += len(words[w])
            return chosen
        # ngram: spans of uniform length 1..max_ngram at random candidate starts, capped at the budget.
        cand_pos = np.flatnonzero(candidates)
        count = 0
        for _ in range(4 * budget):
            if count >= budget:
                break
            start = int(cand_pos[rng.integers(len(cand_pos))])
            span = int(rng.integers(1, self.config.max_ngram + 1))
            for p in range(start, min(start + span, len(ids))):
                if count >= budget or not candidates[p]:
                    break
                if not chosen[p]:
                    chosen[p] = True
                    count += 1
        return chosen

    def __call__(self, ids: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        chosen = self.select(ids, rng)
        labels = np.where(chosen, ids, -100)
        inputs = ids.copy()
        if self.config.objective == "rtd":
            inputs[chosen] = self.mask_id
            return {"input_ids": inputs, "labels": labels,
                    "sample_noise": rng.random(len(ids), dtype=np.float32)}
        roll = rng.random(len(ids))
        inputs[chosen & (roll < 0.8)] = self.mask_id
        randomised = chosen & (roll >= 0.8) & (roll < 0.9)
        inputs[randomised] = self.ordinary[rng.integers(len(self.ordinary), size=int(randomised.sum()))]
        return {"input_ids": inputs, "labels": labels}


def word_start_table(tokenizer: Any) -> np.ndarray:
    """(V,) bool: which pieces start a word (SentencePiece marks them with "▁")."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return np.array([p.startswith("\u2581") for p in pieces], dtype=bool)


# --------------------------------------------------------------------------- streaming
@dataclass(frozen=True)
class ShuffleConfig:
    """How each language's lines are shuffled (module docstring). ``buffer_lines <= 1`` turns shuffling off: the
    files are read in the order given, front to back, as stored (what the reader did before it shuffled).

    ``buffer_lines``: lines per language and shard permuted together (memory: one window of raw text each).
    ``segments``: pieces per language (split evenly over its files, at least one per file) read at the same
    time, so one window holds lines from that many places of the corpus.
    """

    buffer_lines: int = 16384
    segments: int = 16

    def __post_init__(self) -> None:
        if self.buffer_lines < 0:
            raise DataError(f"shuffle buffer_lines must be >= 0 (0 or 1: no shuffling), got {self.buffer_lines}")
        if self.segments < 1:
            raise DataError(f"shuffle segments must be >= 1, got {self.segments}")

    @property
    def enabled(self) -> bool:
        return self.buffer_lines > 1


@dataclass(frozen=True)
class _Piece:
    """The lines of ``path`` that start in the uncompressed byte range [start, end)."""

    path: Path
    start: int
    end: float  # math.inf for a file's last piece, so a wrong size estimate never loses text


def _split_into_pieces(files: Sequence[CorpusFile], segments: int) -> list[_Piece]:
    per_file = max(1, -(-segments // len(files)))
    pieces = []
    for f in files:
        size = _uncompressed_size(f.path)
        k = max(1, min(per_file, size))
        bounds: list[float] = [size * j // k for j in range(k)] + [float("inf")]
        pieces += [_Piece(f.path, int(bounds[j]), bounds[j + 1]) for j in range(k)]
    return pieces


class _Cursor:
    """Reads one piece's lines. ``offset`` is the next line's start (None: not yet aligned to a line start),
    ``line`` counts the lines read from the piece (the shard rule uses it)."""

    def __init__(self, index: int, piece: _Piece, offset: int | None = None, line: int = 0) -> None:
        self.index, self.piece, self.line = index, piece, line
        self.offset = offset if offset is not None else (0 if piece.start == 0 else None)
        self._handle = None

    def state(self) -> list:
        return [self.index, self.offset, self.line]

    def next_raw(self) -> tuple[int, bytes] | None:
        """(index in the piece, raw bytes) of the piece's next line; None once the piece is done."""
        if self._handle is None:
            self._handle = _open(self.piece.path)
            if self.offset is None:  # skip the end of the line that started in the previous piece
                self._handle.seek(self.piece.start - 1)
                self.offset = self.piece.start - 1 + len(self._handle.readline())
            elif self.offset:
                self._handle.seek(self.offset)
        raw = self._handle.readline() if self.offset < self.piece.end else b""
        if not raw:
            self.close()
            return None
        index = self.line
        self.line += 1
        self.offset += len(raw)
        return index, raw

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _LanguageStream:
    """Token stream of one language for one shard: pieces in a seeded order per epoch, read round-robin into a
    shuffle window, emitted in a seeded permutation, tokenized on the way out.

    State: the reading position when the current window was filled, the window's number and how many of its lines
    were emitted, and the leftover tokens of a line cut at a sequence end. Restoring re-reads the window.
    """

    def __init__(self, language: str, files: Sequence[CorpusFile], shard: int, num_shards: int, encode,
                 shuffle: ShuffleConfig, seed: int, state: dict | None = None) -> None:
        self.language, self.shard, self.num_shards, self.encode = language, shard, num_shards, encode
        self.shuffle, self.seed = shuffle, seed
        self.key = zlib.crc32(language.encode("utf-8"))
        self.pieces = _split_into_pieces(files, shuffle.segments if shuffle.enabled else 1)
        self.width = min(shuffle.segments, len(self.pieces)) if shuffle.enabled else 1
        self.window_size = max(1, shuffle.buffer_lines)
        self.window: list[bytes] = []
        self.emitted = 0
        self.window_index = 0
        self.cursors: list[_Cursor] = []
        state = state or {}
        if state and "window_start" not in state:
            raise DataError("the checkpoint's data position was written by an older mdeberta (unshuffled reader) "
                            "and cannot be continued exactly; start a new run")
        self.buffer: list[int] = list(state.get("buffer", []))
        if state.get("window_start") is None:
            self._set_position({"epoch": 0, "next": 0, "turn": 0, "own": 0, "cursors": None})
            self.window_start: dict[str, Any] | None = None
        else:
            self.window_index = int(state["window_index"])
            self._set_position(state["window_start"])
            self._fill_window()
            self.emitted = int(state["emitted"])

    # -- reading position
    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle.enabled:
            return np.arange(len(self.pieces))
        return np.random.default_rng([self.seed, self.key, epoch]).permutation(len(self.pieces))

    def _set_position(self, position: dict[str, Any]) -> None:
        self.close()
        self.epoch, self.next_piece = int(position["epoch"]), int(position["next"])
        self.turn, self.own = int(position["turn"]), int(position["own"])
        self._order = self.order(self.epoch)
        if position["cursors"] is None:  # start of an epoch: open the first pieces of its order
            self.cursors = [_Cursor(int(i), self.pieces[int(i)]) for i in self._order[: self.width]]
            self.next_piece = len(self.cursors)
        else:
            self.cursors = [_Cursor(int(i), self.pieces[int(i)], o, int(n)) for i, o, n in position["cursors"]]

    def _position(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next": self.next_piece, "turn": self.turn, "own": self.own,
                "cursors": [c.state() for c in self.cursors]}

    def _next_own_line(self) -> bytes:
        """The next non-empty line of this shard, reading the open pieces in turn."""
        while True:
            if not self.cursors:  # every piece of the epoch read: next epoch
                if self.own == 0:
                    raise DataError(
                        f"language {self.language!r} ({', '.join(str(p) for p in {x.path for x in self.pieces})}): "
                        f"data shard {self.shard} of {self.num_shards} found no text in a full pass (the files "
                        "have fewer non-empty lines than shards = ranks x workers, or no text at all); use fewer "
                        "DataLoader workers/processes or more text"
                    )
                self._set_position({"epoch": self.epoch + 1, "next": 0, "turn": 0, "own": 0, "cursors": None})
                continue
            slot = self.turn % len(self.cursors)
            cursor = self.cursors[slot]
            got = cursor.next_raw()
            if got is None:  # piece done: the next piece of the order takes its slot
                if self.next_piece < len(self._order):
                    i = int(self._order[self.next_piece])
                    self.cursors[slot] = _Cursor(i, self.pieces[i])
                    self.next_piece += 1
                else:
                    del self.cursors[slot]
                continue
            self.turn += 1
            index, raw = got
            if (index + cursor.index) % self.num_shards != self.shard:
                continue
            if b"\x00" in raw:  # a stray NUL in real text (../shared's bg corpus has one): skip, don't kill the run
                where = (f"{cursor.piece.path}:{index + 1}" if cursor.piece.start == 0
                         else f"{cursor.piece.path} (line at byte {cursor.offset - len(raw)})")
                logger.warning("%s: NUL byte in the line; line skipped", where)
                continue
            if not raw.strip():
                continue
            self.own += 1
            return raw

    def _fill_window(self) -> None:
        self.window_start = self._position()
        lines = [self._next_own_line() for _ in range(self.window_size)]
        if self.shuffle.enabled:
            perm = np.random.default_rng([self.seed, self.shard, self.key, self.window_index]).permutation(len(lines))
            lines = [lines[i] for i in perm]
        self.window, self.emitted = lines, 0

    # -- tokens
    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "window_start": self.window_start, "window_index": self.window_index,
                "emitted": self.emitted, "buffer": list(self.buffer)}

    def _next_line(self) -> list[int]:
        while True:
            if self.emitted == len(self.window):
                if self.window_start is not None:
                    self.window_index += 1
                self._fill_window()
            raw = self.window[self.emitted]
            self.emitted += 1
            ids = self.encode(raw.decode("utf-8", errors="replace").strip())
            if ids:
                return ids

    def take(self, n: int) -> list[int]:
        while len(self.buffer) < n:
            self.buffer.extend(self._next_line())
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def close(self) -> None:
        for c in self.cursors:
            c.close()


class PackedTextDataset(IterableDataset):
    """Infinite stream of masked, packed batches ``{"input_ids", "attention_mask", "labels"[, "sample_noise"]}``
    of shape (batch_size, max_seq_length), plus ``"_state"`` (the shard position after this batch).

    Wrap it in :class:`PretrainingLoader`, which sets the rank/worker layout and keeps positions for checkpoints.
    """

    def __init__(self, files: Sequence[CorpusFile], tokenizer: Any, max_seq_length: int = 512, batch_size: int = 8,
                 masking: MaskingConfig | None = None, alpha: float = 0.3, seed: int = 42,
                 shuffle: ShuffleConfig | None = None) -> None:
        super().__init__()
        if not files:
            raise DataError("no corpus files")
        if max_seq_length < 8:
            raise DataError(f"max_seq_length must be >= 8, got {max_seq_length}")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.files = list(files)
        self.files_by_language: dict[str, list[CorpusFile]] = {}
        for f in self.files:
            self.files_by_language.setdefault(f.language, []).append(f)
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.masking = masking or MaskingConfig()
        self.shuffle = shuffle or ShuffleConfig()
        self.seed = seed
        sizes: dict[str, float] = {}
        for f in self.files:
            sizes[f.language] = sizes.get(f.language, 0.0) + f.size
        self.probabilities = language_probabilities(sizes, alpha)
        special = sorted({tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
                          tokenizer.mask_token_id, *getattr(tokenizer, "all_special_ids", ())})
        word_start = word_start_table(tokenizer) if self.masking.mode == "whole_word" else None
        self.masker = Masker(self.masking, len(tokenizer), tokenizer.mask_token_id, special, word_start)
        # Layout, set by PretrainingLoader before each iteration.
        self.rank, self.world_size, self.num_workers, self.rotation = 0, 1, 0, 0
        self.start_states: dict[int, dict] = {}

    @property
    def num_shards(self) -> int:
        return self.world_size * max(1, self.num_workers)

    def shard_rng(self, shard: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64([self.seed, shard]))

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def iter_shard(self, shard: int, state: dict | None = None) -> Iterator[dict[str, Any]]:
        """Batches of one shard forever, starting from ``state`` (None: the beginning)."""
        rng = self.shard_rng(shard)
        lang_states = {}
        if state is not None:
            rng.bit_generator.state = state["rng"]
            lang_states = state["languages"]
        langs = list(self.files_by_language)
        probs = np.array([self.probabilities[lang] for lang in langs])
        streams = {lang: _LanguageStream(lang, files, shard, self.num_shards, self._encode, self.shuffle, self.seed,
                                         lang_states.get(lang))
                   for lang, files in self.files_by_language.items()}
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        body = self.max_seq_length - 2
        try:
            while True:
                rows: dict[str, list[np.ndarray]] = {}
                for _ in range(self.batch_size):
                    lang = langs[int(rng.choice(len(langs), p=probs))]
                    ids = np.array([cls_id, *streams[lang].take(body), sep_id], dtype=np.int64)
                    for k, v in self.masker(ids, rng).items():
                        rows.setdefault(k, []).append(v)
                batch: dict[str, Any] = {k: torch.from_numpy(np.stack(v)) for k, v in rows.items()}
                batch["attention_mask"] = torch.ones_like(batch["input_ids"])
                batch["_state"] = {"shard": shard, "state": {
                    "rng": copy.deepcopy(rng.bit_generator.state),
                    "languages": {lang: s.state() for lang, s in streams.items()},
                }}
                yield batch
        finally:
            for s in streams.values():
                s.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers = max(1, self.num_workers)
        worker = info.id if info is not None else 0
        local = (worker + self.rotation) % workers
        shard = self.rank * workers + local
        yield from self.iter_shard(shard, self.start_states.get(shard))


class PretrainingLoader:
    """DataLoader over a :class:`PackedTextDataset` for one rank, with a resumable position.

    Batches come from the workers in round-robin order; the position is the number of consumed batches plus
    each shard's state after its last consumed batch. On resume the worker order is rotated so the next batch
    comes from the right shard.
    """

    def __init__(self, dataset: PackedTextDataset, rank: int = 0, world_size: int = 1, num_workers: int = 0) -> None:
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.consumed = 0
        self.shard_states: dict[int, dict] = {}

    @property
    def num_shards(self) -> int:
        return self.world_size * max(1, self.num_workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ds = self.dataset
        ds.rank, ds.world_size, ds.num_workers = self.rank, self.world_size, self.num_workers
        ds.rotation = self.consumed % max(1, self.num_workers)
        ds.start_states = copy.deepcopy(self.shard_states)
        # Our own generator: creating worker processes must not draw from the global torch RNG (that would
        # shift dropout masks after a resume, which re-creates the loader at a different point).
        generator = torch.Generator().manual_seed(ds.seed)
        loader = DataLoader(ds, batch_size=None, num_workers=self.num_workers, generator=generator,
                            prefetch_factor=2 if self.num_workers else None)
        for batch in loader:
            position = batch.pop("_state")
            self.shard_states[int(position["shard"])] = position["state"]
            self.consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "num_shards": self.num_shards,
                "shards": copy.deepcopy(self.shard_states)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["num_shards"]) != self.num_shards:
            raise DataError(
                f"the checkpoint's data position is for {state['num_shards']} data shards (ranks x workers) but this "
                f"run has {self.num_shards}; resume with the same number of processes and --num-workers"
            )
        self.consumed = int(state["consumed"])
        self.shard_states = {int(k): v for k, v in state["shards"].items()}
