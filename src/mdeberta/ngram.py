"""A word n-gram language model with interpolated modified Kneser-Ney smoothing: the floor for minimal pairs.

"Pretraining learned grammar" needs a baseline measured on the same text: BLiMP's 5-gram was trained on 3.1B words
of Gigaword, not on the corpus a small model here sees. This is the classic recipe (Chen & Goodman 1998, as KenLM's
``lmplz`` builds it): adjusted counts (raw counts for the highest order and for n-grams that start with ``<s>``,
continuation counts N1+(. w) below), three discounts per order from the count-of-counts, interpolation down to a
unigram distribution that is itself interpolated with the uniform one (so unseen words get mass). KenLM's trainer is
a C++ binary that no package here ships; this one is numpy over 64-bit hashes of the n-grams (sorted arrays, binary
search), so 10M words train in about a minute with 5-grams. Two distinct n-grams share a hash with probability about
n^2 / 2^65 (about 1e-5 for 30M n-grams).

Words: lower-cased runs of letters / digits and single punctuation marks; each line of the corpus is one sequence
``<s> w1 ... wn </s>``. ``mdeberta ngram train`` writes a ``.npz``; ``mdeberta evaluate --task minimal-pairs --model
lm.npz`` scores minimal pairs with it.
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mdeberta.errors import MdebertaError

logger = logging.getLogger("mdeberta.ngram")

WORD = re.compile(r"\w+|[^\w\s]")
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_MULT = np.uint64(0x9E3779B97F4A7C15)
FORMAT = "mdeberta-kneser-ney-v1"


class NgramError(MdebertaError, ValueError):
    """An n-gram model file or corpus that cannot be used; the message names it."""


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads every input bit over the whole 64-bit word."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _extend(prefix: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Hash of (prefix n-gram, next word)."""
    return _mix(prefix * _MULT + ids.astype(np.uint64) + np.uint64(1))


def _ngram_hashes(ids: np.ndarray, order: int) -> list[np.ndarray]:
    """hashes[k - 1][i]: hash of ids[i : i + k] (for every i; n-grams past the end wrap and are masked later)."""
    out = [_extend(np.zeros(len(ids), dtype=np.uint64), ids)]
    for k in range(2, order + 1):
        out.append(_extend(out[-1], np.roll(ids, -(k - 1))))
    return out


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray, default: float = 0.0) -> np.ndarray:
    pos = np.searchsorted(keys, query).clip(max=max(len(keys) - 1, 0))
    found = keys[pos] == query if len(keys) else np.zeros(len(query), dtype=bool)
    return np.where(found, values[pos] if len(keys) else default, default)


def _discounts(counts: np.ndarray) -> np.ndarray:
    """Modified Kneser-Ney discounts D1, D2, D3+ from the count-of-counts n1..n4 (Chen & Goodman)."""
    n = [int((counts == c).sum()) for c in (1, 2, 3, 4)]
    if min(n) == 0:  # too little data for the estimate: plain absolute discounting
        return np.array([0.5, 0.5, 0.5])
    y = n[0] / (n[0] + 2 * n[1])
    d = np.array([1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]])
    return d.clip(0.0, [1.0, 2.0, 3.0])


