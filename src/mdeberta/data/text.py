"""Streaming multilingual text for pretraining: read, shuffle, tokenize on the fly, pack, mask - in DataLoader workers.

Corpus: files, folders, hub datasets in several formats, one or more sources with weights
(:mod:`mdeberta.data.sources`: formats, documents, pieces). Nothing is loaded into memory: each data *shard* (one
per rank x DataLoader worker) streams every source and keeps the documents whose index within their piece falls
in its shard (``(index + piece) % S == s``; hub datasets are split by ``datasets`` itself).

Shuffling (DeBERTa and ELECTRA train on shuffled documents; corpora are often stored in source order, e.g. one
book or one source after another). Per language, source and epoch the files are cut into pieces (``segments``
per language), the pieces are visited in a seeded random order, and up to ``segments`` of them are read at once,
round-robin, into a *shuffle window* of ``buffer_lines`` documents, which is emitted in a seeded random
permutation (a language with several sources fills each window slot from a source drawn in proportion to weight x
size). So even the first batch mixes text from all over a source-ordered file, memory stays at one window per
language, and the state needed for exact resumption is small: where each open piece stood when the window was
filled, and how many of its documents were emitted (the window is re-read and re-permuted on resume instead of
being written into every checkpoint).

Each packed sequence is ``[CLS] t1 ... t_{L-2} [SEP]`` from ONE language, drawn with probability
``p(lang) ∝ n_lang ** alpha`` (XLM-R's rule: alpha < 1 flattens the distribution and upsamples thin
languages; n_lang sums size x weight over the language's files). Documents are concatenated; one longer than a
sequence continues in the next sequence of that language, so no text is dropped. Masking happens here too (numpy,
in the worker), as does the uniform noise the RTD generator uses to sample replacements, so the whole batch is a
deterministic function of the shard's state.

Determinism and resumption: a shard's state (its RNG, and per language the reading position, window and leftover
tokens) travels with every batch; :class:`PretrainingLoader` keeps the state of the last consumed batch of each
shard, so a checkpoint continues the exact stream. The global stream depends only on the number of shards S
(= world_size x max(1, num_workers)): 1 process x 2 workers and 2 processes x 1 worker read the same batches.
"""

from __future__ import annotations

import copy
import logging
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mdeberta.data.sources import (
    SIZE_BY,
    CorpusFile,
    Cursor,
    DataError,
    Piece,
    SourceOptions,
    discover_corpus,
    make_cursor,
    split_into_pieces,
)

logger = logging.getLogger("mdeberta.data")

MASKING_MODES = ("token", "whole_word", "ngram", "original")
OBJECTIVES = ("rtd", "mlm")

