"""One GPU, one table: EXAONE-3.5-2.4B's shape with random weights, LoRA, bf16, train.py's ways of batching.

    python bench/bench_gpu.py            # one H100 / H200, under 8 minutes
    python bench/bench_gpu.py --tiny     # a tiny shape on CPU in seconds (tests/test_bench_gpu.py runs it)

Needs only torch, transformers, peft and accelerate (and this checkout): no network, no dataset library. The model
is built on the device from EXAONE-3.5-2.4B-Instruct's config.json (qg.models.tiny.EXAONE_3_5_2_4B_CONFIG through
our EXAONE -> Llama config conversion), randomly initialised, bf16, LoRA r=16 on all 7 projections (fp32 adapters,
bf16 autocast, as train.py on a GPU). Data: KorQuAD 1.0 dev with EXAONE's tokenizer when $QG_SHARED_DIR has them,
else the bundled sample with a small BPE (the model keeps its 102,400-token vocabulary either way).
Training arms, each from the same initial weights, one micro-batch per optimizer step, the same mean number of
questions per step (packing at --batch-tokens; shared context at that budget scaled by its tokens per question;
the padded Trainer at that many examples), --warmup steps untimed, then --steps timed:
  1. transformers Trainer, examples padded per batch (DataCollatorForSeq2Seq), sdpa, the model's own loss;
  2. packing: padding-free rows (qg.train.packing.flattening_collator), flex attention;
  3. shared context: each paragraph once with its questions as branches, a flex-attention block mask;
  2 and 3 with train.py's loss at labelled positions (qg.train.loss) and AdamW, collation inside the timing.
Then the EXAONE recipes as written (gradient checkpointing, their micro-batch and accumulation) for a few steps:
torch.cuda.max_memory_allocated against the planner's estimate (qg.train.memory; its 1 GiB CUDA-context allowance
is not in max_memory_allocated). Last, generation of 5 questions for each of --paragraphs paragraphs: each
prefilled once (qg.generate.PrefilledPrompts) versus `generate(num_return_sequences=5)`, --new-tokens each.
MFU counts useful model FLOPs: the frozen decoder linears' forward and input-gradient backward (4 x parameters)
at every non-pad token and the LM head's at labelled positions; attention scores and the adapters are left out,
over the peak dense bf16 FLOP/s of the card (table below; other cards: no MFU).
Before training each arm scores the same check questions with its own batching and loss: equal values show the
arms optimise one objective.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    LlamaForCausalLM,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from qg.config import parse_config
from qg.data.korquad import SAMPLE_DIR, parse_korquad, read_korquad_json
from qg.generate import PrefilledPrompts, left_pad
from qg.models.exaone import llama_config
from qg.models.tiny import EXAONE_3_5_2_4B_CONFIG, train_tiny_tokenizer
from qg.prompt import IGNORE_INDEX, encode_prompt, end_of_turn_id
from qg.train.config import TrainConfig
from qg.train.loss import summed_token_loss
from qg.train.memory import GIB, LINEAR_MODULES, estimate_memory, shape_from_config_file
from qg.train.packing import Group, SharedContextCollator, build_groups, flattening_collator, pack_groups

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QG_SHARED_DIR", REPO.parent / "shared"))
DEV_JSON = SHARED / "data/korquad/KorQuAD_v1.0_dev.json"
TOKENIZER_DIR = SHARED / "fixtures/exaone-3.5-tokenizer"
RECIPES = ("exaone-3.5-2.4b-lora", "exaone-3.5-2.4b-lora-12gb")
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense, SXM
# EXAONE's architecture at two narrow layers and the bundled sample's small BPE vocabulary: every code path in
# seconds on CPU (the real vocabulary would make the padded Trainer's full logits gigabytes).
TINY_SHAPE = {"hidden_size": 64, "num_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 16, "intermediate_size": 176, "vocab_size": 2048}
DEFAULTS = {  # (GPU, --tiny)
    "batch_tokens": (8192, 2048), "questions": (720, 32), "check_questions": (12, 6), "warmup": (2, 1),
    "steps": (8, 1), "paragraphs": (8, 2), "new_tokens": (32, 4),
}
QUESTIONS_PER_PARAGRAPH = 5


@dataclass
class Row:
    name: str
    tokens_per_second: float | None = None
    questions_per_second: float | None = None
    questions_per_step: float | None = None
    mfu: float | None = None
    peak_gib: float | None = None
    planned_gib: float | None = None
    check_loss: float | None = None
    note: str = ""


class Device:
    """Where and how the arms run: CUDA in bf16 with flex attention, or (--tiny) CPU in fp32 with sdpa."""

    def __init__(self, tiny: bool):
        self.cuda = torch.cuda.is_available() and not tiny
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.flex = "flex_attention" if self.cuda else "sdpa"  # flex attention on CPU compiles for minutes
        self.name = torch.cuda.get_device_name() if self.cuda else "CPU"
        self.peak_flops = next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in self.name), None)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda)

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / GIB if self.cuda else None


class Bench:
    def __init__(self, args, device: Device, shape_dir: Path):
        self.args, self.device, self.shape_dir = args, device, shape_dir
        self.config = llama_config(json.loads((shape_dir / "config.json").read_text()))
        self.shape = shape_from_config_file(shape_dir / "config.json")

    def model(self, attn_implementation: str, gradient_checkpointing: bool = False):
        """The random-weight model with LoRA: the same weights every call (seed 0)."""
        torch.manual_seed(0)
        with torch.device(self.device.device):
            model = LlamaForCausalLM._from_config(self.config, dtype=self.device.dtype,
                                                  attn_implementation=attn_implementation)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                target_modules=list(LINEAR_MODULES), task_type="CAUSAL_LM"))

    def mfu(self, tokens: int, labelled: int, seconds: float) -> float | None:
        if self.device.peak_flops is None:
            return None
        linear = self.shape.num_layers * self.shape.layer_linear_params()
        flops = 4 * linear * tokens + 4 * self.shape.hidden_size * self.shape.vocab_size * labelled
        return flops / seconds / self.device.peak_flops

    def planned_gib(self, **recipe) -> float:
        config = TrainConfig(model=str(self.shape_dir), dataset=str(self.shape_dir / "no-dataset"), lora_r=16,
                             lora_alpha=32, lora_dropout=0.05, mixed_precision="bf16", **recipe)
        return estimate_memory(config).total / GIB

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    @torch.no_grad()
    def check_loss(self, model, batches: list[dict]) -> float | None:
        """Mean loss per labelled token of the initial model on the check questions, with our loss."""
        if not batches:
            return None
        model.eval()
        summed = labelled = 0.0
        for batch in batches:
            with self.device.autocast():
                summed += float(summed_token_loss(model, self.to_device(batch)))
            labelled += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        model.train()
        return summed / labelled


def labelled_in(groups: list[Group]) -> int:
    return sum(len(branch) - 1 for group in groups for branch in group.branches)


def questions_in(groups: list[Group]) -> int:
    return sum(len(group.branches) for group in groups)


def enough_batches(groups: list[Group], budget: int, needed: int) -> list[list[Group]]:
    """`needed` micro-batches: epochs of `groups` packed at `budget`, each epoch shuffled with its own seed."""
    batches, epoch = [], 0
    while len(batches) < needed:
        batches += pack_groups(groups, budget, seed=epoch)
        epoch += 1
    return batches[:needed]


def run_loop(bench: Bench, name: str, groups: list[Group], check: list[list[Group]], collate, budget: int,
             attn_implementation: str, accumulation: int = 1, gradient_checkpointing: bool = False,
             steps: int | None = None) -> Row:
    """train.py's step: the loss at labelled positions, normalised per labelled token of the step, AdamW."""
    device, args = bench.device, bench.args
    steps = args.steps if steps is None else steps
    device.reset_peak()
    model = bench.model(attn_implementation, gradient_checkpointing)
    initial = bench.check_loss(model, [collate(batch) for batch in check])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    batches = enough_batches(groups, budget, (args.warmup + steps) * accumulation)
    seconds = tokens = labelled = questions = 0
    for step in range(args.warmup + steps):
        micro = batches[step * accumulation:(step + 1) * accumulation]
        step_labelled = sum(map(labelled_in, micro))
        device.sync()
        start = time.perf_counter()
        for groups_ in micro:
            batch = bench.to_device(collate(groups_))
            with device.autocast():
                loss = summed_token_loss(model, batch) / step_labelled
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        device.sync()
        if step >= args.warmup:
            seconds += time.perf_counter() - start
            tokens += sum(g.num_tokens for groups_ in micro for g in groups_)
            labelled += step_labelled
            questions += sum(map(questions_in, micro))
    row = Row(name, tokens / seconds, questions / seconds, questions / steps, bench.mfu(tokens, labelled, seconds),
              device.peak_gib(), check_loss=initial)
    bench.last_model = model
    return row