class KneserNeyLM:
    """Interpolated modified Kneser-Ney n-gram model over words (``train`` / ``save`` / ``load`` / ``score``)."""

    def __init__(self, order: int, vocab: dict[str, int], tables: dict[str, np.ndarray]) -> None:
        self.order, self.vocab, self.tables = order, vocab, tables

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, lines: Iterable[str], order: int = 5, min_count: int = 1) -> KneserNeyLM:
        """Train on an iterable of text lines (each one sequence). Words seen fewer than ``min_count`` times
        become ``<unk>``."""
        if order < 1:
            raise NgramError(f"order must be >= 1, got {order}")
        from collections import Counter

        tokenized = [words(line) for line in lines]
        tokenized = [t for t in tokenized if t]
        if not tokenized:
            raise NgramError("the training text has no words")
        freq = Counter(w for t in tokenized for w in t)
        vocab = {BOS: 0, EOS: 1, UNK: 2}
        for w, c in sorted(freq.items(), key=lambda x: (-x[1], x[0])):
            if c >= min_count:
                vocab.setdefault(w, len(vocab))
        seqs = [[0, *(vocab.get(w, 2) for w in t), 1] for t in tokenized]
        ids = np.fromiter((i for s in seqs for i in s), dtype=np.int64)
        line = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
        hashes = _ngram_hashes(ids, order)
        tables: dict[str, np.ndarray] = {}
        unique: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per order: keys, first position, raw count
        for k in range(1, order + 1):
            valid = np.zeros(len(ids), dtype=bool)
            valid[: len(ids) - k + 1] = line[: len(ids) - k + 1] == line[k - 1:]
            valid &= np.roll(ids, -(k - 1)) != 0  # the predicted (last) word is never <s>
            keys, first, raw = np.unique(hashes[k - 1][valid], return_index=True, return_counts=True)
            unique.append((keys, np.flatnonzero(valid)[first], raw))
        for k in range(1, order + 1):
            keys, first, raw = unique[k - 1]
            if k == order:
                adjusted = raw.astype(np.float64)
            else:  # continuation counts: distinct words seen before this n-gram, or raw counts after <s>
                up_keys, up_first, _ = unique[k]
                suffix, cont = np.unique(hashes[k - 1][up_first + 1], return_counts=True)
                adjusted = _lookup(suffix, cont.astype(np.float64), keys)
                adjusted = np.where(ids[first] == 0, raw, adjusted)
            d = _discounts(adjusted)
            tables[f"keys{k}"], tables[f"count{k}"], tables[f"discount{k}"] = keys, adjusted, d
            discount = np.where(adjusted >= 3, d[2], d[adjusted.astype(np.int64).clip(1, 3) - 1])
            if k == 1:
                history = np.zeros(len(keys), dtype=np.uint64)
            else:
                history = hashes[k - 2][first]
            h_keys, inverse = np.unique(history, return_inverse=True)
            tables[f"hist{k}"] = h_keys
            tables[f"total{k}"] = np.bincount(inverse, weights=adjusted, minlength=len(h_keys))
            tables[f"backoff{k}"] = np.bincount(inverse, weights=discount, minlength=len(h_keys))
            tables[f"discounted{k}"] = (adjusted - discount).clip(min=0.0)
        logger.info("%d-gram model: %d words, %d types kept; n-grams per order %s", order, len(ids), len(vocab),
                    [len(u[0]) for u in unique])
        return cls(order, vocab, tables)

    @classmethod
    def train_files(cls, paths: Sequence[str | os.PathLike], order: int = 5, min_count: int = 1) -> KneserNeyLM:
        """Train on text files (``.gz`` too), or folders of them, one sequence per line."""
        files: list[Path] = []
        for p in map(Path, paths):
            if p.is_dir():
                files += sorted(f for f in p.iterdir() if f.name.endswith((".txt", ".txt.gz")))
            elif p.is_file():
                files.append(p)
            else:
                raise NgramError(f"{p}: no such file or folder")
        if not files:
            raise NgramError(f"no .txt / .txt.gz files in {[str(p) for p in paths]}")

        def lines() -> Iterable[str]:
            for f in files:
                raw = gzip.open(f, "rb") if f.name.endswith(".gz") else open(f, "rb")
                with io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as text:
                    yield from text

        return cls.train(lines(), order, min_count)

    # ------------------------------------------------------------------ scoring
    def _ids(self, text: str) -> np.ndarray:
        return np.array([0, *(self.vocab.get(w, 2) for w in words(text)), 1], dtype=np.int64)

    def token_log_probs(self, text: str) -> np.ndarray:
        """Natural-log probability of every word of ``text`` and of ``</s>`` given its history."""
        return self.id_log_probs(self._ids(text))

    def id_log_probs(self, ids: np.ndarray) -> np.ndarray:
        """log P(ids[j] | ids[:j]) for j >= 1 (``ids[0]`` is ``<s>``)."""
        hashes = _ngram_hashes(ids, self.order)
        t = self.tables
        n = len(ids)
        targets = np.arange(1, n)  # predicted positions
        prob = None
        for k in range(1, self.order + 1):
            start = targets - (k - 1)
            usable = start >= 0
            gram = hashes[k - 1][start.clip(min=0)]
            history = hashes[k - 2][start.clip(min=0)] if k > 1 else np.zeros(len(targets), dtype=np.uint64)
            total = _lookup(t[f"hist{k}"], t[f"total{k}"], history)
            backoff = _lookup(t[f"hist{k}"], t[f"backoff{k}"], history)
            discounted = _lookup(t[f"keys{k}"], t[f"discounted{k}"], gram)
            lower = np.full(len(targets), 1.0 / len(self.vocab)) if prob is None else prob
            with np.errstate(divide="ignore", invalid="ignore"):
                here = (discounted + backoff * lower) / total
            mix = usable & (total > 0)
            prob = np.where(mix, here, lower)
        return np.log(prob)

    def score(self, text: str) -> float:
        """log P(text) in nats, ``<s>`` ... ``</s>`` included."""
        return float(self.token_log_probs(text).sum())

    def scores(self, texts: Sequence[str]) -> list[float]:
        return [self.score(t) for t in texts]

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        from mdeberta.files import atomic_save

        path = Path(path)
        vocab = np.array(sorted(self.vocab, key=self.vocab.get), dtype=object)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, format=np.array(FORMAT), order=np.array(self.order),
                                    vocab=np.array("\n".join(vocab)), **self.tables)

        atomic_save(path, write)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> KneserNeyLM:
        try:
            data = np.load(path, allow_pickle=False)
            if str(data["format"]) != FORMAT:
                raise NgramError(f"{path}: not a {FORMAT} file (format {data['format']})")
            order = int(data["order"])
            vocab = {w: i for i, w in enumerate(str(data["vocab"]).split("\n"))}
            tables = {k: data[k] for k in data.files if k not in ("format", "order", "vocab")}
        except (OSError, KeyError, ValueError) as e:
            if isinstance(e, NgramError):
                raise
            raise NgramError(f"{path}: not a readable n-gram model ({e})") from e
        return cls(order, vocab, tables)


