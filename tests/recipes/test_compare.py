"""`mdeberta compare`: paired (McNemar) comparison of fine-tuned runs from their prediction files."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from mdeberta.cli import main
from mdeberta.recipes.compare import (
    PredictionsError,
    compare_groups,
    compare_pair,
    find_predictions,
    group_difference,
    mcnemar_exact_p,
)

GOLD = ["entailment", "neutral", "contradiction"]


def write_predictions(path: Path, correct: dict[str, list[bool]]) -> Path:
    """A predictions file in `mdeberta evaluate`'s format: example i of a language is right iff correct[lang][i]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for lang, flags in correct.items():
        for i, ok in enumerate(flags):
            gold = GOLD[i % 3]
            predicted = gold if ok else GOLD[(i + 1) % 3]
            lines.append(json.dumps({"language": lang, "index": i, "premise": "p", "hypothesis": "h", "gold": gold,
                                     "predicted": predicted, "probabilities": {}}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_exact_mcnemar_p_matches_the_binomial_tail():
    # n = 5 discordant pairs all one way: 2 * P(X <= 0) = 2 / 32.
    assert mcnemar_exact_p(5, 0) == pytest.approx(2 / 32)
    # n = 10, k = 1: 2 * (C(10,0) + C(10,1)) / 2^10.
    assert mcnemar_exact_p(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact_p(9, 1) == mcnemar_exact_p(1, 9)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(4, 4) == 1.0
    # Thousands of discordant pairs stay finite and agree with the normal approximation.
    p = mcnemar_exact_p(2100, 1900)
    z = 200 / math.sqrt(4000)
    assert 0 < p < 0.01 and p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.1)


def test_pair_counts_discordant_examples_per_language(tmp_path):
    # en: candidate right on 8/10, baseline on 5/10, both right on 4 -> candidate-only 4, baseline-only 1.
    cand_en = [True] * 4 + [True] * 4 + [False] + [False]
    base_en = [True] * 4 + [False] * 4 + [True] + [False]
    # fr: identical answers -> no discordant pairs.
    fr = [True, False, True, False]
    cand = write_predictions(tmp_path / "a.jsonl", {"en": cand_en, "fr": fr})
    base = write_predictions(tmp_path / "b.jsonl", {"en": base_en, "fr": fr})
    r = compare_pair(cand, base)
    assert (r.candidate_only, r.baseline_only, r.num_examples) == (4, 1, 14)
    assert r.per_language["en"]["candidate"] == 80 and r.per_language["en"]["baseline"] == 50
    assert r.per_language["en"]["difference"] == 30
    assert r.per_language["fr"]["difference"] == 0 and r.per_language["fr"]["p_value"] == 1
    assert r.candidate_avg == pytest.approx((80 + 50) / 2) and r.baseline_avg == pytest.approx((50 + 50) / 2)
    assert r.difference == pytest.approx(100 * 3 / 14)
    assert r.z == pytest.approx(3 / math.sqrt(5))
    assert r.ci95[0] < r.difference < r.ci95[1]
    assert r.p_value == pytest.approx(mcnemar_exact_p(4, 1))
    # Swapping the roles flips the signs and keeps the p-value.
    s = compare_pair(base, cand)
    assert s.difference == pytest.approx(-r.difference) and s.z == pytest.approx(-r.z) and s.p_value == r.p_value


def test_different_test_sets_are_refused_with_the_example_named(tmp_path):
    a = write_predictions(tmp_path / "a.jsonl", {"en": [True, False, True]})
    b = write_predictions(tmp_path / "b.jsonl", {"en": [True, False]})
    with pytest.raises(PredictionsError, match=r"en/2 only in .*a\.jsonl.*--max-eval-examples"):
        compare_pair(a, b)
    c = tmp_path / "c.jsonl"
    c.write_text(a.read_text().replace('"gold": "entailment"', '"gold": "neutral"', 1))
    with pytest.raises(PredictionsError, match=r"en/0: gold label 'entailment' in .*a\.jsonl but 'neutral'"):
        compare_pair(a, c)


def test_malformed_and_duplicate_lines_name_file_and_line(tmp_path):
    good = write_predictions(tmp_path / "good.jsonl", {"en": [True, True]})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"language": "en"}\n')
    with pytest.raises(PredictionsError, match=r"bad\.jsonl:3: not a prediction record.*KeyError"):
        compare_pair(bad, good)
    dup = tmp_path / "dup.jsonl"
    dup.write_text(good.read_text() + good.read_text().splitlines()[0] + "\n")
    with pytest.raises(PredictionsError, match=r"dup\.jsonl:3: example en/0 appears twice"):
        compare_pair(dup, good)
    with pytest.raises(PredictionsError, match="no such file or folder"):
        find_predictions(tmp_path / "missing")
    with pytest.raises(PredictionsError, match="no predictions_test.jsonl"):
        find_predictions(tmp_path)


def test_groups_compare_every_candidate_with_every_baseline(tmp_path):
    base1 = write_predictions(tmp_path / "random-s1" / "eval" / "predictions_test.jsonl", {"en": [True, False] * 10})
    base2 = write_predictions(tmp_path / "random-s2" / "eval-xnli-test" / "predictions_test.jsonl",
                              {"en": [False, True] * 10})
    write_predictions(tmp_path / "pre-s1" / "eval" / "predictions_test.jsonl", {"en": [True] * 15 + [False] * 5})
    result = compare_groups([tmp_path / "pre-s1"], [base1.parent.parent, base2.parent.parent])
    assert len(result["pairs"]) == 2 and result["candidate_wins"] == 2
    assert result["candidate_group"] == {"runs": 1, "mean_avg": 75.0, "std_avg": 0.0, "min_avg": 75.0, "max_avg": 75.0}
    assert result["baseline_group"]["mean_avg"] == 50.0 and result["baseline_group"]["runs"] == 2
    assert result["per_language"]["en"] == {"mean_difference": 25.0, "candidate_wins": 2, "pairs": 2}
    assert result["group_difference"] == {"difference": 25.0, "se": None, "welch_t": None}


def test_group_difference_is_welch_over_runs():
    cand = {"runs": 3, "mean_avg": 36.0, "std_avg": 0.6}
    base = {"runs": 2, "mean_avg": 35.0, "std_avg": 0.8}
    g = group_difference(cand, base)
    se = math.sqrt(0.36 / 3 + 0.64 / 2)
    assert g["difference"] == pytest.approx(1.0) and g["se"] == pytest.approx(se)
    assert g["welch_t"] == pytest.approx(1.0 / se)


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys, caplog, stderr):
    write_predictions(tmp_path / "base" / "eval" / "predictions_test.jsonl", {"en": [True] * 5 + [False] * 5,
                                                                             "fr": [False] * 10})
    write_predictions(tmp_path / "cand" / "eval" / "predictions_test.jsonl", {"en": [True] * 9 + [False],
                                                                             "fr": [True] * 3 + [False] * 7})
    out = tmp_path / "cmp" / "cmp.json"
    assert main(["compare", "--candidate", str(tmp_path / "cand"), "--baseline", str(tmp_path / "base"),
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| cand | base | 60.00 | 25.00 | +35.00 |" in printed
    assert "| mean difference | +40.0 | +30.0 |" in printed
    assert "group means differ by +35.00 (seed noise unknown: fewer than 2 runs in a group)" in printed
    assert "| cand | 60.0 | 90.0 | 30.0 | –" in printed and "| base | 25.0 | 50.0 | 0.0 | –" in printed
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    saved = json.loads(out.read_text())
    assert saved["pairs"][0]["candidate_only"] == 7 and saved["pairs"][0]["baseline_only"] == 0
    assert out.with_suffix(".md").read_text() == printed
    with caplog.at_level(logging.ERROR, logger="mdeberta.compare"):
        assert main(["compare", "--candidate", str(tmp_path / "cand"), "--baseline", str(tmp_path / "nope")]) == 2
    assert "nope: no such file or folder" in stderr.text
