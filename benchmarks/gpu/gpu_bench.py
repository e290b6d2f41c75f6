"""The GPU issue's measurements in one process: speed table against transformers eager, FlashDeBERTa and
DisentangledFlash; fp16 / bf16 training stability; pretraining tokens/s per preset; fine-tuning on packed
sequences (cu_seqlens) against padded batches.

    python benchmarks/gpu/gpu_bench.py --out OUT                 # on the H200 (benchmarks/gpu/run.sh calls it)
    python benchmarks/gpu/gpu_bench.py --out OUT --dry-run       # the same code paths on CPU, tiny shapes

Every result is appended to ``OUT/results.jsonl`` as soon as it is measured (a run cut short by its time limit
still returns what it did) and summarised in ``OUT/table.md`` at the end.

Table (part b): the mdeberta-v3-base config, bf16 autocast, batches of about 16k tokens, the same weights in every
implementation; per implementation and length the inference forward and a training step (forward + backward +
AdamW) are timed in alternating rounds (implementation order rotated every round), median of the rounds; peak
memory per measurement. Implementations that are not installed or fail are recorded with the error, not skipped
silently.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mdeberta.config import preset
from mdeberta.model import DebertaModel

LENGTHS = (128, 512, 2048, 8192)
TOKENS_PER_BATCH = 16384


class Recorder:
    """Appends each result to OUT/results.jsonl at once; ``rows`` holds every result there (earlier parts too)."""

    def __init__(self, out: Path) -> None:
        self.path = out / "results.jsonl"
        self.rows: list[dict[str, Any]] = (
            [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            if self.path.exists() else [])

    def __call__(self, **row: Any) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --------------------------------------------------------------------------- implementations
def hf_config(config: Any) -> Any:
    import transformers

    return transformers.DebertaV2Config(**config.to_dict())


def build_ours(config: Any, state: dict, device: torch.device) -> torch.nn.Module:
    model = DebertaModel(config)
    model.load_state_dict(state)
    return model.to(device)


def build_transformers(config: Any, state: dict, device: torch.device) -> torch.nn.Module:
    import transformers

    model = transformers.DebertaV2Model(hf_config(config))
    model.load_state_dict(state, strict=False)
    return model.to(device)


def build_flashdeberta(config: Any, state: dict, device: torch.device) -> torch.nn.Module:
    from flashdeberta import FlashDebertaV2Model

    model = FlashDebertaV2Model(hf_config(config))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if "rel_embeddings" not in k and "LayerNorm" not in k]:
        raise RuntimeError(f"FlashDeBERTa: weights do not map: missing {missing[:5]}")
    return model.to(device)


def build_disentangled_flash(config: Any, state: dict, device: torch.device, training: bool,
                             length: int) -> torch.nn.Module:
    import disentangled_flash

    model = build_transformers(config, state, device)
    if training:
        return disentangled_flash.enable_deberta_training(model.train())
    return disentangled_flash.enable_deberta_inference(model.eval(), sequence_lengths=[length])


IMPLEMENTATIONS: dict[str, Callable[..., torch.nn.Module]] = {  # (config, state, device, training, length)
    "ours": lambda c, s, d, training, length: build_ours(c, s, d),
    "transformers-eager": lambda c, s, d, training, length: build_transformers(c, s, d),
    "flashdeberta": lambda c, s, d, training, length: build_flashdeberta(c, s, d),
    "disentangled-flash": build_disentangled_flash,
}


def last_hidden(output: Any) -> torch.Tensor:
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]


def run_table(config: Any, device: torch.device, lengths: tuple[int, ...], tokens: int, rounds: int,
              record: Recorder, names: list[str]) -> None:
    torch.manual_seed(0)
    state = DebertaModel(config).state_dict()
    dtype = torch.bfloat16
    autocast = torch.autocast(device.type, dtype=dtype)
    for length in lengths:
        batch = max(1, tokens // length)
        ids = torch.randint(4, config.vocab_size, (batch, length), device=device)
        mask = torch.ones_like(ids)
        for mode in ("infer", "train"):
            models, optimizers, times, peaks = {}, {}, {n: [] for n in names}, {}
            for name in names:
                try:
                    model = IMPLEMENTATIONS[name](config, state, device, mode == "train", length)
                    model.train(mode == "train")
                    models[name] = model
                    if mode == "train":
                        optimizers[name] = torch.optim.AdamW(model.parameters(), lr=1e-5)
                except Exception as e:  # not installed, unsupported config, ...
                    record(part="table", impl=name, length=length, batch=batch, mode=mode, error=repr(e)[:300])
            failed: set[str] = set()
            for r in range(rounds + 1):  # round 0: warm-up (compilation, autotuning)
                order = list(models)
                order = order[r % len(order):] + order[:r % len(order)] if order else order
                for name in order:
                    if name in failed:
                        continue
                    model = models[name]
                    try:
                        reset_peak(device)
                        sync(device)
                        start = time.perf_counter()
                        if mode == "infer":
                            with torch.no_grad(), autocast:
                                last_hidden(model(input_ids=ids, attention_mask=mask))
                        else:
                            with autocast:
                                out = last_hidden(model(input_ids=ids, attention_mask=mask))
                            out.float().pow(2).mean().backward()
                            optimizers[name].step()
                            optimizers[name].zero_grad(set_to_none=True)
                        sync(device)
                        if r > 0:
                            times[name].append(time.perf_counter() - start)
                            peaks[name] = max(peaks.get(name, 0.0), peak_mib(device) or 0.0)
                    except Exception as e:
                        failed.add(name)
                        record(part="table", impl=name, length=length, batch=batch, mode=mode,
                               error=repr(e)[:300], trace=traceback.format_exc()[-600:])
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
            for name in models:
                if name in failed or not times[name]:
                    continue
                seconds = statistics.median(times[name])
                record(part="table", impl=name, length=length, batch=batch, mode=mode, ms=round(1e3 * seconds, 3),
                       tokens_per_s=round(batch * length / seconds, 1), peak_mib=peaks.get(name), rounds=rounds)
            del models, optimizers
            if device.type == "cuda":
                torch.cuda.empty_cache()


# --------------------------------------------------------------------------- stability and pretraining
def run_stability(config: Any, device: torch.device, steps: int, batch: int, length: int, record: Recorder) -> None:
    """``steps`` training steps of an mDeBERTa-config classifier in fp16 (loss scaling) and bf16; any non-finite
    loss or gradient is counted (the original code's issue #77: fp16 XNLI training stuck at 33% with NaN loss)."""
    from mdeberta.model import DebertaForSequenceClassification

    for precision in ("fp16", "bf16"):
        if precision == "fp16" and device.type != "cuda":
            record(part="stability", precision=precision, skipped="fp16 loss scaling needs a GPU")
            continue
        torch.manual_seed(0)
        model = DebertaForSequenceClassification(config.replace(num_labels=3)).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=2e-5, eps=1e-6)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        g = torch.Generator(device="cpu").manual_seed(1)
        bad, losses, skipped, start = 0, [], 0, time.perf_counter()
        for _ in range(steps):
            ids = torch.randint(4, config.vocab_size, (batch, length), generator=g).to(device)
            labels = (ids[:, 1] % 3).to(device)  # learnable from one token: the loss must fall
            with torch.autocast(device.type, dtype=dtype):
                loss = model(input_ids=ids, labels=labels).loss
            if not torch.isfinite(loss):
                bad += 1
            scale = scaler.get_scale() if scaler.is_enabled() else 1.0
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            if scaler.is_enabled() and scaler.get_scale() < scale:
                skipped += 1
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        record(part="stability", precision=precision, steps=steps, batch=batch, length=length, nan_losses=bad,
               overflow_skips=skipped, first_loss=round(losses[0], 4),
               last_loss=round(statistics.mean(losses[-10:]), 4), seconds=round(time.perf_counter() - start, 1))


