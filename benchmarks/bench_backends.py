"""A/B of this library's own attention backends ("auto" = the fast path, "reference") on mdeberta-v3-base shapes.

Run: ``python benchmarks/bench_backends.py``. Prints tokens/s per backend (best of 2 timed runs after a warm-up)
for a few inference and training shapes; used to decide where the fast path should be the default.
"""

import time

import torch

import mdeberta

SHAPES = [  # (batch, length, dtype, training step?)
    (8, 512, torch.float32, False),
    (8, 512, torch.bfloat16, False),
    (1, 2048, torch.bfloat16, False),
    (1, 2048, torch.float32, False),
    (8, 128, torch.bfloat16, False),
    (8, 512, torch.bfloat16, True),
]


def tokens_per_s(model: torch.nn.Module, backend: str, batch: int, length: int, dtype: torch.dtype,
                 train: bool) -> float:
    model.set_attention_backend(backend)
    ids = torch.randint(4, 1000, (batch, length))

    def run() -> None:
        if train:  # bf16-autocast training step (forward + backward; the optimizer is not part of the A/B)
            model.train()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(ids, labels=torch.zeros(batch, dtype=torch.long)).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
            model.eval()
        else:
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                model(ids)

    run()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return batch * length / min(times)


def main() -> None:
    torch.manual_seed(0)
    config = mdeberta.preset("mdeberta-v3-base", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                             num_labels=3)
    model = mdeberta.DebertaForSequenceClassification(config).eval()
    for batch, length, dtype, train in SHAPES:
        result = {b: round(tokens_per_s(model, b, batch, length, dtype, train)) for b in ("auto", "reference")}
        print(f"{batch}x{length} {str(dtype).split('.')[-1]} {'train' if train else 'infer'}: {result}", flush=True)


if __name__ == "__main__":
    main()
