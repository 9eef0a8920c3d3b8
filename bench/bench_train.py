"""Training throughput of one LoRA on the same data, six ways: plain `Trainer` with dynamic padding, TRL
`SFTTrainer` with BFD packing (padding-free), train.py's packing, train.py's shared context with the full-logits
loss it had before (the LM head at every position), train.py's shared context, and transformers' `Trainer` fed
train.py's shared-context micro-batches and loss (what the custom loop itself is worth).

    python bench/bench_train.py                           # ~8 minutes on 2 idle cores
    python bench/bench_train.py --max-train-samples 360   # 60 paragraphs, ~20 minutes

Model: the tiny offline EXAONE-3.5 (random weights, built with the REAL 102,400-token EXAONE tokenizer and loaded
through the same conversion as the real checkpoint), LoRA r=16 alpha=32 dropout 0 on all 7 projections, fp32, sdpa,
CPU. Data: real KorQuAD 1.0 dev paragraphs, built into a dataset by our builder (the dev file as the *train* source,
hub_dataset/sample/dev.json as the test source, so the no-leak rule keeps them), --max-train-samples questions.
The default is ~20 paragraphs: with the real vocabulary the LM head (64 x 102,400) is ~90% of the tiny model's
work at every position, about 1 ms per token on 2 cores, so more paragraphs no longer fit in minutes.
Every method: one epoch in as many optimizer steps as packing takes at --batch-tokens, one micro-batch per step,
so the same mean number of questions per step (fairness: at one token budget, shared context would take ~4x
fewer, larger steps, and "faster" could mean "fewer updates"), AdamW, the same lr, cosine schedule without
warm-up, grad-norm clip 1.0, seed 0; the loss is on the question + end-of-turn token only. The shared-context
methods get the smallest token budget that packs their epoch into that many micro-batches.
  1. Trainer: random batches of (questions / packing's steps) examples, padded (labels with -100).
  2. SFTTrainer: pre-tokenised input_ids + completion_mask, completion_only_loss=True, packing=True with the "bfd"
     strategy (which makes it padding-free), max_length = --batch-tokens, one packed row per micro-batch.
  3. qg.train.loop.train, shared_context=False: padding-free packing of (paragraph, question) examples.
  4. qg.train.loop.train, shared_context=True, with the loss computed over full logits (qg.train.loss's
     full_logits_token_loss in place of summed_token_loss: the loop as it was before).
  5. qg.train.loop.train, shared_context=True: each paragraph once, its questions as branches, the LM head and loss
     at labelled positions only.
  6. transformers `Trainer` on 5.'s micro-batches (the same DataLoader of shared-context batches) and loss.
Each method first runs one warm-up step, then its timed epoch: `trainer.train()` for the Trainers (tokens counted
from the batches their collators return), the per-step windows of train_log.jsonl for ours. Before training, each
method's own loss code scores the SAME initial model on the same fixed questions under its own batching: equal
numbers show the four optimise one objective.
Targets: train.py packing >= 1.5x the plain Trainer in tokens/s and no slower than SFTTrainer, padded tokens under
2%; shared context >= 3x the plain Trainer and >= 2x SFTTrainer in questions/s at equal loss, and >= 2x its
full-logits run; every method's initial check-set loss within 1e-5 of the others.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import datasets
import torch
import transformers
import trl
from transformers import DataCollatorForSeq2Seq, PrinterCallback, ProgressCallback, Trainer, TrainingArguments, set_seed
from trl import SFTConfig, SFTTrainer

from qg.data.build import build_qg_dataset, load_qg_dataset
from qg.data.korquad import read_korquad_json
from qg.models.loading import load_tokenizer
from qg.models.tiny import build_tiny_exaone
from qg.prompt import IGNORE_INDEX, end_of_turn_id
from qg.train import loop
from qg.train.config import TrainConfig
from qg.train.loop import evaluate_loss, labelled_tokens, load_model, train
from qg.train.loss import full_logits_token_loss, summed_token_loss
from qg.train.packing import Group, SharedContextCollator, build_groups, flattening_collator, pack_groups

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QG_SHARED_DIR", REPO.parent / "shared"))
DEV_JSON = SHARED / "data/korquad/KorQuAD_v1.0_dev.json"
TOKENIZER_DIR = SHARED / "fixtures/exaone-3.5-tokenizer"
SAMPLE_DEV_JSON = REPO / "hub_dataset/sample/dev.json"
METHODS = ("Trainer (padded)", "SFTTrainer (BFD)", "train.py packing", "shared, full logits", "train.py shared",
           "Trainer + our loader")


@dataclass
class Result:
    steps: int
    questions: int
    tokens: int  # every token the model processed, padding included
    padded: int
    seconds: float
    mean_loss: float  # mean of the per-step training losses over the epoch
    initial_loss: float  # the initial model on the fixed check questions, under this method's batching


class CountingCollator:
    """A collator that counts what it hands the model: tokens (padding included), padding, questions."""

    def __init__(self, collate, end_of_turn: int, length=lambda feature: len(feature["input_ids"])):
        self.collate, self.end_of_turn, self.length = collate, end_of_turn, length
        self.tokens = self.padded = self.questions = 0

    def __call__(self, features: list) -> dict:
        batch = self.collate(features)
        self.tokens += batch["input_ids"].numel()
        self.padded += batch["input_ids"].numel() - sum(map(self.length, features))
        self.questions += int((batch["labels"] == self.end_of_turn).sum())
        return batch


def chunks_by_tokens(examples: list[dict], budget: int) -> list[list[dict]]:
    """Consecutive examples, at most `budget` tokens per chunk: the check set in padding-free micro-batches."""
    out, size = [], 0
    for example in examples:
        if not out or size + len(example["input_ids"]) > budget:
            out.append([])
            size = 0
        out[-1].append(example)
        size += len(example["input_ids"])
    return out


@torch.no_grad()
def trainer_loss(trainer: Trainer, batches: list[dict]) -> float:
    """Mean loss per labelled token, through the trainer's own `compute_loss` (each batch's mean, token-weighted)."""
    trainer.model.eval()  # SFTTrainer logs train-mode metrics otherwise; dropout is 0 anyway
    summed = labelled = 0.0
    for batch in batches:
        count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        summed += float(trainer.compute_loss(trainer.model, dict(batch))) * count
        labelled += count
    trainer.model.train()
    return summed / labelled


def quiet(trainer: Trainer) -> Trainer:
    # Both callbacks print a line per logged step; the numbers that matter are printed at the end.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def trainer_args(cls, config: TrainConfig, output_dir: Path, max_steps: int, **kwargs):
    """The settings every Trainer run shares with `config` (the same optimiser, schedule, seed and logging)."""
    return cls(output_dir=str(output_dir), num_train_epochs=1, max_steps=max_steps,
               learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler, warmup_steps=0,
               weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm, optim="adamw_torch",
               logging_steps=1, save_strategy="no", report_to="none", seed=config.seed, use_cpu=True,
               dataloader_pin_memory=False, disable_tqdm=True, **kwargs)


def run_padded_trainer(config: TrainConfig, tokenizer, examples: list[dict], batch_size: int,
                       check: list[dict], work: Path, max_steps: int = -1) -> Result:
    set_seed(config.seed)
    model = load_model(config, "no", config.attn_implementation)
    collator = CountingCollator(DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX,
                                                       return_tensors="pt"), end_of_turn_id(tokenizer))
    args = trainer_args(TrainingArguments, config, work, max_steps, per_device_train_batch_size=batch_size)
    trainer = quiet(Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(examples),
                            data_collator=collator))
    check_batches = [collator.collate(check[i:i + batch_size]) for i in range(0, len(check), batch_size)]
    initial = trainer_loss(trainer, check_batches)
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    return Result(trainer.state.global_step, collator.questions, collator.tokens, collator.padded, seconds,
                  output.training_loss, initial)


def run_sft_trainer(config: TrainConfig, tokenizer, examples: list[dict], check: list[dict], work: Path,
                    max_steps: int = -1) -> Result:
    set_seed(config.seed)
    model = load_model(config, "no", config.attn_implementation)
    # Our exact token ids; the completion mask covers the question and its end-of-turn token, as our labels do.
    rows = [{"input_ids": e["input_ids"], "completion_mask": [int(label != IGNORE_INDEX) for label in e["labels"]]}
            for e in examples]
    args = trainer_args(SFTConfig, config, work, max_steps, per_device_train_batch_size=1, packing=True,
                        packing_strategy="bfd", max_length=config.batch_tokens, completion_only_loss=True,
                        gradient_checkpointing=False, bf16=False)  # SFTConfig defaults both to True
    trainer = quiet(SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                               processing_class=tokenizer))
    check_packed_rows(trainer.train_dataset, examples)
    collator = CountingCollator(trainer.data_collator, end_of_turn_id(tokenizer))
    trainer.data_collator = collator  # padding-free SFTTrainer refuses a custom collator, so it is wrapped after
    initial = trainer_loss(trainer, [collator.collate(chunk) for chunk in chunks_by_tokens(check, config.batch_tokens)])
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    return Result(trainer.state.global_step, collator.questions, collator.tokens, collator.padded, seconds,
                  output.training_loss, initial)


def check_packed_rows(packed: datasets.Dataset, examples: list[dict]) -> None:
    """SFTTrainer's packed rows, cut at their sequence lengths, must be our examples with our labels, no more."""
    sequences = []
    for row in packed:
        start = 0
        for length in row["seq_lengths"]:
            end = start + length
            sequences.append((tuple(row["input_ids"][start:end]), tuple(row["labels"][start:end])))
            start = end
    ours = [(tuple(e["input_ids"]), tuple(e["labels"])) for e in examples]
    if sorted(sequences) != sorted(ours):
        raise SystemExit("SFTTrainer's prepared data differs from our examples (tokens or loss mask)")


