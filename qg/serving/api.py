"""qg-serve: recommended questions over HTTP for a RAG backend (FastAPI + uvicorn).

    qg-serve --model ORG/exaone-3.5-2.4b-korquad-qg-lora --port 8000
    QG_API_KEY=change-me qg-serve --model outputs/demo/adapter --host 0.0.0.0
    curl -s localhost:8000/v1/questions -H 'content-type: application/json' \\
        -d '{"paragraphs": [{"text": "훈민정음은 1443년 세종이 창제한 문자이다."}], "num_questions": 3}'

POST /v1/questions: per paragraph its id, questions, rejected counts by reason and whether it was cut to the token
budget. GET /v1/model: adapter, base, revision, prompt version. GET /health: liveness and batching counters (no key
needed, for load balancers). OpenAPI docs at /docs.

Requests that arrive together are answered by one `QuestionGenerator.generate` call: a collector takes the first
waiting request, waits --batch-wait-ms for more, up to --max-batch paragraphs, and runs the generation in one worker
thread while the next requests queue. Requests with different settings (num_questions, temperature) get a call each;
a request with a seed gets one of its own, so its questions do not depend on what else arrived with it. When
--max-queue requests are waiting, more get 503 with Retry-After. On SIGTERM or Ctrl-C the server stops accepting,
finishes the requests it holds and exits.

With QG_API_KEY set, /v1/* need `Authorization: Bearer <key>` (else 401); the key is never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import secrets
import traceback
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from qg.cli import command, non_negative_float, one_line, positive_int, scrub
from qg.generate import GeneratedQuestions, QuestionGenerator
from qg.serving.model_info import describe_model
from qg.serving.options import GENERATE_DEFAULTS, add_generator_arguments, load_generator

# A RAG backend asks about the few passages it retrieved (top-k is rarely above 10); a bigger request would hold
# one generation, and everyone queued behind it, for a long time.
MAX_PARAGRAPHS = 16
# KorQuAD's longest paragraph has 2,946 characters; the prompt keeps at most --max-context-tokens of any text, so
# more characters only cost tokenizer time.
MAX_TEXT_CHARS = 10_000
# 16 paragraphs of 10,000 Korean characters (3 bytes each in UTF-8) are 480 kB of JSON; a bigger body is no request
# this API serves, and is refused before it is read.
MAX_BODY_BYTES = 1 << 20
# A page shows a handful of suggestions; each question is another sampled row in every generation round.
MAX_NUM_QUESTIONS = 10
# Above 2 the samples are noise the quality checks reject, at full decoding cost.
MAX_TEMPERATURE = 2.0
# Long enough for the queued generations ahead to drain, short enough that a client's retry is not idle.
RETRY_AFTER_S = 1
# Bounds how long SIGTERM waits for in-flight requests: a stuck generation must not keep the process forever.
GRACEFUL_SHUTDOWN_S = 120

log = logging.getLogger("uvicorn.error")


class Paragraph(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(max_length=MAX_TEXT_CHARS, description="the paragraph, e.g. a retrieved passage")
    id: str | int | None = Field(None, description="returned as given, to match answers to paragraphs")
    answer: str | None = Field(None, max_length=MAX_TEXT_CHARS,
                               description="ask for questions whose answer is this span")

    @field_validator("text", "answer")
    @classmethod
    def not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty or whitespace")
        return value


class QuestionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    paragraphs: list[Paragraph] = Field(min_length=1, max_length=MAX_PARAGRAPHS)
    num_questions: int = Field(GENERATE_DEFAULTS["num_questions"], ge=1, le=MAX_NUM_QUESTIONS)
    temperature: float = Field(GENERATE_DEFAULTS["temperature"], ge=0, le=MAX_TEMPERATURE,
                               description="0 decodes greedily: one question per paragraph")
    seed: int | None = Field(None, description="reproducible sampling; such a request is generated on its own")


class ParagraphQuestions(BaseModel):
    id: str | int | None
    questions: list[str]
    rejected: dict[str, int] = Field(description="sampled candidates dropped, by reason")
    truncated: bool = Field(description="the paragraph was cut at a sentence end to the token budget")


class QuestionsResponse(BaseModel):
    paragraphs: list[ParagraphQuestions]


class ModelInfo(BaseModel):
    adapter: str | None
    base: str | None
    revision: str | None
    prompt_version: str


class Health(BaseModel):
    status: str
    requests: int = Field(description="requests answered")
    paragraphs: int = Field(description="paragraphs generated for")
    generations: int = Field(description="QuestionGenerator.generate calls (fewer than requests: batching)")
    largest_generation: int = Field(description="most paragraphs in one call")
    queued: int
    in_flight: int


@dataclass
class Job:
    request: QuestionsRequest
    future: asyncio.Future
    key: tuple = field(init=False)

    def __post_init__(self):
        r = self.request
        # One call per setting; a seeded request alone, so the same seeded request gets the same questions.
        self.key = (r.num_questions, r.temperature, r.seed, id(self) if r.seed is not None else None)

    @property
    def size(self) -> int:
        return len(self.request.paragraphs)


class Batcher:
    """A bounded queue of requests and one worker thread that answers what arrived together in one generation."""

    def __init__(self, generator: QuestionGenerator, max_batch: int, wait_s: float, max_queue: int,
                 limits: dict):
        self.generator = generator
        self.limits = limits  # max_new_tokens and max_rounds: the operator's bound on a request's work
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.queue: asyncio.Queue[Job] = asyncio.Queue(max_queue)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="qg-generate")
        self.held: Job | None = None  # taken from the queue but over the last batch's size: it opens the next
        self.counters = dict(requests=0, paragraphs=0, generations=0, largest_generation=0, in_flight=0)

    async def submit(self, request: QuestionsRequest) -> list[GeneratedQuestions]:
        """The request's results in paragraph order; raises asyncio.QueueFull when the queue is full."""
        job = Job(request, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        self.counters["in_flight"] += 1
        try:
            return await job.future
        finally:
            self.counters["in_flight"] -= 1

    async def run(self) -> None:
        while True:
            await self._serve(await self._next_batch())

    async def _next_batch(self) -> list[Job]:
        loop = asyncio.get_running_loop()
        first, self.held = self.held or await self.queue.get(), None
        jobs, size, deadline = [first], first.size, loop.time() + self.wait_s
        while size < self.max_batch:
            if self.queue.empty():
                try:
                    job = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                except TimeoutError:
                    break
            else:
                job = self.queue.get_nowait()
            if size + job.size > self.max_batch:
                self.held = job
                break
            jobs.append(job)
            size += job.size
        return jobs

    async def _serve(self, jobs: list[Job]) -> None:
        groups = defaultdict(list)
        for job in jobs:
            groups[job.key].append(job)
        for group in groups.values():
            request = group[0].request
            paragraphs = [p for job in group for p in job.request.paragraphs]
            answers = [p.answer for p in paragraphs]
            generate = functools.partial(
                self.generator.generate, [p.text for p in paragraphs], num_questions=request.num_questions,
                answers=answers if any(a is not None for a in answers) else None, temperature=request.temperature,
                seed=request.seed, batch_size=self.max_batch, **self.limits)
            try:
                results = await asyncio.get_running_loop().run_in_executor(self.executor, generate)
            except Exception as err:  # noqa: BLE001 - handed to the requests it failed; their handlers answer it
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            self.counters["generations"] += 1
            self.counters["largest_generation"] = max(self.counters["largest_generation"], len(paragraphs))
            self.counters["paragraphs"] += len(paragraphs)
            start = 0
            for job in group:
                if not job.future.done():
                    job.future.set_result(results[start:start + job.size])
                start += job.size
                self.counters["requests"] += 1


class ErrorBoundary:
    """No traceback reaches a client: an unexpected error is logged here, scrubbed of secrets, and answered with a
    generic 500. (Starlette's own handler for Exception re-raises, and uvicorn then logs the raw traceback.)"""

    def __init__(self, app, redact):
        self.app = app
        self.redact = redact

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:  # noqa: BLE001 - the last line of defence: logged in full, answered without detail
            if started:
                raise  # nothing left to answer; FastAPI's body limit signals its sent 413 to the layer outside so
            log.error("unhandled error in %s %s\n%s", scope["method"], scope["path"],
                      self.redact(traceback.format_exc()))
            await JSONResponse({"detail": "internal server error"}, status_code=500)(scope, receive, send)


def _results(request: QuestionsRequest, results: list[GeneratedQuestions]) -> QuestionsResponse:
    return QuestionsResponse(paragraphs=[
        ParagraphQuestions(id=p.id, questions=r.questions, rejected=dict(sorted(r.rejected.items())),
                           truncated=r.truncated) for p, r in zip(request.paragraphs, results)])


def create_app(generator: QuestionGenerator, model_info: dict, api_key: str | None = None, max_batch: int = 32,
               wait_s: float = 0.01, max_queue: int = 64, max_new_tokens: int = GENERATE_DEFAULTS["max_new_tokens"],
               max_rounds: int = GENERATE_DEFAULTS["max_rounds"]) -> FastAPI:
    """The FastAPI app over `generator`; its batcher starts and stops with the app's lifespan."""

    def redact(text: str) -> str:
        text = scrub(text)
        return text.replace(api_key, "<key>") if api_key else text

    batcher = Batcher(generator, max_batch, wait_s, max_queue,
                      limits=dict(max_new_tokens=max_new_tokens, max_rounds=max_rounds))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        collector = asyncio.create_task(batcher.run())
        yield
        collector.cancel()
        batcher.executor.shutdown(wait=True)

    app = FastAPI(title="Korean recommended questions", lifespan=lifespan, max_body_size=MAX_BODY_BYTES,
                  description="Questions a reader could ask about a paragraph: EXAONE-3.5 + LoRA on KorQuAD.")
    app.add_middleware(ErrorBoundary, redact=redact)
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if api_key is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send Authorization: Bearer <key>",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer echoes each offending input back, which can be a 10,000-character paragraph.
        return JSONResponse({"detail": [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                                        for e in err.errors()]}, status_code=422)

    @app.post("/v1/questions", response_model=QuestionsResponse, dependencies=[Depends(authorized)])
    async def questions(request: QuestionsRequest) -> QuestionsResponse:
        try:
            results = await batcher.submit(request)
        except asyncio.QueueFull:
            raise HTTPException(503, f"{batcher.queue.maxsize} requests are already waiting: retry shortly",
                                headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        # A RuntimeError is the engine failing (a serving engine down or timing out, the GPU out of memory):
        # the request was fine and may succeed later.
        except RuntimeError as err:
            log.error("generation failed: %s", redact(one_line(err)))
            raise HTTPException(503, "the question generator is unavailable: retry shortly",
                                headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        return _results(request, results)

    @app.get("/v1/model", response_model=ModelInfo, dependencies=[Depends(authorized)])
    async def model() -> ModelInfo:
        return ModelInfo(**model_info)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", queued=batcher.queue.qsize() + (batcher.held is not None), **batcher.counters)

    return app


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qg-serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generator_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all; default local)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free one, logged at start)")
    parser.add_argument("--max-batch", type=positive_int, default=32,
                        help="paragraphs per generation at most (1: one request at a time; default 32)")
    parser.add_argument("--batch-wait-ms", type=non_negative_float, default=10.0,
                        help="how long the first request of a batch waits for others (default 10)")
    parser.add_argument("--max-queue", type=positive_int, default=64, help="requests waiting before 503 (default 64)")
    args = parser.parse_args(argv)
    import uvicorn

    generator = load_generator(args)
    app = create_app(generator, describe_model(args.model, generator.base_name),
                     api_key=os.environ.get("QG_API_KEY") or None, max_batch=args.max_batch,
                     wait_s=args.batch_wait_ms / 1000, max_queue=args.max_queue,
                     max_new_tokens=args.max_new_tokens, max_rounds=args.max_rounds)
    uvicorn.run(app, host=args.host, port=args.port, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


if __name__ == "__main__":
    main()
