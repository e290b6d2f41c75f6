"""``mdeberta probe``: frozen-feature linear probes of a backbone on NLI pairs.

    mdeberta probe --model runs/pretrain/export/discriminator --train-file mnli_train.tsv.gz \\
        --eval-file mnli_heldout.tsv.gz --output probe.json
    mdeberta probe --model deberta-v3-tiny --random-init --tokenizer TOK ...   # the random-features baseline

The frozen backbone encodes each pair; the vectors of every layer (embeddings = layer 0) are mean-pooled over the
real tokens, standardised with the training set's statistics and fed to a multinomial logistic regression (L2,
full-batch L-BFGS). ``--features pair`` pools the encoded pair ``[CLS] premise [SEP] hypothesis [SEP]``;
``--features sentences`` encodes premise and hypothesis apart and probes SentEval's ``[u, v, |u - v|, u * v]``,
which lets a linear probe compare the two sentences (pair pooling adds them up, so it cannot).

Fine-tuning mixes two questions: does the representation carry information, and does the optimiser find it from
this starting point? A probe answers the first alone, so a pretrained model whose fine-tuning stalls can still be
told apart from one whose features are empty.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import torch

from mdeberta.arguments import CommonConfig, add_config_arguments
from mdeberta.data.nli import LABELS, collate, encode_examples, load_nli
from mdeberta.errors import CheckpointError, UsageError
from mdeberta.files import atomic_write_text

logger = logging.getLogger("mdeberta.probe")


def load_backbone(model: str, tokenizer: Any, random_init: bool = False, seed: int = 0) -> Any:
    """The ``DebertaModel`` of a folder / hub id, or (``random_init``) the same architecture freshly initialised."""
    from mdeberta.config import PRESETS, DebertaConfig, preset
    from mdeberta.model import DebertaModel

    if random_init:
        config = (preset(model, vocab_size=len(tokenizer)) if model in PRESETS
                  else DebertaConfig.from_pretrained(model))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return DebertaModel(config)
    if model in PRESETS:
        raise CheckpointError(f"{model!r} is a preset name, not a checkpoint; pass --random-init for random features")
    return DebertaModel.from_pretrained(model)


@torch.no_grad()
def pooled_features(backbone: Any, features: list[dict[str, Any]], batch_size: int = 64,
                    pad_token_id: int = 0) -> torch.Tensor:
    """(N, layers + 1, hidden) mean-pooled vectors of every layer, in the order of ``features``."""
    from mdeberta.tasks.base import run_batches

    def pooled(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = inputs["attention_mask"]
        states = model(input_ids=inputs["input_ids"], attention_mask=mask, output_hidden_states=True).hidden_states
        weights = (mask / mask.sum(1, keepdim=True)).unsqueeze(-1).float()
        return torch.stack([(h.float() * weights).sum(1) for h in states], dim=1)

    out: torch.Tensor | None = None
    for idx, vectors in run_batches(backbone, features, collate, batch_size, pad_token_id, forward=pooled):
        if out is None:
            out = torch.empty((len(features), *vectors.shape[1:]))
        out[torch.tensor(idx)] = vectors.cpu()
    return out


def logistic_regression(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, max_iter: int = 200) -> torch.nn.Linear:
    """Multinomial logistic regression, mean cross-entropy + ``l2 * |W|^2``, full-batch L-BFGS."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return linear


FEATURES = ("pair", "sentences")


def probe_features(backbone: Any, tokenizer: Any, examples: list, max_length: int, features: str) -> torch.Tensor:
    """(N, layers + 1, dim) probe inputs: pooled pair vectors, or [u, v, |u - v|, u * v] of the two sentences."""
    if features not in FEATURES:
        raise UsageError(f"features={features!r}; allowed: {list(FEATURES)}")
    pad = tokenizer.pad_token_id
    if features == "pair":
        return pooled_features(backbone, encode_examples(tokenizer, examples, max_length), pad_token_id=pad)
    from mdeberta.data.nli import NLIExample

    sides = []
    for text in ("premise", "hypothesis"):
        singles = [NLIExample(getattr(ex, text), None, ex.label) for ex in examples]
        sides.append(pooled_features(backbone, encode_examples(tokenizer, singles, max_length), pad_token_id=pad))
    u, v = sides
    return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)


