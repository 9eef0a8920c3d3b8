"""Engine mode: paragraphs per second through `OpenAIEngine` against `transformers serve`, with
and without --continuous-batching, beside the local engine (`TransformersEngine`) on the same paragraphs.

    python bench/bench_engine.py
    python bench/bench_engine.py --paragraphs 32 --max-new-tokens 32

Paragraphs: the first --paragraphs distinct KorQuAD 1.0 dev paragraphs (../shared), in the project's prompt (real
EXAONE-3.5 tokenizer). Models: random weights, EXAONE-3.5's architecture and real vocabulary, CPU fp32: the tiny
offline model and a wider one (hidden 512, 4 layers), as bench/bench_generate.py. Every side runs
`QuestionGenerator.generate` for 5 questions per paragraph with the same sampling settings and one round
(max_rounds=1), so each asks for the same 5 candidates per paragraph; the random models rarely reach the end of
turn, so nearly every candidate decodes the full --max-new-tokens. Wall-clock seconds of one run each, after a
warm-up; the server runs on the same machine and CPU threads as the local engine, so the server columns add HTTP
and its scheduling to the same compute. `transformers serve` ignores `n`, so the engine sends 5 requests per
paragraph, 16 at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from qg.generate import QuestionGenerator, TransformersEngine
from qg.models.loading import load_base, resolve_base
from qg.models.tiny import build_tiny_exaone
from qg.serving.transformers_serve import transformers_serve

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QG_SHARED_DIR", REPO.parent / "shared"))
DEV_JSON = SHARED / "data/korquad/KorQuAD_v1.0_dev.json"
TOKENIZER_DIR = SHARED / "fixtures/exaone-3.5-tokenizer"
QUESTIONS_PER_PARAGRAPH = 5
WIDER_SHAPE = dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                   intermediate_size=1408)


def dev_paragraphs(count: int) -> list[str]:
    dev = json.loads(DEV_JSON.read_text(encoding="utf-8"))
    return list(dict.fromkeys(p["context"] for article in dev["data"] for p in article["paragraphs"]))[:count]


def tiny_model_dir(folder: Path) -> Path:
    """The tiny offline model with the real tokenizer, converted as the real checkpoint is: a folder a server loads."""
    return Path(resolve_base(str(build_tiny_exaone(folder / "exaone", tokenizer_dir=TOKENIZER_DIR))))


def wider_model_dir(folder: Path) -> Path:
    """EXAONE-3.5's architecture (GQA 4:1, tied embeddings, llama3 RoPE) at hidden 512 and 4 layers, random."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, rope_theta=1e6,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                         max_position_embeddings=32768, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **WIDER_SHAPE)
    LlamaForCausalLM(config).save_pretrained(folder / "wider")
    tokenizer.save_pretrained(folder / "wider")
    return folder / "wider"


def paragraphs_per_second(generator: QuestionGenerator, paragraphs: list[str], max_new_tokens: int) -> float:
    settings = dict(num_questions=QUESTIONS_PER_PARAGRAPH, max_new_tokens=max_new_tokens, max_rounds=1)
    generator.generate(paragraphs[:2], **settings)  # warm-up: first-call costs out of the timing
    start = time.perf_counter()
    results = generator.generate(paragraphs, **settings)
    seconds = time.perf_counter() - start
    assert len(results) == len(paragraphs)
    return len(paragraphs) / seconds


def bench_engine(paragraphs: list[str], max_new_tokens: int, folder: Path) -> list[tuple[str, str, float | str]]:
    """(model, side, paragraphs/s or why there is no number) for the local engine and each server mode."""
    rows = []
    for label, model_dir in [("tiny (hidden 64, 2 layers)", tiny_model_dir(folder)),
                             ("wider (hidden 512, 4 layers)", wider_model_dir(folder))]:
        model, tokenizer = load_base(str(model_dir))
        local = QuestionGenerator(TransformersEngine(model, tokenizer))
        rows.append((label, "local TransformersEngine", paragraphs_per_second(local, paragraphs, max_new_tokens)))
        del model, local
        for side, options in [("transformers serve", []), ("transformers serve --continuous-batching",
                                                           ["--continuous-batching"])]:
            log = folder / f"serve-{model_dir.name}-{len(options)}.log"
            try:
                with transformers_serve(model_dir, options, log=log) as url:
                    remote = QuestionGenerator.from_engine_url(url, str(model_dir), str(model_dir), timeout=600)
                    rows.append((label, side, paragraphs_per_second(remote, paragraphs, max_new_tokens)))
            except Exception as err:  # noqa: BLE001 - a mode this transformers or CPU lacks is reported, not fatal
                said = [line for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
                rows.append((label, side, f"failed: {' '.join(str(err).split())[:160]}"
                                          f"{'; server log: ' + said[-1][:200] if said else ''}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paragraphs", type=int, default=16, help="KorQuAD dev paragraphs (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="new tokens per question (default 32)")
    args = parser.parse_args()
    for path in (DEV_JSON, TOKENIZER_DIR):
        if not path.exists():
            sys.exit(f"{path} is absent: set QG_SHARED_DIR to the folder holding the shared material")
    paragraphs = dev_paragraphs(args.paragraphs)
    print(__doc__.split("\n\n")[0].replace("\n", " "))
    print(f"{len(paragraphs)} KorQuAD dev paragraphs, {QUESTIONS_PER_PARAGRAPH} questions each, one round, "
          f"{args.max_new_tokens} new tokens at most, CPU fp32 ({torch.get_num_threads()} threads), wall clock.\n")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["QG_CACHE"] = tmp  # the converted tiny model goes here, not into the user's cache
        rows = bench_engine(paragraphs, args.max_new_tokens, Path(tmp))
    header = f"{'model':<29} {'engine':<42} {'paragraphs/s':>12} {'vs local':>9}"
    print(header)
    print("-" * len(header))
    local = {label: value for label, side, value in rows if side.startswith("local")}
    for label, side, value in rows:
        if isinstance(value, str):
            print(f"{label:<29} {side:<42} {value}")
        else:
            print(f"{label:<29} {side:<42} {value:>12.2f} {value / local[label]:>8.2f}x")


if __name__ == "__main__":
    main()