class StepEnds(TrainerCallback):
    def __init__(self, device: Device):
        self.device, self.times = device, []

    def on_step_end(self, args, state, control, **kwargs):
        self.device.sync()
        self.times.append(time.perf_counter())


class CountingCollator:
    """Pads like the Trainer's collator and records what each batch holds, in the order the Trainer draws them."""

    def __init__(self, collate, end_of_turn: int):
        self.collate, self.end_of_turn, self.counts = collate, end_of_turn, []

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collate(features)
        real = sum(len(f["input_ids"]) for f in features)
        labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        self.counts.append((real, labelled, int((batch["labels"] == self.end_of_turn).sum())))
        return batch


def run_padded_trainer(bench: Bench, tokenizer, examples: list[dict], check: list[dict], batch_size: int,
                       work: Path) -> Row:
    device, args = bench.device, bench.args
    device.reset_peak()
    model = bench.model("sdpa")
    collator = CountingCollator(DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX,
                                                       return_tensors="pt"), end_of_turn_id(tokenizer))
    check_batches = [collator.collate(check[i:i + batch_size]) for i in range(0, len(check), batch_size)]
    model.eval()
    with torch.no_grad(), device.autocast():
        summed = sum(float(model(**bench.to_device(b), use_cache=False).loss)
                     * int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in check_batches)
    initial = summed / sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in check_batches)
    model.train()
    ends = StepEnds(device)
    trainer = Trainer(model=model, train_dataset=examples, data_collator=collator, callbacks=[ends], args=TrainingArguments(
        output_dir=str(work / "trainer"), max_steps=args.warmup + args.steps, per_device_train_batch_size=batch_size,
        learning_rate=2e-4, lr_scheduler_type="constant", optim="adamw_torch", max_grad_norm=1.0, seed=0,
        bf16=device.cuda, use_cpu=not device.cuda, report_to="none", save_strategy="no", logging_strategy="no",
        disable_tqdm=True, dataloader_pin_memory=False, remove_unused_columns=False))
    trainer.remove_callback(PrinterCallback)  # it prints the run's metrics; the table has them
    trainer.train()
    # From the end of the last warm-up step to the end of the last step: loading and collating included.
    seconds = ends.times[-1] - ends.times[args.warmup - 1]
    timed = collator.counts[args.warmup:args.warmup + args.steps]
    real, labelled, questions = (sum(c[i] for c in timed) for i in range(3))
    return Row("padded Trainer (sdpa)", real / seconds, questions / seconds, questions / args.steps,
               bench.mfu(real, labelled, seconds), device.peak_gib(), check_loss=initial,
               note="the model's own loss: logits at every position")


