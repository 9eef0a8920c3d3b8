"""The service's throughput: qg-serve batching concurrent requests against the same server one request at a time,
and qg-generate over a corpus against a plain loop of `model.generate(num_return_sequences=5)` per paragraph.

    python bench/bench_service.py
    python bench/bench_service.py --paragraphs 200 --clients 16 --requests-per-client 2

Paragraphs: distinct KorQuAD 1.0 dev paragraphs (../shared), in the project's prompt. Models: random weights,
EXAONE-3.5's architecture and its real 102,400-token vocabulary, CPU fp32, as in bench/bench_generate.py: the tiny
offline model (built and converted like the real checkpoint) and a wider one (hidden 512, 4 layers). Random models
almost never sample EOS, so every question runs to the token limit on both sides: equal decoding work.

qg-serve: the real server (`python -m qg.serving.api`) on 127.0.0.1, one torch thread, started twice per model:
batching on (--max-batch 32) and off (--max-batch 1: one request per generation). --clients concurrent clients
each send --requests-per-client single-paragraph requests, 5 questions each (sampling at the API's default
temperature and top-p; the server run with --max-new-tokens and --max-rounds 1, as qg-generate below), one after
another. Reported: paragraphs per second of wall time and per second of the server's CPU time (steadier on a shared
machine), and p50/p95 latency. Target: batching >= 3x the throughput, p95 no worse.

qg-generate: the command (`qg.serving.batch.main`, in this process, one torch thread, model loading included)
over --paragraphs paragraphs against a loop that loads the same model and calls `model.generate` once per
paragraph with num_return_sequences=5; both sample 5 questions of --max-new-tokens tokens with the same settings,
qg-generate with --max-rounds 1 (the loop has no second round). Paragraphs per CPU second. Target: >= 3x.

Greedy decoding alone: the first --clients paragraphs prefilled, then decoded greedily (no sampling cost) one
paragraph (5 rows) at a time against all of them in one batch; the ratio of paragraphs per CPU second is the most
batching can give qg-serve on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QG_SHARED_DIR", REPO.parent / "shared"))
DEV_JSON = SHARED / "data/korquad/KorQuAD_v1.0_dev.json"
TOKENIZER_DIR = SHARED / "fixtures/exaone-3.5-tokenizer"
QUESTIONS = 5
WIDER_SHAPE = dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                   intermediate_size=1408)


def dev_paragraphs(count: int) -> list[str]:
    dev = json.loads(DEV_JSON.read_text(encoding="utf-8"))
    return list(dict.fromkeys(p["context"] for article in dev["data"] for p in article["paragraphs"]))[:count]


def build_models(folder: Path) -> dict[str, Path]:
    """Model folders qg-serve and qg-generate load by path: the tiny model with the real tokenizer (EXAONE format,
    converted on load) and a wider random Llama with the same tokenizer."""
    from qg.models.tiny import build_tiny_exaone

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    torch.manual_seed(0)
    wider = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), tie_word_embeddings=True, rope_theta=1e6,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
        max_position_embeddings=32768, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **WIDER_SHAPE))
    wider.save_pretrained(folder / "wider")
    tokenizer.save_pretrained(folder / "wider")
    return {"tiny (hidden 64, 2 layers)": build_tiny_exaone(folder / "tiny", tokenizer_dir=TOKENIZER_DIR),
            "wider (hidden 512, 4 layers)": folder / "wider"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, model: Path, max_batch: int, max_new_tokens: int):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qg.serving.api", "--model", str(model), "--port", "0", "--max-batch",
             str(max_batch), "--max-new-tokens", str(max_new_tokens), "--max-rounds", "1"],
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        lines = []
        threading.Thread(target=lambda: lines.extend(self.process.stdout), daemon=True).start()
        deadline = time.monotonic() + 600
        while not (match := re.search(r"running on (http://127\.0\.0\.1:\d+)", "".join(lines))):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("qg-serve did not start:\n" + "".join(lines)[-3000:])
            time.sleep(0.1)
        self.url = match[1]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)


async def load(url: str, paragraphs: list[str], clients: int) -> tuple[float, list[float]]:
    """(wall seconds, latency of each request): `clients` concurrent clients, each sending its share of
    `paragraphs` one request (one paragraph) at a time."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=httpx.Limits(max_connections=clients)) as http:
        async def client(share: list[str]) -> list[float]:
            latencies = []
            for text in share:
                start = time.perf_counter()
                response = await http.post("/v1/questions", json={"paragraphs": [{"text": text}],
                                                                   "num_questions": QUESTIONS})
                response.raise_for_status()
                assert len(response.json()["paragraphs"]) == 1
                latencies.append(time.perf_counter() - start)
            return latencies

        await http.post("/v1/questions", json={"paragraphs": [{"text": paragraphs[0]}], "num_questions": 1})
        start = time.perf_counter()
        shares = await asyncio.gather(*(client(paragraphs[i::clients]) for i in range(clients)))
        return time.perf_counter() - start, [latency for share in shares for latency in share]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def bench_serve(model: Path, paragraphs: list[str], clients: int, max_new_tokens: int) -> dict[str, dict]:
    rows = {}
    for name, max_batch in (("batching on", 32), ("one at a time", 1)):
        server = Server(model, max_batch, max_new_tokens)
        try:
            cpu_start = cpu_seconds(server.process.pid)
            wall, latencies = asyncio.run(load(server.url, paragraphs, clients))
            cpu = cpu_seconds(server.process.pid) - cpu_start
        finally:
            server.stop()
        rows[name] = dict(wall_pps=len(paragraphs) / wall, cpu_pps=len(paragraphs) / cpu,
                          p50=percentile(latencies, 50), p95=percentile(latencies, 95))
    return rows


