"""``mdeberta serve``: an HTTP inference server with dynamic batching for every fine-tuned task.

One model per server, PyTorch or exported ONNX (fp32 / int8), its task read from its config
(:func:`mdeberta.tasks.task_for_model`). Endpoints: ``POST /v1/classify`` (NLI and text classification /
regression), ``POST /v1/zero-shot`` (NLI models), ``POST /v1/entities`` (token classification),
``POST /v1/answer`` (question answering), ``GET /health``, ``GET /metrics`` (Prometheus text), and FastAPI's
``/openapi.json`` / ``/docs``.

Every request becomes token rows (a text, a text pair, one per candidate label, one per window of a long text);
the rows of all requests wait in one queue, and :class:`DynamicBatcher` cuts what arrived within
``max_wait_ms`` into batches of similar length under ``max_batch_size`` rows and ``max_batch_tokens`` padded
tokens, run one at a time on a worker thread (the event loop keeps accepting). Answers are the Python API's
(``TextClassifier``, ``ZeroShotClassifier``, ``TokenClassifier``, ``QuestionAnswerer``) on the same model, from
the same rows. A full queue answers 503 with ``Retry-After``; a body over ``max_body_bytes`` 413; a text longer
than the model's window is truncated (``"truncated": true`` in the answer) or refused with 413
(``truncation="refuse"``); NER and QA cut long texts into windows instead. Shutdown (SIGINT / SIGTERM) stops
accepting and finishes the requests in flight.
"""

# No ``from __future__ import annotations``: FastAPI reads the request models from the endpoints' annotations.
import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mdeberta.errors import MdebertaError

logger = logging.getLogger("mdeberta.server")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class QueueFull(MdebertaError):
    """The batcher's queue holds ``max_queue`` rows: the client should retry later."""


@dataclass
class ServerConfig:
    max_batch_size: int = 32
    max_batch_tokens: int = 16384
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_body_bytes: int = 1 << 20
    max_seq_length: int | None = None  # default: the model's window (512 for relative-position models)
    truncation: str = "truncate"  # or "refuse"
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_batch_tokens", "max_queue", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise MdebertaError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if self.max_wait_ms < 0:
            raise MdebertaError(f"--max-wait-ms {self.max_wait_ms}: must be >= 0")
        if self.truncation not in ("truncate", "refuse"):
            raise MdebertaError(f"--truncation {self.truncation!r}; allowed: truncate, refuse")


# --------------------------------------------------------------------------- metrics
@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.n += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        out += [f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}', f"{name}_sum{{{labels}}} {self.total:.6f}",
                f"{name}_count{{{labels}}} {self.n}"]
        return out


