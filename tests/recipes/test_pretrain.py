"""`mdeberta pretrain` end to end: exact resume, torchrun DDP == one process, export loaded by transformers,
loss falls on the shared corpus, plotting."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest
import torch

from cli_helpers import assert_cli_error
from mdeberta.cli import build_parser, main
from subprocess_helpers import run_torchrun

SHARED_CORPUS = Path(os.environ.get("MDEBERTA_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "data" / \
    "corpus"


def _write_corpus(folder: Path) -> Path:
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for lang, letters, n in (("aa", "abcdefgh", 300), ("bb", "ijklmnop", 80)):
        words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 5))) for _ in range(40)]
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(n)]
        (folder / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mdeberta.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("pretrain")
    corpus = _write_corpus(root / "corpus")
    tok = train_tokenizer(corpus, root / "tok", vocab_size=100, num_threads=1)
    config = root / "micro.json"
    from mdeberta.config import preset

    preset("deberta-v3-micro", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).to_json_file(config)
    return {"corpus": str(corpus), "tok": str(tok), "config": str(config)}


def _args(setup, out, *extra):
    return ["pretrain", "--data", setup["corpus"], "--tokenizer", setup["tok"], "--output", str(out),
            "--model-preset", "deberta-v3-micro", "--max-seq-length", "32", "--batch-size", "4", "--log-every", "1",
            "--warmup-steps", "2", "--no-progress", "--device", "cpu", "--lr", "1e-3", *extra]


def _losses(out: Path, key: str = "loss") -> list[float]:
    records = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in records if key in r]


def test_resume_is_exact(setup, tmp_path):
    """N steps in one run == N/2, stop, --resume, N/2: identical loss at every step (dropout on)."""
    common = ["--max-steps", "6", "--num-workers", "2", "--save-every", "3"]
    assert main(_args(setup, tmp_path / "full", *common)) == 0
    assert main(_args(setup, tmp_path / "split", *common, "--stop-after", "3")) == 0
    assert not (tmp_path / "split" / "export").exists()
    assert main(_args(setup, tmp_path / "split", *common, "--resume")) == 0
    full, split = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert len(full) == len(split) == 6
    assert split == full
    assert _losses(tmp_path / "split", "rtd_loss") == _losses(tmp_path / "full", "rtd_loss")


def test_resume_with_corrupt_newest_checkpoint_falls_back(setup, tmp_path, caplog):
    common = ["--max-steps", "4", "--num-workers", "0", "--save-every", "1", "--stop-after", "2"]
    assert main(_args(setup, tmp_path, *common)) == 0
    (tmp_path / "checkpoints" / "step-00000002.pt").write_bytes(b"\x00" * 10)
    with caplog.at_level("INFO", logger="mdeberta.train"):
        assert main(_args(setup, tmp_path, "--max-steps", "4", "--num-workers", "0", "--resume")) == 0
    assert "step-00000002.pt is corrupt" in caplog.text and "step-00000001.pt at step 1" in caplog.text
    steps = [r["step"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2, 3, 4]  # the step logged before the kill is logged once, by the resumed run


@pytest.mark.slow
def test_torchrun_two_processes_match_one(setup, tmp_path):
    """The same global --batch-size 4: 2 ranks x 1 worker x micro-batch 2 == 1 process x 2 workers x micro-batch 2
    x grad_accum 2."""
    common = ["--config", setup["config"], "--max-steps", "4", "--save-every", "0"]
    assert main(_args(setup, tmp_path / "one", *common, "--num-workers", "2", "--grad-accum", "2")) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "mdeberta", *_args(setup, tmp_path / "two", *common, "--num-workers", "1")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = run_torchrun(cmd, env, tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    assert two == pytest.approx(one, rel=1e-4)
    assert _losses(tmp_path / "two", "rtd_loss") == pytest.approx(_losses(tmp_path / "one", "rtd_loss"), rel=1e-4)
    # Only rank 0 wrote the log and the export.
    assert (tmp_path / "two" / "export" / "discriminator" / "model.safetensors").exists()


def test_export_loads_in_transformers(setup, tmp_path):
    transformers = pytest.importorskip("transformers")
    from mdeberta.model import DebertaForMaskedLM, DebertaModel
    from mdeberta.train.checkpointing import list_checkpoints

    assert main(_args(setup, tmp_path, "--max-steps", "3", "--num-workers", "0")) == 0
    export = tmp_path / "export"
    ids = torch.tensor([[1, 10, 20, 30, 40, 50, 60, 2]])
    # Discriminator: backbone with the merged GDES embedding.
    hf = transformers.DebertaV2Model.from_pretrained(export / "discriminator").eval()
    ours = DebertaModel.from_pretrained(export / "discriminator").eval()
    state = torch.load(list_checkpoints(tmp_path)[-1], weights_only=True)["model"]
    merged = state["generator.deberta.embeddings.word_embeddings.weight"] + state[
        "discriminator.deberta.embeddings.word_embeddings.weight"]
    torch.testing.assert_close(ours.embeddings.word_embeddings.weight, merged)
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).last_hidden_state, ours(input_ids=ids).last_hidden_state,
                                   rtol=1e-4, atol=1e-4)
    # Generator: transformers has no Enhanced Mask Decoder, so compare without it (same weights).
    hf_gen = transformers.DebertaV2ForMaskedLM.from_pretrained(export / "generator").eval()
    our_gen = DebertaForMaskedLM.from_pretrained(export / "generator", enhanced_mask_decoder=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf_gen(input_ids=ids).logits, our_gen(input_ids=ids).logits, rtol=1e-4,
                                   atol=1e-4)
    assert (export / "tokenizer" / "spm.model").exists()


def test_mlm_objective_and_plot(setup, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from mdeberta.model import DebertaForMaskedLM

    args = _args(setup, tmp_path, "--max-steps", "3", "--num-workers", "0", "--objective", "mlm",
                 "--masking", "whole_word")
    assert main(args) == 0
    records = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    record = [r for r in records if "loss" in r][-1]
    assert "mlm_accuracy" in record and "rtd_loss" not in record
    assert "eval/embedding_common_share" in records[-1]  # health of the MLM model at the end
    ids = torch.tensor([[1, 10, 20, 30, 2]])
    hf = transformers.DebertaV2ForMaskedLM.from_pretrained(tmp_path / "export" / "model").eval()
    ours = DebertaForMaskedLM.from_pretrained(tmp_path / "export" / "model").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, ours(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    (tmp_path / "metrics.png").unlink()
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_defaults_from_the_preset_and_health_metrics(setup, tmp_path):
    """No --lr / --warmup-steps: the preset's rate (micro: 1e-3), warmup 10% of the steps; health metrics logged."""
    from mdeberta.recipes.pretrain import PRETRAINING_LR

    args = ["pretrain", "--data", setup["corpus"], "--tokenizer", setup["tok"], "--output", str(tmp_path),
            "--model-preset", "deberta-v3-micro", "--max-seq-length", "32", "--batch-size", "4", "--log-every", "1",
            "--no-progress", "--device", "cpu", "--max-steps", "10", "--num-workers", "0", "--health-every", "5"]
    assert main(args) == 0
    records = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if "lr" in r]
    peak = PRETRAINING_LR["deberta-v3-micro"]
    assert lrs[0] == pytest.approx(peak / 2) and lrs[1] == pytest.approx(peak)  # 1 warmup step = 10% of 10
    health = [r for r in records if "eval/embedding_common_share" in r]
    assert [r["step"] for r in health] == [5, 10]
    assert all(0 <= r["eval/embedding_common_share"] < 1 and -1 <= r["eval/token_cosine"] <= 1 for r in health)
    run_config = json.loads((tmp_path / "run_config.json").read_text())
    assert run_config["adam_betas"] == [0.9, 0.999] and run_config["shuffle_buffer"] > 1