def run_generation(bench: Bench, model, tokenizer, contexts: list[str]) -> list[Row]:
    """5 questions per paragraph: one prefill per paragraph, or `num_return_sequences` (a prefill per question)."""
    device, new_tokens = bench.device, bench.args.new_tokens
    model.set_attn_implementation("sdpa")  # decoding with a cache: no custom mask, no compilation
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = [encode_prompt(tokenizer, context).input_ids for context in contexts]
    decoding = {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": 0, "max_new_tokens": new_tokens,
                "min_new_tokens": new_tokens, "eos_token_id": end_of_turn_id(tokenizer), "pad_token_id": pad}

    def prefilled():
        return PrefilledPrompts(model, prompts, pad).generate([QUESTIONS_PER_PARAGRAPH] * len(prompts), **decoding)

    def return_sequences():
        input_ids, attention_mask = left_pad(prompts, pad, device.device)
        return model.generate(input_ids=input_ids, attention_mask=attention_mask,
                              num_return_sequences=QUESTIONS_PER_PARAGRAPH, **decoding)

    rows = []
    for name, generate in ((f"generation: shared prefill, {len(prompts)} x 5 questions", prefilled),
                           ("generation: num_return_sequences=5", return_sequences)):
        with torch.inference_mode():
            generate()  # warm-up
            device.sync()
            start = time.perf_counter()
            generate()
            device.sync()
        rows.append(Row(name, questions_per_second=QUESTIONS_PER_PARAGRAPH * len(prompts)
                        / (time.perf_counter() - start), note=f"{new_tokens} new tokens each"))
    return rows


