"""Load benchmark of ``mdeberta serve`` on loopback, bounded in requests: throughput and p50 / p99 latency at
concurrency 1, 8 and 32 for short and long texts, three servers on the same model in one run:

* ``ours (ONNX int8, dynamic batching)``: ``mdeberta serve onnx/model_int8.onnx``;
* ``ours, one request at a time``: the same server and model with ``--max-batch-size 1 --max-wait-ms 0``;
* ``transformers pipeline``: transformers' ``text-classification`` pipeline (PyTorch fp32) behind the same HTTP
  stack (FastAPI + uvicorn, one model thread), one request at a time as the pipeline serves them.

    python benchmarks/bench_serve.py --tokenizer TOK --preset deberta-v3-small --update-benchmarks-md BENCHMARKS.md

The model is the preset with random weights and a 3-way head (speed does not depend on the weights); its HF
folder is what the pipeline loads, its int8 ONNX export what ours serves.
"""

# No ``from __future__ import annotations``: FastAPI reads the pipeline app's request model from its annotation.
import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTION = "## Serving over HTTP (mdeberta serve)"
SHORT = "The new phone has a bright screen and a battery that lasts two days."
LONG = " ".join(["The committee met on Tuesday to discuss the budget for the coming year, and after a long debate "
                 "about schools, roads and hospitals the members agreed on a plan."] * 6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pipeline_app(folder: str):
    """transformers' pipeline behind FastAPI, as a user would put it: one request at a time on a model thread."""
    from concurrent.futures import ThreadPoolExecutor

    import uvicorn  # noqa: F401
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import pipeline

    clf = pipeline("text-classification", model=folder, tokenizer=folder, device="cpu", top_k=None)
    pool = ThreadPoolExecutor(max_workers=1)
    app = FastAPI()

    class Body(BaseModel):
        text: str

    @app.post("/v1/classify")
    async def classify(body: Body) -> dict:
        scores = await asyncio.get_running_loop().run_in_executor(pool, lambda: clf(body.text, truncation=True))
        scores = scores[0] if isinstance(scores[0], list) else scores  # one text: [[...]] in some versions
        return {"label": max(scores, key=lambda s: s["score"])["label"]}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    return app


def start(cmd: list[str], port: int) -> subprocess.Popen:
    import httpx

    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()}")
    proc.kill()
    raise RuntimeError("server did not start in 300 s")


async def load(url: str, text: str, concurrency: int, requests: int) -> dict:
    import httpx

    latencies: list[float] = []
    queue: asyncio.Queue = asyncio.Queue()
    for _ in range(requests):
        queue.put_nowait(text)
    async with httpx.AsyncClient(timeout=300, trust_env=False) as client:
        await client.post(f"{url}/v1/classify", json={"text": text})  # warm-up

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t = time.perf_counter()
                r = await client.post(f"{url}/v1/classify", json={"text": body})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)

        start_time = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start_time
    latencies.sort()
    return {"requests_per_s": requests / wall, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="a tokenizer folder (spm.model)")
    p.add_argument("--preset", default="deberta-v3-small")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--requests", type=int, default=64, help="requests per (server, text, concurrency) cell")
    p.add_argument("--threads", type=int, default=1, help="model threads of every server")
    p.add_argument("--workdir", default=None)
    p.add_argument("--update-benchmarks-md", default=None)
    p.add_argument("--serve-pipeline", default=None, help=argparse.SUPPRESS)  # internal: run the pipeline server
    p.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve_pipeline:
        import uvicorn

        uvicorn.run(pipeline_app(a.serve_pipeline), host="127.0.0.1", port=a.port, log_level="warning")
        return 0

    import torch

    from mdeberta.config import preset
    from mdeberta.model import DebertaForSequenceClassification
    from mdeberta.serving import export_onnx
    from mdeberta.tokenizer import DebertaTokenizer

    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-serve-"))
    folder = work / "model"
    tokenizer = DebertaTokenizer.from_pretrained(a.tokenizer)
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
        config = preset(a.preset, vocab_size=len(tokenizer), num_labels=3, id2label=labels,
                        label2id={v: k for k, v in labels.items()})
        DebertaForSequenceClassification(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    if not (work / "onnx" / "model_int8.onnx").is_file():
        export_onnx(folder, work / "onnx", int8=True, overwrite=True)
    int8 = str(work / "onnx" / "model_int8.onnx")
    serve = [sys.executable, "-m", "mdeberta", "serve", "--threads", str(a.threads), "--log-level", "warning"]
    servers = {
        "ours (ONNX int8, dynamic batching)": lambda port: [*serve, int8, "--port", str(port)],
        "ours (ONNX int8), one request at a time": lambda port: [*serve, int8, "--port", str(port),
                                                                 "--max-batch-size", "1", "--max-wait-ms", "0"],
        "transformers pipeline (fp32), same HTTP stack": lambda port: [
            sys.executable, __file__, "--tokenizer", a.tokenizer, "--serve-pipeline", str(folder), "--port",
            str(port)],
    }
    concurrency = [int(c) for c in a.concurrency.split(",")]
    texts = {"short": SHORT, "long": LONG}
    lengths = {k: len(tokenizer(v)["input_ids"]) for k, v in texts.items()}
    rows = []
    for name, command in servers.items():
        port = free_port()
        proc = start(command(port), port)
        try:
            for text_name, text in texts.items():
                for c in concurrency:
                    result = asyncio.run(load(f"http://127.0.0.1:{port}", text, c, a.requests))
                    rows.append({"server": name, "text": text_name, "tokens": lengths[text_name], "concurrency": c,
                                 **result})
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    load_avg = os.getloadavg()
    lines = [f"Command: `python benchmarks/bench_serve.py {' '.join(sys.argv[1:])}`", "",
             f"Model: {a.preset} (random weights, 3-way head), {a.threads} model thread(s) per server; "
             f"{a.requests} requests per cell on loopback; texts of {lengths['short']} and {lengths['long']} tokens; "
             f"machine: {os.cpu_count()} cores, load average at the end {load_avg[0]:.2f}.", "",
             "| server | text | concurrency | requests/s | p50 ms | p99 ms |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['server']} | {r['text']} ({r['tokens']} tokens) | {r['concurrency']} | "
              f"{r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |" for r in rows]
    body = "\n".join(lines) + "\n"
    print(body)
    (work / "bench_serve.json").write_text(json.dumps(rows, indent=2))
    if a.update_benchmarks_md:
        sys.path.insert(0, str(HERE))
        from bench_model import update_benchmarks_md

        update_benchmarks_md(Path(a.update_benchmarks_md), body, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
