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
