"""Questions per second: each paragraph prefilled once (`qg.generate.PrefilledPrompts`) versus
`model.generate(num_return_sequences=5)`, which prefills every paragraph once per question.

    python bench/bench_generate.py
    python bench/bench_generate.py --max-new-tokens 32 --repeats 2

Paragraphs: the first 8 distinct KorQuAD 1.0 dev paragraphs of 450-550 tokens (real EXAONE-3.5 tokenizer), in the
project's prompt. Models: random weights, EXAONE-3.5's architecture and its real 102,400-token vocabulary, CPU fp32:
the tiny offline model (built and converted like the real checkpoint) and a wider one (hidden 512, 4 layers).
Both sides make 5 questions per paragraph with the same settings and exactly --max-new-tokens new tokens each
(min_new_tokens = max_new_tokens, so EOS cannot end a row early): equal decoding work, only the prefill differs.
Two decodings: the generator's sampling (temperature 0.8, top-p 0.95), and greedy, which leaves out top-p's sort of
the whole vocabulary at every step (on CPU it costs more than these models' forward passes) and so shows the model
work alone. Each is timed 1 paragraph at a time and 8 paragraphs per batch, all in this one run.
Target: the shared prefill >= 2x the questions per second of num_return_sequences at N=5 on ~500-token paragraphs.
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

from qg.generate import PrefilledPrompts, left_pad
from qg.models.loading import load_base
from qg.models.tiny import build_tiny_exaone
from qg.prompt import encode_prompt

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QG_SHARED_DIR", REPO.parent / "shared"))
DEV_JSON = SHARED / "data/korquad/KorQuAD_v1.0_dev.json"
TOKENIZER_DIR = SHARED / "fixtures/exaone-3.5-tokenizer"
QUESTIONS_PER_PARAGRAPH = 5
PARAGRAPHS = 8
PARAGRAPH_TOKENS = (450, 550)
WIDER_SHAPE = dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                   intermediate_size=1408)
DECODINGS = {"sampling": dict(do_sample=True, temperature=0.8, top_p=0.95, top_k=0), "greedy": dict(do_sample=False)}


def dev_paragraphs(tokenizer) -> list[str]:
    dev = json.loads(DEV_JSON.read_text(encoding="utf-8"))
    contexts = dict.fromkeys(p["context"] for article in dev["data"] for p in article["paragraphs"])
    low, high = PARAGRAPH_TOKENS
    chosen = [c for c in contexts if low <= len(tokenizer(c, add_special_tokens=False)["input_ids"]) <= high]
    return chosen[:PARAGRAPHS]


def tiny_model(folder: Path):
    """The tiny offline model with the real tokenizer, through the same EXAONE conversion as the real checkpoint."""
    model, _ = load_base(str(build_tiny_exaone(folder / "exaone", tokenizer_dir=TOKENIZER_DIR)))
    return model


def wider_model(tokenizer):
    """EXAONE-3.5's architecture (GQA 4:1, tied embeddings, llama3 RoPE) at hidden 512 and 4 layers, random."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, rope_theta=1e6,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                         max_position_embeddings=32768, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **WIDER_SHAPE)
    return LlamaForCausalLM(config)


