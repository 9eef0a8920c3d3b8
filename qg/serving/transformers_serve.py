"""`transformers serve` (transformers' own OpenAI-compatible server) on 127.0.0.1 for as long as a `with` block lasts:
what the engine tests and bench/bench_engine.py generate against.

    with transformers_serve("outputs/merged") as url:
        generator = QuestionGenerator.from_engine_url(url, "outputs/merged", "outputs/adapter")
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

START_TIMEOUT = 300  # seconds: importing transformers and loading a small model, on a busy two-core machine
STOP_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def transformers_serve(model: str | Path, options: Sequence[str] = (), log: Path | None = None,
                       start_timeout: float = START_TIMEOUT) -> Iterator[str]:
    """The server's URL once /health answers, `model` preloaded on CPU; the server is stopped (SIGTERM, then SIGKILL
    after STOP_TIMEOUT s) when the block ends. `options`: more `transformers serve` flags (--continuous-batching).
    Its output goes to `log` (else nowhere); a server that exits or is not up in `start_timeout` s raises
    RuntimeError with the log's end."""
    port = free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", "--host", "127.0.0.1", "--port",
               str(port), "--device", "cpu", *options, str(model)]
    with open(log or "/dev/null", "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while not _healthy(url):
            said = log.read_text()[-2000:] if log else ""
            if process.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {process.returncode}: {said}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve was not up in {start_timeout:g} s: {said}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
