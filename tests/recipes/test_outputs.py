"""Nothing at an output path is lost without --overwrite; reused run folders, changed --resume arguments, bad sizes,
a full disk and permissions are clear errors (issue 24's cases, rebuilt from its text)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from cli_helpers import assert_cli_error
from mdeberta.checkpoint import WriteError, atomic_torch_save, atomic_write_text
from mdeberta.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def model_copy(tiny_classifier, tmp_path) -> Path:
    """A private copy of the tiny classifier (the session fixture must never be the one deleted)."""
    return Path(shutil.copytree(tiny_classifier, tmp_path / "model"))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_onnx_never_deletes_its_source_or_other_files(model_copy, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    before = _files(model_copy)
    assert_cli_error(capsys, ["export-onnx", str(model_copy), str(model_copy)], r"is the source")
    assert_cli_error(capsys, ["export-onnx", str(model_copy), str(tmp_path)], r"contains the source")
    assert_cli_error(capsys, ["export-onnx", str(model_copy), str(model_copy / "onnx")], r"is inside the source")
    assert _files(model_copy) == before
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    assert_cli_error(capsys, ["export-onnx", str(model_copy), str(existing)],
                     r"already exists .*notes.txt.*--overwrite")
    assert (existing / "notes.txt").read_text() == "keep me"
    (tmp_path / "file.onnx").write_text("a file")
    assert_cli_error(capsys, ["export-onnx", str(model_copy), str(tmp_path / "file.onnx")], r"is a file, not a folder")
    assert (tmp_path / "file.onnx").read_text() == "a file"
    assert main(["export-onnx", str(model_copy), str(existing), "--overwrite"]) == 0
    assert (existing / "model.onnx").is_file() and not (existing / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".existing")]  # nothing left aside
    assert _files(model_copy) == before


def test_convert_checks_its_output_too(model_copy, tmp_path, capsys):
    before = _files(model_copy)
    assert_cli_error(capsys, ["convert", str(model_copy), str(model_copy)], r"is the source")
    assert _files(model_copy) == before
    assert main(["convert", str(model_copy), str(tmp_path / "converted")]) == 0
    assert_cli_error(capsys, ["convert", str(model_copy), str(tmp_path / "converted")], r"already exists")
    assert main(["convert", str(model_copy), str(tmp_path / "converted"), "--overwrite"]) == 0


def _finetune(model: Path, data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["finetune", "--model", str(model), "--train-file", str(data["train"]), "--dev-file", str(data["dev"]),
            "--output-dir", str(out), "--batch-size", "8", "--learning-rate", "1e-3", "--eval-every", "2",
            "--save-every", "2", "--log-every", "1", "--device", "cpu", "--max-steps", "4", *extra]


def test_finetune_run_folder_holds_one_run(tiny_backbone, synthetic_nli, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(_finetune(tiny_backbone, synthetic_nli, out)) == 0
    best = _files(out / "best")
    metrics = (out / "metrics.jsonl").read_text()
    # Reusing the folder: refused before anything is read or written.
    assert_cli_error(capsys, _finetune(tiny_backbone, synthetic_nli, out, "--learning-rate", "1e-2"),
                     r"--output-dir .*ft already exists .*--overwrite .*--resume")
    assert _files(out / "best") == best and (out / "metrics.jsonl").read_text() == metrics
    # --resume with arguments that change the run: each named with both values.
    err = assert_cli_error(capsys, _finetune(tiny_backbone, synthetic_nli, out, "--resume", "--batch-size", "4",
                                             "--max-seq-length", "64"), r"--batch-size: 8 in the stored run, 4 now")
    assert "--max-seq-length: 256 in the stored run, 64 now" in err
    stored = json.loads((out / "run_config.json").read_text())
    assert stored["batch_size"] == 8
    # --overwrite replaces the run (the old one set aside until the new one finished).
    assert main(_finetune(tiny_backbone, synthetic_nli, out, "--overwrite", "--max-steps", "2")) == 0
    assert json.loads((out / "final" / "training_info.json").read_text())["max_steps"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ft.replaced")]


def test_bad_sizes_fail_before_any_work(tiny_backbone, synthetic_nli, tmp_path, capsys):
    for flag, value, message in (("--eval-batch-size", "0", "--eval-batch-size 0: must be >= 1"),
                                 ("--batch-size", "0", "--batch-size 0: must be >= 1"),
                                 ("--grad-accum", "0", "--grad-accum 0: must be >= 1"),
                                 ("--max-seq-length", "-3", "--max-seq-length -3: must be >= 1")):
        out = tmp_path / flag.strip("-")
        assert_cli_error(capsys, _finetune(tiny_backbone, synthetic_nli, out, flag, value), message)
        assert not out.exists()
    (tmp_path / "a_file").write_text("x")
    assert_cli_error(capsys, _finetune(tiny_backbone, synthetic_nli, tmp_path / "a_file"), "is a file, not a folder")
    assert_cli_error(capsys, _finetune(tiny_backbone, synthetic_nli, tiny_backbone), r"is the source")


def test_evaluate_checks_its_folder_before_evaluating(tiny_classifier, synthetic_nli, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    args = ["evaluate", "--task", "nli", "--model", str(tiny_classifier), "--eval-file", str(synthetic_nli["dev"])]
    assert_cli_error(capsys, [*args, "--output-dir", str(tmp_path / "a_file")], "is a file, not a folder")
    out = tmp_path / "eval"
    assert main([*args, "--output-dir", str(out)]) == 0
    first = (out / "results.json").read_text()
    assert_cli_error(capsys, [*args, "--output-dir", str(out)], r"already exists and holds predictions.jsonl")
    assert (out / "results.json").read_text() == first
    assert main([*args, "--output-dir", str(out), "--overwrite"]) == 0


def test_files_follow_the_umask(tiny_backbone, synthetic_nli, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "ft"
        assert main(_finetune(tiny_backbone, synthetic_nli, out, "--max-steps", "2")) == 0
        atomic_write_text(tmp_path / "note.txt", "x")
    finally:
        os.umask(old)
    for path in [tmp_path / "note.txt", *(out / "checkpoints").iterdir(), *(out / "final").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_full_disk_names_the_path(tmp_path, monkeypatch):
    def no_space(_tmp: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    from mdeberta.checkpoint import atomic_save

    with pytest.raises(WriteError, match=r"no space left on the device of .*x.bin"):
        atomic_save(tmp_path / "x.bin", no_space)
    assert list(tmp_path.iterdir()) == []  # the temp file is gone
    # torch.save reports a full disk as a RuntimeError from its zip writer: told apart by the free space.
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(WriteError, match=r"no space left on the device of .*ckpt.pt"):
        atomic_torch_save({"a": 1}, tmp_path / "ckpt.pt")


def test_a_real_full_disk(tmp_path):
    """On a 1 MiB tmpfs (skipped where mounting is not allowed): torch's own error becomes the clear one."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with pytest.raises(WriteError, match=r"no space left on the device of .*big.pt"):
            atomic_torch_save(torch.zeros(1_000_000), mount / "big.pt")
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # lazy: torch may hold the file