class LoaderTrainer(Trainer):
    """transformers' Trainer on train.py's micro-batches (its DataLoader, its collator) and its summed loss."""

    def __init__(self, *args, batches: list[list[Group]], collate, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches, self.collate = batches, collate

    def get_train_dataloader(self):
        return self.accelerator.prepare(loop._loader(self.batches, self.collate))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # One micro-batch per optimizer step: its own labelled tokens are the step's, as in train.py.
        return summed_token_loss(model, inputs) / labelled_tokens(inputs)


def run_loader_trainer(config: TrainConfig, tokenizer, train_groups: list[Group], check_groups: list[Group],
                       work: Path, max_steps: int = -1) -> Result:
    set_seed(config.seed)
    model = load_model(config, "no", config.attn_implementation)
    collator = CountingCollator(SharedContextCollator(), end_of_turn_id(tokenizer), length=lambda g: g.num_tokens)
    batches = pack_groups(train_groups, config.batch_tokens, seed=config.seed)
    args = trainer_args(TrainingArguments, config, work, max_steps, per_device_train_batch_size=1,
                        remove_unused_columns=False)
    trainer = quiet(LoaderTrainer(model=model, args=args, batches=batches, collate=collator))
    initial = trainer_loss(trainer, [collator.collate(b) for b in pack_groups(check_groups, config.batch_tokens)])
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    return Result(trainer.state.global_step, collator.questions, collator.tokens, collator.padded, seconds,
                  output.training_loss, initial)


@contextmanager
def patched_loss(loss_fn):
    """train.py's loop (training and validation) with `loss_fn` at its loss call site."""
    original = loop.summed_token_loss
    loop.summed_token_loss = loss_fn
    try:
        yield
    finally:
        loop.summed_token_loss = original


def run_ours(config: TrainConfig, check_groups: list[Group], epoch_tokens: int, work: Path,
             max_steps: int = -1, full_logits: bool = False) -> Result:
    if full_logits:  # the loop as it was: the same call site, the loss over every position's logits
        with patched_loss(full_logits_token_loss):
            return run_ours(config, check_groups, epoch_tokens, work, max_steps)
    config = replace(config, output_dir=str(work), max_steps=max_steps)
    set_seed(config.seed)
    model = load_model(config, "no", config.attn_implementation)  # what train() loads, to score the check set
    collate = SharedContextCollator() if config.shared_context else flattening_collator
    initial = evaluate_loss(model, [collate(b) for b in pack_groups(check_groups, config.batch_tokens)], "cpu")
    del model
    records = [json.loads(line) for line in (train(config) / "train_log.jsonl").read_text().splitlines()]
    # Each record is one step's window (logging_steps=1): its seconds are its tokens over its tokens/s.
    seconds = questions = 0.0
    previous = 0
    for record in records:
        elapsed = (record["tokens"] - previous) / record["tokens_per_second"]
        seconds += elapsed
        questions += record["questions_per_second"] * elapsed
        previous = record["tokens"]
    # Padding: what the model saw beyond the groups' own tokens, as one epoch covers every group once.
    padded = records[-1]["tokens"] - epoch_tokens
    return Result(len(records), round(questions), records[-1]["tokens"], padded, seconds,
                  sum(r["loss"] for r in records) / len(records), initial)


def groups_of(rows, tokenizer, config: TrainConfig, shared_context: bool) -> list[Group]:
    """What train() builds from `rows`: (paragraph, question) groups, or whole paragraphs with shared context."""
    groups, _ = build_groups(rows, tokenizer, shared_context=shared_context, answer_aware=False,
                             max_context_tokens=config.max_context_tokens,
                             max_question_tokens=config.max_question_tokens, max_group_tokens=config.batch_tokens)
    return groups


def shared_budget_for(rows, tokenizer, config: TrainConfig, steps: int) -> int:
    """The smallest shared-context token budget whose epoch (train.py's shuffle) packs into at most `steps`
    micro-batches: shared context then takes as many optimizer steps as packing, with as many questions each."""
    def micro_batches(budget: int) -> int:
        groups = groups_of(rows, tokenizer, replace(config, batch_tokens=budget), True)
        return len(pack_groups(groups, budget, seed=config.seed))

    low, high = 1, sum(g.num_tokens for g in groups_of(rows, tokenizer, config, True))
    while low < high:
        middle = (low + high) // 2
        if micro_batches(middle) <= steps:
            high = middle
        else:
            low = middle + 1
    return low


def build_data(work: Path, max_train_samples: int) -> tuple[Path, Path]:
    model_dir = build_tiny_exaone(work / "tiny-exaone", tokenizer_dir=TOKENIZER_DIR)
    dataset_dir = work / "dataset"
    build_qg_dataset(read_korquad_json(DEV_JSON), read_korquad_json(SAMPLE_DEV_JSON), dataset_dir,
                     max_train_samples=max_train_samples)
    return model_dir, dataset_dir


def print_table(results: dict[str, Result]) -> None:
    base, sft = results[METHODS[0]], results[METHODS[1]]

    def qps(r: Result) -> float:
        return r.questions / r.seconds

    def real_tps(r: Result) -> float:
        return (r.tokens - r.padded) / r.seconds

    rows = [
        ("optimizer steps (= micro-batches)", lambda r: f"{r.steps}"),
        ("questions trained", lambda r: f"{r.questions}"),
        ("questions / optimizer step", lambda r: f"{r.questions / r.steps:.1f}"),
        ("tokens processed (incl. padding)", lambda r: f"{r.tokens:,}"),
        ("padded tokens", lambda r: f"{100 * r.padded / r.tokens:.1f}%"),
        ("tokens processed / question", lambda r: f"{r.tokens / r.questions:.0f}"),
        ("training seconds", lambda r: f"{r.seconds:.1f}"),
        ("questions / s", lambda r: f"{qps(r):.2f}"),
        ("tokens processed / s", lambda r: f"{r.tokens / r.seconds:,.0f}"),
        ("real (non-pad) tokens / s", lambda r: f"{real_tps(r):,.0f}"),
        ("mean train loss over the epoch", lambda r: f"{r.mean_loss:.4f}"),
        ("initial model, fixed check set", lambda r: f"{r.initial_loss:.6f}"),
        ("questions/s vs Trainer", lambda r: f"{qps(r) / qps(base):.2f}x"),
        ("tokens processed/s vs Trainer", lambda r: f"{r.tokens / r.seconds / (base.tokens / base.seconds):.2f}x"),
        ("real tokens/s vs Trainer", lambda r: f"{real_tps(r) / real_tps(base):.2f}x"),
        ("questions/s vs SFTTrainer", lambda r: f"{qps(r) / qps(sft):.2f}x"),
        ("real tokens/s vs SFTTrainer", lambda r: f"{real_tps(r) / real_tps(sft):.2f}x"),
    ]
    width = 34
    print(f"{'':<{width}}" + "".join(f"{name:>21}" for name in METHODS))
    for label, cell in rows:
        print(f"{label:<{width}}" + "".join(f"{cell(results[name]):>21}" for name in METHODS))

    packing, full_logits, shared, loader = (results[name] for name in METHODS[2:])
    initial = [r.initial_loss for r in results.values()]
    per_step = [r.questions / r.steps for r in results.values()]
    checks = [
        (f"train.py packing real tokens/s >= 1.5x Trainer: {real_tps(packing) / real_tps(base):.2f}x "
         f"(tokens processed/s incl. padding: {packing.tokens / packing.seconds / (base.tokens / base.seconds):.2f}x)",
         real_tps(packing) >= 1.5 * real_tps(base)),
        (f"train.py packing no slower than SFTTrainer (real tokens/s): {real_tps(packing) / real_tps(sft):.2f}x",
         real_tps(packing) >= real_tps(sft)),
        (f"train.py packing padded tokens < 2%: {100 * packing.padded / packing.tokens:.1f}%",
         packing.padded < 0.02 * packing.tokens),
        (f"train.py shared questions/s >= 3x Trainer: {qps(shared) / qps(base):.2f}x", qps(shared) >= 3 * qps(base)),
        (f"train.py shared questions/s >= 2x SFTTrainer: {qps(shared) / qps(sft):.2f}x", qps(shared) >= 2 * qps(sft)),
        (f"train.py shared questions/s >= 2x its full-logits run: {qps(shared) / qps(full_logits):.2f}x",
         qps(shared) >= 2 * qps(full_logits)),
        (f"same questions per optimizer step: {min(per_step):.1f} to {max(per_step):.1f} (within 20%)",
         max(per_step) <= 1.2 * min(per_step)),
        (f"same objective: initial-model losses agree, max difference {max(initial) - min(initial):.2e} (< 1e-5)",
         max(initial) - min(initial) < 1e-5),
    ]
    print("\ntargets")
    for text, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")
    print(f"what the custom loop is worth: train.py shared vs Trainer on the same batches and loss, "
          f"{qps(shared) / qps(loader):.2f}x questions/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-train-samples", type=int, default=120,
                        help="train questions (whole paragraphs, ~6 questions each)")
    parser.add_argument("--batch-tokens", type=int, default=4096,
                        help="token budget of one packed micro-batch (shared context: scaled to as many questions)")
    parser.add_argument("--learning-rate", type=float, default=3e-3,
                        help="every method (configs/smoke.yaml's, for the tiny random model)")
    parser.add_argument("--check-questions", type=int, default=12,
                        help="questions scored by the initial model under every method's batching")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads, every method")
    args = parser.parse_args()
    for path in (DEV_JSON, TOKENIZER_DIR):
        if not path.exists():
            sys.exit(f"{path} is absent: set QG_SHARED_DIR to the folder holding the shared material")
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    print("command: python bench/bench_train.py " + shlex.join(sys.argv[1:]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f} (1 min) at start; torch "
          f"{torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["QG_CACHE"] = str(work / "cache")  # the converted model stays in this run's folder
        model_dir, dataset_dir = build_data(work, args.max_train_samples)
        tokenizer = load_tokenizer(str(model_dir))
        config = TrainConfig(model=str(model_dir), dataset=str(dataset_dir), lora_r=16, lora_alpha=32,
                             lora_dropout=0.0, learning_rate=args.learning_rate, lr_scheduler="cosine",
                             warmup_ratio=0.0, batch_tokens=args.batch_tokens, mixed_precision="no",
                             attn_implementation="sdpa", logging_steps=1, eval_steps=0, save_steps=0,
                             report_to="none")
        rows = load_qg_dataset(str(dataset_dir))["train"]
        check_rows = rows.select(range(min(args.check_questions, len(rows))))
        # Every method takes as many optimizer steps per epoch as packing, so as many questions per step.
        steps = len(pack_groups(groups_of(rows, tokenizer, config, False), config.batch_tokens, seed=config.seed))
        shared_config = replace(config, shared_context=True,
                                batch_tokens=shared_budget_for(rows, tokenizer, config, steps))
        configs = {False: config, True: shared_config}
        train_groups = {shared: groups_of(rows, tokenizer, configs[shared], shared) for shared in (False, True)}
        check_groups = {shared: groups_of(check_rows, tokenizer, configs[shared], shared) for shared in (False, True)}
        # The exact (input_ids, labels) our packing trains on; the Trainers get the same examples.
        examples = [example for group in train_groups[False] for example in group.examples()]
        check = [example for group in check_groups[False] for example in group.examples()]
        mean_length = sum(len(e["input_ids"]) for e in examples) / len(examples)
        batch_size = math.ceil(len(examples) / steps)
        paragraphs = len(set(rows["context"]))
        print(f"data: {len(examples)} questions on {paragraphs} KorQuAD dev paragraphs, mean example "
              f"{mean_length:.0f} tokens (prompt + question + end of turn); {steps} optimizer steps per epoch: "
              f"packing at {args.batch_tokens} tokens, shared context at {shared_config.batch_tokens}, Trainer "
              f"batches of {batch_size} examples; check set {len(check)} questions\n")

        runs = {
            METHODS[0]: lambda out, steps: run_padded_trainer(config, tokenizer, examples, batch_size, check, out,
                                                              steps),
            METHODS[1]: lambda out, steps: run_sft_trainer(config, tokenizer, examples, check, out, steps),
            METHODS[2]: lambda out, steps: run_ours(config, check_groups[False],
                                                    sum(g.num_tokens for g in train_groups[False]), out, steps),
            METHODS[3]: lambda out, steps: run_ours(shared_config, check_groups[True],
                                                    sum(g.num_tokens for g in train_groups[True]), out, steps,
                                                    full_logits=True),
            METHODS[4]: lambda out, steps: run_ours(shared_config, check_groups[True],
                                                    sum(g.num_tokens for g in train_groups[True]), out, steps),
            METHODS[5]: lambda out, steps: run_loader_trainer(shared_config, tokenizer, train_groups[True],
                                                              check_groups[True], out, steps),
        }
        results = {}
        for i, (name, run) in enumerate(runs.items()):
            run(work / f"warm-up-{i}", 1)  # one step: first calls allocate and pick kernels; its numbers are dropped
            results[name] = run(work / f"run-{i}", -1)
            print(f"  {name}: {results[name].seconds:.1f} s, load average {os.getloadavg()[0]:.2f}", flush=True)
    print()
    print_table(results)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (1 min), torch threads {torch.get_num_threads()}, "
          f"peak memory {peak:.1f} GiB")


if __name__ == "__main__":
    main()
