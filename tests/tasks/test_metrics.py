"""The tasks' metrics against the libraries that define them: scikit-learn (accuracy, F1, MCC), scipy (Pearson,
Spearman), seqeval (entity F1, IOB2 / IOBES) and the official SQuAD v1.1 evaluation (reproduced below), on random
and hand-made cases."""

from __future__ import annotations

import collections
import random
import re
import string

import numpy as np
import pytest

from mdeberta.data.ner import entity_scores
from mdeberta.data.qa import exact_match, f1_score
from mdeberta.tasks import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is a test extra")
stats = pytest.importorskip("scipy.stats", reason="scipy is a test extra")


def _cases(seed: int = 0):
    rng = np.random.default_rng(seed)
    for n, k in ((1, 2), (5, 3), (37, 4), (200, 7), (64, 2)):
        gold = rng.integers(0, k, n)
        yield gold, rng.integers(0, k, n), k  # random
        yield gold, gold.copy(), k  # perfect
        yield gold, np.zeros(n, dtype=int), k  # constant prediction (MCC 0, absent classes)
        flipped = gold.copy()
        flipped[: n // 3] = (flipped[: n // 3] + 1) % k
        yield gold, flipped, k


def test_classification_metrics_equal_scikit_learn():
    for gold, pred, k in _cases():
        labels = list(range(k))
        assert metrics.accuracy(gold, pred) == pytest.approx(100 * sklearn_metrics.accuracy_score(gold, pred))
        f1 = metrics.f1_scores(gold, pred, k)
        assert f1["macro_f1"] == pytest.approx(100 * sklearn_metrics.f1_score(
            gold, pred, labels=labels, average="macro", zero_division=0))
        assert f1["micro_f1"] == pytest.approx(100 * sklearn_metrics.f1_score(
            gold, pred, labels=labels, average="micro", zero_division=0))
        assert metrics.matthews_correlation(gold, pred, k) == pytest.approx(
            sklearn_metrics.matthews_corrcoef(gold, pred), abs=1e-12)


def test_hand_made_classification_values():
    gold, pred = [0, 0, 1, 1], [0, 1, 1, 1]
    assert metrics.accuracy(gold, pred) == 75.0
    # class 0: P 1, R 0.5, F1 2/3; class 1: P 2/3, R 1, F1 0.8
    assert metrics.f1_scores(gold, pred, 2)["macro_f1"] == pytest.approx(100 * (2 / 3 + 0.8) / 2)
    assert metrics.matthews_correlation(gold, pred, 2) == pytest.approx(1 / np.sqrt(3))
    assert metrics.matthews_correlation([0, 1, 0, 1], [1, 0, 1, 0], 2) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="3 gold values but 2 predictions"):
        metrics.accuracy([0, 1, 1], [0, 1])


def test_multi_label_f1_equals_scikit_learn():
    rng = np.random.default_rng(1)
    for n, k, p in ((1, 3, 0.5), (20, 5, 0.3), (100, 8, 0.1), (50, 4, 0.9)):
        gold, pred = rng.random((n, k)) < p, rng.random((n, k)) < p
        ours = metrics.multi_label_f1(gold, pred)
        for average in ("micro", "macro"):
            assert ours[f"{average}_f1"] == pytest.approx(100 * sklearn_metrics.f1_score(
                gold, pred, average=average, zero_division=0))
        assert ours["exact_match"] == pytest.approx(100 * sklearn_metrics.accuracy_score(gold, pred))
    empty = np.zeros((3, 2), dtype=bool)
    assert metrics.multi_label_f1(empty, empty)["micro_f1"] == 0.0  # scikit-learn's zero_division=0


def test_correlations_equal_scipy():
    rng = np.random.default_rng(2)
    for n in (3, 10, 101):
        x, y = rng.normal(size=n), rng.normal(size=n)
        ties_x, ties_y = rng.integers(0, 4, n).astype(float), rng.integers(0, 3, n).astype(float)
        for a, b in ((x, y), (x, 2 * x + 1), (ties_x, ties_y), (ties_x, x)):
            assert metrics.pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
            assert metrics.spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)
        assert np.allclose(metrics.average_ranks(ties_x), stats.rankdata(ties_x))
    assert np.isnan(metrics.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))  # undefined, as in scipy
    scores = metrics.regression_scores([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert scores["mse"] == pytest.approx(1 / 3) and scores["spearman"] == pytest.approx(100.0)


def _random_tags(rng: random.Random, scheme: str, n: int) -> list[str]:
    prefixes = "BIO" if scheme == "IOB2" else "BIOES"
    return [(p if p == "O" else f"{p}-{rng.choice(['PER', 'LOC', 'ORG'])}") for p in rng.choices(prefixes, k=n)]


@pytest.mark.parametrize("scheme", ["IOB2", "IOBES"])
def test_entity_f1_equals_seqeval(scheme):
    seqeval = pytest.importorskip("seqeval.metrics", reason="seqeval is a test extra")
    rng = random.Random(3)
    for _ in range(40):
        lengths = [rng.randint(1, 12) for _ in range(rng.randint(1, 6))]
        gold = [_random_tags(rng, scheme, n) for n in lengths]
        pred = [_random_tags(rng, scheme, n) if rng.random() < 0.7 else list(g) for g, n in zip(gold, lengths)]
        ours = entity_scores(gold, pred)
        # seqeval's default mode (conlleval chunking, which also reads E- and S-), the semantics of our chunker
        assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, pred, zero_division=0))
        assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, pred, zero_division=0))
        assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, pred, zero_division=0))


# The official SQuAD v1.1 evaluation script's functions (evaluate-v1.1.py), verbatim in substance.
def _squad_normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _squad_f1(prediction: str, ground_truth: str) -> float:
    p, g = _squad_normalize(prediction).split(), _squad_normalize(ground_truth).split()
    common = collections.Counter(p) & collections.Counter(g)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(p), num_same / len(g)
    return 2 * precision * recall / (precision + recall)


def test_squad_metric_equals_the_official_script():
    hand = [("the Eiffel Tower", "Eiffel Tower"), ("Paris, France.", "paris france"), ("in 1889", "1889"),
            ("An apple a day", "apple day"), ("", "x"), ("cats and dogs", "dogs and cats"), ("a", "the")]
    rng = random.Random(4)
    words = ["the", "a", "Tower", "tower,", "Paris", "an", "1889", "x.", "(y)", "dog's"]
    randoms = [(" ".join(rng.choices(words, k=rng.randint(0, 4))), " ".join(rng.choices(words, k=rng.randint(1, 4))))
               for _ in range(300)]
    for prediction, gold in hand + randoms:
        assert f1_score(prediction, gold) == pytest.approx(_squad_f1(prediction, gold)), (prediction, gold)
        assert exact_match(prediction, gold) == float(_squad_normalize(prediction) == _squad_normalize(gold))