def measure(model, prompts: list[list[int]], pad_token_id: int, decoding: dict, repeats: int) -> dict:
    """Best CPU seconds to make QUESTIONS_PER_PARAGRAPH questions for every prompt, per (method, paragraphs per
    batch); the variants' runs are interleaved."""
    n = QUESTIONS_PER_PARAGRAPH

    def baseline(batch):
        input_ids, attention_mask = left_pad(batch, pad_token_id, model.device)
        # What num_return_sequences=n does (GenerationMixin._expand_inputs_for_generation), written out because
        # greedy search refuses num_return_sequences > 1.
        return model.generate(input_ids=input_ids.repeat_interleave(n, dim=0),
                              attention_mask=attention_mask.repeat_interleave(n, dim=0), **decoding)

    def shared(batch):
        return PrefilledPrompts(model, batch, pad_token_id).generate([n] * len(batch), **decoding)

    # Warm-up, and the check that both sides do equal work: the same rows, each exactly max_new_tokens longer.
    for method in (baseline, shared):
        rows = method(prompts)
        assert rows.shape == (n * len(prompts), max(map(len, prompts)) + decoding["max_new_tokens"])
    variants = [(name, method, per_batch) for name, method in [("baseline", baseline), ("shared", shared)]
                for per_batch in (1, len(prompts))]
    seconds = {(name, per_batch): float("inf") for name, _, per_batch in variants}
    for _ in range(repeats):
        for name, method, per_batch in variants:
            start = time.process_time()
            for i in range(0, len(prompts), per_batch):
                method(prompts[i:i + per_batch])
            seconds[name, per_batch] = min(seconds[name, per_batch], time.process_time() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=32, help="new tokens per question, both sides")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement; the best is kept")
    args = parser.parse_args()
    for path in (DEV_JSON, TOKENIZER_DIR):
        if not path.exists():
            sys.exit(f"{path} is absent: set QG_SHARED_DIR to the folder holding the shared material")
    # One thread timed by its CPU time: on a machine shared with other jobs, wall time of identical runs varied
    # two-fold, while one thread's CPU time repeats within 2%.
    torch.set_num_threads(1)

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    prompts = [encode_prompt(tokenizer, c).input_ids for c in dev_paragraphs(tokenizer)]
    new_tokens = args.max_new_tokens
    common = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    n = QUESTIONS_PER_PARAGRAPH
    total = n * len(prompts)
    mean_prompt = sum(map(len, prompts)) / len(prompts)
    print(__doc__.split("\n\n")[0].replace("\n", " "))
    print(f"{len(prompts)} dev paragraphs, prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens "
          f"(mean {mean_prompt:.0f}); N={n}; {new_tokens} new tokens per question forced on both sides "
          f"(min_new_tokens=max_new_tokens); CPU fp32, 1 thread, questions per CPU second, best of {args.repeats}.")
    print(f"Tokens through the model per paragraph: num_return_sequences {n} x {mean_prompt:.0f} prompt + "
          f"{n} x {new_tokens - 1} = {n * mean_prompt + n * (new_tokens - 1):.0f}; shared prefill {mean_prompt:.0f} "
          f"+ {n} x {new_tokens} = {mean_prompt + n * new_tokens:.0f} (arithmetic, not a timing).\n")

    header = (f"{'model':<29} {'decoding':<9} {'paragraphs/batch':>16} {'baseline q/s':>13} {'shared q/s':>11} "
              f"{'shared/baseline':>16}")
    print(header)
    print("-" * len(header))
    batched_ratios = []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        os.environ["QG_CACHE"] = tmp  # the converted tiny model goes here, not into the user's cache
        models = [("tiny (hidden 64, 2 layers)", lambda: tiny_model(Path(tmp))),
                  ("wider (hidden 512, 4 layers)", lambda: wider_model(tokenizer))]
        for label, build in models:
            model = build().eval()
            for decoding_name, decoding in DECODINGS.items():
                seconds = measure(model, prompts, tokenizer.pad_token_id, {**decoding, **common}, args.repeats)
                for per_batch in (1, len(prompts)):
                    baseline_qps = total / seconds["baseline", per_batch]
                    shared_qps = total / seconds["shared", per_batch]
                    print(f"{label:<29} {decoding_name:<9} {per_batch:>16} {baseline_qps:>13.2f} {shared_qps:>11.2f} "
                          f"{shared_qps / baseline_qps:>15.2f}x")
                batched_ratios.append((label, decoding_name, *(seconds[method, 1] / seconds[method, len(prompts)]
                                                               for method in ("baseline", "shared"))))
            del model

    print(f"\nBatched ({len(prompts)} paragraphs) / one paragraph at a time, questions per CPU second:")
    for label, decoding_name, baseline_ratio, shared_ratio in batched_ratios:
        print(f"  {label:<29} {decoding_name:<9} baseline {baseline_ratio:.2f}x   shared prefill {shared_ratio:.2f}x")
    print("\nCaveat: these models are compute-light next to EXAONE-3.5-2.4B (hidden 2560, 30 layers), and the tiny "
          "one spends most of each decoding step in its 102,400-way output layer, which the prefill skips (only the "
          "last prompt position gets logits). The prefill's share of the work, and so the speed-up, grows with width "
          "and depth; the real model on a GPU, where the forward passes are batched in parallel, was not measured.")


if __name__ == "__main__":
    main()
