"""The Kneser-Ney n-gram baseline against a direct dictionary implementation of the same equations."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from mdeberta.ngram import BOS, EOS, KneserNeyLM, NgramError, perplexity, words

LINES = ["the cat sat on the mat .", "the dog sat on the log .", "a cat and a dog .", "the cat is here .",
         "the dogs are here .", "a mat is here .", "the cat sat on a dog ."] * 3 + ["one more cat ."]


def reference_kn(lines: list[str], order: int):
    """Interpolated modified Kneser-Ney written from Chen & Goodman with plain dicts (slow, obviously right)."""
    seqs = [[BOS, *words(line), EOS] for line in lines]
    vocab = [BOS, EOS, "<unk>", *sorted({w for s in seqs for w in s[1:-1]})]
    raw = [Counter() for _ in range(order + 1)]
    for s in seqs:
        for k in range(1, order + 1):
            for i in range(len(s) - k + 1):
                gram = tuple(s[i:i + k])
                if gram[-1] != BOS:
                    raw[k][gram] += 1
    adjusted = [Counter() for _ in range(order + 1)]
    adjusted[order] = raw[order]
    for k in range(1, order):
        left = defaultdict(set)
        for gram in raw[k + 1]:
            left[gram[1:]].add(gram[0])
        for gram, c in raw[k].items():
            adjusted[k][gram] = c if gram[0] == BOS else len(left[gram])
    discounts = {}
    for k in range(1, order + 1):
        n = [sum(1 for c in adjusted[k].values() if c == j) for j in (1, 2, 3, 4)]
        if min(n) == 0:
            discounts[k] = (0.5, 0.5, 0.5)
        else:
            y = n[0] / (n[0] + 2 * n[1])
            discounts[k] = (1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2])

    def d(k: int, c: float) -> float:
        return discounts[k][min(int(c), 3) - 1]

    def prob(history: tuple[str, ...], word: str) -> float:
        p = 1.0 / len(vocab)
        for k in range(1, order + 1):
            h = history[len(history) - (k - 1):] if k > 1 else ()
            if k > 1 and len(history) < k - 1:
                break
            grams = {g: c for g, c in adjusted[k].items() if g[:-1] == h}
            total = sum(grams.values())
            if total == 0:
                continue
            backoff = sum(d(k, c) for c in grams.values())
            c = grams.get((*h, word), 0)
            p = (max(c - d(k, c), 0.0) if c else 0.0) / total + backoff / total * p
        return p

    return vocab, prob


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_matches_reference_kneser_ney(order: int) -> None:
    lm = KneserNeyLM.train(LINES, order=order)
    vocab, prob = reference_kn(LINES, order)
    assert set(lm.vocab) == set(vocab)
    histories = [(BOS,), (BOS, "the"), (BOS, "the", "cat"), (BOS, "a", "cat", "sat"), (BOS, "zebra"),
                 (BOS, "the", "zebra", "sat", "on")]
    for history in histories:
        ids = [lm.vocab.get(w, lm.vocab["<unk>"]) for w in history]
        total = 0.0
        for word in vocab[1:]:  # every word but <s>
            ours = math.exp(lm.id_log_probs(np.array([*ids, lm.vocab[word]]))[-1])
            ref_history = tuple(w if w in lm.vocab else "<unk>" for w in history)
            assert ours == pytest.approx(prob(ref_history, word), rel=1e-9, abs=1e-12), (history, word)
            total += ours
        # Every distribution sums to 1 but for the uniform share of <s>, which is never predicted.
        assert 1 - 1 / len(vocab) - 1e-9 <= total <= 1 + 1e-9


def test_scores_sentences_and_round_trips(tmp_path) -> None:
    lm = KneserNeyLM.train(LINES, order=3)
    assert lm.score("the cat sat on the mat .") > lm.score("the mat sat on the cat the .")
    assert lm.score("The cat is here.") == lm.score("the cat is here .")  # lower-cased, punctuation split
    path = lm.save(tmp_path / "lm.npz")
    again = KneserNeyLM.load(path)
    for text in ("the cat is here .", "a zebra sat .", ""):
        assert again.score(text) == lm.score(text)
    assert perplexity(lm, LINES[:3]) < perplexity(lm, ["zebra giraffe okapi ."])


def test_bad_input(tmp_path) -> None:
    with pytest.raises(NgramError, match="no words"):
        KneserNeyLM.train(["", "  "], order=3)
    with pytest.raises(NgramError, match="order"):
        KneserNeyLM.train(LINES, order=0)
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(NgramError, match="x.npz"):
        KneserNeyLM.load(tmp_path / "x.npz")
    with pytest.raises(NgramError, match="no such file"):
        KneserNeyLM.train_files([tmp_path / "missing.txt"])
