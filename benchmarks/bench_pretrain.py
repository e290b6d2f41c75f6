"""Pretraining throughput (tokens/s) and peak memory of the RTD+GDES step for the tiny and xsmall presets, and the
data pipeline's tokens/s per worker beside it.

Synthetic batches (no data loading) so the number measures the model step: generator forward/backward, sampling,
discriminator forward/backward, AdamW. Run: ``python benchmarks/bench_pretrain.py [--steps 10 --presets ...]``.
With ``--data CORPUS --tokenizer TOK`` it also measures one data worker (read, shuffle, tokenize, pack, mask) on
that corpus: the number of workers a run needs is about model tokens/s / data tokens/s (``--num-workers auto``
measures both at startup).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch

from mdeberta.config import preset
from mdeberta.train import build_optimizer
from mdeberta.train.pretraining import build_rtd_model


def bench(name: str, batch: int, length: int, steps: int, vocab: int, precision: str, device: str) -> dict:
    torch.manual_seed(0)
    model = build_rtd_model(preset(name, vocab_size=vocab)).to(device).train()
    opt = build_optimizer(model, 1e-4)
    ids = torch.randint(4, vocab - 1, (batch, length), device=device)
    labels = torch.full_like(ids, -100)
    chosen = torch.rand(ids.shape, device=device) < 0.15
    labels[chosen] = ids[chosen]
    inputs = ids.masked_fill(chosen, vocab - 1)
    data = {"input_ids": inputs, "labels": labels, "attention_mask": torch.ones_like(ids),
            "sample_noise": torch.rand(ids.shape, device=device)}
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            loss = model(**data).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    out = {"preset": name, "batch": batch, "length": length, "vocab": vocab, "precision": precision,
           "device": device, "tokens_per_s": round(batch * length * steps / elapsed, 1),
           "s_per_step": round(elapsed / steps, 4),
           "params_M": round(sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()) / 1e6, 2),
           "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device == "cuda":
        out["peak_cuda_MiB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def bench_data(data: list[str], tokenizer: str, batch: int, length: int, objective: str) -> dict:
    from mdeberta.data.text import MaskingConfig, PackedTextDataset, discover_corpus
    from mdeberta.recipes.pretrain import data_throughput
    from mdeberta.tokenizer import DebertaTokenizer

    tok = DebertaTokenizer.from_pretrained(tokenizer)
    ds = PackedTextDataset(discover_corpus(data), tok, length, batch, MaskingConfig(objective))
    tokens_per_s, _ = data_throughput(ds, batches=50, min_seconds=3.0)
    return {"data": data, "tokenizer": tokenizer, "vocab": len(tok), "batch": batch, "length": length,
            "data_worker_tokens_per_s": round(tokens_per_s, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--presets", nargs="+", default=["deberta-v3-tiny", "deberta-v3-xsmall"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", nargs="+", default=None, help="corpus for the data-worker measurement")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder for --data")
    args = p.parse_args()
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))
    if args.data:
        if not args.tokenizer:
            raise SystemExit("--data needs --tokenizer")
        print(json.dumps(bench_data(args.data, args.tokenizer, args.batch_size, args.length, "rtd")), flush=True)
    for name in args.presets:
        print(json.dumps(bench(name, args.batch_size, args.length, args.steps, args.vocab, args.precision,
                               args.device)), flush=True)


if __name__ == "__main__":
    main()