def loop_generate(model_dir: Path, paragraphs: list[str], max_new_tokens: int) -> None:
    """What a user writes without the generator: one `model.generate(num_return_sequences=5)` per paragraph."""
    from qg.models.loading import load_base
    from qg.prompt import encode_prompt, end_of_turn_id
    from qg.serving.options import GENERATE_DEFAULTS

    model, tokenizer = load_base(str(model_dir))
    model.eval()
    eos = end_of_turn_id(tokenizer)
    with torch.inference_mode():
        for text in paragraphs:
            ids = torch.tensor([encode_prompt(tokenizer, text, max_context_tokens=1024).input_ids])
            rows = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                  temperature=GENERATE_DEFAULTS["temperature"], top_p=GENERATE_DEFAULTS["top_p"],
                                  top_k=0, num_return_sequences=QUESTIONS, max_new_tokens=max_new_tokens,
                                  eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
            [tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True) for row in rows]


def bench_generate(model: Path, paragraphs: list[str], max_new_tokens: int, folder: Path) -> dict[str, float]:
    from qg.serving.batch import main as qg_generate

    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in paragraphs),
                      encoding="utf-8")
    start = time.process_time()
    qg_generate([str(corpus), "--model", str(model), "--output", str(folder / "questions.jsonl"),
                 "--num-questions", str(QUESTIONS), "--max-new-tokens", str(max_new_tokens), "--max-rounds", "1"])
    command = time.process_time() - start
    start = time.process_time()
    loop_generate(model, paragraphs, max_new_tokens)
    loop = time.process_time() - start
    return {"qg-generate": len(paragraphs) / command, "generate loop": len(paragraphs) / loop}


