"""benchmarks/bench_model.py: the BENCHMARKS.md section editing and a tiny end-to-end run against transformers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_model as bench  # noqa: E402


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
                     "--repeats", "1", "--output-dir", str(out), "--update-benchmarks-md", str(md), "--quiet",
                     "--ceiling-size", "256"])
    assert rc == 0
    rows = json.loads((out / "bench_model.json").read_text())["rows"]
    assert [r["mode"] for r in rows] == ["infer-fp32", "train-bf16-lazy"]
    assert rows[0]["ours_max_diff"] < 1e-4  # same weights as transformers
    assert all(r["ours_tok_s"] > 0 and r["theirs_tok_s"] > 0 for r in rows)
    assert "| 2x16 | infer-fp32 |" in md.read_text()


def test_peak_memory_sees_memory_the_allocator_had_cached():
    """After a warm-up the allocator reuses freed blocks and plain RSS growth reads ~0; peak_memory must not."""
    import time

    import torch

    def step():
        x = torch.ones(4 << 20)  # 16 MiB, below glibc's 32 MiB mmap ceiling: cached and reused by default
        time.sleep(0.05)  # longer than the RSS sampling period
        return float(x[0])

    for _ in range(3):
        step()
    assert bench.peak_memory(step) >= 15 << 20


def test_argmax_agreement_counts_rows_against_transformers_fp32(tmp_path):
    pytest.importorskip("transformers")
    import torch

    from mdeberta.config import preset

    cfg = preset("deberta-v3-micro", num_labels=3)
    ours, theirs = bench.build_models(cfg)
    result = bench.argmax_agreement(ours, theirs, cfg, rows=40, length=16, chunk=16)
    assert set(result) == {"ours", "theirs"}
    for stats in result.values():
        assert 0.0 <= stats["agree"] <= 1.0 and abs(stats["agree"] * 40 - round(stats["agree"] * 40)) < 1e-9
        assert 0.0 < stats["mean_abs_err"] < 0.1  # bf16 rounding, not zero, not broken
        assert (stats["max_flip_margin"] > 0) == (stats["agree"] < 1)
    # A model whose logits are reversed must disagree on (almost) every row: the check really compares argmaxes.
    with torch.no_grad():
        ours.classifier.weight.mul_(-1)
        ours.classifier.bias.mul_(-1)
    flipped = bench.argmax_agreement(ours, theirs, cfg, rows=40, length=16, chunk=16)
    assert flipped["ours"]["agree"] < 0.2 and flipped["theirs"] == result["theirs"]
    assert flipped["ours"]["max_flip_margin"] > 0
    rc = bench.main(["--preset", "deberta-v3-micro", "--shapes", "2x16", "--modes", "infer-bf16", "--repeats", "1",
                     "--agreement-rows", "8", "--output-dir", str(tmp_path), "--quiet", "--ceiling-size", "256"])
    assert rc == 0
    data = json.loads((tmp_path / "bench_model.json").read_text())
    assert set(data["argmax_agreement_bf16"]) == {"ours", "theirs"}
    assert "same argmax ours" in (tmp_path / "bench_model.md").read_text()


def test_cuda_device_without_cuda_is_a_clear_error():
    pytest.importorskip("transformers")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench.main(["--device", "cuda", "--preset", "deberta-v3-micro", "--quiet"])
    with pytest.raises(SystemExit, match="allowed: cpu, cuda"):
        bench.main(["--device", "meta", "--preset", "deberta-v3-micro", "--quiet"])


def test_gpu_section_is_separate_from_the_cpu_one(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    bench.update_benchmarks_md(path, "cpu table")
    bench.update_benchmarks_md(path, "gpu table", bench.GPU_SECTION)
    bench.update_benchmarks_md(path, "new cpu table")
    text = path.read_text()
    assert "## Model speed (CPU)\n\nnew cpu table" in text and "## Model speed (GPU)\n\ngpu table" in text
    assert "cpu table\n" not in text.replace("new cpu table", "")


def test_serving_bench_compares_five_implementations(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "res"
    md = tmp_path / "BENCHMARKS.md"
    rc = bench.main(["--serving", "--preset", "deberta-v3-micro", "--shapes", "2x16,4x256", "--repeats",
                     "1", "--output-dir", str(out), "--update-benchmarks-md", str(md), "--quiet", "--threads", "1"])
    assert rc == 0
    row, longer = json.loads((out / "bench_serving.json").read_text())["rows"]
    assert set(row["tokens_per_s"]) == set(bench.SERVING_IMPLS)
    assert row["max_abs_diff"]["onnxruntime fp32"] < 1e-4 and row["max_abs_diff"]["ours fp32"] < 1e-4
    # every implementation's working memory is measured, ONNX Runtime's too (on an arena-free session)
    assert all(longer["peak_mb"][name] > 1 for name in bench.SERVING_IMPLS), longer["peak_mb"]
    assert "## Serving on CPU (ONNX Runtime)" in md.read_text() and "int8 / transformers fp32" in md.read_text()