class Metrics:
    """Prometheus text exposition: requests by endpoint and status, latency per endpoint, batch sizes, queue depth."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.batch_tokens = 0
        self.queue_depth = 0

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
        self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def render(self) -> str:
        lines = ["# HELP mdeberta_requests_total Requests answered, by endpoint and HTTP status.",
                 "# TYPE mdeberta_requests_total counter"]
        lines += [f'mdeberta_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                  for (e, s), n in sorted(self.requests.items())]
        lines += ["# HELP mdeberta_request_seconds Request latency.", "# TYPE mdeberta_request_seconds histogram"]
        for endpoint, hist in sorted(self.latency.items()):
            lines += hist.lines("mdeberta_request_seconds", f'endpoint="{endpoint}"')
        lines += ["# HELP mdeberta_batch_rows Rows per model batch.", "# TYPE mdeberta_batch_rows histogram",
                  *self.batch_rows.lines("mdeberta_batch_rows"),
                  "# HELP mdeberta_batch_tokens_total Padded tokens run.", "# TYPE mdeberta_batch_tokens_total counter",
                  f"mdeberta_batch_tokens_total {self.batch_tokens}",
                  "# HELP mdeberta_queue_depth Rows waiting for a batch.", "# TYPE mdeberta_queue_depth gauge",
                  f"mdeberta_queue_depth {self.queue_depth}"]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- dynamic batching
class DynamicBatcher:
    """Rows (token id lists) from concurrent requests, batched: whatever arrived within ``max_wait_ms`` of the
    first waiting row is sorted by length and cut into batches of at most ``max_batch_size`` rows and
    ``max_batch_tokens`` padded tokens; ``run(rows) -> outputs`` runs each batch on one worker thread.

    The wait ends early when every request the server is handling already has its rows queued (``active``: the
    number of requests in the server): then nothing else can join, and waiting would only add latency (a lone
    request runs at once; under load, rows that arrive while the model runs form the next batch)."""

    def __init__(self, run: Callable[[list[list[int]]], list[Any]], config: ServerConfig,
                 metrics: Metrics | None = None) -> None:
        self.run, self.config, self.metrics = run, config, metrics or Metrics()
        self.queue: asyncio.Queue | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mdeberta-model")
        self.task: asyncio.Task | None = None
        self.in_flight = 0
        self.active = 0  # requests inside the server (the app's middleware counts them)

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish every queued row, then stop."""
        while self.queue is not None and (self.queue.qsize() or self.in_flight):
            await asyncio.sleep(0.01)
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=True)

    async def submit(self, rows: Sequence[list[int]]) -> list[Any]:
        """The outputs of ``rows`` (one request's rows, queued together or not at all)."""
        assert self.queue is not None, "start() the batcher inside the event loop first"
        if self.queue.qsize() + len(rows) > self.config.max_queue:
            raise QueueFull(f"the queue holds {self.queue.qsize()} rows (max {self.config.max_queue})")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in rows]
        token = object()  # which request a row belongs to
        for row, future in zip(rows, futures):
            self.queue.put_nowait((row, future, token))
        self.metrics.queue_depth = self.queue.qsize()
        return list(await asyncio.gather(*futures))

    def plan(self, items: list[tuple]) -> list[list[tuple]]:
        """Length-sorted batches under the row and padded-token limits."""
        c = self.config
        batches: list[list] = []
        for item in sorted(items, key=lambda x: len(x[0])):
            batch = batches[-1] if batches else None
            full = batch is None or len(batch) >= c.max_batch_size
            if full or (len(batch) + 1) * len(item[0]) > c.max_batch_tokens:
                batches.append([item])
            else:
                batch.append(item)
        return batches

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.queue is not None
        while True:
            items = [await self.queue.get()]
            self.in_flight += 1
            deadline = loop.time() + self.config.max_wait_ms / 1000
            limit = self.config.max_batch_size * 4  # collect a few batches' worth to sort by length
            while len(items) < limit:
                timeout = deadline - loop.time()
                if timeout <= 0 and self.queue.empty():
                    break
                if self.queue.empty() and len({item[2] for item in items}) >= self.active:
                    break  # every request in the server is here: nobody else can join this batch
                try:
                    items.append(self.queue.get_nowait() if not self.queue.empty() else
                                 await asyncio.wait_for(self.queue.get(), timeout))
                except (asyncio.TimeoutError, TimeoutError):
                    break
            self.metrics.queue_depth = self.queue.qsize()
            try:
                for batch in self.plan(items):
                    live = [(row, f) for row, f, _ in batch if not f.cancelled()]
                    if not live:
                        continue
                    self.metrics.batch_rows.observe(len(live))
                    self.metrics.batch_tokens += len(live) * max(len(r) for r, _ in live)
                    try:
                        outputs = await loop.run_in_executor(self.executor, self.run, [r for r, _ in live])
                    except Exception as e:  # a model failure answers these requests with 500, the server stays up
                        logger.exception("model batch failed")
                        for _, f in live:
                            if not f.done():
                                f.set_exception(e)
                        continue
                    for (_, f), out in zip(live, outputs):
                        if not f.done():
                            f.set_result(out)
            finally:
                self.in_flight -= 1


