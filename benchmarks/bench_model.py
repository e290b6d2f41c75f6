"""This library against transformers on the same random weights, in one process (transformers is a test and
benchmark dependency, so this script lives here, not in the package).

    python benchmarks/bench_model.py --shapes 1x128,8x128 --repeats 3            # a few minutes on 2 cores
    python benchmarks/bench_model.py --modes infer-fp32,infer-bf16,train-bf16,train-bf16-lazy \
        --update-benchmarks-md BENCHMARKS.md                                       # the full table
    python benchmarks/bench_model.py --serving ...                                 # ONNX Runtime serving table

For each (batch, length) and mode the two implementations run alternately (ours, theirs, theirs, ours, ...) so
that the load other processes put on the machine hits both alike; the median over repeats is reported with the
load average. Modes:

* ``infer-fp32`` / ``infer-bf16``: sequence-classification forward under ``torch.inference_mode`` with fp32 /
  bf16 weights;
* ``train-bf16``: one training step (forward + backward under bf16 autocast, AdamW step, zero_grad) of a fresh
  copy of both models;
* ``train-bf16-lazy``: the same, ours with :class:`mdeberta.train.lazy_adamw.LazyAdamW`, theirs with AdamW.

``--device cuda`` runs the same cells on a GPU (default: bf16 inference and training over L = 128 ... 4096,
timings synchronised, peak memory from ``torch.cuda.max_memory_allocated``) and writes a separate
``## Model speed (GPU)`` section.

Reported per row: tokens/s, ours/theirs ratio, peak memory of one extra step (see :func:`peak_memory`), achieved GFLOP/s
(nominal model FLOPs, identical for both, so the ratio is the speed ratio) as a fraction of the 2048^3 matmul
measured in the same run, and max |logit diff| against transformers' fp32 output (plus argmax agreement for bf16).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import json
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mdeberta.config import DebertaConfig, preset

MODES = ("infer-fp32", "infer-bf16", "train-bf16", "train-bf16-lazy")
DEFAULT_SHAPES = "1x128,8x128,8x512,1x2048"
GPU_SHAPES = "8x128,8x512,8x1024,8x2048,4x4096"  # the issue's L = 128 ... 4096 table
SECTION = "## Model speed (CPU)"
GPU_SECTION = "## Model speed (GPU)"
CPU = torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- measurement helpers
class PeakRSS:
    """Peak resident-set growth (bytes) of this process while the block runs, sampled every ~2 ms."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self) -> PeakRSS:
        self.base = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss() - self.base)


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (both exist on glibc only)
        return libc
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def exact_rss():
    """Make RSS follow live tensor memory: every allocation >= 64 KiB gets its own mapping, returned on free.

    By default glibc keeps freed blocks (up to 32 MiB each) for reuse, so after a warm-up step a forward pass
    allocates nothing new and RSS growth reads 0. Inside this block the mmap threshold is 64 KiB; on exit it is
    set to 32 MiB, the value glibc's dynamic threshold settles at after large frees, so later timings see the
    allocator as before. No-op off glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 64 << 10)
        libc.malloc_trim(0)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)


def peak_memory(fn, device: torch.device = CPU) -> int:
    """Peak memory growth (bytes) while ``fn`` runs once: the step's own working memory (activations, gradients,
    optimizer state created in the step), not what the allocator happened to cache. CPU: RSS with
    :func:`exact_rss`; CUDA: ``max_memory_allocated`` above what was allocated before."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    with exact_rss(), PeakRSS() as rss:
        fn()
    return rss.peak


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, repeats: int = 3,
                   device: torch.device = CPU) -> float:
    """GFLOP/s of an n^3 matmul (best of ``repeats``): the roofline the model numbers are compared with."""
    if device.type == "cuda":
        n = max(n, 8192)  # 2048^3 is too small to load a large GPU
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        best = min(best, timed(lambda: a @ b, device))
    return 2 * n**3 / best / 1e9


def forward_flops(cfg: DebertaConfig, batch: int, length: int) -> float:
    """Nominal FLOPs of one encoder forward: dense layers + c2c + PV + c2p + p2c (each an L x L x d product)."""
    h, inter, tokens = cfg.hidden_size, cfg.intermediate_size, batch * length
    dense = 2 * tokens * (4 * h * h + 2 * h * inter)
    n_pos = len(cfg.pos_att_type) if cfg.relative_attention else 0
    attention = 2 * batch * length * length * h * (2 + n_pos)
    return cfg.num_hidden_layers * (dense + attention)


