"""The scores the tasks report, in plain numpy (the tests check each against scikit-learn / scipy, which define
them, on random and hand-made cases; neither is a dependency of the library).

Conventions are those of scikit-learn: an F1 whose precision and recall are both undefined (a class never
predicted and never present) is 0; Matthews correlation of a constant prediction is 0; Pearson / Spearman of a
constant vector is NaN (scipy's answer, and the honest one: the correlation is undefined).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mdeberta.errors import UsageError


def accuracy(gold: Sequence[int], predicted: Sequence[int]) -> float:
    """Share of exact matches, in percent."""
    g, p = np.asarray(gold), np.asarray(predicted)
    _same_length(g, p)
    return 100.0 * float((g == p).mean()) if len(g) else 0.0


def confusion(gold: Sequence[int], predicted: Sequence[int], num_labels: int) -> np.ndarray:
    """(num_labels, num_labels) counts: row = gold, column = predicted."""
    g, p = np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    _same_length(g, p)
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (g, p), 1)
    return matrix


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn  # F1 = 2TP / (2TP + FP + FN); 0 where nothing was predicted or present
    return np.divide(2 * tp, denominator, out=np.zeros(tp.shape, dtype=np.float64), where=denominator > 0)


def f1_scores(gold: Sequence[int], predicted: Sequence[int], num_labels: int) -> dict[str, float]:
    """Macro F1 (the unweighted mean over the ``num_labels`` classes, absent ones included, as scikit-learn with
    ``labels=range(num_labels)``) and micro F1 (= accuracy for single-label data), in percent."""
    matrix = confusion(gold, predicted, num_labels)
    tp = np.diag(matrix).astype(np.float64)
    fp, fn = matrix.sum(0) - tp, matrix.sum(1) - tp
    return {"macro_f1": 100.0 * float(_f1(tp, fp, fn).mean()),
            "micro_f1": 100.0 * float(_f1(tp.sum(), fp.sum(), fn.sum()))}


def matthews_correlation(gold: Sequence[int], predicted: Sequence[int], num_labels: int) -> float:
    """Matthews correlation coefficient, multi-class (Gorodkin's R_K, what scikit-learn computes); CoLA's metric.
    In [-1, 1]; 0 when either side is constant."""
    c = confusion(gold, predicted, num_labels).astype(np.float64)
    t, p = c.sum(1), c.sum(0)  # times each class truly occurred / was predicted
    n, correct = c.sum(), np.trace(c)
    cov_yp = correct * n - t @ p
    cov_yy, cov_pp = n * n - t @ t, n * n - p @ p
    if cov_yy * cov_pp == 0:
        return 0.0
    return float(cov_yp / np.sqrt(cov_yy * cov_pp))


def multi_label_f1(gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Micro / macro F1 of (N, K) 0/1 matrices (labels assigned per example), in percent; an example may have
    none. Macro averages over all K labels (scikit-learn's ``average='macro'``), micro pools every decision."""
    g, p = np.asarray(gold, dtype=bool), np.asarray(predicted, dtype=bool)
    if g.shape != p.shape:
        raise UsageError(f"gold {g.shape} and predicted {p.shape} differ in shape")
    tp = (g & p).sum(0).astype(np.float64)
    fp, fn = (~g & p).sum(0).astype(np.float64), (g & ~p).sum(0).astype(np.float64)
    return {"micro_f1": 100.0 * float(_f1(tp.sum(), fp.sum(), fn.sum())),
            "macro_f1": 100.0 * float(_f1(tp, fp, fn).mean()),
            "exact_match": 100.0 * float((g == p).all(1).mean()) if len(g) else 0.0}


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _same_length(a, b)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..N, ties sharing their mean rank (scipy's ``rankdata(method='average')``)."""
    a = np.asarray(x, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    sorted_values = a[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]  # first index of each run of equal values
    ends = np.r_[starts[1:], len(a)]
    ranks = np.empty(len(a), dtype=np.float64)
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0  # mean of ranks s+1 .. e
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the average ranks (ties handled as scipy does)."""
    return pearson(average_ranks(x), average_ranks(y))


def regression_scores(gold: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman in percent (GLUE's STS-B convention), mean squared error as is."""
    g, p = np.asarray(gold, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    _same_length(g, p)
    return {"pearson": 100.0 * pearson(g, p), "spearman": 100.0 * spearman(g, p),
            "mse": float(((g - p) ** 2).mean()) if len(g) else 0.0}


def classification_scores(gold: Sequence[int], predicted: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy, macro F1 (percent) and Matthews correlation (x 100, as GLUE reports CoLA)."""
    return {"accuracy": accuracy(gold, predicted), "macro_f1": f1_scores(gold, predicted, num_labels)["macro_f1"],
            "mcc": 100.0 * matthews_correlation(gold, predicted, num_labels)}


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise UsageError(f"{len(a)} gold values but {len(b)} predictions")


__all__ = ["accuracy", "average_ranks", "classification_scores", "confusion", "f1_scores", "matthews_correlation",
           "multi_label_f1", "pearson", "regression_scores", "spearman"]
