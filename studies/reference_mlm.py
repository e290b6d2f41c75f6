"""The reference for the pretraining study: transformers' DebertaV2ForMaskedLM in a plain PyTorch loop.

Same batches as ``mdeberta pretrain --objective mlm`` with the same data options and seed (this script builds
them with the library's own streaming pipeline, ``mdeberta.data.text``), the same initial weights (our
``DebertaForMaskedLM`` init under the same seed, loaded into transformers' model), and the optimiser written out
by hand: AdamW with no decay on biases / LayerNorms, linear warmup from lr/(W+1) then linear decay, global-norm
clipping at 1.0, bf16 autocast. Everything that could hide a defect in our model, loss or training loop is
replaced by an independent implementation; only the batches are shared. The output folder loads in
``mdeberta finetune`` like our own export.

    python studies/reference_mlm.py --data CORPUS --tokenizer TOK --output OUT --model-preset deberta-v3-tiny \\
        --max-steps 2000 --batch-size 32 --lr 5e-4 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import transformers

from mdeberta.config import preset
from mdeberta.data.text import MaskingConfig, PackedTextDataset, PretrainingLoader, ShuffleConfig, discover_corpus
from mdeberta.model import DebertaForMaskedLM
from mdeberta.recipes.pretrain import PRETRAINING_LR
from mdeberta.tokenizer import DebertaTokenizer
from mdeberta.train.checkpointing import seed_everything


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--languages", default=None)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--model-preset", default="deberta-v3-tiny")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="default: the preset's, as mdeberta pretrain")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--adam-betas", type=float, nargs=2, default=(0.9, 0.999))
    p.add_argument("--adam-eps", type=float, default=1e-6)
    p.add_argument("--alpha", type=float, default=0.3)
    p.add_argument("--shuffle-buffer", type=int, default=ShuffleConfig.buffer_lines)
    p.add_argument("--shuffle-segments", type=int, default=ShuffleConfig.segments)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log-every", type=int, default=50)
    args = p.parse_args()

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = DebertaTokenizer.from_pretrained(args.tokenizer)
    languages = args.languages.split(",") if args.languages else None
    files = discover_corpus(args.data, languages)
    dataset = PackedTextDataset(files, tokenizer, args.max_seq_length, args.batch_size, MaskingConfig("mlm"),
                                args.alpha, args.seed, ShuffleConfig(args.shuffle_buffer, args.shuffle_segments))
    loader = iter(PretrainingLoader(dataset, num_workers=0))

    seed_everything(args.seed)  # as `mdeberta pretrain`: the model is built right after seeding
    config = preset(args.model_preset, vocab_size=len(tokenizer))
    initial = DebertaForMaskedLM(config).state_dict()
    model = transformers.DebertaV2ForMaskedLM(transformers.DebertaV2Config(**config.to_dict()))
    missing, unexpected = model.load_state_dict(initial, strict=False)
    if unexpected or set(missing) - {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}:
        raise SystemExit(f"weights do not map onto transformers' model: missing {missing}, unexpected {unexpected}")
    device = torch.device(args.device)
    model.to(device).train()

    lr = args.lr if args.lr is not None else PRETRAINING_LR[args.model_preset]
    decay, no_decay, seen = [], [], set()
    for name, param in model.named_parameters():
        if id(param) not in seen:
            seen.add(id(param))
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=tuple(args.adam_betas), eps=args.adam_eps)
    warmup = round(args.warmup_ratio * args.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(
        0.0, (args.max_steps - s) / max(1, args.max_steps - warmup)))

    log = (out / "metrics.jsonl").open("w")
    window, start = [], time.perf_counter()
    for step in range(1, args.max_steps + 1):
        batch = {k: v.to(device) for k, v in next(loader).items()}
        labels = batch["labels"]
        selected = labels != -100
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            hidden = model.deberta(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
            logits = model.cls(hidden[selected])  # transformers' own head, on the scored positions only
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[selected])
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        accuracy = (logits.detach().argmax(-1) == labels[selected]).float().mean()
        window.append((float(loss.detach()), float(accuracy)))
        if step % args.log_every == 0 or step == args.max_steps:
            record = {"step": step, "mlm_loss": sum(w[0] for w in window) / len(window),
                      "mlm_accuracy": sum(w[1] for w in window) / len(window), "grad_norm": float(grad_norm),
                      "seconds": round(time.perf_counter() - start, 1)}
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(json.dumps(record), flush=True)
            window = []
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")


if __name__ == "__main__":
    main()
