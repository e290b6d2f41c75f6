#!/usr/bin/env bash
# The GPU issue's whole session in one command, within 9.5 minutes on a fresh H200 (no package index there).
#
#   bash benchmarks/gpu/run.sh prepare          # here, once: pinned wheels into .whl/ (git-ignored) for the device
#   bash benchmarks/gpu/run.sh OUT              # on the GPU machine (device tool: carry [".whl"], OUT=$OUT)
#   bash benchmarks/gpu/run.sh OUT --dry-run    # rehearsal on CPU: every part on tiny shapes
#
# Parts, each with its own time limit so that a slow one cannot eat the others' time, each writing into OUT:
#   (a) tests/kernels/test_triton_cuda.py (the interpreter tests at GPU sizes, fp32/bf16/fp16)  -> tests.log
#   (b) speed table vs transformers eager, FlashDeBERTa, DisentangledFlash (mdeberta-v3-base, bf16)
#   (c) 200 training steps in fp16 (loss scaling) and bf16, NaNs counted
#   (d) pretraining tokens/s of the tiny, xsmall and base presets
#   (e) fine-tuning steps on NLI-like lengths: padded vs packed (cu_seqlens, the varlen kernels)
#       (b-e: benchmarks/gpu/gpu_bench.py -> results.jsonl, table.md)
#   (f) FSDP2 on one GPU: torchrun x 1, `mdeberta pretrain --distributed fsdp` to its end (health evaluation and
#       export on the gathered weights), with the Triton kernel's self-check in the log          -> fsdp.log
# The device image has torch, triton and transformers (KINDS.md); the two competitors travel as wheels.
set -uo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "prepare" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: -d .whl flashdeberta==0.0.8 disentangled-flash==1.1.1
    ls -la .whl
    exit 0
fi

OUT=${1:?usage: run.sh OUT [--dry-run] | run.sh prepare}
DRY=${2:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1 && [ "$DRY" != "--dry-run" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
} > "$OUT/machine.txt" 2>&1

fsdp_part() {  # a synthetic corpus and tokenizer (no ../shared on the device), 20 FSDP steps, the export
    local dir="$OUT/fsdp"
    mkdir -p "$dir/corpus"
    python3 -c "
import random; r = random.Random(0); words = [''.join(r.choice('abcdefghij') for _ in range(r.randint(2, 6))) for _ in range(300)]
open('$dir/corpus/en.txt', 'w').write('\n'.join(' '.join(r.choice(words) for _ in range(r.randint(5, 40))) for _ in range(3000)) + '\n')"
    python3 -m mdeberta tokenizer train --input "$dir/corpus" --output-dir "$dir/tok" --vocab-size 200 --num-threads 1 \
        && python3 -m torch.distributed.run --nproc_per_node 1 --standalone -m mdeberta -v pretrain \
            --data "$dir/corpus" --tokenizer "$dir/tok" --output-dir "$dir/run" --model-preset deberta-v3-micro \
            --max-seq-length 128 --batch-size 16 --max-steps 20 --log-every 5 --health-every 10 --num-workers 0 \
            --no-progress --distributed fsdp --precision "$1" \
        && ls "$dir/run/export/discriminator/model.safetensors"
}

start=$(date +%s)
if [ "$DRY" = "--dry-run" ]; then
    # On CPU the CUDA tests skip; the interpreter tests are what runs there.
    timeout 120 python3 -m pytest -q -x tests/kernels/test_triton_cuda.py > "$OUT/tests.log" 2>&1
    echo "tests: exit $?" >> "$OUT/parts.txt"
    timeout 300 python3 benchmarks/gpu/gpu_bench.py --out "$OUT" --dry-run > "$OUT/bench.log" 2>&1
    echo "bench: exit $?" >> "$OUT/parts.txt"
    (export -f fsdp_part; OUT="$OUT" timeout 240 bash -c 'fsdp_part fp32') > "$OUT/fsdp.log" 2>&1
    echo "fsdp: exit $?" >> "$OUT/parts.txt"
else
    timeout 90 python3 -m pytest -q -x tests/kernels/test_triton_cuda.py > "$OUT/tests.log" 2>&1
    echo "tests: exit $?" >> "$OUT/parts.txt"
    # the first training step per dtype compiles and autotunes the forward's and both backwards' tiles (~1 min)
    timeout 240 python3 benchmarks/gpu/gpu_bench.py --out "$OUT" --parts table > "$OUT/bench_table.log" 2>&1
    echo "table: exit $?" >> "$OUT/parts.txt"
    timeout 50 python3 benchmarks/gpu/gpu_bench.py --out "$OUT" --parts stability > "$OUT/bench_stability.log" 2>&1
    echo "stability: exit $?" >> "$OUT/parts.txt"
    timeout 50 python3 benchmarks/gpu/gpu_bench.py --out "$OUT" --parts pretraining > "$OUT/bench_pretraining.log" 2>&1
    echo "pretraining: exit $?" >> "$OUT/parts.txt"
    timeout 50 python3 benchmarks/gpu/gpu_bench.py --out "$OUT" --parts packed > "$OUT/bench_packed.log" 2>&1
    echo "packed: exit $?" >> "$OUT/parts.txt"
    (export -f fsdp_part; OUT="$OUT" timeout 90 bash -c 'fsdp_part bf16') > "$OUT/fsdp.log" 2>&1
    echo "fsdp: exit $?" >> "$OUT/parts.txt"
    grep -h "self-check\|differs from" "$OUT"/*.log >> "$OUT/parts.txt"
fi
echo "total: $(( $(date +%s) - start )) s" >> "$OUT/parts.txt"
cat "$OUT/parts.txt"
tail -n 3 "$OUT/tests.log"
[ -f "$OUT/table.md" ] && cat "$OUT/table.md"
exit 0