def test_num_workers_auto_is_measured_and_kept_on_resume(setup, tmp_path, caplog):
    common = ["--max-steps", "4", "--save-every", "2", "--num-workers", "auto"]
    with caplog.at_level("INFO", logger="mdeberta.pretrain"):
        assert main(_args(setup, tmp_path, *common, "--stop-after", "2")) == 0
    assert "--num-workers auto: one data worker makes" in caplog.text
    chosen = json.loads((tmp_path / "run_config.json").read_text())["num_workers"]
    assert isinstance(chosen, int) and chosen >= 1
    caplog.clear()
    with caplog.at_level("INFO", logger="mdeberta.pretrain"):
        assert main(_args(setup, tmp_path, *common, "--resume")) == 0
    assert "--num-workers auto: one data worker" not in caplog.text  # not measured again: the stream stays
    assert json.loads((tmp_path / "run_config.json").read_text())["num_workers"] == chosen
    assert len(_losses(tmp_path)) == 4


def test_corpus_formats_through_the_command(setup, tmp_path, capsys):
    """A JSONL source (weighted) beside the text folder: the options reach the reader."""
    texts = (Path(setup["corpus"]) / "aa.txt").read_text().splitlines()
    (tmp_path / "extra").mkdir()
    with open(tmp_path / "extra" / "aa.jsonl", "w") as f:
        for line in texts[:100]:
            f.write(json.dumps({"body": line}) + "\n")
    args = _args(setup, tmp_path / "run", "--max-steps", "2", "--num-workers", "0", "--text-field", "body")
    args[args.index("--data") + 1:args.index("--data") + 2] = [setup["corpus"], f"{tmp_path / 'extra'}=2"]
    assert main(args) == 0
    assert len(_losses(tmp_path / "run")) == 2
    args[args.index("--text-field") + 1] = "text"
    args[args.index("--output") + 1] = str(tmp_path / "run2")
    assert_cli_error(capsys, args, r"aa.jsonl:1: no field 'text' \(the record has \['body'\]\)")