__all__ = ["SIZE_BY", "CorpusFile", "DataError", "SourceOptions", "discover_corpus"]


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
    80% [MASK] / 10% random / 10% unchanged. ``mode``: token, whole_word (all pieces of a word), ngram
    (spans of 1..max_ngram tokens) or original (DeBERTa's ``NGramMaskGenerator`` with its default max_gram 1: one
    random token in each window of int(1 / mask_prob) = 6 tokens, windows taken in order until round(mask_prob x
    the sequence's tokens, [CLS] and [SEP] included) are chosen, at most ceil(max_seq_length x mask_prob / 10) x 10,
    80 at 512; the windows past the budget stay unmasked, as in the original)."""

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
        if mode == "original":
            positions = np.flatnonzero(candidates)
            budget = min(int(math.ceil(len(ids) * self.config.mask_prob / 10)) * 10,
                         max(1, int(round((n_cand + 2) * self.config.mask_prob))))
            window = int(1 / self.config.mask_prob)
            for offset in range(0, n_cand, window):
                if int(chosen.sum()) >= budget:
                    break
                chosen[positions[offset + int(rng.integers(0, min(window, n_cand - offset)))]] = True
            return chosen
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
    """How each language's documents are shuffled (module docstring). ``buffer_lines <= 1`` turns shuffling off:
    the files are read in the order given, front to back, as stored (what the reader did before it shuffled).

    ``buffer_lines``: documents (lines of a text file) per language and shard permuted together (memory: one window
    of raw text each). ``segments``: pieces per language and source (split evenly over its files, at least one per
    file; a Parquet row group or a hub stream is one piece) read at the same time, so one window holds documents
    from that many places of the corpus.
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


class _SourceStream:
    """The documents of one language from one source for one shard: pieces in a seeded order per epoch, up to
    ``width`` read at once, in turn. Position: epoch, next piece of the order, whose turn it is, documents of this
    shard so far in the epoch, and each open cursor's state."""

    def __init__(self, language: str, files: Sequence[CorpusFile], shard: int, num_shards: int,
                 shuffle: ShuffleConfig, seed: int) -> None:
        self.language, self.shard, self.num_shards, self.shuffle = language, shard, num_shards, shuffle
        source = files[0].source
        self.key = zlib.crc32((language if source == 0 else f"{language}:{source}").encode("utf-8"))
        self.seed = seed
        self.pieces: list[Piece] = split_into_pieces(files, shuffle.segments if shuffle.enabled else 1)
        self.width = min(shuffle.segments, len(self.pieces)) if shuffle.enabled else 1
        self.size = sum(f.size * f.weight for f in files)
        self.cursors: list[Cursor] = []
        self.set_position(None)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle.enabled:
            return np.arange(len(self.pieces))
        return np.random.default_rng([self.seed, self.key, epoch]).permutation(len(self.pieces))

    def _cursor(self, i: int, state: list | None = None) -> Cursor:
        return make_cursor(i, self.pieces[i], state, self.shard, self.num_shards)

    def set_position(self, position: dict[str, Any] | None) -> None:
        """Continue from ``position`` (None: the start of epoch 0)."""
        self.close()
        position = position or {"epoch": 0, "next": 0, "turn": 0, "own": 0, "cursors": None}
        self.epoch, self.next_piece = int(position["epoch"]), int(position["next"])
        self.turn, self.own = int(position["turn"]), int(position["own"])
        self._order = self.order(self.epoch)
        if position["cursors"] is None:  # start of an epoch: open the first pieces of its order
            self.cursors = [self._cursor(int(i)) for i in self._order[: self.width]]
            self.next_piece = len(self.cursors)
        else:
            self.cursors = [self._cursor(int(state[0]), state) for state in position["cursors"]]

    def position(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next": self.next_piece, "turn": self.turn, "own": self.own,
                "cursors": [c.state() for c in self.cursors]}

    def next_document(self) -> str:
        """The next non-empty document of this language and shard, reading the open pieces in turn."""
        while True:
            if not self.cursors:  # every piece of the epoch read: next epoch
                if self.own == 0:
                    raise DataError(
                        f"language {self.language!r} ({', '.join(sorted({str(p.file.path) for p in self.pieces}))})"
                        f": data shard {self.shard} of {self.num_shards} found no text in a full pass (the files "
                        "have fewer non-empty lines than shards = ranks x workers, or no text at all); use fewer "
                        "DataLoader workers/processes or more text"
                    )
                self.set_position({"epoch": self.epoch + 1, "next": 0, "turn": 0, "own": 0, "cursors": None})
                continue
            slot = self.turn % len(self.cursors)
            cursor = self.cursors[slot]
            got = cursor.next_document()
            if got is None:  # piece done: the next piece of the order takes its slot
                if self.next_piece < len(self._order):
                    self.cursors[slot] = self._cursor(int(self._order[self.next_piece]))
                    self.next_piece += 1
                else:
                    del self.cursors[slot]
                continue
            self.turn += 1
            index, text, language = got
            if not cursor.presharded and (index + cursor.index) % self.num_shards != self.shard:
                continue
            if language is not None and language != self.language:  # a language field routes the record
                continue
            if not text.strip():
                continue
            self.own += 1
            return text

    def close(self) -> None:
        for c in self.cursors:
            c.close()


class _LanguageStream:
    """Token stream of one language for one shard: documents from its sources (drawn by weight x size when there
    are several) into a shuffle window, emitted in a seeded permutation, tokenized on the way out.

    State: the reading position of every source when the current window was filled, the window's number and how
    many of its documents were emitted, and the leftover tokens of a document cut at a sequence end. Restoring
    re-reads the window.
    """

    def __init__(self, language: str, files: Sequence[CorpusFile], shard: int, num_shards: int, encode,
                 shuffle: ShuffleConfig, seed: int, state: dict | None = None) -> None:
        self.language, self.shard, self.encode, self.shuffle, self.seed = language, shard, encode, shuffle, seed
        self.key = zlib.crc32(language.encode("utf-8"))
        by_source: dict[int, list[CorpusFile]] = {}
        for f in files:
            by_source.setdefault(f.source, []).append(f)
        self.sources = [_SourceStream(language, group, shard, num_shards, shuffle, seed)
                        for group in by_source.values()]
        sizes = np.array([s.size for s in self.sources])
        self.source_p = sizes / sizes.sum()
        self.window_size = max(1, shuffle.buffer_lines)
        self.window: list[str] = []
        self.emitted = 0
        self.window_index = 0
        state = state or {}
        if state and "window_start" not in state:
            raise DataError("the checkpoint's data position was written by an older mdeberta (unshuffled reader) "
                            "and cannot be continued exactly; start a new run")
        self.buffer: list[int] = list(state.get("buffer", []))
        self.window_start: list[dict[str, Any]] | None = None
        if state.get("window_start") is not None:
            self.window_index = int(state["window_index"])
            for source, position in zip(self.sources, state["window_start"], strict=True):
                source.set_position(position)
            self._fill_window()
            self.emitted = int(state["emitted"])

    def _fill_window(self) -> None:
        self.window_start = [s.position() for s in self.sources]
        rng = np.random.default_rng([self.seed, self.shard, self.key, self.window_index])
        if len(self.sources) == 1:
            docs = [self.sources[0].next_document() for _ in range(self.window_size)]
        else:
            picks = rng.choice(len(self.sources), size=self.window_size, p=self.source_p)
            docs = [self.sources[int(i)].next_document() for i in picks]
        if self.shuffle.enabled:
            docs = [docs[i] for i in rng.permutation(len(docs))]
        self.window, self.emitted = docs, 0

    def state(self) -> dict[str, Any]:
        return {"epoch": self.sources[0].epoch, "window_start": self.window_start,
                "window_index": self.window_index, "emitted": self.emitted, "buffer": list(self.buffer)}

    def _next_document_ids(self) -> list[int]:
        while True:
            if self.emitted == len(self.window):
                if self.window_start is not None:
                    self.window_index += 1
                self._fill_window()
            text = self.window[self.emitted]
            self.emitted += 1
            ids = [t for line in text.splitlines() if line.strip() for t in self.encode(line.strip())]
            if ids:
                return ids

    def take(self, n: int) -> list[int]:
        while len(self.buffer) < n:
            self.buffer.extend(self._next_document_ids())
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def close(self) -> None:
        for s in self.sources:
            s.close()


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
            sizes[f.language] = sizes.get(f.language, 0.0) + f.size * f.weight
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