def nli_like_lengths(count: int, longest: int, seed: int = 0) -> list[int]:
    """Pair lengths shaped like MNLI's under mdeberta's tokenizer (median ~45 tokens, long right tail), capped."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.exp(torch.randn(count, generator=g) * 0.45 + 3.8)
    return [int(min(longest, max(8, round(float(x))))) for x in raw]


def run_packed(config: Any, device: torch.device, steps: int, batch: int, longest: int, record: Recorder) -> None:
    """Fine-tuning steps (bf16, forward + backward + AdamW) of a classifier on NLI-like lengths, three ways: random
    batches padded to their longest, length-grouped batches padded (the recipe's default off CUDA), and the same
    length-grouped batches packed (cu_seqlens, the recipe's default on CUDA). Tokens/s counts real tokens only."""
    from mdeberta.data.nli import collate, collate_packed
    from mdeberta.model import DebertaForSequenceClassification

    lengths = nli_like_lengths(steps * batch, longest)
    g = torch.Generator().manual_seed(1)
    features = [{"input_ids": torch.randint(4, config.vocab_size, (n,), generator=g).tolist(),
                 "token_type_ids": [0] * n, "label": i % 3} for i, n in enumerate(lengths)]
    grouped = sorted(range(len(features)), key=lambda i: lengths[i])
    plans = {"padded-random": [list(range(i, i + batch)) for i in range(0, len(features), batch)],
             "padded-grouped": [grouped[i:i + batch] for i in range(0, len(features), batch)]}
    plans["packed-grouped"] = plans["padded-grouped"]
    torch.manual_seed(0)
    state = DebertaForSequenceClassification(config.replace(num_labels=3)).state_dict()
    for name, plan in plans.items():
        try:
            model = DebertaForSequenceClassification(config.replace(num_labels=3)).to(device).train()
            model.load_state_dict(state)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
            pack = collate_packed if name.startswith("packed") else collate
            batches = [{k: v.to(device) for k, v in pack([features[i] for i in idx]).items()} for idx in plan]
            reset_peak(device)
            times = []
            for step, b in enumerate(batches + batches[:1]):  # the first is a warm-up (autotuning), timed again
                sync(device)
                start = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = model(**b).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                sync(device)
                if step > 0:
                    times.append(time.perf_counter() - start)
            computed = sum(int(b["input_ids"].numel()) for b in batches)
            seconds = sum(times)
            record(part="packed", impl=name, steps=len(batches), batch=batch, real_tokens=sum(lengths),
                   computed_tokens=computed, seconds=round(seconds, 3),
                   real_tokens_per_s=round(sum(lengths) / seconds, 1), peak_mib=peak_mib(device))
        except Exception as e:
            record(part="packed", impl=name, error=repr(e)[:300], trace=traceback.format_exc()[-600:])
        if device.type == "cuda":
            torch.cuda.empty_cache()


def run_pretraining_speed(presets: list[str], device: torch.device, batch: int, length: int, steps: int,
                          record: Recorder, vocab: int | None = None) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_pretrain", Path(__file__).parents[1] / "bench_pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in presets:
        try:
            size = vocab or (250_000 if name.startswith("mdeberta") else 128_000)
            row = module.bench(name, batch, length, steps, size, "bf16", device.type)
            record(part="pretraining", **row)
        except Exception as e:
            record(part="pretraining", preset=name, error=repr(e)[:300])
        if device.type == "cuda":
            torch.cuda.empty_cache()


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    lines = ["| length | batch | mode | impl | ms | tokens/s | x eager | peak MiB | x eager mem |",
             "|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    table = [r for r in rows if r.get("part") == "table" and "ms" in r]
    eager = {(r["length"], r["mode"]): r for r in table if r["impl"] == "transformers-eager"}
    for r in table:
        base = eager.get((r["length"], r["mode"]))
        speed = f"{base['ms'] / r['ms']:.2f}" if base else "-"
        mem = f"{r['peak_mib'] / base['peak_mib']:.2f}" if base and base.get("peak_mib") and r.get("peak_mib") else "-"
        lines.append(f"| {r['length']} | {r['batch']} | {r['mode']} | {r['impl']} | {r['ms']} | {r['tokens_per_s']} "
                     f"| {speed} | {r.get('peak_mib', '-')} | {mem} |")
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["", "Errors:", *[f"- {r.get('impl', r.get('preset', r.get('part')))} {r.get('length', '')} "
                                   f"{r.get('mode', '')}: {r['error']}" for r in errors]]
    other = [r for r in rows if r.get("part") in ("stability", "pretraining", "packed") and "error" not in r]
    if other:
        lines += ["", *[json.dumps(r) for r in other]]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny config and shapes: rehearse every part")
    p.add_argument("--parts", nargs="+", default=["table", "stability", "pretraining", "packed"])
    p.add_argument("--lengths", type=int, nargs="+", default=None)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = Recorder(out)
    dry = args.dry_run
    device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    record(part="machine", device=torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
           torch=torch.__version__, dry_run=dry)
    base = preset("deberta-v3-micro", vocab_size=1000) if dry else preset("mdeberta-v3-base")
    lengths = tuple(args.lengths or ((32, 64) if dry else LENGTHS))
    with contextlib.suppress(KeyboardInterrupt):
        if "table" in args.parts:
            run_table(base, device, lengths, 256 if dry else TOKENS_PER_BATCH, 1 if dry else args.rounds, record,
                      args.impls)
        if "stability" in args.parts:
            run_stability(base, device, 5 if dry else 200, 4 if dry else 32, 32 if dry else 128, record)
        if "packed" in args.parts:
            run_packed(base, device, 3 if dry else 40, 8 if dry else 32, 32 if dry else 128, record)
        if "pretraining" in args.parts:
            run_pretraining_speed(["deberta-v3-micro"] if dry else ["deberta-v3-tiny", "deberta-v3-xsmall",
                                                                     "mdeberta-v3-base"],
                                  device, 4 if dry else 32, 32 if dry else 512, 2 if dry else 10, record,
                                  vocab=1000 if dry else None)
    write_table(record.rows, out / "table.md")


if __name__ == "__main__":
    main()