def run_recipe(bench: Bench, recipe_name: str, rows: list[dict], groups, collate) -> Row:
    """A few steps of an EXAONE recipe as written (its micro-batch, accumulation, checkpointing): peak vs planner."""
    recipe, _ = parse_config(TrainConfig, ["--config", str(REPO / "configs" / f"{recipe_name}.yaml")])
    if bench.args.tiny:
        recipe = replace(recipe, batch_tokens=recipe.batch_tokens // 8)
    attn = bench.device.flex if recipe.attn_implementation == "flex_attention" else recipe.attn_implementation
    row = run_loop(bench, f"recipe {recipe_name}", groups(rows, recipe.shared_context, recipe.batch_tokens), [],
                   collate if recipe.shared_context else flattening_collator, recipe.batch_tokens, attn,
                   accumulation=recipe.gradient_accumulation_steps,
                   gradient_checkpointing=recipe.gradient_checkpointing, steps=2)
    planned = bench.planned_gib(batch_tokens=recipe.batch_tokens, shared_context=recipe.shared_context,
                                attn_implementation=recipe.attn_implementation,
                                gradient_checkpointing=recipe.gradient_checkpointing)
    checkpointing = "gradient checkpointing" if recipe.gradient_checkpointing else "no checkpointing"
    return replace(row, planned_gib=planned,
                   note=f"{recipe.batch_tokens} tokens x {recipe.gradient_accumulation_steps}, {checkpointing}")


def guarded(name: str, run) -> list[Row]:
    """One arm; out of GPU memory is a row that says so, and the others still run."""
    try:
        result = run()
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return [Row(name, note="out of GPU memory")]
    return result if isinstance(result, list) else [result]


def korquad(max_questions: int, tiny: bool):
    """`pairs` rows and a tokenizer: KorQuAD dev with EXAONE's tokenizer if present (not --tiny), else the bundled
    sample with a BPE of the tiny shape's vocabulary trained on it."""
    if DEV_JSON.exists() and TOKENIZER_DIR.exists() and not tiny:
        source, tokenizer = DEV_JSON, AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    else:
        source, tokenizer = SAMPLE_DIR / "train.json", None
    paragraphs, _ = parse_korquad(read_korquad_json(source))
    if tokenizer is None:
        texts = [p.context for p in paragraphs] + [q for p in paragraphs for q in p.questions]
        tokenizer = train_tiny_tokenizer(texts, vocab_size=TINY_SHAPE["vocab_size"])
    rows = [{"context": p.context, "question": q, "answer": a["text"]}
            for p in paragraphs for q, a in zip(p.questions, p.answers)]
    return rows[:max_questions], tokenizer, source


def print_table(rows: list[Row]) -> None:
    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    width = max(len(r.name) for r in rows) + 2
    header = f"{'':<{width}}{'tokens/s':>10}{'questions/s':>13}{'q/step':>8}{'MFU':>7}{'peak GiB':>10}" \
             f"{'planner GiB':>13}{'check loss':>12}  note"
    print(header)
    for r in rows:
        print(f"{r.name:<{width}}{cell(r.tokens_per_second, ',.0f'):>10}{cell(r.questions_per_second, '.2f'):>13}"
              f"{cell(r.questions_per_step, '.1f'):>8}{cell(r.mfu, '.1%'):>7}{cell(r.peak_gib, '.2f'):>10}"
              f"{cell(r.planned_gib, '.2f'):>13}{cell(r.check_loss, '.5f'):>12}  {r.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny shape on CPU (the test suite's run)")
    for name, (gpu, tiny) in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                            help=f"default {gpu} ({tiny} with --tiny)")
    args = parser.parse_args()
    for name, defaults in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[args.tiny])
    if args.warmup < 1:
        sys.exit("--warmup must be at least 1 (the Trainer's timing starts at the end of a warm-up step)")
    device = Device(args.tiny)
    if not args.tiny and not device.cuda:
        print("skipped: no CUDA GPU here (--tiny runs the same code at a tiny shape on CPU)")
        return
    transformers.logging.set_verbosity_error()
    began = time.perf_counter()
    print(f"device: {device.name}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"peak bf16 {device.peak_flops / 1e12:.0f} TFLOP/s" if device.peak_flops else
          f"device: {device.name}; torch {torch.__version__}, transformers {transformers.__version__}; no MFU")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shape_dir = work / "shape"
        shape_dir.mkdir()
        exaone_config = {**EXAONE_3_5_2_4B_CONFIG, **(TINY_SHAPE if args.tiny else {})}
        (shape_dir / "config.json").write_text(json.dumps(exaone_config))
        bench = Bench(args, device, shape_dir)
        rows, tokenizer, source = korquad(args.questions, args.tiny)

        def groups(rows_, shared: bool, budget: int) -> list[Group]:
            return build_groups(rows_, tokenizer, shared_context=shared, answer_aware=False, max_context_tokens=1024,
                                max_question_tokens=64, max_group_tokens=budget)[0]

        packed = groups(rows, False, args.batch_tokens)
        whole = groups(rows, True, args.batch_tokens)
        # As many questions per shared-context micro-batch as per packed one: the budget scaled by tokens/question.
        shared_budget = round(args.batch_tokens * sum(g.num_tokens for g in whole) / sum(g.num_tokens for g in packed))
        shared = groups(rows, True, shared_budget)
        check_rows = rows[:args.check_questions]
        examples = [e for g in packed for e in g.examples()]
        batch_size = max(1, round(args.batch_tokens / (sum(len(e["input_ids"]) for e in examples) / len(examples))))
        print(f"data: {len(rows)} questions from {source.name}, tokenizer {len(tokenizer):,} tokens, model vocab "
              f"{bench.config.vocab_size:,}; packing {args.batch_tokens} tokens, shared context {shared_budget}, "
              f"Trainer {batch_size} examples per step; {args.warmup} warm-up + {args.steps} timed steps", flush=True)

        block = SharedContextCollator(mask_format="block" if device.cuda else "bool")
        table = []
        table += guarded("padded Trainer (sdpa)", lambda: run_padded_trainer(
            bench, tokenizer, examples, [e for g in groups(check_rows, False, args.batch_tokens) for e in g.examples()],
            batch_size, work))
        print(f"  padded Trainer done at {time.perf_counter() - began:.0f} s", flush=True)
        table += guarded(f"packing ({device.flex})", lambda: replace(run_loop(
            bench, f"packing ({device.flex})", packed, pack_groups(groups(check_rows, False, args.batch_tokens),
                                                                    args.batch_tokens),
            flattening_collator, args.batch_tokens, device.flex),
            planned_gib=bench.planned_gib(batch_tokens=args.batch_tokens, attn_implementation=device.flex)))
        print(f"  packing done at {time.perf_counter() - began:.0f} s", flush=True)
        shared_name = f"shared context ({device.flex})"
        table += guarded(shared_name, lambda: replace(run_loop(
            bench, shared_name, shared, pack_groups(groups(check_rows, True, shared_budget), shared_budget), block,
            shared_budget, device.flex),
            planned_gib=bench.planned_gib(batch_tokens=shared_budget, shared_context=True,
                                          attn_implementation=device.flex)))
        print(f"  shared context done at {time.perf_counter() - began:.0f} s", flush=True)
        contexts = list(dict.fromkeys(r["context"] for r in rows))[:args.paragraphs]
        generation_model = getattr(bench, "last_model", None)
        for recipe_name in RECIPES:
            table += guarded(f"recipe {recipe_name}", partial(run_recipe, bench, recipe_name, rows, groups, block))
            print(f"  recipe {recipe_name} done at {time.perf_counter() - began:.0f} s", flush=True)
        bench.last_model = None
        if generation_model is None:
            generation_model = bench.model("sdpa")
        table += guarded("generation", lambda: run_generation(bench, generation_model, tokenizer, contexts))

    print()
    print_table(table)
    losses = [r.check_loss for r in table if r.check_loss is not None]
    if losses:
        print(f"\nsame objective: the arms' initial check losses differ by at most {max(losses) - min(losses):.2e}")
    print(f"peak GiB: torch.cuda.max_memory_allocated; planner GiB: qg.train.memory's estimate with its default loss "
          f"share, including 1 GiB for the CUDA context; done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
