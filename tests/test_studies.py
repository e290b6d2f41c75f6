"""The study scripts plan their commands (dry run) and summarise what exists (no training here)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def test_budget_curve_plans_and_summarises(tmp_path):
    out = tmp_path / "budget"
    (out / "gdes" / "checkpoints").mkdir(parents=True)
    (out / "gdes" / "checkpoints" / "step-00000256.pt").write_bytes(b"")
    (out / "gdes" / "checkpoints" / "step-00000768.pt").write_bytes(b"")  # between two doubling budgets
    dry = subprocess.run([sys.executable, str(STUDIES / "budget_curve.py"), "--output", str(out), "--dry-run",
                          "--shared", str(tmp_path / "shared"), "--finetune", "--seeds", "1"],
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert any("pretrain" in x and "--resume" in x and "--keep-last 0" in x for x in lines)
    assert any("export-checkpoint" in x and "--step 256" in x for x in lines)
    assert any("export-checkpoint" in x and "--step 0" in x for x in lines)
    assert not any("--step 512" in x for x in lines)  # no such checkpoint yet
    # BLiMP and word order: gdes x 2 parts x 2 steps, mlm step 0, the 5-gram
    assert sum("--task minimal-pairs" in x for x in lines) == 2 * (2 * 2 + 1 + 1)
    assert sum("word_order/pairs.tsv" in x for x in lines) == 2 * 2 + 1 + 1
    assert any(" -m mdeberta xnli " in x and "--resume" in x for x in lines)
    assert not any("--step 768" in x for x in lines)  # only the doubling budgets by default...
    every = subprocess.run([sys.executable, str(STUDIES / "budget_curve.py"), "--output", str(out), "--dry-run",
                            "--shared", str(tmp_path / "shared"), "--all-checkpoints", "--objectives", "gdes"],
                           capture_output=True, text=True, timeout=120)
    assert every.returncode == 0, every.stderr
    assert [x for x in every.stdout.splitlines() if "export-checkpoint" in x and "--step 768" in x]  # ...or all
    only = subprocess.run([sys.executable, str(STUDIES / "budget_curve.py"), "--output", str(out), "--dry-run",
                           "--shared", str(tmp_path / "shared"), "--only", "gdes/step-0/*/word-order"],
                          capture_output=True, text=True, timeout=120)  # every study takes --only
    assert only.returncode == 0, only.stderr
    assert [x for x in only.stdout.splitlines() if x.startswith("# ")] == [
        "# tokenizer", "# gdes/step-0/export", "# gdes/step-0/generator/word-order",
        "# gdes/step-0/discriminator/word-order"]
    for step, part, value in ((0, "generator", 47.0), (256, "generator", 52.5), (0, "discriminator", 50.0)):
        folder = out / "blimp" / "gdes" / f"step-{step}" / part
        folder.mkdir(parents=True)
        (folder / "minimal_pairs.json").write_text(json.dumps({"overall": value}))
    for step, hits in ((0, [0] * 10), (256, [1] * 10)):  # 10 pairs, all gained: sign test p = 2 / 2^10
        folder = out / "word_order" / "gdes" / f"step-{step}" / "generator"
        folder.mkdir(parents=True)
        (folder / "minimal_pairs.json").write_text(json.dumps({"overall": 100.0 * sum(hits) / len(hits)}))
        (folder / "scores.jsonl").write_text("".join(json.dumps({"correct": bool(h)}) + "\n" for h in hits))
    done = subprocess.run([sys.executable, str(STUDIES / "budget_curve.py"), "--output", str(out),
                           "--summary-only"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "curve.json").read_text())
    assert summary["curves"]["gdes generator"] == {"0": 47.0, str(256 * 4096): 52.5}
    assert summary["word_order"]["gdes generator"] == {"0": 0.0, str(256 * 4096): 100.0}
    test = summary["paired_vs_step0"]["word order"]["gdes generator"][str(256 * 4096)]
    assert (test["wins"], test["losses"]) == (10, 0) and abs(test["p"] - 2 / 2**10) < 1e-12
    (out / "gdes" / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "mlm_loss": 9.0 - s / 128}) + "\n"
                                                        for s in (64, 128, 192, 256)))
    for step in (0, 256):
        (out / "exports" / "gdes" / f"step-{step}").mkdir(parents=True)
    done = subprocess.run([sys.executable, str(STUDIES / "budget_curve.py"), "--output", str(out),
                           "--summary-only"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "curve.json").read_text())["training_mlm_loss"] == {"gdes": {str(256 * 4096): 7.0}}
    md = (out / "curve.md").read_text()
    assert "| gdes MLM loss | 7.00 |" in md
    assert "| gdes generator | 47.0 | 52.5 |" in md and "| gdes generator | 0.0 | 100.0 (p=0.002) |" in md
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "ln 8001 = 9.0 at init" not in md  # no exported config: no vocabulary to state
    (out / "exports" / "gdes" / "step-0" / "generator").mkdir()
    (out / "exports" / "gdes" / "step-0" / "generator" / "config.json").write_text(json.dumps({"vocab_size": 8001}))
    # Fine-tuned: random init (step 0) 3 seeds, gdes at 1M 3 seeds; 20 test pairs each, the pretrained runs get
    # 15-17 right where random init gets 5-7 (McNemar significant on every one of the 9 pairs).
    for step, seed, right in ((0, 1, 5), (0, 2, 6), (0, 3, 7), (256, 1, 15), (256, 2, 16), (256, 3, 17)):
        run = out / "finetune" / "gdes" / f"step-{step}" / f"s{seed}"
        (run / "eval").mkdir(parents=True)
        (run / "xnli_summary.json").write_text(json.dumps({"accuracy": {"en": 100 * right / 20}, "avg": 0}))
        (run / "eval" / "predictions_test.jsonl").write_text("".join(json.dumps(
            {"language": "en", "index": i, "gold": "entailment",
             "predicted": "entailment" if i < right else "neutral"}) + "\n" for i in range(20)))
    done = subprocess.run([sys.executable, str(STUDIES / "budget_curve.py"), "--output", str(out),
                           "--summary-only"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    finetuned = json.loads((out / "curve.json").read_text())["finetune_xnli_en"]
    assert finetuned["random init"]["en"] == [25.0, 30.0, 35.0] and finetuned["gdes 1M"]["en"] == [75.0, 80.0, 85.0]
    diff, se, t = finetuned["gdes 1M"]["welch_vs_random"]
    assert abs(diff - 50.0) < 1e-9 and abs(se - (2 * 25 / 3) ** 0.5) < 1e-9
    assert len(finetuned["gdes 1M"]["mcnemar_vs_random"]) == 9
    md = (out / "curve.md").read_text()
    assert "ln 8001 = 9.0 at init" in md
    assert "| random init | 25.0 / 30.0 / 35.0 | 30.0 ± 5.0 |" in md
    assert ("| gdes 1M | 75.0 / 80.0 / 85.0 | 80.0 ± 5.0 | +50.00 ± 4.08 (t +12.2) | 9 better, 0 worse, 0 n.s. of 9"
            in md)


def test_budget_curve_extrapolates_where_the_fine_tuning_gap_closes():
    sys.path.insert(0, str(STUDIES))
    import numpy as np
    from budget_curve import crossing

    points = [(2**20, -15.0, 4.0), (2**21, -7.0, 2.0), (2**22, -4.0, 3.0)]
    fit = crossing(points)
    # Independent reference: numpy's weighted polyfit (weights 1/se) with its unscaled covariance.
    (slope, intercept), cov = np.polyfit([0.0, 1.0, 2.0], [d for _, d, _ in points], 1,
                                         w=[1 / se for *_, se in points], cov="unscaled")
    assert abs(fit["slope_per_doubling"] - slope) < 1e-9 and abs(fit["gap_at_1M"] - intercept) < 1e-9
    assert abs(fit["slope_se"] - cov[0, 0] ** 0.5) < 1e-9
    x0 = -intercept / slope
    assert abs(fit["crossing_tokens"] - 2**x0 * 2**20) < 1e-3
    grad = np.array([intercept / slope**2, -1 / slope])  # d x0 / d (slope, intercept)
    se_x0 = float(np.sqrt(grad @ cov @ grad))
    low, high = fit["crossing_range95"]
    assert abs(np.log2(low / 2**20) - (x0 - 1.96 * se_x0)) < 1e-9
    assert abs(np.log2(high / 2**20) - (x0 + 1.96 * se_x0)) < 1e-9
    assert crossing([(2**20, -5.0, 1.0), (2**21, -6.0, 1.0)])["crossing_tokens"] is None  # the gap widens
    assert crossing(points[:1]) is None and crossing([(2**20, -5.0, 0.0), (2**21, -1.0, 1.0)]) is None


def test_word_order_pairs_are_reused_only_when_built_the_same_way(tmp_path):
    sys.path.insert(0, str(STUDIES))
    from word_order_pairs import ensure_pairs

    xnli = tmp_path / "xnli"
    xnli.mkdir()
    rows = "premise\thypothesis\tlabel\n" + "".join(f"p\tThe cat number {i} sat on the mat.\tneutral\n"
                                                     for i in range(30))
    with gzip.open(xnli / "xnli.dev.en.tsv.gz", "wt", encoding="utf-8") as f:
        f.write(rows)
    out = tmp_path / "pairs"
    first = ensure_pairs(xnli, out, ["en"], 10, seed=0).read_text()
    assert first.count("\n") == 11
    assert ensure_pairs(xnli, out, ["en"], 10, seed=0).read_text() == first  # reused as built
    with pytest.raises(SystemExit, match=r"pairs.tsv was built with .*'per_language': 10.*asks .*'per_language': 20"):
        ensure_pairs(xnli, out, ["en"], 20, seed=0)
    (out / "pairs.json").unlink()  # a file from before pairs.json: its count is read from its rows
    assert ensure_pairs(xnli, out, ["en"], 10, seed=0).read_text() == first
    with pytest.raises(SystemExit, match="delete the file to rebuild it"):
        ensure_pairs(xnli, out, ["en"], 5, seed=0)


def test_run_jobs_skips_everything_downstream_of_a_failure(tmp_path):
    """A failed job blocks its dependents and theirs (before: the runner waited for them forever)."""
    sys.path.insert(0, str(STUDIES))
    from pretraining_study import Job, run_jobs

    ok = [sys.executable, "-c", "import sys, pathlib; pathlib.Path(sys.argv[1]).touch()"]
    jobs = [Job("fails", [sys.executable, "-c", "raise SystemExit(1)"], tmp_path / "a"),
            Job("child", [*ok, str(tmp_path / "b")], tmp_path / "b", ["fails"]),
            Job("grandchild", [*ok, str(tmp_path / "c")], tmp_path / "c", ["child"]),
            Job("independent", [*ok, str(tmp_path / "d")], tmp_path / "d")]
    assert run_jobs(jobs, 1, False, tmp_path / "logs") == ["fails"]
    assert (tmp_path / "d").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_run_jobs_skips_a_job_whose_output_appeared_meanwhile(tmp_path):
    """A job that another invocation finished after this one started is not run again (before: both ran it)."""
    sys.path.insert(0, str(STUDIES))
    from pretraining_study import Job, run_jobs

    touch = [sys.executable, "-c", "import sys, pathlib; [pathlib.Path(p).touch() for p in sys.argv[1:]]"]
    jobs = [Job("first", [*touch, str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "a"),  # also makes b
            Job("second", [*touch, str(tmp_path / "ran"), str(tmp_path / "b")], tmp_path / "b")]
    assert run_jobs(jobs, 1, False, tmp_path / "logs") == []
    assert (tmp_path / "b").exists() and not (tmp_path / "ran").exists()


def test_sib200_study_plans_and_summarises(tmp_path):
    budget, out = tmp_path / "budget", tmp_path / "sib"
    (budget / "gdes" / "checkpoints").mkdir(parents=True)
    (budget / "gdes" / "checkpoints" / "step-00000256.pt").write_bytes(b"")
    dry = subprocess.run([sys.executable, str(STUDIES / "sib200.py"), "--budget", str(budget), "--output", str(out),
                          "--dry-run", "--steps", "256", "512", "--seeds", "1", "2"], capture_output=True, text=True,
                         timeout=120)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert sum("--task text-classification" in x and " finetune " in x for x in lines) == 2 * 2  # random, gdes-256
    assert any("export-checkpoint" in x and "--step 256" in x for x in lines)
    assert not any("--step 512" in x for x in lines)
    for arm, seed, accuracy in (("random", 1, 40.0), ("random", 2, 30.0), ("gdes-256", 1, 50.0),
                                ("gdes-256", 2, 60.0)):
        run = out / arm / f"s{seed}"
        (run / "best").mkdir(parents=True)
        (run / "test").mkdir(parents=True)
        (run / "best" / "training_info.json").write_text(json.dumps({"dev_accuracy": accuracy}))
        scores = {lang: {"accuracy": accuracy} for lang in ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar",
                                                            "vi", "th", "zh", "hi", "sw", "ur")}
        (run / "test" / "classification_test.json").write_text(json.dumps({"scores": scores,
                                                                            "avg": {"accuracy": accuracy}}))
        right = int(accuracy // 10)
        (run / "test" / "predictions_test.jsonl").write_text("".join(
            json.dumps({"gold": "a", "predicted": "a" if i < right else "b"}) + "\n" for i in range(10)))
    summary = subprocess.run([sys.executable, str(STUDIES / "sib200.py"), "--budget", str(budget), "--output",
                              str(out), "--summary-only"], capture_output=True, text=True, timeout=120)
    assert summary.returncode == 0, summary.stderr
    rows = json.loads((out / "summary.json").read_text())
    assert rows["rows"]["random"]["en"] == 35.0 and rows["rows"]["gdes-256"]["en"] == 55.0
    assert rows["paired"]["gdes-256"]["wins"] == 4 and rows["paired"]["gdes-256"]["losses"] == 0
    assert (out / "summary.png").stat().st_size > 0


def test_pretraining_study_selects_jobs_scores_blimp_and_summarises(tmp_path):
    """--only runs the matching jobs and their dependencies; decoupled is GDES + --decoupled-training; every
    pretrained model and the shared initial weights get a BLiMP job, and the summary carries their scores."""
    out = tmp_path / "study"
    dry = subprocess.run([sys.executable, str(STUDIES / "pretraining_study.py"), "--output", str(out), "--shared",
                          str(tmp_path / "shared"), "--corpora", "en", "--objectives", "gdes", "decoupled", "mlm",
                          "--only", "en/decoupled/blimp-*", "en/random/blimp-generator", "--dry-run"],
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    names = [x.removeprefix("# ") for x in dry.stdout.splitlines() if x.startswith("# ")]
    assert names == ["en/tokenizer", "en/decoupled/pretrain", "en/decoupled/blimp-discriminator",
                     "en/decoupled/blimp-generator", "en/random/run", "en/random/init", "en/random/blimp-generator"]
    commands = dict(zip(names, [x for x in dry.stdout.splitlines() if not x.startswith("# ")], strict=True))
    assert "--embedding-sharing gdes --decoupled-training" in commands["en/decoupled/pretrain"]
    assert "--max-steps 1 " in commands["en/random/run"] and "--step 0" in commands["en/random/init"]
    assert "--max-pairs-per-paradigm 50" in commands["en/decoupled/blimp-generator"]
    assert "decoupled/pretrain/export/generator" in commands["en/decoupled/blimp-generator"]
    unknown = subprocess.run([sys.executable, str(STUDIES / "pretraining_study.py"), "--output", str(out),
                              "--corpora", "en", "--only", "en/nothing*", "--dry-run"], capture_output=True,
                             text=True, timeout=120)
    assert unknown.returncode != 0 and "no job matches en/nothing*" in unknown.stderr

    for model, part, value in (("random", "generator", 46.7), ("decoupled", "discriminator", 54.5),
                               ("decoupled", "generator", 51.0)):
        folder = out / "en" / model / f"blimp-{part}"
        folder.mkdir(parents=True)
        (folder / "minimal_pairs.json").write_text(json.dumps({"overall": value}))
    summary = subprocess.run([sys.executable, str(STUDIES / "pretraining_study.py"), "--output", str(out),
                              "--corpora", "en", "--objectives", "decoupled", "--summary-only"],
                             capture_output=True, text=True, timeout=120)
    assert summary.returncode == 0, summary.stderr
    rows = json.loads((out / "summary.json").read_text())
    assert rows["en/decoupled"]["blimp"] == {"discriminator": 54.5, "generator": 51.0}
    assert rows["en/random"]["blimp"] == {"generator": 46.7} and rows["en/random"]["en"] == []
    assert "discriminator 54.5 / generator 51.0" in (out / "summary.md").read_text()
    assert "no plot yet: no fine-tuning run has finished" in summary.stdout and "no plot:" not in summary.stdout


def test_word_order_pairs_swap_real_words_only_and_summarise(tmp_path):
    import gzip
    import random

    sys.path.insert(0, str(STUDIES))
    from word_order_pairs import swap_adjacent_words

    rng = random.Random(0)
    for _ in range(20):  # never the first word, never 'mats.' (punctuation) nor '2' (a digit)
        assert swap_adjacent_words("The cat sat down on 2 mats.", rng) in (
            "The sat cat down on 2 mats.", "The cat down sat on 2 mats.", "The cat sat on down 2 mats.")
    assert swap_adjacent_words("Too short here.", rng) is None
    assert swap_adjacent_words("A the the.", rng) is None
    assert swap_adjacent_words("आप पहाड़ की चोटी", rng) == "आप की पहाड़ चोटी"  # vowel signs are marks, still words

    xnli = tmp_path / "shared" / "data" / "xnli"
    xnli.mkdir(parents=True)
    for lang in ("en", "de"):
        with gzip.open(xnli / f"xnli.dev.{lang}.tsv.gz", "wt", encoding="utf-8") as f:
            f.write("premise\thypothesis\tlabel\n")
            f.writelines(f"p\tThe {lang} dog number {i} sleeps.\tneutral\n" for i in range(5))
            f.write("p\tThe en dog number 0 sleeps.\tneutral\np\tToo short.\tneutral\n")  # a repeat, a short one
    out = tmp_path / "wo"
    args = [sys.executable, str(STUDIES / "word_order_pairs.py"), "--output", str(out), "--shared",
            str(tmp_path / "shared"), "--languages", "en", "de", "--pairs-per-language", "3", "--ngram-order", "2"]
    dry = subprocess.run([*args, "--model", "m=/some/model", "--dry-run"], capture_output=True, text=True,
                         timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert sum("--task minimal-pairs" in x for x in dry.stdout.splitlines()) == 1 + 2  # the model, two n-grams
    from word_order_pairs import build_pairs

    rows = build_pairs(xnli, out, ["en", "de"], 3, 0).read_text().splitlines()
    assert rows[0] == "good\tbad\tlanguage" and len(rows) == 1 + 2 * 3
    for row in rows[1:]:
        good, bad, lang = row.split("\t")
        assert good != bad and sorted(good.split()) == sorted(bad.split()) and good.split()[0] == "The"
    for name, scores, correct in (("m", {"en": 60.0, "de": 40.0}, [1, 1, 1, 1, 1, 0]),
                                  ("r", {"en": 50.0, "de": 50.0}, [0, 0, 0, 0, 0, 0])):
        (out / "scores" / name).mkdir(parents=True)
        (out / "scores" / name / "minimal_pairs.json").write_text(json.dumps({"per_paradigm": scores}))
        (out / "scores" / name / "scores.jsonl").write_text("".join(json.dumps({"correct": bool(c)}) + "\n"
                                                                    for c in correct))
    (out / "scores" / "ngram" / "en").mkdir(parents=True)
    (out / "scores" / "ngram" / "en" / "minimal_pairs.json").write_text(json.dumps({"overall": 70.0}))
    done = subprocess.run([*args, "--model", "m=/some/model", "r=/other", "--compare", "m=r", "--summary-only"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| m | 60.0 | 40.0 | 50.0 |" in (out / "summary.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"]["word 2-gram, same corpus"] == {"en": 70.0}
    assert summary["paired"]["m vs r"] == {"wins": 5, "losses": 0, "p": 0.0625}  # 2 * 2^-5
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"