def test_bad_arguments_are_clear(setup, tmp_path, capsys):
    assert_cli_error(capsys, _args(setup, tmp_path / "a", "--languages", "aa,zz"), "no corpus file for language")
    assert_cli_error(capsys, _args(setup, tmp_path / "b", "--max-seq-length", "512"), "max_position_embeddings")
    for flag in ("--batch-size", "--max-steps", "--grad-accum", "--max-seq-length"):
        assert_cli_error(capsys, _args(setup, tmp_path / "c", flag, "0"), f"{flag} 0: must be >= 1")
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CORPUS.is_dir(), reason=f"shared corpus not found at {SHARED_CORPUS}")
def test_tiny_run_on_shared_corpus_learns(tmp_path):
    from mdeberta.tokenizer import train_tokenizer

    sample = tmp_path / "sample"
    sample.mkdir()
    import gzip

    for lang in ("en", "fr", "de"):
        with gzip.open(SHARED_CORPUS / f"{lang}.txt.gz", "rt", encoding="utf-8") as f:
            (sample / f"{lang}.txt").write_text("".join(next(f) for _ in range(1500)), encoding="utf-8")
    tok = train_tokenizer(sample, tmp_path / "tok", vocab_size=500, num_threads=1)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(SHARED_CORPUS), "--languages", "en,fr,de", "--tokenizer", str(tok),
                 "--output", str(out), "--model-preset", "deberta-v3-micro", "--max-seq-length", "64",
                 "--batch-size", "8", "--max-steps", "150", "--warmup-steps", "15", "--lr", "2e-3",
                 "--log-every", "25", "--save-every", "0", "--num-workers", "1", "--no-progress",
                 "--device", "cpu"]) == 0
    rtd = _losses(out, "rtd_loss")
    mlm = _losses(out, "mlm_loss")
    assert rtd[-1] < rtd[0] - 0.05 and mlm[-1] < mlm[0] - 0.5, (rtd, mlm)
    assert (out / "metrics.png").exists()


