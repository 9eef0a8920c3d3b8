"""qg-serve over real HTTP: concurrent clients each get their own paragraphs' questions, requests arriving together
share one generation, every bad request is a 4xx naming its field, the API key, 503s, scrubbed 500s, SIGTERM."""

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn

from qg.generate import QuestionGenerator
from qg.serving.api import MAX_BODY_BYTES, MAX_PARAGRAPHS, MAX_TEXT_CHARS, RETRY_AFTER_S, create_app
from qg.serving.model_info import PROMPT_VERSION, describe_model

REPO = Path(__file__).resolve().parents[1]
KEY = "test-key-4d1f9a"
WAIT_S = 120  # the longest any step here may take on a busy machine before the test gives up


def wait_until(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


class ServerProcess:
    """`python -m qg.serving.api` on 127.0.0.1 at a free port (--port 0, read from uvicorn's start line)."""

    def __init__(self, *args: str, env: dict | None = None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qg.serving.api", "--port", "0", *args], cwd=REPO, text=True,
            # One thread: as fast for the tiny model, and it leaves the other core to the test's clients.
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()
        port = wait_until(lambda: self._port() or self.process.poll() is not None, "the server to start")
        assert self.process.poll() is None, self.log
        self.url = f"http://127.0.0.1:{port}"

    def _port(self) -> int | None:
        match = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", self.log)
        return int(match[1]) if match else None

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=WAIT_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture(scope="module")
def server(paragraph_adapter):
    adapter = paragraph_adapter[0]
    process = ServerProcess("--model", str(adapter), "--batch-wait-ms", "50", env={"QG_API_KEY": KEY})
    yield process
    process.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=WAIT_S) as client:
        yield client


def paragraphs_of(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json()["paragraphs"]


def test_concurrent_clients_each_get_their_own_paragraphs_questions(server, paragraph_adapter):
    _, contexts, questions = paragraph_adapter
    pairs = [(i, (i + 5) % len(contexts)) for i in range(16)]  # two paragraphs per request, every one twice

    async def ask_all():
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"},
                                     timeout=WAIT_S, limits=httpx.Limits(max_connections=16)) as client:
            return await asyncio.gather(*(client.post("/v1/questions", json={
                "paragraphs": [{"text": contexts[i], "id": f"p{i}"}, {"text": contexts[j], "id": j}],
                "temperature": 0}) for i, j in pairs))

    responses = asyncio.run(ask_all())
    for (i, j), response in zip(pairs, responses):
        assert paragraphs_of(response) == [
            {"id": f"p{i}", "questions": [questions[i]], "rejected": {}, "truncated": False},
            {"id": j, "questions": [questions[j]], "rejected": {}, "truncated": False}]
    health = httpx.get(f"{server.url}/health").json()
    assert health["requests"] == 16 and health["paragraphs"] == 32 and health["in_flight"] == 0


def test_a_paragraph_over_the_token_budget_is_cut_and_flagged(client, paragraph_adapter):
    contexts = paragraph_adapter[1]
    long = " ".join(contexts[:8])  # 1,233 tokens of the tiny tokenizer, over the 1,024-token budget
    assert len(long) <= MAX_TEXT_CHARS
    [cut, whole] = paragraphs_of(client.post("/v1/questions", json={
        "paragraphs": [{"text": long}, {"text": contexts[0]}], "temperature": 0}))
    assert cut["truncated"] and not whole["truncated"]


def test_model_info_names_the_adapter_its_base_and_the_prompt_version(client, paragraph_adapter):
    adapter = paragraph_adapter[0]
    info = client.get("/v1/model").json()
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert info == {"adapter": str(adapter), "base": base, "revision": info["revision"],
                    "prompt_version": PROMPT_VERSION}
    assert info["revision"].startswith("files:")


BAD_REQUESTS = {
    "empty text": ({"paragraphs": [{"text": ""}]}, ["paragraphs", 0, "text"]),
    "whitespace text": ({"paragraphs": [{"text": "가"}, {"text": " \n\t"}]}, ["paragraphs", 1, "text"]),
    "whitespace answer": ({"paragraphs": [{"text": "가", "answer": " "}]}, ["paragraphs", 0, "answer"]),
    "text too long": ({"paragraphs": [{"text": "가" * (MAX_TEXT_CHARS + 1)}]}, ["paragraphs", 0, "text"]),
    "too many paragraphs": ({"paragraphs": [{"text": "가"}] * (MAX_PARAGRAPHS + 1)}, ["paragraphs"]),
    "no paragraphs": ({"paragraphs": []}, ["paragraphs"]),
    "paragraphs missing": ({"num_questions": 3}, ["paragraphs"]),
    "num_questions 0": ({"paragraphs": [{"text": "가"}], "num_questions": 0}, ["num_questions"]),
    "num_questions 11": ({"paragraphs": [{"text": "가"}], "num_questions": 11}, ["num_questions"]),
    "temperature too high": ({"paragraphs": [{"text": "가"}], "temperature": 2.5}, ["temperature"]),
    "negative temperature": ({"paragraphs": [{"text": "가"}], "temperature": -0.1}, ["temperature"]),
    "unknown field": ({"paragraphs": [{"text": "가"}], "n": 3}, ["n"]),
    "unknown paragraph field": ({"paragraphs": [{"text": "가", "context": "나"}]}, ["paragraphs", 0, "context"]),
    "num_questions a string": ({"paragraphs": [{"text": "가"}], "num_questions": "5"}, ["num_questions"]),
    "text a number": ({"paragraphs": [{"text": 5}]}, ["paragraphs", 0, "text"]),
    "paragraphs a string": ({"paragraphs": "가"}, ["paragraphs"]),
    "paragraph a string": ({"paragraphs": ["가"]}, ["paragraphs", 0]),
    "seed a float": ({"paragraphs": [{"text": "가"}], "seed": 1.5}, ["seed"]),
    "id a list": ({"paragraphs": [{"text": "가", "id": [1]}]}, ["paragraphs", 0, "id"]),
    "body not an object": ([{"text": "가"}], []),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_bad_request_is_a_422_naming_the_field(client, case):
    body, field = BAD_REQUESTS[case]
    response = client.post("/v1/questions", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert ["body", *field] in [e["loc"][:len(field) + 1] for e in errors]
    assert all(e["msg"] and set(e) == {"loc", "msg", "type"} for e in errors)  # the input is not echoed back


def test_malformed_json_and_bodies_over_the_limit(client):
    response = client.post("/v1/questions", content=b'{"paragraphs": [', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"
    big = b'{"paragraphs": [{"text": "' + b"a" * MAX_BODY_BYTES + b'"}]}'
    assert client.post("/v1/questions", content=big, headers={"content-type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: the limit is counted while reading
        for start in range(0, len(big), 1 << 16):
            yield big[start:start + (1 << 16)]

    response = client.post("/v1/questions", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_the_api_key_is_required_and_never_logged(server, client, paragraph_adapter):
    body = {"paragraphs": [{"text": paragraph_adapter[1][0]}], "temperature": 0}
    with httpx.Client(base_url=server.url, timeout=WAIT_S) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {KEY}"},
                        {"Authorization": KEY}):
            for method, path in (("POST", "/v1/questions"), ("GET", "/v1/model")):
                response = anonymous.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (headers, path)
                assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/health").status_code == 200
    # Authentication comes before validation: a stranger learns nothing about the request format.
    assert httpx.post(f"{server.url}/v1/questions", json={"bad": 1}).status_code == 401
    assert client.post("/v1/questions", json=body).status_code == 200
    assert "/v1/questions" in server.log and KEY not in server.log


@pytest.fixture(scope="module")
def generator(paragraph_adapter):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield QuestionGenerator.from_pretrained(str(paragraph_adapter[0]))
    torch.set_num_threads(threads)


@contextlib.contextmanager
def serve_in_thread(app):
    """The app under uvicorn in a thread of this process, so a test can hold or break its generator."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the server to start")
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=WAIT_S)


class HeldGenerate:
    """Wraps `generator.generate`: records each call's contexts, and holds the first call until `release()`."""

    def __init__(self, generator, monkeypatch):
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.released = threading.Event()
        original = generator.generate

        def held(contexts, **kwargs):
            self.calls.append(list(contexts))
            self.started.set()
            assert self.released.wait(WAIT_S)
            return original(contexts, **kwargs)

        monkeypatch.setattr(generator, "generate", held)

    def release(self):
        self.released.set()


def post_in_thread(url: str, body: dict, responses: dict, name: str) -> threading.Thread:
    def post():
        responses[name] = httpx.post(f"{url}/v1/questions", json=body, timeout=WAIT_S)

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def queued(url: str) -> int:
    return httpx.get(f"{url}/health").json()["queued"]


def test_requests_waiting_together_share_one_generate_call(generator, paragraph_adapter, monkeypatch):
    _, contexts, questions = paragraph_adapter
    held = HeldGenerate(generator, monkeypatch)
    app = create_app(generator, describe_model("adapter", "base"), wait_s=0.05)
    same = {f"same{i}": {"paragraphs": [{"text": contexts[i]}], "temperature": 0} for i in range(1, 5)}
    other = {"two questions": {"paragraphs": [{"text": contexts[5]}], "temperature": 0, "num_questions": 2},
             "seeded": {"paragraphs": [{"text": contexts[6]}], "temperature": 0, "seed": 1},
             "seeded again": {"paragraphs": [{"text": contexts[7]}], "temperature": 0, "seed": 1}}
    responses = {}
    with serve_in_thread(app) as url:
        threads = [post_in_thread(url, {"paragraphs": [{"text": contexts[0]}], "temperature": 0}, responses, "first")]
        assert held.started.wait(WAIT_S)  # the first request's generation is running; the others queue behind it
        threads += [post_in_thread(url, body, responses, name) for name, body in {**same, **other}.items()]
        wait_until(lambda: queued(url) == len(same) + len(other), "the requests to queue")
        held.release()
        for thread in threads:
            thread.join(WAIT_S)
        health = httpx.get(f"{url}/health").json()
    for name, body in {"first": None, **same, **other}.items():
        text = contexts[0] if body is None else body["paragraphs"][0]["text"]
        assert paragraphs_of(responses[name])[0]["questions"] == [questions[contexts.index(text)]]
    # One call for the first, one for the four alike, one per other setting, one per seeded request.
    assert sorted(map(sorted, held.calls)) == sorted(
        [[contexts[0]], sorted(contexts[1:5]), [contexts[5]], [contexts[6]], [contexts[7]]])
    assert health["generations"] == 5 and health["largest_generation"] == 4 and health["requests"] == 8


def test_a_full_queue_answers_503_with_retry_after(generator, paragraph_adapter, monkeypatch):
    contexts = paragraph_adapter[1]
    held = HeldGenerate(generator, monkeypatch)
    app = create_app(generator, describe_model("adapter", "base"), max_batch=1, max_queue=2)
    body = {"paragraphs": [{"text": contexts[0]}], "temperature": 0}
    responses = {}
    with serve_in_thread(app) as url:
        threads = [post_in_thread(url, body, responses, "running")]
        assert held.started.wait(WAIT_S)
        threads += [post_in_thread(url, body, responses, name) for name in ("queued 1", "queued 2")]
        wait_until(lambda: queued(url) == 2, "the queue to fill")
        refused = httpx.post(f"{url}/v1/questions", json=body, timeout=WAIT_S)
        held.release()
        for thread in threads:
            thread.join(WAIT_S)
    assert refused.status_code == 503 and refused.headers["retry-after"] == str(RETRY_AFTER_S)
    assert "waiting" in refused.json()["detail"]
    assert [responses[name].status_code for name in ("running", "queued 1", "queued 2")] == [200, 200, 200]


@pytest.mark.parametrize("error, status", [(RuntimeError, 503), (ValueError, 500)])
def test_failures_reach_the_client_without_detail_and_the_log_scrubbed(error, status, generator, monkeypatch,
                                                                       caplog):
    token = "hf_" + "x" * 34

    def failing(contexts, **kwargs):
        raise error(f"engine at http://10.0.0.7 said: bad token {token}, Authorization: Bearer {KEY}")

    monkeypatch.setattr(generator, "generate", failing)
    app = create_app(generator, describe_model("adapter", "base"), api_key=KEY)
    with serve_in_thread(app) as url:
        response = httpx.post(f"{url}/v1/questions", json={"paragraphs": [{"text": "가나다"}]},
                              headers={"Authorization": f"Bearer {KEY}"}, timeout=WAIT_S)
        after = httpx.post(f"{url}/v1/questions", json={"paragraphs": [{"text": "가나다"}]},
                           headers={"Authorization": f"Bearer {KEY}"}, timeout=WAIT_S)
    assert response.status_code == after.status_code == status  # the server keeps serving after a failure
    assert set(response.json()) == {"detail"}
    assert "10.0.0.7" not in response.text and token not in response.text and "Traceback" not in response.text
    if status == 503:
        assert response.headers["retry-after"] == str(RETRY_AFTER_S)
    assert "10.0.0.7" in caplog.text and token not in caplog.text and KEY not in caplog.text
    assert (status == 500) == ("Traceback" in caplog.text)


def test_sigterm_finishes_the_request_in_flight_then_exits(paragraph_adapter):
    server = ServerProcess("--model", "tiny-random-exaone")
    try:
        # The random model rarely reaches EOS: 8 x 10 sampled rows for 3 rounds keep it busy for a while.
        body = {"paragraphs": [{"text": c} for c in paragraph_adapter[1][:8]], "num_questions": 10,
                "temperature": 1.0}
        responses = {}
        thread = post_in_thread(server.url, body, responses, "in flight")
        wait_until(lambda: httpx.get(f"{server.url}/health").json()["in_flight"] == 1, "the request to arrive")
        server.process.send_signal(signal.SIGTERM)
        thread.join(WAIT_S)
        # uvicorn re-raises the signal it handled once it has shut down, so the parent sees how it ended.
        assert server.process.wait(timeout=WAIT_S) == -signal.SIGTERM
    finally:
        server.stop()
    assert "Waiting for connections to close" in server.log  # SIGTERM came while the request was in flight
    assert len(paragraphs_of(responses["in flight"])) == 8
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health")