def probe(backbone: Any, tokenizer: Any, train: list, evaluation: list, max_length: int = 128,
          l2: float = 1e-3, features: str = "pair") -> dict[str, Any]:
    """Train/eval accuracy (percent) of a probe on each layer's pooled features and on all layers at once."""
    xs = {"train": probe_features(backbone, tokenizer, train, max_length, features),
          "eval": probe_features(backbone, tokenizer, evaluation, max_length, features)}
    ys = {"train": torch.tensor([ex.label for ex in train]), "eval": torch.tensor([ex.label for ex in evaluation])}
    layers = {f"layer_{i}": i for i in range(xs["train"].shape[1])}
    layers["all_layers"] = None
    results: dict[str, Any] = {}
    for name, i in layers.items():
        feats = {k: (v[:, i] if i is not None else v.flatten(1)) for k, v in xs.items()}
        mean, std = feats["train"].mean(0), feats["train"].std(0).clamp(min=1e-6)
        feats = {k: (v - mean) / std for k, v in feats.items()}
        linear = logistic_regression(feats["train"], ys["train"], l2)
        with torch.no_grad():
            results[name] = {k: 100.0 * float((linear(feats[k]).argmax(-1) == ys[k]).float().mean())
                             for k in ("train", "eval")}
    majority = max(float((ys["eval"] == c).float().mean()) for c in range(len(LABELS)))
    return {"layers": results, "features": features, "majority_eval": 100.0 * majority,
            "train_examples": len(train), "eval_examples": len(evaluation)}


def cmd_probe(args: argparse.Namespace) -> int:
    from mdeberta.outputs import check_output_file
    from mdeberta.tokenizer import DebertaTokenizer

    if args.output:
        check_output_file(args.output, [args.model, *args.train_file, *args.eval_file], overwrite=args.overwrite)
    torch.set_grad_enabled(True)
    start = time.perf_counter()
    tokenizer = DebertaTokenizer.from_pretrained(args.tokenizer or args.model)
    backbone = load_backbone(args.model, tokenizer, args.random_init, args.seed)
    if len(tokenizer) > backbone.config.vocab_size:
        raise CheckpointError(f"the tokenizer has {len(tokenizer)} tokens but {args.model} has vocab_size "
                              f"{backbone.config.vocab_size}: pass the model's tokenizer (--tokenizer)")
    train = load_nli(args.train_file, "train", args.max_train_examples, args.seed)
    evaluation = load_nli(args.eval_file, "eval", args.max_eval_examples, args.seed)
    result = probe(backbone, tokenizer, train, evaluation, args.max_seq_length, args.l2, args.features)
    result |= {"model": str(args.model), "random_init": args.random_init, "l2": args.l2,
               "seconds": round(time.perf_counter() - start, 1)}
    lines = ["| features | train | eval |", "|---|---:|---:|"]
    lines += [f"| {name} | {r['train']:.1f} | {r['eval']:.1f} |" for name, r in result["layers"].items()]
    print("\n".join(lines) + f"\n\nmajority class (eval): {result['majority_eval']:.1f}")
    if args.output:
        atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("probe", help="linear probes on frozen, mean-pooled features of a backbone (NLI)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder / hub id, or a preset with --random-init")
    add_config_arguments(p, CommonConfig, only=("tokenizer", "seed"), defaults={"seed": 0})
    p.add_argument("--random-init", action="store_true", help="random features of the same architecture")
    p.add_argument("--train-file", nargs="+", required=True, help="NLI training pairs (TSV/JSONL, .gz ok)")
    p.add_argument("--eval-file", nargs="+", required=True, help="NLI evaluation pairs")
    p.add_argument("--max-train-examples", type=int, default=None)
    p.add_argument("--max-eval-examples", type=int, default=None)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--features", choices=FEATURES, default="pair",
                   help="pair: mean-pool the encoded pair; sentences: [u, v, |u-v|, u*v] of the sentences apart")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 penalty on the probe's weights")
    p.add_argument("--output", default=None, help="JSON file for the results")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.set_defaults(func=cmd_probe)


__all__ = ["FEATURES", "logistic_regression", "pooled_features", "probe", "probe_features"]