def test_an_unwritable_output_is_named(tiny_classifier, synthetic_nli, tmp_path, capsys):
    """A read-only folder (a read-only tmpfs, which stops root too; else a 0500 folder for other users)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(locked)],
                             capture_output=True).returncode == 0
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root, and no read-only mount possible: the permission check cannot be observed")
        locked.chmod(0o500)
    try:
        assert_cli_error(capsys, ["evaluate", "--task", "nli", "--model", str(tiny_classifier), "--eval-file",
                                  str(synthetic_nli["dev"]), "--output-dir", str(locked / "out")],
                         r"--output-dir .*locked/out: cannot write to .*locked")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(locked)], capture_output=True)


def test_train_dev_and_eval_files_must_share_the_input_form(tiny_backbone, synthetic_nli, tmp_path, capsys):
    """Pairs for training, single texts for dev (or evaluation) is an error, not a silently wrong score; so is a
    training file without labels and an empty one."""
    from nli_helpers import synthetic_pairs, write_tsv

    single = write_tsv(tmp_path / "single.tsv", [(p, label) for p, _, label in synthetic_pairs(12, seed=5)],
                       header="premise\tlabel")
    base = _finetune(tiny_backbone, synthetic_nli, tmp_path / "a")
    base[base.index("--dev-file") + 1] = str(single)
    assert_cli_error(capsys, base, r"--dev-file holds single texts but --train-file holds pairs")
    unlabelled = write_tsv(tmp_path / "nolabel.tsv", [(p, h) for p, h, _ in synthetic_pairs(12, seed=6)],
                           header="premise\thypothesis")
    base = _finetune(tiny_backbone, synthetic_nli, tmp_path / "b")
    base[base.index("--train-file") + 1] = str(unlabelled)
    assert_cli_error(capsys, base, r"--train-file: examples without a label")
    empty = write_tsv(tmp_path / "empty.tsv", [])
    base[base.index("--train-file") + 1] = str(empty)
    assert_cli_error(capsys, base, r"no training examples|no examples|empty")
    # A pair-trained model scored on premise-only data.
    out = tmp_path / "ft"
    assert main(_finetune(tiny_backbone, synthetic_nli, out, "--max-steps", "2")) == 0
    assert json.loads((out / "final" / "training_info.json").read_text())["input_form"] == "pair"
    assert_cli_error(capsys, ["evaluate", "--task", "nli", "--model", str(out / "final"), "--eval-file", str(single),
                              "--output-dir", str(tmp_path / "ev")],
                     r"single.tsv: the evaluation data holds single texts but .* was trained on pairs")


def test_file_outputs_are_never_an_input_nor_replaced_silently(tiny_classifier, synthetic_nli, tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("premise\thypothesis\nthe cat and the dog.\tthere is a cat.\n")
    args = ["predict", "--model", str(tiny_classifier), "--input", str(pairs)]
    assert_cli_error(capsys, [*args, "--output", str(pairs)], r"--output .*pairs.tsv is the source")
    assert pairs.read_text().startswith("premise")
    out = tmp_path / "preds.jsonl"
    assert main([*args, "--output", str(out)]) == 0
    first = out.read_text()
    assert_cli_error(capsys, [*args, "--output", str(out)], r"already exists: pass --overwrite")
    assert out.read_text() == first
    assert main([*args, "--output", str(out), "--overwrite"]) == 0


def test_a_length_past_the_absolute_positions_is_refused(tiny_backbone, synthetic_nli, tmp_path, capsys):
    from mdeberta.config import preset
    from mdeberta.model import DebertaModel
    from mdeberta.tokenizer import DebertaTokenizer

    tok = DebertaTokenizer.from_pretrained(tiny_backbone)
    folder = tmp_path / "v1"
    DebertaModel(preset("deberta-v3-micro", vocab_size=len(tok), position_biased_input=True,
                        max_position_embeddings=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert_cli_error(capsys, _finetune(folder, synthetic_nli, tmp_path / "ft", "--max-seq-length", "128"),
                     r"--max-seq-length 128 exceeds the 64 absolute positions")
