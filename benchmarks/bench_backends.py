"""A/B of this library's attention backends on one mdeberta-v3-base layer's real inputs.

Run: ``python benchmarks/bench_backends.py [--threads N]``. For each shape the inputs of layer 0's backend call
(query, key, value, position tables, slots, mask) are captured from a forward of a 1-layer mdeberta-v3-base,
then each backend ("reference", "sdpa", "blocked") is timed on exactly those tensors: inference (no autograd)
and, for the training rows, forward + backward of the attention call under bf16. Prints milliseconds per call
(best of 3 after a warm-up) and max |diff| against the reference; used to choose ``select_backend``'s defaults.
The whole-model comparison with transformers is ``benchmarks/bench_model.py``.
"""

import argparse
import time

import torch

import mdeberta
from mdeberta.model import attention as attention_module

SHAPES = [  # (batch, length, dtype, training?)
    (8, 128, torch.bfloat16, False),
    (8, 128, torch.float32, False),
    (8, 512, torch.bfloat16, False),
    (8, 512, torch.float32, False),
    (1, 2048, torch.bfloat16, False),
    (1, 2048, torch.float32, False),
    (8, 128, torch.bfloat16, True),
    (8, 512, torch.bfloat16, True),
]
BACKENDS = ("reference", "sdpa", "blocked")


def capture_inputs(batch: int, length: int, dtype: torch.dtype) -> tuple:
    """The positional arguments layer 0 passes to its attention backend for a random batch."""
    torch.manual_seed(0)
    config = mdeberta.preset("mdeberta-v3-base", num_hidden_layers=1, attention_probs_dropout_prob=0.0)
    model = mdeberta.DebertaModel(config).eval().to(dtype)
    captured: list[tuple] = []

    def spy(*args, **kwargs):
        captured.append(args)
        return attention_module.reference_attention(*args, **kwargs)

    attention_module.register_attention_backend("capture", spy)
    model.set_attention_backend("capture")
    ids = torch.randint(4, config.vocab_size, (batch, length))
    with torch.no_grad():
        model(ids, torch.ones_like(ids))
    return captured[0]


def time_call(fn, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per attention call (one layer)")
    print("| batch x len | dtype | mode | " + " | ".join(BACKENDS) + " | max abs diff vs reference |")
    print("|---|---|---|" + "---|" * len(BACKENDS) + "---|")
    for batch, length, dtype, train in SHAPES:
        inputs = capture_inputs(batch, length, dtype)
        reference = attention_module.reference_attention(*inputs)[0].float()
        cells, diffs = [], []
        for name in BACKENDS:
            backend = attention_module.get_attention_backend(name)
            if train:
                leaves = [t.detach().clone().requires_grad_() for t in inputs[:5]]

                def run(backend=backend, leaves=leaves, rest=inputs[5:]):
                    out, _ = backend(*leaves, *rest)
                    out.float().square().mean().backward()
            else:
                def run(backend=backend, inputs=inputs):
                    with torch.no_grad():
                        return backend(*inputs)[0]
            cells.append(f"{time_call(run):.1f}")
            with torch.no_grad():
                diffs.append(float((backend(*inputs)[0].float() - reference).abs().max()))
        mode = "train (fwd+bwd)" if train else "inference"
        print(f"| {batch}x{length} | {str(dtype).split('.')[-1]} | {mode} | " + " | ".join(cells)
              + f" | {max(diffs):.1e} |", flush=True)


if __name__ == "__main__":
    main()