def is_ngram_file(path: str | os.PathLike) -> bool:
    return str(path).endswith(".npz") and Path(path).is_file()


# --------------------------------------------------------------------------- CLI
def cmd_train(args: argparse.Namespace) -> int:
    import time

    start = time.perf_counter()
    lm = KneserNeyLM.train_files(args.input, args.order, args.min_count)
    path = lm.save(args.output)
    print(f"wrote {path}: {args.order}-gram, {len(lm.vocab)} words ({time.perf_counter() - start:.0f} s)")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ngram", help="word n-gram LM (Kneser-Ney): the baseline for minimal pairs")
    sub = p.add_subparsers(dest="ngram_command", required=True)
    t = sub.add_parser("train", help="train an interpolated modified Kneser-Ney model on text files",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--input", nargs="+", required=True, help="text files (.txt, .txt.gz) or folders of them")
    t.add_argument("--output", required=True, help="model file (.npz)")
    t.add_argument("--order", type=int, default=5)
    t.add_argument("--min-count", type=int, default=1, help="rarer words become <unk>")
    t.set_defaults(func=cmd_train)


def perplexity(lm: KneserNeyLM, texts: Sequence[str]) -> float:
    logps = np.concatenate([lm.token_log_probs(t) for t in texts])
    return math.exp(-float(logps.mean()))