def decoding_ceiling(model_dir: Path, paragraphs: list[str], max_new_tokens: int) -> float:
    """How many times the paragraphs per CPU second of greedy decoding (no sampling cost) grow when the paragraphs'
    rows (5 each) run as one batch instead of one paragraph at a time; prefill excluded: what batching could give
    at most on this machine."""
    from qg.generate import PrefilledPrompts
    from qg.models.loading import load_base
    from qg.prompt import encode_prompt

    model, tokenizer = load_base(str(model_dir))
    model.eval()
    prompts = [encode_prompt(tokenizer, text, max_context_tokens=1024).input_ids for text in paragraphs]
    kwargs = dict(do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                  pad_token_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        alone = [PrefilledPrompts(model, [prompt], tokenizer.pad_token_id) for prompt in prompts]
        together = PrefilledPrompts(model, prompts, tokenizer.pad_token_id)
        start = time.process_time()
        for prefilled in alone:
            prefilled.generate([QUESTIONS], **kwargs)
        one_at_a_time = time.process_time() - start
        start = time.process_time()
        together.generate([QUESTIONS] * len(prompts), **kwargs)
        return one_at_a_time / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paragraphs", type=int, default=200, help="qg-generate's corpus size (default 200)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens per question, everywhere (default 32)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent qg-serve clients (default 16)")
    parser.add_argument("--requests-per-client", type=int, default=2, help="sequential requests each (default 2)")
    parser.add_argument("--models", default="tiny,wider", help="which models, comma-separated (default both)")
    args = parser.parse_args()
    for path in (DEV_JSON, TOKENIZER_DIR):
        if not path.exists():
            sys.exit(f"{path} is absent: set QG_SHARED_DIR to the folder holding the shared material")
    torch.set_num_threads(1)  # CPU time of one thread repeats within a few percent on a shared machine
    paragraphs = dev_paragraphs(max(args.paragraphs, args.clients * args.requests_per_client))
    served = paragraphs[:args.clients * args.requests_per_client]
    print(__doc__.split("\n\n")[0].replace("\n", " ") + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["QG_CACHE"] = str(folder / "cache")  # conversions go here, not into the user's cache
        wanted = args.models.split(",")
        models = {label: path for label, path in build_models(folder).items() if label.split()[0] in wanted}
        print(f"qg-serve: {args.clients} concurrent clients x {args.requests_per_client} single-paragraph requests, "
              f"{QUESTIONS} questions each ({args.max_new_tokens} new tokens, 1 round); server on 1 torch thread")
        header = (f"{'model':<29} {'server':<14} {'paragraphs/s':>12} {'per CPU s':>10} {'p50 s':>7} {'p95 s':>7}")
        print(header + "\n" + "-" * len(header))
        serve_results = {}
        for label, path in models.items():
            serve_results[label] = rows = bench_serve(path, served, args.clients, args.max_new_tokens)
            for name, r in rows.items():
                print(f"{label:<29} {name:<14} {r['wall_pps']:>12.2f} {r['cpu_pps']:>10.2f} {r['p50']:>7.2f} "
                      f"{r['p95']:>7.2f}", flush=True)
        print(f"\nqg-generate: {args.paragraphs} dev paragraphs, {QUESTIONS} questions each, {args.max_new_tokens} "
              "new tokens, 1 round; 1 torch thread, paragraphs per CPU second (model loading included)")
        header = f"{'model':<29} {'generate loop':>13} {'qg-generate':>12} {'ratio':>7}"
        print(header + "\n" + "-" * len(header))
        generate_results = {}
        for label, path in models.items():
            generate_results[label] = r = bench_generate(path, paragraphs[:args.paragraphs], args.max_new_tokens,
                                                         folder)
            print(f"{label:<29} {r['generate loop']:>13.2f} {r['qg-generate']:>12.2f} "
                  f"{r['qg-generate'] / r['generate loop']:>6.2f}x", flush=True)
        # Greedy decoding alone: the most batching can give here, whatever the sampler costs.
        ceilings = {label: decoding_ceiling(path, served[:args.clients], args.max_new_tokens)
                    for label, path in models.items()}

    print("\nRatios:")
    for label, rows in serve_results.items():
        on, off = rows["batching on"], rows["one at a time"]
        print(f"  qg-serve {label}: batching {on['wall_pps'] / off['wall_pps']:.2f}x paragraphs/s "
              f"({on['cpu_pps'] / off['cpu_pps']:.2f}x per CPU second), p95 {on['p95']:.2f} s vs {off['p95']:.2f} s")
    for label, r in generate_results.items():
        print(f"  qg-generate {label}: {r['qg-generate'] / r['generate loop']:.2f}x the generate loop")
    for label, ceiling in ceilings.items():
        print(f"  greedy decoding alone {label} ({args.clients} paragraphs x {QUESTIONS} rows in one batch, prefill "
              f"excluded): {ceiling:.2f}x the paragraphs per CPU second of one paragraph at a time")


if __name__ == "__main__":
    main()
