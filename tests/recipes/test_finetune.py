"""`mdeberta finetune`: training on the shared loop, best-checkpoint export, exact resume, bad inputs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from mdeberta.checkpoint import CheckpointError, load_state_dict
from mdeberta.cli import main
from mdeberta.config import preset
from mdeberta.data.nli import LABELS, read_nli_file
from mdeberta.model import DebertaForSequenceClassification, DebertaModel
from mdeberta.recipes.evaluate import evaluate_examples
from mdeberta.recipes.finetune import load_model_for_nli
from mdeberta.tokenizer import DebertaTokenizer

pytestmark = pytest.mark.usefixtures("single_thread")


def run_finetune(model: Path, data: dict[str, Path], out: Path, *extra: str) -> int:
    return main(["finetune", "--model", str(model), "--train-file", str(data["train"]), "--dev-file",
                 str(data["dev"]), "--output-dir", str(out), "--batch-size", "8", "--learning-rate", "1e-3",
                 "--eval-every", "3", "--save-every", "3", "--log-every", "1", "--device", "cpu", *extra])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_finetune_exports_the_best_dev_model(tiny_backbone, synthetic_nli, tmp_path, caplog):
    out = tmp_path / "ft"
    with caplog.at_level(logging.INFO):
        assert run_finetune(tiny_backbone, synthetic_nli, out, "--max-steps", "6", "--grad-accum", "2") == 0
    assert "no sequence-classification head" in caplog.text  # the backbone had none: a fresh head, logged
    evals = [r for r in records(out) if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [3, 6]
    train = [r for r in records(out) if "loss" in r]
    assert len(train) == 6 and all(0 <= r["accuracy"] <= 100 for r in train)

    best, final = out / "best", out / "final"
    for folder in (best, final):
        assert {"config.json", "model.safetensors", "spm.model", "training_info.json"} <= {
            p.name for p in folder.iterdir()}
    info = json.loads((best / "training_info.json").read_text())
    best_eval = max(evals, key=lambda r: r["eval/accuracy"])
    assert info["dev_accuracy"] == pytest.approx(best_eval["eval/accuracy"])
    assert info["step"] == min(r["step"] for r in evals if r["eval/accuracy"] == best_eval["eval/accuracy"])

    # The exported folder is a complete NLI classifier: it reloads with its labels and reproduces the dev score.
    model = DebertaForSequenceClassification.from_pretrained(best)
    assert [model.config.id2label[i] for i in range(3)] == list(LABELS)
    assert json.loads((best / "config.json").read_text())["architectures"] == ["DebertaV2ForSequenceClassification"]
    acc, _ = evaluate_examples(model, DebertaTokenizer.from_pretrained(best), read_nli_file(synthetic_nli["dev"]))
    assert acc == pytest.approx(info["dev_accuracy"])


def test_resume_continues_exactly(tiny_backbone, synthetic_nli, tmp_path):
    full = tmp_path / "full"
    assert run_finetune(tiny_backbone, synthetic_nli, full, "--max-steps", "6") == 0
    # A run that "crashed" after step 3: only the step-3 checkpoint and the best export of that time survive.
    crashed = tmp_path / "crashed"
    (crashed / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "step-00000003.pt", crashed / "checkpoints")
    assert run_finetune(tiny_backbone, synthetic_nli, crashed, "--max-steps", "6", "--resume") == 0
    a, _ = load_state_dict(full / "final")
    b, _ = load_state_dict(crashed / "final")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    changed = load_state_dict(tiny_backbone)[0]["encoder.layer.0.attention.self.query_proj.weight"]
    assert not torch.equal(changed, a["deberta.encoder.layer.0.attention.self.query_proj.weight"])


def test_head_with_other_labels_is_a_clear_error(tiny_backbone, tmp_path):
    tok = DebertaTokenizer.from_pretrained(tiny_backbone)
    binary = DebertaForSequenceClassification(preset("deberta-v3-micro", vocab_size=len(tok), num_labels=2,
                                                     id2label={0: "negative", 1: "positive"}))
    binary.save_pretrained(tmp_path / "sst2")
    with pytest.raises(CheckpointError, match=r"2 labels \['negative', 'positive'\]"):
        load_model_for_nli(str(tmp_path / "sst2"), tok)


def test_existing_nli_head_is_kept(tiny_backbone, tmp_path):
    tok = DebertaTokenizer.from_pretrained(tiny_backbone)
    torch.manual_seed(3)
    nli = DebertaForSequenceClassification(preset("deberta-v3-micro", vocab_size=len(tok), num_labels=3,
                                                  id2label=dict(enumerate(LABELS))))
    nli.save_pretrained(tmp_path / "nli")
    loaded = load_model_for_nli(str(tmp_path / "nli"), tok)
    torch.testing.assert_close(loaded.classifier.weight, nli.classifier.weight)


def test_vocab_and_batch_errors(tiny_backbone, synthetic_nli, tmp_path, caplog, stderr):
    tok = DebertaTokenizer.from_pretrained(tiny_backbone)
    small = DebertaModel(preset("deberta-v3-micro", vocab_size=len(tok) - 10))
    small.save_pretrained(tmp_path / "small")
    with pytest.raises(CheckpointError, match="vocab_size"):
        load_model_for_nli(str(tmp_path / "small"), tok)
    with caplog.at_level(logging.ERROR):
        rc = run_finetune(tiny_backbone, synthetic_nli, tmp_path / "x", "--max-steps", "1", "--grad-accum", "3")
    assert rc == 2 and "must be a multiple of --grad-accum" in stderr.text
    with pytest.raises(CheckpointError, match="--random-init"):
        load_model_for_nli("deberta-v3-micro", tok)
    stderr.clear()
    with caplog.at_level(logging.ERROR):
        rc = main(["finetune", "--model", "deberta-v3-micro", "--random-init", "--train-file",
                   str(synthetic_nli["train"]), "--output-dir", str(tmp_path / "y")])
    assert rc == 2 and "pass --tokenizer" in stderr.text


def test_random_init_from_preset_and_truncation(tiny_backbone, synthetic_nli, tmp_path, caplog):
    out = tmp_path / "rand"
    with caplog.at_level(logging.INFO):
        rc = main(["finetune", "--model", "deberta-v3-micro", "--random-init", "--tokenizer", str(tiny_backbone),
                   "--train-file", str(synthetic_nli["train"]), "--output-dir", str(out), "--max-steps", "2",
                   "--batch-size", "4", "--max-seq-length", "12", "--device", "cpu"])
    assert rc == 0
    assert "random init" in caplog.text and "at the 12-token limit" in caplog.text
    assert (out / "final" / "model.safetensors").exists() and not (out / "best").exists()
    info = json.loads((out / "final" / "training_info.json").read_text())
    assert info["random_init"] is True and info["max_steps"] == 2


def test_finetuning_learns_a_learnable_task(tiny_backbone, tmp_path):
    """Not just mechanics: on pairs whose label follows from the words, dev accuracy leaves chance (33%)."""
    from nli_helpers import synthetic_pairs, write_tsv

    data = {"train": write_tsv(tmp_path / "train.tsv", synthetic_pairs(600, seed=1)),
            "dev": write_tsv(tmp_path / "dev.tsv", synthetic_pairs(60, seed=2))}
    out = tmp_path / "learn"
    assert main(["finetune", "--model", str(tiny_backbone), "--train-file", str(data["train"]), "--dev-file",
                 str(data["dev"]), "--output-dir", str(out), "--max-steps", "150", "--batch-size", "16",
                 "--learning-rate", "1e-3", "--warmup-steps", "10", "--eval-every", "50", "--save-every", "1000",
                 "--log-every", "25", "--device", "cpu"]) == 0
    info = json.loads((out / "best" / "training_info.json").read_text())
    assert info["dev_accuracy"] > 55
    losses = [r["loss"] for r in records(out) if "loss" in r]
    assert losses[-1] < losses[0] - 0.2


@pytest.mark.slow
def test_torchrun_two_processes(tiny_backbone, synthetic_nli, tmp_path):
    """Data-parallel run on CPU (gloo): trains, shards the dev set and sums it back correctly."""
    import os
    import sys

    from subprocess_helpers import run_torchrun

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "mdeberta", "finetune",
           "--model", str(tiny_backbone), "--train-file", str(synthetic_nli["train"]), "--dev-file",
           str(synthetic_nli["dev"]), "--output-dir", str(out), "--max-steps", "4", "--batch-size", "8",
           "--eval-every", "2", "--save-every", "2", "--log-every", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = run_torchrun(cmd, env, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(out / "checkpoints" / "step-00000004.pt", weights_only=False)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    info = json.loads((out / "best" / "training_info.json").read_text())
    model = DebertaForSequenceClassification.from_pretrained(out / "best")
    acc, _ = evaluate_examples(model, DebertaTokenizer.from_pretrained(out / "best"),
                               read_nli_file(synthetic_nli["dev"]))
    assert acc == pytest.approx(info["dev_accuracy"])


def test_a_config_built_in_python_names_what_it_lacks():
    from mdeberta.errors import UsageError
    from mdeberta.recipes.finetune import FinetuneConfig, finetune

    with pytest.raises(UsageError, match="fine-tuning needs --train-file, --output-dir"):
        finetune(FinetuneConfig(model="deberta-v3-micro"))


def test_warmup_ratio_and_layerwise_lr_decay(tiny_backbone, synthetic_nli, tmp_path, caplog, stderr):
    out = tmp_path / "run"
    assert run_finetune(tiny_backbone, synthetic_nli, out, "--max-steps", "10", "--warmup-ratio", "0.2",
                        "--layerwise-lr-decay", "0.5") == 0
    train = [r for r in records(out) if "loss" in r]
    # Warmup: 2 of 10 steps; the head (group 0 is the first parameter's, the embeddings) and the top layer.
    head = [r["lr/default_depth_3"] for r in train]
    assert head[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])
    assert [r["lr/default_depth_2"] for r in train][2] == pytest.approx(5e-4)
    assert [r["lr/default_depth_0"] for r in train][2] == pytest.approx(1e-3 * 0.5 ** 3)
    info = json.loads((out / "final" / "training_info.json").read_text())
    assert info["warmup_steps"] == 2 and info["layerwise_lr_decay"] == 0.5
    for flags in (("--warmup-ratio", "1.5"), ("--layerwise-lr-decay", "0"),
                  ("--warmup-ratio", "0.1", "--warmup-steps", "5")):  # the last: two warmups, give one
        stderr.clear()
        assert run_finetune(tiny_backbone, synthetic_nli, tmp_path / "bad", *flags) == 2
        assert flags[0] in stderr.text
        assert not (tmp_path / "bad").exists()  # checked before anything is read or written


def test_packed_sequences_train_exactly_like_padded_batches(tiny_backbone, synthetic_nli, tmp_path):
    """--pack-sequences on (what auto does on CUDA) computes no padding and yet the same training: with dropout off,
    the weights after 4 steps equal those of padded batches."""
    backbone = tmp_path / "no_dropout"
    shutil.copytree(tiny_backbone, backbone)
    config = json.loads((backbone / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pooler_dropout=0.0, cls_dropout=0.0)
    (backbone / "config.json").write_text(json.dumps(config))
    states = {}
    for mode in ("off", "on"):
        out = tmp_path / mode
        assert run_finetune(backbone, synthetic_nli, out, "--max-steps", "4", "--pack-sequences", mode) == 0
        assert json.loads((out / "final" / "training_info.json").read_text())["packed_sequences"] == (mode == "on")
        states[mode] = load_state_dict(out / "final")[0]
        train = [r for r in records(out) if "loss" in r]
        assert len(train) == 4 and all(r["tokens_per_s"] > 0 for r in train)
    for k in states["off"]:
        torch.testing.assert_close(states["on"][k], states["off"][k], rtol=1e-4, atol=1e-5, msg=k)


def test_fsdp_finetuning_finishes_exports_resumes_and_matches_ddp(tiny_backbone, synthetic_nli, tmp_path):
    """torchrun x 2 with FSDP2 (gloo): dev evaluation on the sharded model, best/ and final/ exported whole,
    losses and weights equal DDP's; a run cut after its step-2 checkpoint resumes to the same weights."""
    import os
    import shutil
    import sys

    from safetensors.torch import load_file

    from mdeberta.train.metrics import read_metrics
    from subprocess_helpers import run_torchrun

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(out, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m",
               "mdeberta", "finetune", "--model", str(tiny_backbone), "--train-file", str(synthetic_nli["train"]),
               "--dev-file", str(synthetic_nli["dev"]), "--output-dir", str(out), "--max-steps", "4",
               "--batch-size", "8", "--eval-every", "2", "--save-every", "2", "--log-every", "1", "--device", "cpu",
               *extra]
        proc = run_torchrun(cmd, env, out)
        assert proc.returncode == 0, proc.stderr[-3000:]

    run(tmp_path / "ddp")
    run(tmp_path / "fsdp", "--distributed", "fsdp")
    losses = {s: [r["loss"] for r in read_metrics(tmp_path / s) if "loss" in r] for s in ("ddp", "fsdp")}
    assert len(losses["ddp"]) == 4 and losses["fsdp"] == pytest.approx(losses["ddp"], rel=1e-5)
    for folder in ("best", "final"):
        a = load_file(tmp_path / "ddp" / folder / "model.safetensors")
        b = load_file(tmp_path / "fsdp" / folder / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    # Resume: the FSDP run as if killed after its step-2 checkpoint.
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "fsdp", cut)
    (cut / "checkpoints" / "step-00000004.pt").unlink()
    shutil.rmtree(cut / "final")
    run(cut, "--distributed", "fsdp", "--resume")
    a = load_file(tmp_path / "fsdp" / "final" / "model.safetensors")
    b = load_file(cut / "final" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
