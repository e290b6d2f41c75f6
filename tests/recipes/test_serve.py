"""``mdeberta serve`` as users run it: a real server process on a free loopback port, called with a real HTTP
client (httpx). Every endpoint's answers equal the Python API's on the same model; concurrent requests are batched
and answer as they would alone; bad input, oversized bodies and inputs, a full queue and shutdown with a request in
flight get the documented status codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

httpx = pytest.importorskip("httpx", reason="the server tests need httpx (test extra)")
pytest.importorskip("fastapi", reason="mdeberta serve needs fastapi (the 'serve' extra)")
pytest.importorskip("uvicorn", reason="mdeberta serve needs uvicorn (the 'serve' extra)")

from mdeberta.cli import main  # noqa: E402

# Loopback only: never through a proxy the environment may name (HTTP_PROXY and friends).
http = httpx.Client(trust_env=False, timeout=60)

pytestmark = pytest.mark.usefixtures("single_thread")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(model, *flags):
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "mdeberta", "serve", str(model), "--port", str(port),
                             "--device", "cpu", "--log-level", "warning", *flags], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if http.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the server did not start:\n{proc.stdout.read()}")
        time.sleep(0.2)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_nli_server_answers_like_the_python_api_and_batches(tiny_classifier):
    from mdeberta.inference import ZeroShotClassifier, classify_pairs, load_classifier

    model, tokenizer = load_classifier(tiny_classifier, device="cpu")
    pairs = [("the cat and the dog.", "there is a cat."), ("the car and the road.", "there is no tree."),
             ("a house.", "there is a house."), ("the river and the bird and the light.", "there is no bird.")]
    expected = classify_pairs(model, tokenizer, pairs)
    zero_shot = ZeroShotClassifier(model, tokenizer)("the cat sat on the book.", ["animal", "car", "music"])
    with server(tiny_classifier, "--max-wait-ms", "50") as (url, _):
        health = http.get(f"{url}/health").json()
        assert health["task"] == "nli" and health["status"] == "ok"
        alone = [http.post(f"{url}/v1/classify", json={"text": p, "text_pair": h}).json() for p, h in pairs]
        for got, want in zip(alone, expected):
            assert got["label"] == want.label and not got["truncated"]
            assert got["scores"] == pytest.approx(want.probabilities, abs=1e-5)
        answer = http.post(f"{url}/v1/zero-shot", json={"text": "the cat sat on the book.",
                                                           "candidate_labels": ["animal", "car", "music"]}).json()
        assert answer["labels"] == zero_shot["labels"]
        assert answer["scores"] == pytest.approx(zero_shot["scores"], abs=1e-5)
        # 16 concurrent requests: batched together, each answer as it was alone.
        results: dict[int, dict] = {}

        def call(i: int) -> None:
            p, h = pairs[i % len(pairs)]
            results[i] = http.post(f"{url}/v1/classify", json={"text": p, "text_pair": h}, timeout=60).json()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, got in results.items():
            assert got["label"] == alone[i % len(pairs)]["label"]
            assert got["scores"] == pytest.approx(alone[i % len(pairs)]["scores"], abs=1e-5)
        metrics = http.get(f"{url}/metrics").text
        assert 'mdeberta_requests_total{endpoint="/v1/classify",status="200"} 20' in metrics
        single = int(next(line.split()[-1] for line in metrics.splitlines()
                          if line.startswith('mdeberta_batch_rows_bucket{le="1"}')))
        total = int(next(line.split()[-1] for line in metrics.splitlines()
                         if line.startswith("mdeberta_batch_rows_count")))
        assert total < 20 and single < total  # 20 requests in fewer batches: some batch held several rows
        # Bad input: 422 naming the field; the wrong endpoint for this model: 404 naming what it serves.
        missing = http.post(f"{url}/v1/classify", json={"txt": "x"})
        assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "text"]
        wrong_type = http.post(f"{url}/v1/zero-shot", json={"text": "x", "candidate_labels": "a"})
        assert wrong_type.status_code == 422 and "candidate_labels" in wrong_type.json()["detail"][0]["loc"]
        bad_json = http.post(f"{url}/v1/classify", content=b"{bad", headers={"content-type": "application/json"})
        assert bad_json.status_code == 422 and bad_json.json()["detail"][0]["msg"] == "JSON decode error"
        other = http.post(f"{url}/v1/entities", json={"text": "x"})
        assert other.status_code == 404 and "serves /v1/classify and /v1/zero-shot" in other.json()["detail"]
        assert "/v1/classify" in http.get(f"{url}/openapi.json").json()["paths"]


def test_limits_full_queue_and_graceful_shutdown(tiny_classifier):
    long_text = " ".join(["the cat and the dog"] * 6)  # > 16 tokens, < 400 bytes
    with server(tiny_classifier, "--max-body-bytes", "400", "--max-seq-length", "16", "--truncation", "refuse",
                "--max-queue", "2") as (url, _):
        assert http.post(f"{url}/v1/classify", json={"text": "x" * 500}).status_code == 413  # the body limit
        refused = http.post(f"{url}/v1/classify", json={"text": long_text})
        assert refused.status_code == 413 and "the model's window is 16" in refused.json()["detail"]
        busy = http.post(f"{url}/v1/zero-shot", json={"text": "a cat", "candidate_labels": ["a", "b", "c"],
                                                       "hypothesis_template": "{}"})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"  # 3 rows > a queue of 2
    # Graceful shutdown: a request whose 400 rows are still being run one batch of one row at a time when SIGTERM
    # arrives gets its whole answer; then the process ends.
    labels = [f"label {i}" for i in range(400)]
    with server(tiny_classifier, "--max-batch-size", "1") as (url, proc):
        answer: dict = {}
        thread = threading.Thread(target=lambda: answer.update(r=http.post(
            f"{url}/v1/zero-shot", json={"text": "a cat.", "candidate_labels": labels}, timeout=120)))
        thread.start()
        deadline = time.monotonic() + 60
        while "mdeberta_batch_rows_count 0" in http.get(f"{url}/metrics").text.replace("{}", ""):
            assert time.monotonic() < deadline, "the request never reached the model"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # the model is running the request's rows
        thread.join(timeout=120)
        assert answer["r"].status_code == 200 and len(answer["r"].json()["scores"]) == 400
        # After finishing, uvicorn re-raises the signal (what process managers expect): killed by SIGTERM, not crashed.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)


def test_entities_answers_and_text_classification(tagging_backbone, tmp_path):
    from mdeberta.inference import QuestionAnswerer, TextClassifier, TokenClassifier
    from ner_helpers import synthetic_sentences, write_conll
    from task_helpers import topic_rows, write_rows

    fast = ["--max-steps", "3", "--batch-size", "8", "--max-seq-length", "32", "--save-every", "0", "--device", "cpu"]
    write_conll(tmp_path / "ner.conll", synthetic_sentences(20))
    assert main(["finetune", "--task", "token-classification", "--model", str(tagging_backbone), "--train-file",
                 str(tmp_path / "ner.conll"), "--output-dir", str(tmp_path / "ner"), *fast]) == 0
    squad = {"data": [{"paragraphs": [{"context": "anna went to oslo with bruno", "qas": [
        {"id": "q1", "question": "where is anna ?", "answers": [{"text": "oslo", "answer_start": 13}]}]}]}]}
    (tmp_path / "qa.json").write_text(json.dumps(squad))
    assert main(["finetune", "--task", "question-answering", "--model", str(tagging_backbone), "--train-file",
                 str(tmp_path / "qa.json"), "--output-dir", str(tmp_path / "qa"), *fast, "--doc-stride", "8"]) == 0
    write_rows(tmp_path / "topics.tsv", topic_rows(30))
    assert main(["finetune", "--task", "text-classification", "--model", str(tagging_backbone), "--train-file",
                 str(tmp_path / "topics.tsv"), "--output-dir", str(tmp_path / "tc"), *fast]) == 0

    text = "yesterday anna smith went to oslo and met carla in lima " * 12  # longer than one 32-token window
    tagger = TokenClassifier.from_pretrained(tmp_path / "ner" / "final", device="cpu", max_length=32, stride=8)
    with server(tmp_path / "ner" / "final", "--max-seq-length", "32") as (url, _):
        got = http.post(f"{url}/v1/entities", json={"text": text}).json()
    assert got["windows"] > 1
    want = tagger(text)
    assert [(e["label"], e["start"], e["end"]) for e in got["entities"]] == [
        (e["label"], e["start"], e["end"]) for e in want]
    assert [e["score"] for e in got["entities"]] == pytest.approx([e["score"] for e in want], abs=1e-5)

    question, context = "where is anna ?", "anna went to oslo with bruno and carla went to lima"
    want = QuestionAnswerer.from_pretrained(tmp_path / "qa" / "final", device="cpu")(question, context)
    with server(tmp_path / "qa" / "final") as (url, _):
        got = http.post(f"{url}/v1/answer", json={"question": question, "context": context}).json()
    assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
    assert got["score"] == pytest.approx(want["score"], abs=1e-4)

    texts = ["anna went to oslo", "the a went", "lima and paris"]
    want = TextClassifier.from_pretrained(tmp_path / "tc" / "final", device="cpu")(texts)
    with server(tmp_path / "tc" / "final", "--max-seq-length", "16") as (url, _):
        got = [http.post(f"{url}/v1/classify", json={"text": t}).json() for t in texts]
        long = http.post(f"{url}/v1/classify", json={"text": " ".join(["anna"] * 40)}).json()
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert got[0]["scores"] == pytest.approx(want[0]["scores"], abs=1e-5)
    assert long["truncated"] is True  # --truncation truncate (the default) says so


def test_batcher_plans_by_length_and_waits_only_for_requests_in_the_server():
    import asyncio

    from mdeberta.server import DynamicBatcher, ServerConfig

    calls: list[list[int]] = []

    def run(rows):
        calls.append([len(r) for r in rows])
        return [sum(r) for r in rows]

    batcher = DynamicBatcher(run, ServerConfig(max_batch_size=3, max_batch_tokens=20, max_wait_ms=2000))
    items = [([1] * n, None, i) for i, n in enumerate([9, 2, 5, 3, 2, 8])]
    plan = [[len(row) for row, _, _ in batch] for batch in batcher.plan(items)]
    assert plan == [[2, 2, 3], [5, 8], [9]]  # sorted; 3 rows at most; 3 x 9 > 20 padded tokens (2 x 8 is not)

    async def scenario():
        batcher.start()
        batcher.active = 1
        t = time.perf_counter()
        assert await batcher.submit([[1, 2]]) == [3]
        lone = time.perf_counter() - t
        batcher.active = 2  # a second request is being received: the first waits for it (up to max_wait_ms)
        first = asyncio.ensure_future(batcher.submit([[1]]))
        await asyncio.sleep(0.2)
        second = await batcher.submit([[2], [3]])
        assert await first == [1] and second == [2, 3]
        await batcher.stop()
        return lone

    calls.clear()
    lone = asyncio.run(scenario())
    assert lone < 1.0  # did not wait the 2 s: no other request was in the server
    assert calls == [[2], [1, 1, 1]]  # the two later requests' three rows ran as one batch
