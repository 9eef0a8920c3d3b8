"""`OpenAIEngine`: candidate questions from an OpenAI-compatible server (vLLM, `transformers serve`, TGI, ...).

    generator = QuestionGenerator.from_engine_url("http://127.0.0.1:8000/v1", "qg", "outputs/adapter")

The prompt is built here, as for a local model (`qg.prompt.encode_prompt`: neutralised and cut to the token budget
with the adapter's tokenizer); the server gets its chat messages and applies the same chat template. Each prompt's
candidates come from one request with `n` where the server honours it; a server that rejects `n` or answers with
fewer choices (`transformers serve` ignores it) gets one request per candidate from then on, `MAX_PARALLEL_REQUESTS`
at a time. Generation stops at the end-of-turn token (the model's EOS: `qg-export --merged` makes sure of it, and the
request names it in `stop`); a choice that stopped at `max_tokens` ("length") is a cut-off candidate, None, as the
local engine has it. `transformers serve` also reports "length" when the end of turn is the last token allowed, so a
question of exactly `max_new_tokens` tokens counts as cut off there. A server that is down, slow or failing raises
`EngineError` with one line saying so, after at most the timeout: nothing waits forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from qg.cli import scrub
from qg.generate import Decoding, EngineError, adapter_config, derived_seed
from qg.prompt import EncodedPrompt, end_of_turn_id

MAX_PARALLEL_REQUESTS = 16
CONNECT_TIMEOUT = 5.0  # seconds: a server that is up accepts at once, whatever its load


class OpenAIEngine:
    """Samples through `POST {base_url}/chat/completions`; `base_url` is the server's address, with or without /v1."""

    def __init__(self, base_url: str, model: str, tokenizer, timeout: float = 120.0, api_key: str | None = None,
                 base: str | None = None, revision: str | None = None):
        base_url = base_url.rstrip("/")
        self.base_url = base_url if base_url.endswith("/v1") else f"{base_url}/v1"
        self.served_model = model  # the name the server knows the model by (vLLM: a --lora-modules name)
        self.tokenizer = tokenizer
        self.timeout = timeout
        self.base = base
        self.revision = revision
        self.supports_n: bool | None = None  # unknown until the first request that asks for several choices
        self.client = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            limits=httpx.Limits(max_connections=MAX_PARALLEL_REQUESTS))

    def prepare(self, prompts: Sequence[EncodedPrompt]) -> OpenAIPrompts:
        return OpenAIPrompts(self, [p.messages for p in prompts])

    def describe(self) -> dict:
        return {"engine": "openai", "url": self.base_url, "model": self.served_model, "base": self.base,
                "revision": self.revision}

    def complete(self, messages: list[dict], decoding: Decoding, n: int, seed: int | None) -> list[str | None] | None:
        """The candidates of one request for `n` choices; None when the server refuses `n` > 1 (400 or 422)."""
        body = {"model": self.served_model, "messages": messages, "max_tokens": decoding.max_new_tokens,
                "temperature": decoding.temperature, "top_p": decoding.top_p,
                "stop": [self.tokenizer.convert_ids_to_tokens(end_of_turn_id(self.tokenizer))]}
        if n > 1:
            body["n"] = n
        if seed is not None:
            body["seed"] = seed
        try:
            response = self.client.post("/chat/completions", json=body)
        except httpx.TimeoutException:
            raise EngineError(f"the engine at {self.base_url} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as err:
            reason = _snippet(str(err) or type(err).__name__)
            raise EngineError(f"cannot reach the engine at {self.base_url}: {reason}") from None
        if n > 1 and response.status_code in (400, 422):  # a request the server does not accept: `n`
            return None
        if response.status_code != 200:
            raise EngineError(f"the engine at {self.base_url} answered HTTP {response.status_code}: "
                              f"{_snippet(response.text)}")
        try:
            choices = response.json()["choices"]
            return [None if c["finish_reason"] == "length" else c["message"]["content"] or "" for c in choices]
        except (ValueError, KeyError, TypeError):
            raise EngineError(f"the engine at {self.base_url} answered something that is not a chat completion: "
                              f"{_snippet(response.text)}") from None


def _snippet(text: str) -> str:
    """A server's words on one line, short, without credentials."""
    return scrub(" ".join(text.split()))[:200]


class OpenAIPrompts:
    def __init__(self, engine: OpenAIEngine, messages: list[list[dict]]):
        self.engine = engine
        self.messages = messages

    def sample(self, counts: Sequence[int], decoding: Decoding) -> list[list[str | None]]:
        engine = self.engine
        candidates: list[list[str | None]] = [[] for _ in counts]
        if engine.supports_n is not False:
            several = [i for i, count in enumerate(counts) if count > 1]
            answers = self._run([(i, counts[i], decoding.seed) for i in several], decoding)
            for i, answer in zip(several, answers):
                if answer is None or len(answer) < counts[i]:
                    engine.supports_n = False
                candidates[i] = (answer or [])[:counts[i]]
            if several and engine.supports_n is None:
                engine.supports_n = True
        # One request per missing candidate, each with its own seed so that they differ.
        singles = [(i, 1, derived_seed(decoding.seed, j)) for i, count in enumerate(counts)
                   for j in range(len(candidates[i]), count)]
        for (i, _, _), answer in zip(singles, self._run(singles, decoding)):
            candidates[i] += answer
        return candidates

    def _run(self, requests: list[tuple[int, int, int | None]], decoding: Decoding) -> list[list[str | None] | None]:
        """Answers to (prompt index, n, seed) requests, in order; the first failure cancels what has not started."""
        if not requests:
            return []
        pool = ThreadPoolExecutor(min(len(requests), MAX_PARALLEL_REQUESTS))
        try:
            futures = [pool.submit(self.engine.complete, self.messages[i], decoding, n, seed)
                       for i, n, seed in requests]
            return [future.result() for future in futures]
        finally:
            pool.shutdown(cancel_futures=True)


def prompt_tokenizer(name_or_path: str, revision: str | None = None):
    """(tokenizer, base name) for building prompts for a served model: an adapter's own tokenizer (training saves it
    beside the adapter), else its base's; a model's own."""
    from transformers import AutoTokenizer

    from qg.models.loading import load_tokenizer

    adapter = adapter_config(name_or_path, revision)
    if adapter is None:
        return load_tokenizer(name_or_path, revision), name_or_path
    if (Path(name_or_path) / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(name_or_path), adapter.base_model_name_or_path
    return load_tokenizer(adapter.base_model_name_or_path, adapter.revision), adapter.base_model_name_or_path