def test_minimal_pairs_are_scored_during_pretraining(setup, tmp_path, capsys):
    """--eval-minimal-pairs logs generator and discriminator accuracy with the health metrics; the final values
    equal a standalone evaluation of the exported models (GDES-merged embedding included)."""
    from mdeberta.minimal_pairs import evaluate_minimal_pairs, read_minimal_pairs
    from mdeberta.model import DebertaForMaskedLM, DebertaForReplacedTokenDetection
    from mdeberta.tokenizer import DebertaTokenizer

    lines = (Path(setup["corpus"]) / "aa.txt").read_text().splitlines()[:30]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"sentence_good": line, "sentence_bad": " ".join(line.split()[::-1]),
                                         "UID": f"p{i % 3}", "linguistics_term": "order"}) + "\n"
                             for i, line in enumerate(lines)))
    out = tmp_path / "run"
    assert main(_args(setup, out, "--max-steps", "4", "--num-workers", "0", "--health-every", "2",
                      "--eval-minimal-pairs", str(pairs), "--eval-minimal-pairs-per-paradigm", "5")) == 0
    records = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    health = [r for r in records if "eval/minimal_pairs_generator" in r]
    assert [r["step"] for r in health] == [2, 4]
    tok = DebertaTokenizer.from_pretrained(out / "export" / "tokenizer")
    sample = read_minimal_pairs(pairs, max_per_paradigm=5)
    assert len(sample) == 15
    for cls, sub, key in ((DebertaForMaskedLM, "generator", "generator"),
                          (DebertaForReplacedTokenDetection, "discriminator", "discriminator")):
        summary, _ = evaluate_minimal_pairs(cls.from_pretrained(out / "export" / sub), tok, sample)
        assert summary["overall"] == pytest.approx(health[-1][f"eval/minimal_pairs_{key}"])
    assert_cli_error(capsys, _args(setup, tmp_path / "bad", "--max-steps", "1", "--num-workers", "0",
                                   "--eval-minimal-pairs", str(tmp_path / "missing.jsonl")),
                     r"missing.jsonl: no such file")


