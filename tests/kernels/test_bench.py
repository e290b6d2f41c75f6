"""mdeberta bench: the BENCHMARKS.md section editing and a tiny end-to-end run against transformers."""

from __future__ import annotations

import json

import pytest

from mdeberta import bench


def test_update_benchmarks_md_touches_only_its_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Tokenizer speed\n\nfast\n\n## Model speed (CPU)\n\nold\n\n## Other\n\nkeep\n")
    bench.update_benchmarks_md(path, "new table")
    text = path.read_text()
    assert "old" not in text and "new table" in text
    assert "## Tokenizer speed\n\nfast" in text and "## Other\n\nkeep" in text
    fresh = tmp_path / "NEW.md"
    bench.update_benchmarks_md(fresh, "t")
    assert fresh.read_text().startswith("# Benchmarks") and "## Model speed (CPU)\n\nt" in fresh.read_text()


def test_bad_shapes_and_modes_are_named():
    with pytest.raises(SystemExit, match="8by128"):
        bench.parse_shapes("8by128")
    with pytest.raises(SystemExit, match="infer-fp16"):
        bench.main(["--modes", "infer-fp16", "--preset", "deberta-v3-micro"])


def test_tiny_run_writes_table_and_json(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "res"
    md = tmp_path / "BENCHMARKS.md"
    rc = bench.main(["--preset", "deberta-v3-micro", "--shapes", "2x16", "--modes", "infer-fp32,train-bf16-lazy",
                     "--repeats", "1", "--output-dir", str(out), "--update-benchmarks-md", str(md), "--quiet"])
    assert rc == 0
    rows = json.loads((out / "bench_model.json").read_text())["rows"]
    assert [r["mode"] for r in rows] == ["infer-fp32", "train-bf16-lazy"]
    assert rows[0]["ours_max_diff"] < 1e-4  # same weights as transformers
    assert all(r["ours_tok_s"] > 0 and r["theirs_tok_s"] > 0 for r in rows)
    assert "| 2x16 | infer-fp32 |" in md.read_text()
