"""Model speed, this library vs transformers: a thin wrapper around ``mdeberta bench`` (see mdeberta/bench.py).

Quick run (a few minutes on 2 cores):
    python benchmarks/bench_model.py --shapes 1x128,8x128 --repeats 3
Full table into BENCHMARKS.md:
    python benchmarks/bench_model.py --modes infer-fp32,infer-bf16,train-bf16,train-bf16-lazy \
        --update-benchmarks-md BENCHMARKS.md
"""

from mdeberta.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
