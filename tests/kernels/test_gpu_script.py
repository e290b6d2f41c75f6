"""The prepared GPU session (benchmarks/gpu/gpu_bench.py) rehearsed on CPU: every part runs, results are written as
they come, and an implementation that cannot run is recorded with its error instead of stopping the session."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "gpu_bench.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_runs_every_part(gpu_bench, tmp_path, monkeypatch):
    import torch

    torch.set_num_threads(1)
    monkeypatch.setitem(sys.modules, "flashdeberta", None)  # "not installed": must be recorded, not fatal
    monkeypatch.setattr(sys, "argv", ["gpu_bench.py", "--out", str(tmp_path), "--dry-run", "--lengths", "32"])
    gpu_bench.main()
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    timed = {(r["impl"], r["mode"]) for r in rows if r["part"] == "table" and "ms" in r}
    assert {("ours", "infer"), ("ours", "train"), ("transformers-eager", "infer"),
            ("transformers-eager", "train")} <= timed
    assert any(r["part"] == "table" and r["impl"] == "flashdeberta" and "error" in r for r in rows)
    stability = [r for r in rows if r["part"] == "stability" and "nan_losses" in r]
    assert stability and all(r["nan_losses"] == 0 for r in stability)
    assert any(r["part"] == "pretraining" and r.get("tokens_per_s", 0) > 0 for r in rows)
    packed = {r["impl"]: r for r in rows if r["part"] == "packed" and "error" not in r}
    assert set(packed) == {"padded-random", "padded-grouped", "packed-grouped"}
    # packing computes exactly the real tokens; padding computes more
    assert packed["packed-grouped"]["computed_tokens"] == packed["packed-grouped"]["real_tokens"]
    assert packed["padded-random"]["computed_tokens"] > packed["padded-random"]["real_tokens"]
    table = (tmp_path / "table.md").read_text()
    assert "| 32 | 8 | train | ours |" in table and "Errors:" in table
