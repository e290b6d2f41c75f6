"""`mdeberta probe`: frozen-feature linear probes (pair and sentence features), random-feature baseline, errors."""

from __future__ import annotations

import json

import torch

from mdeberta.cli import main
from mdeberta.recipes.probe import logistic_regression
from nli_helpers import synthetic_pairs, write_tsv


def test_logistic_regression_fits_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g)
    y = (x @ torch.randn(5, 3, generator=g)).argmax(-1)  # linearly separable
    linear = logistic_regression(x, y, l2=1e-4)
    assert (linear(x).argmax(-1) == y).float().mean() > 0.97


def test_probe_features_and_random_baseline(tiny_backbone, tmp_path, single_thread, caplog, stderr):
    train = write_tsv(tmp_path / "train.tsv", synthetic_pairs(300, seed=1))
    dev = write_tsv(tmp_path / "dev.tsv", synthetic_pairs(90, seed=2))
    results = {}
    for name, extra in (("pair", ["--model", str(tiny_backbone), "--features", "pair"]),
                        ("sentences", ["--model", str(tiny_backbone), "--features", "sentences"]),
                        ("random", ["--model", "deberta-v3-micro", "--random-init", "--tokenizer", str(tiny_backbone),
                                    "--features", "sentences"])):
        out = tmp_path / f"{name}.json"
        assert main(["probe", *extra, "--train-file", str(train), "--eval-file", str(dev), "--output", str(out),
                     "--max-seq-length", "64"]) == 0
        results[name] = json.loads(out.read_text())
    layers = results["pair"]["layers"]
    assert list(layers) == ["layer_0", "layer_1", "layer_2", "all_layers"]  # micro: 2 layers + embeddings
    assert results["pair"]["train_examples"] == 300 and results["pair"]["eval_examples"] == 90
    assert abs(results["pair"]["majority_eval"] - 100 / 3) < 1e-4
    # "no" in the hypothesis marks contradiction: the sentence features separate it, far above chance.
    assert results["sentences"]["layers"]["all_layers"]["eval"] > 60
    assert results["random"]["layers"]["layer_0"]["eval"] > 45
    assert main(["probe", "--model", "deberta-v3-micro", "--tokenizer", str(tiny_backbone), "--train-file",
                 str(train), "--eval-file", str(dev)]) == 2
    assert "preset name, not a checkpoint" in stderr.text