def test_export_checkpoint_rebuilds_any_step(setup, tmp_path, capsys):
    """export-checkpoint at the last step writes the same weights as the run's own export; an earlier step differs;
    a missing step is a clear error."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    assert main(_args(setup, out, "--max-steps", "4", "--save-every", "2", "--keep-last", "0",
                      "--num-workers", "0")) == 0
    assert main(["export-checkpoint", str(out), "--output", str(tmp_path / "last")]) == 0
    assert main(["export-checkpoint", str(out), "--step", "2", "--output", str(tmp_path / "two")]) == 0
    for sub in ("discriminator", "generator"):
        final = load_file(out / "export" / sub / "model.safetensors")
        last = load_file(tmp_path / "last" / sub / "model.safetensors")
        two = load_file(tmp_path / "two" / sub / "model.safetensors")
        assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
        assert any(not torch.equal(final[k], two[k]) for k in final)
    assert (tmp_path / "two" / "tokenizer" / "spm.model").is_file()
    assert_cli_error(capsys, ["export-checkpoint", str(out), "--step", "3", "--output", str(tmp_path / "three")],
                     "no checkpoint for step 3")


def test_a_run_folder_holds_one_run(setup, tmp_path, capsys, caplog):
    """No reuse without --resume (or --overwrite); --resume refuses changed arguments, names them, and leaves
    run_config.json as it was; safe ones (logging) pass; --resume with no checkpoint yet starts the run."""
    out = tmp_path / "run"
    common = ["--max-steps", "4", "--num-workers", "0", "--save-every", "2"]
    assert main(_args(setup, out, *common, "--stop-after", "2")) == 0
    stored = (out / "run_config.json").read_text()
    assert_cli_error(capsys, _args(setup, out, *common), r"--output-dir .*run already exists .*--overwrite.*--resume")
    err = assert_cli_error(capsys, _args(setup, out, *common, "--resume", "--batch-size", "8", "--lr", "2e-3"),
                           r"--batch-size: 4 in the stored run, 8 now")
    assert "--lr: 0.001 in the stored run, 0.002 now" in err
    assert_cli_error(capsys, _args(setup, out, *common, "--resume", "--model-preset", "deberta-v3-tiny"),
                     r"--model-preset: 'deberta-v3-micro' in the stored run, 'deberta-v3-tiny' now")
    assert (out / "run_config.json").read_text() == stored
    assert main(_args(setup, out, *common, "--resume", "--log-every", "2")) == 0  # a safe change
    assert json.loads((out / "run_config.json").read_text())["log_every"] == 2
    assert (out / "export" / "discriminator").is_dir()
    # --overwrite: the old run is set aside, then gone once the new run finished.
    (out / "notes.txt").write_text("old run")
    assert main(_args(setup, out, "--max-steps", "2", "--num-workers", "0", "--overwrite")) == 0
    assert not (out / "notes.txt").exists() and len(_losses(out)) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.replaced")]
    # A job requeued before its first checkpoint: --resume starts it.
    fresh = tmp_path / "fresh"
    with caplog.at_level("INFO", logger="mdeberta.train"):
        assert main(_args(setup, fresh, "--max-steps", "2", "--num-workers", "0", "--resume")) == 0
    assert "no checkpoint in" in caplog.text and len(_losses(fresh)) == 2


def test_output_inside_or_equal_to_a_source_is_refused(setup, tmp_path, capsys):
    assert_cli_error(capsys, _args(setup, Path(setup["tok"])), r"--output-dir .* is the source")
    assert_cli_error(capsys, _args(setup, Path(setup["corpus"]) / "run"), r"--output-dir .* is inside the source")
    (tmp_path / "file").write_text("x")
    assert_cli_error(capsys, _args(setup, tmp_path / "file"), r"--output-dir .*file is a file, not a folder")


def test_export_checkpoint_step_zero_is_the_initialization(setup, tmp_path):
    """Step 0 rebuilds the run's initial weights from its seed: the model the recipe's build() starts training."""

    from safetensors.torch import load_file

    from mdeberta.recipes.pretrain import PretrainConfig, build
    from mdeberta.train.distributed import DistributedEnv
    from mdeberta.train.run_folder import read_run_config

    out = tmp_path / "run"
    assert main(_args(setup, out, "--max-steps", "2", "--num-workers", "0")) == 0
    assert main(["export-checkpoint", str(out), "--step", "0", "--output", str(tmp_path / "init")]) == 0
    config = PretrainConfig.from_dict(read_run_config(out))
    model = build(config, DistributedEnv())["model"]
    for sub, part in (("generator", model.generator), ("discriminator", model.export_discriminator())):
        init = load_file(tmp_path / "init" / sub / "model.safetensors")
        state = part.state_dict()
        assert all(torch.equal(init[k], state[k]) for k in init), sub
    trained = load_file(out / "export" / "generator" / "model.safetensors")
    assert any(not torch.equal(trained[k], model.generator.state_dict()[k]) for k in trained)


def test_fsdp_run_finishes_exports_and_matches_ddp(setup, tmp_path):
    """torchrun x 2 with FSDP2 (gloo): the run reaches --max-steps, runs the health evaluation (minimal pairs
    included) on the gathered weights, exports, and its losses and exported weights equal DDP's."""
    from safetensors.torch import load_file

    lines = (Path(setup["corpus"]) / "aa.txt").read_text().splitlines()[:6]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{line}\t{' '.join(line.split()[::-1])}\n" for line in lines))
    common = ["--config", setup["config"], "--max-steps", "3", "--save-every", "0", "--num-workers", "0",
              "--health-every", "2", "--eval-minimal-pairs", str(pairs)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = {}
    for strategy in ("ddp", "fsdp"):
        out = tmp_path / strategy
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m",
               "mdeberta", *_args(setup, out, *common, "--distributed", strategy)]
        proc = run_torchrun(cmd, env, out)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[strategy] = out
    assert _losses(runs["fsdp"]) == pytest.approx(_losses(runs["ddp"]), rel=1e-5)
    health = [_losses(runs[s], "eval/minimal_pairs_discriminator") for s in ("ddp", "fsdp")]
    assert len(health[0]) == 2 and health[0] == health[1]
    for sub in ("discriminator", "generator"):
        a = load_file(runs["ddp"] / "export" / sub / "model.safetensors")
        b = load_file(runs["fsdp"] / "export" / sub / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_decoupled_training_resumes_exactly_and_exports(setup, tmp_path, capsys):
    common = ["--max-steps", "4", "--num-workers", "0", "--save-every", "2", "--decoupled-training"]
    assert main(_args(setup, tmp_path / "full", *common)) == 0
    assert main(_args(setup, tmp_path / "split", *common, "--stop-after", "2")) == 0
    assert main(_args(setup, tmp_path / "split", *common, "--resume")) == 0
    assert _losses(tmp_path / "split") == _losses(tmp_path / "full")
    assert _losses(tmp_path / "split", "grad_norm_2") == _losses(tmp_path / "full", "grad_norm_2")
    assert (tmp_path / "full" / "export" / "discriminator" / "model.safetensors").is_file()
    assert_cli_error(capsys, _args(setup, tmp_path / "es", *common, "--embedding-sharing", "es"),
                     r"--decoupled-training .* gdes or none")
    # A joint-loss run cannot be resumed as a decoupled one (and the reverse): the flag is part of the run.
    assert_cli_error(capsys, _args(setup, tmp_path / "split", "--max-steps", "4", "--num-workers", "0",
                                   "--save-every", "2", "--resume"), r"--decoupled-training: True in the stored run")


def test_batch_size_is_the_global_batch(setup, tmp_path, capsys):
    """--batch-size means sequences per optimizer step in pretrain as in finetune: with --grad-accum 2 each
    micro-batch holds half of them; a batch that does not divide is an error naming both flags."""
    from mdeberta.recipes.pretrain import PretrainConfig, build
    from mdeberta.train.distributed import DistributedEnv

    parser = build_parser()
    args = parser.parse_args(_args(setup, tmp_path / "a", "--batch-size", "8", "--grad-accum", "2"))
    parts = build(PretrainConfig.from_args(args), DistributedEnv())
    batch = next(iter(parts["loader"]))
    assert batch["input_ids"].shape[0] == 4
    assert_cli_error(capsys, _args(setup, tmp_path / "b", "--batch-size", "6", "--grad-accum", "4", "--max-steps", "1"),
                     r"--batch-size 6 \(the global batch\) must be a multiple of --grad-accum \(4\) x processes \(1\)")
    assert_cli_error(capsys, _args(setup, tmp_path / "c", "--warmup-ratio", "0.2"),
                     r"--warmup-steps 2 and --warmup-ratio 0.2: give one of them")


def test_python_config_runs_the_recipe_and_is_what_the_run_folder_stores(setup, tmp_path):
    """A PretrainConfig built in Python runs the same recipe; run_config.json holds its fields (and the format),
    nothing of the CLI's own (verbose, the subcommand), and reads back into an equal config."""
    from mdeberta.recipes.pretrain import PretrainConfig, run_pretraining
    from mdeberta.train.run_folder import read_run_config

    config = PretrainConfig(data=[setup["corpus"]], tokenizer=setup["tok"], output_dir=str(tmp_path / "run"),
                            model_preset="deberta-v3-micro", max_seq_length=32, batch_size=4, max_steps=2,
                            warmup_steps=1, num_workers=0, no_progress=True, device="cpu", save_every=0)
    assert run_pretraining(config) == 0
    stored = read_run_config(tmp_path / "run")
    assert "verbose" not in stored and "command" not in stored and stored["run_config_format"] == 2
    assert PretrainConfig.from_dict(stored) == config
    assert (tmp_path / "run" / "export" / "discriminator" / "model.safetensors").is_file()
    parsed = PretrainConfig.from_args(build_parser().parse_args(
        ["pretrain", "--data", setup["corpus"], "--tokenizer", setup["tok"], "--output-dir", str(tmp_path / "run"),
         "--model-preset", "deberta-v3-micro", "--max-seq-length", "32", "--batch-size", "4", "--max-steps", "2",
         "--warmup-steps", "1", "--num-workers", "0", "--no-progress", "--device", "cpu", "--save-every", "0"]))
    assert parsed == config