@dataclass
class Row:
    batch: int
    length: int
    mode: str
    ours_tok_s: float
    theirs_tok_s: float
    ratio: float
    ours_peak_mb: float
    theirs_peak_mb: float
    ours_gflops: float
    theirs_gflops: float
    ceiling_gflops: float
    ours_max_diff: float | None
    theirs_max_diff: float | None
    ours_argmax_agree: float | None = None
    theirs_argmax_agree: float | None = None
    loadavg: list[float] = field(default_factory=list)
    repeats: int = 0


# --------------------------------------------------------------------------- models
def build_models(cfg: DebertaConfig, seed: int = 0, device: torch.device = CPU):
    """transformers' DebertaV2ForSequenceClassification and ours with the same (random) weights."""
    import transformers

    from mdeberta.checkpoint import load_into
    from mdeberta.model import DebertaForSequenceClassification

    torch.manual_seed(seed)
    theirs = transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(**cfg.to_dict()))
    ours = DebertaForSequenceClassification(cfg)
    missing, _ = load_into(ours, theirs.state_dict(), "transformers model")
    if missing:
        raise RuntimeError(f"weights not copied from transformers: {missing}")
    return ours.eval().to(device), theirs.eval().to(device)


def make_batch(cfg: DebertaConfig, batch: int, length: int, seed: int = 1,
               device: torch.device = CPU):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, cfg.vocab_size, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, cfg.num_labels, (batch,), generator=g)
    return ids.to(device), mask.to(device), labels.to(device)


def timed(fn, device: torch.device = CPU) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


