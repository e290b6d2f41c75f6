"""The study scripts plan their commands (dry run) and summarise what exists (no training here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def test_budget_curve_plans_and_summarises(tmp_path):
    out = tmp_path / "budget"
    (out / "gdes" / "checkpoints").mkdir(parents=True)
    (out / "gdes" / "checkpoints" / "step-00000256.pt").write_bytes(b"")
    dry = subprocess.run([sys.executable, str(STUDIES / "budget_curve.py"), "--output", str(out), "--dry-run",
                          "--shared", str(tmp_path / "shared"), "--finetune", "--seeds", "1"],
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert any("pretrain" in x and "--resume" in x and "--keep-last 0" in x for x in lines)
    assert any("export-checkpoint" in x and "--step 256" in x for x in lines)
    assert any("export-checkpoint" in x and "--step 0" in x for x in lines)
    assert not any("--step 512" in x for x in lines)  # no such checkpoint yet
    assert sum("--task minimal-pairs" in x for x in lines) == 2 * 2 + 1 + 1  # gdes x 2 parts x 2 steps, mlm 0, ngram
    assert any(" -m mdeberta xnli " in x and "--resume" in x for x in lines)
    for step, part, value in ((0, "generator", 47.0), (256, "generator", 52.5), (0, "discriminator", 50.0)):
        folder = out / "blimp" / "gdes" / f"step-{step}" / part
        folder.mkdir(parents=True)
        (folder / "minimal_pairs.json").write_text(json.dumps({"overall": value}))
    done = subprocess.run([sys.executable, str(STUDIES / "budget_curve.py"), "--output", str(out),
                           "--summary-only"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    curve = json.loads((out / "curve.json").read_text())["curves"]
    assert curve["gdes generator"] == {"0": 47.0, str(256 * 4096): 52.5}
    assert "| gdes generator | 47.0 | 52.5 |" in (out / "curve.md").read_text()
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"


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