# --------------------------------------------------------------------------- the model side
class ServedModel:
    """A fine-tuned model, its tokenizer and task; ``run(rows)`` is the batch function (padding, one forward)."""

    def __init__(self, path: str | Path, tokenizer: str | Path | None = None, device: str | None = None,
                 max_seq_length: int | None = None) -> None:
        from mdeberta.onnx_model import OnnxModel, is_onnx_folder
        from mdeberta.tasks import TaskOptions, task_for_model
        from mdeberta.tokenizer import DebertaTokenizer

        path = Path(path)
        file = None
        if path.suffix == ".onnx" and is_onnx_folder(path.parent):
            path, file = path.parent, path.name
        if is_onnx_folder(path):
            self.model: Any = OnnxModel(path, file=file)
            head = self.model.head
            self.device = torch.device("cpu")
        else:
            from mdeberta.model.auto import config_head, load_detected

            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.model = load_detected(path).to(self.device).eval()
            head = config_head(self.model.config)
            missing = [k for k in getattr(self.model, "loading_info", {}).get("missing", [])
                       if k.startswith(("classifier", "qa_outputs"))]
            if missing:
                raise MdebertaError(f"{path} has no trained task head (missing {missing}); fine-tune it first")
        self.tokenizer = DebertaTokenizer.from_pretrained(tokenizer or path)
        config = self.model.config
        window = config.max_position_embeddings if config.position_biased_input else 512
        self.max_seq_length = min(max_seq_length or window, window) if config.position_biased_input else (
            max_seq_length or window)
        self.task = task_for_model(config, self.tokenizer, TaskOptions(max_seq_length=self.max_seq_length), head)
        self.path = str(path)
        self.kind = self.task.name

    @torch.no_grad()
    def run(self, rows: list[list[int]]) -> list[Any]:
        """Outputs per row: (labels,) logits for sequence classification, (tokens, labels) for token
        classification, (start, end) logits for QA; float32 on the CPU, padding cut off."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        if self.kind == "question-answering":
            s, e = out.start_logits.float().cpu(), out.end_logits.float().cpu()
            return [(s[i, :len(r)].tolist(), e[i, :len(r)].tolist()) for i, r in enumerate(rows)]
        logits = out.logits.float().cpu()
        if self.kind == "token-classification":
            return [logits[i, :len(r)] for i, r in enumerate(rows)]
        return [logits[i] for i in range(len(rows))]

    # request -> rows, outputs -> answer (the same steps as the Python API)
    def encode(self, text: str, text_pair: "str | None" = None) -> tuple[list[int], int]:
        """(ids truncated to the window, the untruncated length): tokenized once unless it has to be cut."""
        full = self.tokenizer(text, text_pair)["input_ids"]
        if len(full) <= self.max_seq_length:
            return full, len(full)
        cut = self.tokenizer(text, text_pair, truncation="longest_first", max_length=self.max_seq_length)
        return cut["input_ids"], len(full)

    def classification(self, logits: torch.Tensor) -> dict[str, Any]:
        from mdeberta.tasks.nli import NLITask
        from mdeberta.tasks.regression import RegressionTask

        task = self.task
        if isinstance(task, RegressionTask):
            return {"value": float(logits[0])}
        if isinstance(task, NLITask):
            from mdeberta.data.nli import LABELS
            from mdeberta.tasks.nli import nli_output_order

            probs = logits.softmax(-1)[nli_output_order(self.model.config)].tolist()
            return {"label": LABELS[max(range(3), key=probs.__getitem__)],
                    "scores": {name: round(p, 6) for name, p in zip(LABELS, probs)}}
        return task.answer(task.probabilities_of(logits).tolist())


# --------------------------------------------------------------------------- the HTTP app
def create_app(served: ServedModel, config: ServerConfig | None = None) -> Any:
    """The FastAPI application serving ``served`` (uvicorn runs it: :func:`serve`)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from pydantic import BaseModel, Field

    config = config or ServerConfig()
    metrics = Metrics()
    batcher = DynamicBatcher(served.run, config, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        logger.info("serving %s (%s) with dynamic batching: <= %d rows, <= %d tokens, <= %g ms wait", served.path,
                    served.kind, config.max_batch_size, config.max_batch_tokens, config.max_wait_ms)
        yield
        await batcher.stop()  # the requests in flight finish first

    app = FastAPI(title="mdeberta", version="1", lifespan=lifespan,
                  description=f"{served.kind} with {served.path}; dynamic batching")

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next):
        start = time.perf_counter()
        endpoint = request.url.path if request.url.path.startswith("/v1/") else None
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            response = JSONResponse({"detail": f"request body of {length} bytes exceeds the limit of "
                                               f"{config.max_body_bytes}"}, status_code=413)
        else:
            batcher.active += endpoint is not None
            try:
                response = await call_next(request)
            finally:
                batcher.active -= endpoint is not None
        if endpoint is not None:
            metrics.request(endpoint, response.status_code, time.perf_counter() - start)
        return response

    def require(kinds: tuple[str, ...], endpoint: str) -> None:
        if served.kind not in kinds:
            raise HTTPException(404, f"{endpoint} is not served: this server's model is a {served.kind} model "
                                     f"(it serves {ENDPOINTS[served.kind]})")

    async def rows_out(rows: list[list[int]]) -> list[Any]:
        try:
            return await batcher.submit(rows)
        except QueueFull as e:
            raise HTTPException(503, f"server busy: {e}; retry later", headers={"Retry-After": "1"}) from None

    def window_check(n_tokens: int) -> bool:
        """Whether the input was cut to the window; refused (413) instead with --truncation refuse."""
        truncated = n_tokens > served.max_seq_length
        if truncated and config.truncation == "refuse":
            raise HTTPException(413, f"the input is {n_tokens} tokens; the model's window is "
                                     f"{served.max_seq_length} (this server refuses longer inputs; "
                                     "--truncation truncate cuts them)")
        return truncated

    class ClassifyRequest(BaseModel):
        text: str = Field(min_length=1, description="the text (NLI: the premise)")
        text_pair: str | None = Field(None, description="the second text of a pair (NLI: the hypothesis)")

    class ZeroShotRequest(BaseModel):
        text: str = Field(min_length=1)
        candidate_labels: list[str] = Field(min_length=1)
        hypothesis_template: str = "This example is {}."
        multi_label: bool = False

    class EntitiesRequest(BaseModel):
        text: str = Field(min_length=1)

    class AnswerRequest(BaseModel):
        question: str = Field(min_length=1)
        context: str = Field(min_length=1)

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        require(("nli", "text-classification", "regression"), "/v1/classify")
        ids, n_tokens = served.encode(body.text, body.text_pair)
        truncated = window_check(n_tokens)
        (logits,) = await rows_out([ids])
        return {**served.classification(logits), "truncated": truncated}

    @app.post("/v1/zero-shot")
    async def zero_shot(body: ZeroShotRequest) -> dict[str, Any]:
        require(("nli",), "/v1/zero-shot")
        from mdeberta.inference import check_candidate_labels, zero_shot_scores

        if "{}" not in body.hypothesis_template:
            raise HTTPException(422, "hypothesis_template must contain '{}' for the label")
        try:
            labels = check_candidate_labels(body.candidate_labels)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        encoded = [served.encode(body.text, body.hypothesis_template.format(label)) for label in labels]
        truncated = window_check(max(n for _, n in encoded))
        logits = torch.stack(await rows_out([ids for ids, _ in encoded]))
        scores = zero_shot_scores(logits[None], served.model.config, body.multi_label)[0].tolist()
        ranked = sorted(range(len(labels)), key=lambda i: -scores[i])
        return {"sequence": body.text, "labels": [labels[i] for i in ranked], "scores": [scores[i] for i in ranked],
                "truncated": truncated}

    @app.post("/v1/entities")
    async def entities(body: EntitiesRequest) -> dict[str, Any]:
        require(("token-classification",), "/v1/entities")
        from mdeberta.inference import TokenClassifier

        tagger = TokenClassifier(served.model, served.tokenizer, max_length=served.max_seq_length,
                                 stride=min(64, served.max_seq_length // 4))  # windows overlap by a quarter at most
        enc = tagger.windows(body.text)
        logits = await rows_out([list(r) for r in enc["input_ids"]])
        return {"entities": tagger.entities(body.text, enc, [row.softmax(-1) for row in logits]),
                "windows": len(logits)}

    @app.post("/v1/answer")
    async def answer(body: AnswerRequest) -> dict[str, Any]:
        require(("question-answering",), "/v1/answer")
        from mdeberta.data.qa import QAExample, decode_answers, encode_qa

        example = QAExample("0", body.question, body.context, [])
        max_length = min(served.max_seq_length, 384)
        encoded = encode_qa(served.tokenizer, [example], max_length, min(128, max_length // 4))
        outputs = await rows_out([f.input_ids for f in encoded])
        best = decode_answers([example], encoded, [o[0] for o in outputs], [o[1] for o in outputs])[0]
        return {"answer": best["text"], "start": best["start"], "end": best["end"], "score": best["score"],
                "windows": len(encoded)}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "task": served.kind, "model": served.path, "max_seq_length": served.max_seq_length,
                "queue": batcher.queue.qsize() if batcher.queue is not None else 0}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> str:
        return metrics.render()

    app.state.batcher, app.state.metrics, app.state.served = batcher, metrics, served
    return app


ENDPOINTS = {"nli": "/v1/classify and /v1/zero-shot", "text-classification": "/v1/classify",
             "regression": "/v1/classify", "token-classification": "/v1/entities",
             "question-answering": "/v1/answer", "multiple-choice": "nothing yet"}


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8080, tokenizer: str | None = None,
          device: str | None = None, config: ServerConfig | None = None, log_level: str = "info") -> None:
    """Load the model and run the server until SIGINT / SIGTERM (in-flight requests finish first)."""
    try:
        import uvicorn
    except ImportError:
        raise MdebertaError("mdeberta serve needs fastapi and uvicorn: pip install 'mdeberta[serve]'") from None
    config = config or ServerConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    served = ServedModel(model, tokenizer, device, config.max_seq_length)
    if served.kind == "multiple-choice":
        raise MdebertaError(f"{model} is a multiple-choice model; the server has no endpoint for it yet")
    uvicorn.run(create_app(served, config), host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=30)


__all__ = ["DynamicBatcher", "Metrics", "QueueFull", "ServedModel", "ServerConfig", "create_app", "serve"]