# --------------------------------------------------------------------------- one (shape, mode) cell
def run_cell(ours, theirs, cfg, batch, length, mode, repeats, ceilings, reference, log,
             device: torch.device = CPU) -> Row:
    ids, mask, labels = make_batch(cfg, batch, length, device=device)
    tokens = batch * length
    fwd = forward_flops(cfg, batch, length)
    diffs: dict[str, float | None] = {"ours": None, "theirs": None}
    agree: dict[str, float | None] = {"ours": None, "theirs": None}

    if mode.startswith("infer"):
        dtype = torch.bfloat16 if mode == "infer-bf16" else torch.float32
        models = {"ours": ours, "theirs": theirs}
        if dtype != torch.float32:
            models = {k: copy.deepcopy(m).to(dtype) for k, m in models.items()}
        flops = fwd
        ceiling = ceilings[dtype]
        outputs = {}

        def step(name):
            def go():
                with torch.inference_mode():
                    outputs[name] = models[name](input_ids=ids, attention_mask=mask).logits.float()
            return go
        steps = {k: step(k) for k in models}
    else:
        from mdeberta.train.lazy_adamw import LazyAdamW

        models = {"ours": copy.deepcopy(ours).train(), "theirs": copy.deepcopy(theirs).train()}
        opts = {"ours": (LazyAdamW if mode == "train-bf16-lazy" else torch.optim.AdamW)(models["ours"].parameters(),
                                                                                       lr=1e-5),
                "theirs": torch.optim.AdamW(models["theirs"].parameters(), lr=1e-5)}
        flops = 3 * fwd
        ceiling = ceilings[torch.bfloat16]
        outputs = {}

        def step(name):
            def go():
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = models[name](input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                opts[name].step()
                opts[name].zero_grad(set_to_none=True)
            return go
        steps = {k: step(k) for k in models}

    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    peaks = {"ours": 0, "theirs": 0}
    for name in ("ours", "theirs"):  # warm-up (allocator, caches, first-step optimizer state)
        steps[name]()
    if mode.startswith("infer"):
        for name in ("ours", "theirs"):
            diffs[name] = float((outputs[name] - reference).abs().max())
            if mode == "infer-bf16":
                agree[name] = float((outputs[name].argmax(-1) == reference.argmax(-1)).float().mean())
    for r in range(repeats):
        order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
        for name in order:
            times[name].append(timed(steps[name], device))
    for name in ("ours", "theirs"):  # after timing: the memory pass changes the allocator's behaviour
        peaks[name] = peak_memory(steps[name], device)
    tok = {k: tokens / statistics.median(v) for k, v in times.items()}
    gf = {k: flops / statistics.median(v) / 1e9 for k, v in times.items()}
    row = Row(batch, length, mode, tok["ours"], tok["theirs"], tok["ours"] / tok["theirs"],
              peaks["ours"] / 2**20, peaks["theirs"] / 2**20, gf["ours"], gf["theirs"], ceiling,
              diffs["ours"], diffs["theirs"], agree["ours"], agree["theirs"], list(os.getloadavg()), repeats)
    log(f"{batch}x{length} {mode}: ours {tok['ours']:.0f} tok/s, transformers {tok['theirs']:.0f} tok/s, "
        f"ratio {row.ratio:.2f}, load {row.loadavg[0]:.2f}")
    return row


def argmax_agreement(ours, theirs, cfg: DebertaConfig, rows: int, length: int = 128,
                     chunk: int = 32, device: torch.device = CPU) -> dict[str, dict[str, float]]:
    """bf16 vs transformers' fp32 on ``rows`` random sequences (random lengths, padded), for both implementations.

    Per implementation: ``agree`` (share of rows with the fp32 argmax), ``mean_abs_err`` (mean |logit error|) and
    ``max_flip_margin`` (the largest fp32 top-1 minus top-2 logit gap among the rows that flipped: with random
    weights the logits are close, and a flip at a gap of the size of the error is a near-tie, not a bug).
    The per-cell agreement only sees the benchmark batch (1 or 8 rows), too few to check a 99% target.
    """
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(4, cfg.vocab_size, (rows, length), generator=g)
    lengths = torch.randint(length // 4, length + 1, (rows,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    ids, mask = (ids * mask).to(device), mask.to(device)
    bf16 = {"ours": copy.deepcopy(ours).to(torch.bfloat16), "theirs": copy.deepcopy(theirs).to(torch.bfloat16)}
    stats = {name: {"agree": 0.0, "mean_abs_err": 0.0, "max_flip_margin": 0.0} for name in bf16}
    with torch.inference_mode():
        for start in range(0, rows, chunk):
            part = slice(start, start + chunk)
            reference = theirs(input_ids=ids[part], attention_mask=mask[part]).logits.float()
            top2 = reference.topk(min(2, reference.shape[-1]), dim=-1).values
            margin = top2[:, 0] - top2[:, -1]
            for name, model in bf16.items():
                logits = model(input_ids=ids[part], attention_mask=mask[part]).logits.float()
                same = logits.argmax(-1) == reference.argmax(-1)
                stats[name]["agree"] += float(same.sum()) / rows
                stats[name]["mean_abs_err"] += float((logits - reference).abs().sum()) / (rows * logits.shape[-1])
                if not bool(same.all()):
                    stats[name]["max_flip_margin"] = max(stats[name]["max_flip_margin"], float(margin[~same].max()))
    return stats


# --------------------------------------------------------------------------- reporting
def machine_info(device: torch.device = CPU) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown_table(rows: list[Row]) -> str:
    head = ("| batch x len | mode | ours tok/s | transformers tok/s | ours/transformers | peak MB ours / theirs "
            "| GFLOP/s ours / theirs (ceiling) | max abs diff vs fp32 ours / theirs | argmax agree ours / theirs "
            "| load avg |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        share = r.ours_gflops / r.ceiling_gflops
        pct = f"{r.ours_gflops:.0f} / {r.theirs_gflops:.0f} ({r.ceiling_gflops:.0f}: {share:.0%})"
        lines.append(
            f"| {r.batch}x{r.length} | {r.mode} | {r.ours_tok_s:.0f} | {r.theirs_tok_s:.0f} | **{r.ratio:.2f}x** "
            f"| {r.ours_peak_mb:.0f} / {r.theirs_peak_mb:.0f} | {pct} "
            f"| {_fmt(r.ours_max_diff, '.1e')} / {_fmt(r.theirs_max_diff, '.1e')} "
            f"| {_fmt(r.ours_argmax_agree, '.1%')} / {_fmt(r.theirs_argmax_agree, '.1%')} | {r.loadavg[0]:.2f} |"
        )
    return "\n".join(lines)


def update_benchmarks_md(path: Path, body: str, section: str = SECTION) -> None:
    """Replace (or append) only ``section`` (``## Model speed (CPU)``); other sections are left as they are."""
    from mdeberta.files import atomic_write_text

    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(section)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section + "\n\n" + body.strip() + "\n"
    else:
        nxt = text.find("\n## ", start + len(section))
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:start] + section + "\n\n" + body.strip() + "\n" + ("\n" + text[end:] if nxt >= 0 else "")
    atomic_write_text(path, text)


# --------------------------------------------------------------------------- serving: PyTorch vs ONNX Runtime
SERVING_SECTION = "## Serving on CPU (ONNX Runtime)"
SERVING_IMPLS = ("ours fp32", "ours bf16", "onnxruntime fp32", "onnxruntime int8", "transformers fp32")


def run_serving(args: argparse.Namespace, log) -> int:
    """Inference tokens/s and peak memory of ours in PyTorch fp32 / bf16, ONNX Runtime fp32 / int8 (the model
    exported by ``mdeberta export-onnx`` with the same random weights) and transformers fp32, alternating, per
    shape; with ``--agreement-model`` (a fine-tuned NLI folder) and ``--agreement-file``, int8 vs fp32 argmax
    agreement and accuracy on that file."""
    import tempfile

    from mdeberta.serving import INT8_FILE, ONNX_FILE, OnnxModel, export_onnx

    threads = torch.get_num_threads()
    cfg = preset(args.preset, num_labels=3)
    ours, theirs = build_models(cfg)
    tmp = Path(tempfile.mkdtemp(prefix="mdeberta-bench-onnx-"))
    src = tmp / "src"
    ours.save_pretrained(src)
    start = time.perf_counter()
    export_onnx(src, tmp / "onnx", int8=True, require_tokenizer=False)
    log(f"exported {args.preset} to ONNX (+ int8) in {time.perf_counter() - start:.0f} s")
    sessions = {"onnxruntime fp32": OnnxModel(tmp / "onnx", ONNX_FILE, threads=threads),
                "onnxruntime int8": OnnxModel(tmp / "onnx", INT8_FILE, threads=threads)}
    ours_bf16 = copy.deepcopy(ours).to(torch.bfloat16)
    models = {"ours fp32": ours, "ours bf16": ours_bf16, **sessions, "transformers fp32": theirs}
    arena_free = {name: OnnxModel(tmp / "onnx", session.file, threads=threads, memory_arena=False)
                  for name, session in sessions.items()}
    rows = []
    for batch, length in parse_shapes(args.shapes or DEFAULT_SHAPES):
        ids, mask, _ = make_batch(cfg, batch, length)

        def step(name: str, memory: bool = False, ids: torch.Tensor = ids, mask: torch.Tensor = mask):
            model = arena_free[name] if memory else models[name]

            def go():
                with torch.inference_mode():
                    return model(input_ids=ids, attention_mask=mask).logits.float()
            return go

        steps = {name: step(name) for name in models}
        memory_steps = {name: step(name, memory=True) for name in arena_free}
        reference = steps["transformers fp32"]()
        diffs = {name: float((fn() - reference).abs().max()) for name, fn in steps.items()}  # also the warm-up
        times: dict[str, list[float]] = {name: [] for name in models}
        for r in range(args.repeats):
            order = list(models)[r % len(models):] + list(models)[:r % len(models)]
            for name in order:
                times[name].append(timed(steps[name]))
        # ONNX Runtime's arena keeps memory between runs, so one more run would allocate nothing: its peak is
        # measured on an arena-free session of the same file (same outputs, every buffer returned after the run).
        peaks = {name: peak_memory(memory_steps.get(name, fn)) / 2**20 for name, fn in steps.items()}
        tok = {name: batch * length / statistics.median(v) for name, v in times.items()}
        rows.append({"batch": batch, "length": length, "tokens_per_s": tok, "peak_mb": peaks, "max_abs_diff": diffs,
                     "loadavg": os.getloadavg()[0]})
        log(f"{batch}x{length}: " + ", ".join(f"{k} {v:.0f} tok/s" for k, v in tok.items()))
    agreement = None
    if args.agreement_model:
        if not args.agreement_file:
            raise SystemExit("--agreement-model needs --agreement-file (an NLI file, e.g. XNLI English dev)")
        report = export_onnx(args.agreement_model, tmp / "finetuned", int8=True, check_file=args.agreement_file,
                             check_examples=args.agreement_examples)
        agreement = report.int8
    info = machine_info()
    lines = [f"Command: `python benchmarks/bench_model.py {' '.join(sys.argv[1:])}`", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, {threads} threads for torch and ONNX Runtime, torch "
             f"{info['torch']}; preset `{args.preset}` (random weights, sequence classification), median of "
             f"{args.repeats} alternating runs; peak memory: resident-set growth during one more run (ONNX "
             f"Runtime: on a session without its memory arena, which would hide the run's allocations); max "
             f"|logit diff| against transformers fp32 in brackets.", "",
             "| batch x len | " + " | ".join(SERVING_IMPLS) + " | int8 / transformers fp32 | load avg |",
             "|" + "---|" * (len(SERVING_IMPLS) + 3)]
    for r in rows:
        cells = [f"{r['tokens_per_s'][n]:.0f} tok/s, {_fmt(r['peak_mb'][n], '.0f')} MB [{r['max_abs_diff'][n]:.0e}]"
                 for n in SERVING_IMPLS]
        ratio = r["tokens_per_s"]["onnxruntime int8"] / r["tokens_per_s"]["transformers fp32"]
        lines.append(f"| {r['batch']}x{r['length']} | " + " | ".join(cells) + f" | **{ratio:.2f}x** | "
                     f"{r['loadavg']:.2f} |")
    if agreement:
        lines += ["", f"int8 vs fp32 on the first {agreement['examples']} pairs of `{agreement['check_file']}` "
                  f"(fine-tuned `{args.agreement_model}`): argmax agreement {agreement['argmax_agreement']:.1f}%, "
                  f"accuracy fp32 {agreement['accuracy_fp32']:.1f}% / int8 {agreement['accuracy_int8']:.1f}%."]
    body = "\n".join(lines) + "\n"
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_serving.md").write_text(body)
    (out / "bench_serving.json").write_text(json.dumps({"machine": info, "rows": rows, "agreement": agreement},
                                                       indent=2))
    print(body)
    if args.update_benchmarks_md:
        update_benchmarks_md(Path(args.update_benchmarks_md), body, SERVING_SECTION)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


# --------------------------------------------------------------------------- entry points
def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for part in text.split(","):
        try:
            b, length = part.lower().split("x")
            shapes.append((int(b), int(length)))
        except ValueError:
            raise SystemExit(f"--shapes: {part!r} is not BATCHxLENGTH (e.g. 8x128)") from None
    return shapes


def run(args: argparse.Namespace) -> int:
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("benchmarks/bench_model.py needs transformers (pip install transformers) to compare against",
              file=sys.stderr)
        return 2
    if args.serving:
        if args.threads:
            torch.set_num_threads(args.threads)
        return run_serving(args, (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet
                           else (lambda msg: None))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch (torch.cuda.is_available() is False)")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device: {args.device!r} is not supported; allowed: cpu, cuda")
    gpu = device.type == "cuda"
    modes = [m.strip() for m in (args.modes or ("infer-bf16,train-bf16" if gpu else "infer-fp32,infer-bf16,train-bf16"))
             .split(",")]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"--modes: unknown {bad}; allowed: {list(MODES)}")
    shapes = parse_shapes(args.shapes or (GPU_SHAPES if gpu else DEFAULT_SHAPES))
    skip_text = args.skip if args.skip is not None else ("" if gpu else "1x2048:train-bf16,1x2048:train-bf16-lazy")
    skip = {s.strip() for s in skip_text.split(",") if s.strip()}
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset(args.preset, num_labels=3)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet else (lambda msg: None)
    ceilings = {dt: matmul_ceiling(dt, n=args.ceiling_size, device=device) for dt in (torch.float32, torch.bfloat16)}
    log(f"matmul ceiling: fp32 {ceilings[torch.float32]:.0f} GFLOP/s, bf16 {ceilings[torch.bfloat16]:.0f} GFLOP/s")
    ours, theirs = build_models(cfg, device=device)
    rows: list[Row] = []
    for batch, length in shapes:
        ids, mask, _ = make_batch(cfg, batch, length, device=device)
        with torch.inference_mode():
            reference = theirs(input_ids=ids, attention_mask=mask).logits.float()
        for mode in modes:
            if f"{batch}x{length}:{mode}" in skip or f"{batch}x{length}" in skip:
                log(f"{batch}x{length} {mode}: skipped (--skip)")
                continue
            rows.append(run_cell(ours, theirs, cfg, batch, length, mode, args.repeats, ceilings, reference, log,
                                 device))
    agreement = None
    if "infer-bf16" in modes and args.agreement_rows > 0:
        agreement = argmax_agreement(ours, theirs, cfg, args.agreement_rows, device=device)
        log(f"bf16 argmax agreement with transformers' fp32 over {args.agreement_rows} rows: "
            f"ours {agreement['ours']['agree']:.1%}, transformers {agreement['theirs']['agree']:.1%}")
    info = machine_info(device)
    command = "python benchmarks/bench_model.py " + " ".join(sys.argv[1:]) if args.command_line is None \
        else args.command_line
    body = (
        f"Command: `{command}`\n\n"
        f"Machine: {info.get('gpu', info['cpu'])}, {info['cores']} CPU cores ({info['torch_threads']} torch "
        f"threads), torch "
        f"{info['torch']}, Python {info['python']}; preset `{args.preset}` (random weights, sequence classification, "
        f"3 labels), median of {args.repeats} alternating runs; load average at the end of each row in the last "
        f"column. Matmul ceiling: fp32 {ceilings[torch.float32]:.0f} GFLOP/s, bf16 "
        f"{ceilings[torch.bfloat16]:.0f} GFLOP/s.\n\n" + markdown_table(rows) + "\n"
    )
    if agreement is not None:
        a, b = agreement["ours"], agreement["theirs"]
        body += (f"\nbf16 inference vs transformers' fp32 logits on {args.agreement_rows} random padded sequences "
                 f"of up to 128 tokens: same argmax ours {a['agree']:.1%} / transformers {b['agree']:.1%}, mean |logit "
                 f"error| {a['mean_abs_err']:.1e} / {b['mean_abs_err']:.1e}, largest fp32 top-2 gap among flipped "
                 f"rows {a['max_flip_margin']:.1e} / {b['max_flip_margin']:.1e} (the per-row column above sees "
                 f"only the benchmark batch).\n")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_model.md").write_text(body)
    (out / "bench_model.json").write_text(json.dumps(
        {"machine": info, "preset": args.preset, "command": command,
         "ceiling_gflops": {"fp32": ceilings[torch.float32], "bf16": ceilings[torch.bfloat16]},
         "argmax_agreement_bf16": agreement, "rows": [asdict(r) for r in rows]}, indent=2))
    print(body)
    if args.update_benchmarks_md:
        update_benchmarks_md(Path(args.update_benchmarks_md), args.notes_prefix + body if args.notes_prefix else body,
                             GPU_SECTION if gpu else SECTION)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="mdeberta-v3-base", help="model preset (default: mdeberta-v3-base)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (CUDA: bf16 table over L = 128 ... 4096)")
    p.add_argument("--shapes", default=None,
                   help=f"BATCHxLENGTH list (default: {DEFAULT_SHAPES} on CPU, {GPU_SHAPES} on CUDA)")
    p.add_argument("--modes", default=None, help=f"comma list of {', '.join(MODES)} (default: infer-fp32,infer-bf16,"
                   "train-bf16 on CPU, infer-bf16,train-bf16 on CUDA)")
    p.add_argument("--skip", default=None,
                   help="cells to skip: BATCHxLEN or BATCHxLEN:MODE, comma separated (default on CPU: 1x2048 training)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per implementation and cell (median)")
    p.add_argument("--agreement-rows", type=int, default=128,
                   help="sequences for the bf16-vs-fp32 argmax agreement check (with infer-bf16; 0 skips it)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--output-dir", default="benchmarks/results", help="where bench_model.{md,json} go")
    p.add_argument("--update-benchmarks-md", default=None, metavar="PATH",
                   help=f"rewrite the '{SECTION}' (CUDA: '{GPU_SECTION}') section of this file with the table")
    p.add_argument("--notes-prefix", default="", help=argparse.SUPPRESS)
    p.add_argument("--command-line", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--ceiling-size", type=int, default=2048,
                   help="n of the n^3 matmul that measures the roofline (a CPU without bf16 instructions takes "
                        "minutes for bf16 at 2048)")
    p.add_argument("--serving", action="store_true",
                   help="inference: ours fp32/bf16, ONNX Runtime fp32/int8 and transformers fp32 (needs onnxruntime)")
    p.add_argument("--agreement-model", default=None, help="--serving: fine-tuned NLI folder for int8 agreement")
    p.add_argument("--agreement-file", default=None, help="--serving: NLI file for --agreement-model")
    p.add_argument("--agreement-examples", type=int, default=2490, help="--serving: pairs of --agreement-file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
