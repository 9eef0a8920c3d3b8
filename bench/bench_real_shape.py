"""EXAONE-3.5-2.4B's real shape on CPU: random weights in the original format, our converter, one shared-context
LoRA optimizer step on real KorQuAD paragraphs and one generation call, with time and peak memory per stage.

    nice python bench/bench_real_shape.py                     # ~3-6 minutes on 2 cores, peak RSS ~11 GiB
    nice python bench/bench_real_shape.py --paragraphs 2 --questions 3

The checkpoint has EXAONE-3.5-2.4B-Instruct's exact config.json (hidden 2560, 30 layers, 32 / 8 heads, head_dim 80,
intermediate 7168, llama3 RoPE scaling, tied embeddings, vocab 102,400) and the real tokenizer, bf16 weights drawn
shard by shard (qg.models.tiny.write_random_exaone), converted by qg.models.exaone. The step is train.py's: the
base frozen in bf16 with fp32 LoRA adapters on all 7 projections (qg.train.loop.load_model), one shared-context
row (qg.train.packing, the boolean mask sdpa takes), the loss at labelled positions only (qg.train.loss), AdamW.
The generation is the generator's (qg.generate.QuestionGenerator: one prefill, sampled questions). Not a test:
it checks that the real shape goes through every stage within this machine's 24 GiB; random weights make the
questions noise and the loss ~ln(102,400) = 11.5.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers

from qg.data.korquad import parse_korquad, read_korquad_json
from qg.generate import QuestionGenerator, TransformersEngine
from qg.models.exaone import convert_exaone_checkpoint
from qg.models.loading import load_tokenizer
from qg.models.tiny import EXAONE_3_5_2_4B_CONFIG, write_random_exaone
from qg.train.config import TrainConfig
from qg.train.loop import labelled_tokens, load_model
from qg.train.loss import summed_token_loss
from qg.train.packing import SharedContextCollator, build_groups

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QG_SHARED_DIR", REPO.parent / "shared"))
DEV_JSON = SHARED / "data/korquad/KorQuAD_v1.0_dev.json"
TOKENIZER_DIR = SHARED / "fixtures/exaone-3.5-tokenizer"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


@contextmanager
def stage(name: str, rows: list):
    start = time.perf_counter()
    yield
    rows.append((name, time.perf_counter() - start, peak_rss_gib()))
    print(f"  {name}: {rows[-1][1]:.1f} s, peak RSS so far {rows[-1][2]:.2f} GiB", flush=True)


def korquad_rows(paragraphs: int, questions: int) -> list[dict]:
    """The first `paragraphs` dev paragraphs with their first `questions` questions, as `pairs` rows."""
    parsed, _ = parse_korquad(read_korquad_json(DEV_JSON))
    return [{"context": p.context, "question": q, "answer": a["text"]}
            for p in parsed[:paragraphs] for q, a in zip(p.questions[:questions], p.answers[:questions])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paragraphs", type=int, default=1, help="KorQuAD dev paragraphs in the training row")
    parser.add_argument("--questions", type=int, default=3, help="questions per paragraph (branches)")
    parser.add_argument("--max-context-tokens", type=int, default=384, help="paragraph budget (a short batch)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="new tokens per generated question")
    args = parser.parse_args()
    for path in (DEV_JSON, TOKENIZER_DIR):
        if not path.exists():
            sys.exit(f"{path} is absent: set QG_SHARED_DIR to the folder holding the shared material")
    transformers.logging.set_verbosity_error()
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.2f} at start; torch {torch.__version__}, transformers {transformers.__version__}")
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with stage("write random bf16 EXAONE-format checkpoint", rows):
            original = write_random_exaone(work / "exaone-3.5-2.4b-random", EXAONE_3_5_2_4B_CONFIG, TOKENIZER_DIR)
        size = sum(f.stat().st_size for f in original.glob("*.safetensors")) / 2**30
        with stage(f"convert to Llama format ({size:.2f} GiB)", rows):
            converted = convert_exaone_checkpoint(original, work / "converted")
        config = TrainConfig(model=str(converted), finetuning="lora", lora_r=16, lora_alpha=32, lora_dropout=0.05,
                             shared_context=True, attn_implementation="sdpa",
                             max_context_tokens=args.max_context_tokens)
        with stage("load base (bf16) + LoRA", rows):
            model = load_model(config, "bf16", "sdpa")  # "bf16": the base's dtype, as on a GPU
            tokenizer = load_tokenizer(str(converted))
        qa_rows = korquad_rows(args.paragraphs, args.questions)
        groups, _ = build_groups(qa_rows, tokenizer, shared_context=True, answer_aware=False,
                                 max_context_tokens=config.max_context_tokens,
                                 max_question_tokens=config.max_question_tokens)
        batch = SharedContextCollator(mask_format="bool")(groups)
        labelled = labelled_tokens(batch)
        print(f"batch: {len(qa_rows)} questions on {len(groups)} paragraphs, {batch['input_ids'].numel()} tokens, "
              f"{labelled} labelled (the LM head runs there only)")
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
        model.train()
        with stage("one LoRA optimizer step (forward, backward, AdamW)", rows):
            loss = summed_token_loss(model, batch) / labelled
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        with stage(f"one generation call (2 questions, {args.max_new_tokens} new tokens)", rows):
            generated = QuestionGenerator(TransformersEngine(model, tokenizer), config.max_context_tokens).generate(
                [qa_rows[0]["context"]], num_questions=2, max_new_tokens=args.max_new_tokens, max_rounds=1)
    print(f"\nloss {float(loss.detach()):.4f} (ln 102,400 = 11.54); generated {len(generated[0].questions)} accepted "
          f"questions, rejected {dict(generated[0].rejected)}\n")
    width = max(len(name) for name, _, _ in rows) + 2
    print(f"{'stage':<{width}}{'seconds':>10}{'peak RSS GiB':>14}")
    for name, seconds, rss in rows:
        print(f"{name:<{width}}{seconds:>10.1f}{rss:>14.2f}")
    print(f"{'total':<{width}}{sum(seconds for _, seconds, _ in rows):>10.1f}{peak_rss_gib():>14.2f}")


if __name__ == "__main__":
    main()
