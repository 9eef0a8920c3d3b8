"""Seconds for one Space request on CPU: the CTranslate2 int8 engine (the Space's CPU path) versus transformers fp32.

    nice python bench/bench_space_cpu.py                 # builds the model once into $QG_CACHE (~5 GB + ~3 GB)
    nice python bench/bench_space_cpu.py --threads 2

Model: random weights of EXAONE-3.5-2.4B's exact shape in Llama format (hidden 2560, 30 layers, 32 query and 8
key-value heads of 80, MLP 7168, vocabulary 102,400, tied embeddings, llama3 RoPE scaling), written as bf16
safetensors one shard at a time; the real EXAONE-3.5 tokenizer. Request: the median-length distinct KorQuAD 1.0 dev
paragraph (in tokens) in the project's prompt, 5 questions of up to 32 tokens, one sampling round (temperature 0.8,
top-p 0.95), through `QuestionGenerator.generate`, the code the Space runs. Random weights never produce the
end-of-turn token, so every question runs to 32 tokens: the full work of one round, the same on both sides.
Each side runs in its own process (its peak RSS is that process's ru_maxrss), one after the other, in this one run:
the int8 conversion, the CTranslate2 request, the transformers fp32 request (QuestionGenerator.from_pretrained on
CPU, which is what the Space did before). Target (issue 14): <= 30 s for the CTranslate2 request on 2 cores.

Measured on a 2-core Intel Xeon (AVX-512, AMX), idle, 2026-12-03, with the packed MKL GEMM CTranslate2Engine enables:
    CTranslate2 int8 6.2 s load, 25.0 s request, 5.5 GiB | transformers fp32 6.0 s, 59.9 s, 13.9 GiB
    (CT2_USE_EXPERIMENTAL_PACKED_GEMM=0, an earlier run: 44.9 s; CT2_USE_MKL=0: 39.4 s).
    int8 conversion 30 s, peak RSS 4.8 GiB.
On a 2-core AMD machine shared with other jobs (so seconds vary run to run), 2026-12-02:
    load average ~4:  CTranslate2 int8 3.4 s load, 43.7 s request, 4.1 GiB | transformers fp32 8.7 s, 284.8 s, 13.9 GiB
    load average ~2:  CTranslate2 int8 5.5 s load, 32.8 s request, 4.1 GiB | transformers fp32 5.9 s, 70.5 s, 13.9 GiB
    int8 conversion 40-44 s, peak RSS 4.8-4.9 GiB. Of the CTranslate2 request, the prefill was ~7 s and each of the
    32 decoding steps for 5 hypotheses ~0.6-1.2 s. CT2_USE_MKL=1 was ~10x slower on this AMD CPU; AVX512 no faster.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from qg.io import atomic_dir, atomic_write_json, cache_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QG_SHARED_DIR", REPO.parent / "shared"))
DEV_JSON = SHARED / "data/korquad/KorQuAD_v1.0_dev.json"
TOKENIZER_DIR = SHARED / "fixtures/exaone-3.5-tokenizer"
EXAONE_2_4B_SHAPE = dict(hidden_size=2560, num_hidden_layers=30, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=80, intermediate_size=7168, max_position_embeddings=32768, rms_norm_eps=1e-5,
                         tie_word_embeddings=True, rope_theta=1e6,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
SHARD_BYTES = 2 * 1024**3
REQUEST = dict(num_questions=5, max_new_tokens=32, max_rounds=1, temperature=0.8, top_p=0.95)


def build_model(folder: Path) -> Path:
    """Random bf16 weights of EXAONE-3.5-2.4B's shape, in shards: at most one shard is ever in memory."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         dtype="bfloat16", **EXAONE_2_4B_SHAPE)
    with torch.device("meta"):
        shapes = {name: t.shape for name, t in LlamaForCausalLM(config).state_dict().items()
                  if name != "lm_head.weight"}  # tied to the embeddings
    generator = torch.Generator().manual_seed(0)
    weight_map, shard, shard_bytes, files = {}, {}, 0, []
    with atomic_dir(folder) as out:
        def flush():
            name = f"model-{len(files) + 1:05d}.safetensors"
            save_file(shard, out / name, metadata={"format": "pt"})
            files.append(name)
            weight_map.update(dict.fromkeys(shard, name))

        for name, shape in shapes.items():
            if len(shape) == 1:
                tensor = torch.ones(shape, dtype=torch.bfloat16)
            else:
                tensor = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
            if shard and shard_bytes + tensor.nbytes > SHARD_BYTES:
                flush()
                shard, shard_bytes = {}, 0
            shard[name] = tensor
            shard_bytes += tensor.nbytes
        flush()
        total = sum(shape.numel() * 2 for shape in shapes.values())
        atomic_write_json(out / "model.safetensors.index.json",
                          {"metadata": {"total_size": total}, "weight_map": weight_map})
        config.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return folder


def median_paragraph(tokenizer) -> str:
    """The distinct KorQuAD 1.0 dev paragraph of median length in tokens (ties: the first in the file)."""
    dev = json.loads(DEV_JSON.read_text(encoding="utf-8"))
    contexts = dict.fromkeys(p["context"] for article in dev["data"] for p in article["paragraphs"])
    ordered = sorted(contexts, key=lambda c: len(tokenizer(c, add_special_tokens=False)["input_ids"]))
    return ordered[len(ordered) // 2]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def arm(name: str, model: Path, threads: int) -> dict:
    """One side of the comparison, in this (child) process."""
    from qg.generate import QuestionGenerator
    from qg.prompt import encode_prompt
    from qg.serving.ctranslate2 import CTranslate2Engine, convert

    started = time.perf_counter()
    if name == "convert":
        convert(model, model.with_name(model.name + "-ct2-int8"), quantization="int8")
        return {"seconds": time.perf_counter() - started, "peak_rss_gib": peak_rss_gib()}
    if name == "ctranslate2":
        generator = QuestionGenerator(CTranslate2Engine(model.with_name(model.name + "-ct2-int8"), threads=threads))
    else:
        torch.set_num_threads(threads or torch.get_num_threads())
        generator = QuestionGenerator.from_pretrained(str(model), device="cpu")
    loaded = time.perf_counter()
    paragraph = median_paragraph(generator.tokenizer)
    [result] = generator.generate([paragraph], **REQUEST)
    done = time.perf_counter()
    return {"load_s": loaded - started, "request_s": done - loaded, "peak_rss_gib": peak_rss_gib(),
            "prompt_tokens": len(encode_prompt(generator.tokenizer, paragraph).input_ids),
            "candidates": len(result.questions) + sum(result.rejected.values())}


def run_arm(name: str, model: Path, threads: int) -> dict:
    command = [sys.executable, __file__, "--arm", name, "--model", str(model), "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="Threads for both engines; 0: each one's default.")
    parser.add_argument("--arm", choices=["convert", "ctranslate2", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, default=cache_dir() / "bench-exaone-3.5-2.4b-shape",
                        help="Where the random model is built (and its int8 conversion beside it).")
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(arm(args.arm, args.model, args.threads)))
        return
    if not args.model.exists():
        started = time.perf_counter()
        build_model(args.model)
        print(f"built {args.model} in {time.perf_counter() - started:.0f} s", flush=True)
    conversion = run_arm("convert", args.model, args.threads)
    print(f"int8 conversion: {conversion['seconds']:.0f} s, peak RSS {conversion['peak_rss_gib']:.1f} GiB", flush=True)
    fast = run_arm("ctranslate2", args.model, args.threads)
    slow = run_arm("transformers", args.model, args.threads)
    assert fast["candidates"] == slow["candidates"] == REQUEST["num_questions"]
    print(f"\nOne request: {fast['prompt_tokens']}-token prompt (median KorQuAD dev paragraph), "
          f"{REQUEST['num_questions']} questions x {REQUEST['max_new_tokens']} tokens, {os.cpu_count()} CPUs\n")
    print("| engine | load (s) | request (s) | peak RSS (GiB) |")
    print("|---|---:|---:|---:|")
    for label, row in [("CTranslate2 int8 (the Space's CPU path)", fast), ("transformers fp32 (before)", slow)]:
        print(f"| {label} | {row['load_s']:.1f} | {row['request_s']:.1f} | {row['peak_rss_gib']:.1f} |")
    print(f"\nspeed-up: {slow['request_s'] / fast['request_s']:.1f}x")


if __name__ == "__main__":
    main()
