"""Fine-tune a base model for Korean question generation (LoRA, QLoRA or full) with Accelerate.

    qg-train --config configs/smoke.yaml                                   # tiny model, CPU, ~1 minute
    accelerate launch train.py --config configs/exaone-3.5-2.4b-lora.yaml         # the published adapter, 1 GPU
    accelerate launch --config_file configs/accelerate/multi-gpu.yaml train.py --config configs/exaone-3.5-2.4b-lora.yaml
    ACCELERATE_USE_CPU=true torchrun --standalone --nproc_per_node 2 train.py --config configs/smoke.yaml --output_dir outputs/ddp
    qg-train --config configs/smoke.yaml --lora_r 8 --max_steps 20         # any field can be overridden
    qg-train --config configs/smoke.yaml --resume                          # continue from the last checkpoint

Every recipe field is a flag (see --help); the recipe sets defaults and flags win.

The training loop: Accelerate + peft LoRA (or QLoRA, or full fine-tuning) on packed question-generation batches.
One loop for one CPU core and many GPUs: `accelerate launch` chooses DDP, FSDP or DeepSpeed; this code only uses
`Accelerator`'s own `prepare`, `accumulate`, `save_state`/`load_state` and trackers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import GradientAccumulationPlugin, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from qg.cli import UserError, command, one_line
from qg.config import config_to_yaml, parse_config
from qg.data.build import load_qg_dataset
from qg.io import atomic_dir, atomic_write_text, folder_lock, is_hub_id
from qg.models.loading import load_base, load_tokenizer
from qg.models.tiny import TINY_MODEL
from qg.prompt import end_of_turn_id
from qg.train.config import TrainConfig
from qg.train.loss import summed_token_loss
from qg.train.packing import Group, SharedContextCollator, build_groups, flattening_collator, pack_groups
from qg.train.plots import plot_loss_curve

CHECKPOINTS = "checkpoints"
FINAL = ".final"
KEEP_CHECKPOINTS = 2


# The package each tracker needs, and how to get it.
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_config(config: TrainConfig, resume: bool) -> None:
    """Refuse what would fail later, before any model or data is loaded."""
    tracker = TRACKER_PACKAGES.get(config.report_to)
    if tracker and importlib.util.find_spec(tracker) is None:
        raise UserError(f"--report_to {config.report_to} needs {tracker}: pip install {tracker} "
                        "(or --report_to none)")
    if config.finetuning == "qlora":
        if not torch.cuda.is_available():
            raise UserError("QLoRA (4-bit bitsandbytes) needs a CUDA GPU; on CPU use finetuning: lora "
                            "(configs/exaone-3.5-2.4b-lora.yaml)")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UserError("QLoRA needs bitsandbytes: pip install bitsandbytes") from None
    if config.attn_implementation == "flash_attention_2" and not torch.cuda.is_available():
        raise UserError("attn_implementation flash_attention_2 needs a CUDA GPU; use sdpa on CPU")
    if config.mixed_precision in ("bf16", "fp16") and not torch.cuda.is_available():
        raise UserError(f"mixed_precision {config.mixed_precision} needs a GPU here; use auto or no on CPU")
    dataset = Path(config.dataset)
    if not is_hub_id(config.dataset) and not (dataset / "README.md").is_file():
        raise UserError(f"dataset {config.dataset} not found: build it with python hub_dataset/build_dataset.py "
                        f"--train-json hub_dataset/sample/train.json --dev-json hub_dataset/sample/dev.json "
                        f"--output-dir {config.dataset}")
    _check_output_dir(Path(config.output_dir), config, resume)
    _check_model(config)


def _check_output_dir(output: Path, config: TrainConfig, resume: bool) -> None:
    if output.exists() and not output.is_dir():
        raise UserError(f"output_dir {output} is a file; choose a folder")
    saved = output / "train_config.yaml"
    if resume:
        if not saved.is_file():
            raise UserError(f"--resume: {output} holds no run to resume (no train_config.yaml)")
        previous = yaml.safe_load(saved.read_text(encoding="utf-8"))
        # Not output_dir: the saved recipe was read from inside it, however the path is spelled now.
        changed = sorted(k for k, v in asdict(config).items() if k != "output_dir" and previous.get(k) != v)
        if changed:
            raise UserError(f"--resume: the config differs from the run in {output} in {', '.join(changed)}")
    elif output.exists() and any(output.iterdir()):
        raise UserError(f"output dir {output} already holds another run; pass --resume to continue it, "
                        "or choose a new --output_dir")
    existing = next(p for p in [output, *output.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise UserError(f"output_dir {output}: {existing} is a file, not a folder")
    try:  # a real write: access() says yes to root on a read-only or locked-down file system
        os.rmdir(tempfile.mkdtemp(prefix=".qg-write-test-", dir=existing))
    except OSError as err:
        raise UserError(f"output_dir {output} cannot be written ({existing}: {err.strerror})") from None


def _check_model(config: TrainConfig) -> None:
    """A Hub model must exist at its revision (its config.json is fetched, or found in the cache); a revision is for
    Hub ids only."""
    if config.model == TINY_MODEL or Path(config.model).is_dir():
        if config.model_revision is not None:
            raise UserError(f"model_revision is for Hub ids; {config.model} is a local model")
        if config.model != TINY_MODEL and not (Path(config.model) / "config.json").is_file():
            raise UserError(f"model {config.model} has no config.json: not a model folder")
        return
    if not is_hub_id(config.model):
        raise UserError(f"model {config.model} is neither a folder nor a Hub id (OWNER/NAME)")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    try:
        hf_hub_download(config.model, "config.json", revision=config.model_revision)
    except GatedRepoError:
        raise UserError(f"model {config.model} is gated: accept its licence on the Hub, then hf auth login") from None
    except RepositoryNotFoundError:
        raise UserError(f"model {config.model} not found on the Hub (check the id; log in for a private one)") from None
    except RevisionNotFoundError:
        raise UserError(f"model {config.model} has no revision {config.model_revision}") from None
    except LocalEntryNotFoundError:
        raise UserError(f"model {config.model} is not in the local Hugging Face cache and the Hub cannot be reached "
                        "(offline or HF_HUB_OFFLINE set)") from None
    except EntryNotFoundError:
        raise UserError(f"model {config.model} has no config.json: not a transformers model") from None
    except HfHubHTTPError as err:
        raise UserError(f"model {config.model}: {one_line(err)}") from None


def resolve_mixed_precision(config: TrainConfig) -> str:
    """The recipe's precision; for `auto`, what `accelerate launch` was told (its flag or config file), else bf16 on
    a GPU that has it and fp32 elsewhere."""
    if config.mixed_precision != "auto":
        return config.mixed_precision
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")  # set by `accelerate launch`, never by a plain run
    if launched:
        return launched.lower()
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def accelerator_kwargs(config: TrainConfig) -> dict:
    """What `train` builds its `Accelerator` with; the distributed setup itself comes from `accelerate launch`."""
    return {
        # Steps are counted here, not at the end of the data: every optimizer step gets exactly this many batches.
        "gradient_accumulation_plugin": GradientAccumulationPlugin(
            num_steps=config.gradient_accumulation_steps, sync_with_dataloader=False),
        "mixed_precision": resolve_mixed_precision(config),
        "project_dir": config.output_dir,
        "log_with": None if config.report_to == "none" else config.report_to,
    }


def give_deepspeed_the_recipe(deepspeed_config: dict, config: TrainConfig) -> None:
    """DeepSpeed accumulates and clips inside its engine: fill the Accelerate config's `auto` values from the recipe.

    A number set in the Accelerate config (or `accelerate launch --gradient_accumulation_steps`) that disagrees is
    refused: Accelerate would silently prefer it, and this loop counts micro-batches by the recipe.
    """
    for key, value in (("gradient_accumulation_steps", config.gradient_accumulation_steps),
                       ("gradient_clipping", config.max_grad_norm)):
        given = deepspeed_config.get(key, "auto")
        if given == "auto":
            deepspeed_config[key] = value
        elif given != value:
            raise UserError(f"the DeepSpeed config sets {key} {given} but the recipe says {value}: remove it from "
                            "the Accelerate config (the recipe's value reaches DeepSpeed)")


def load_model(config: TrainConfig, mixed_precision: str, attn_implementation: str):
    """The base model with LoRA adapters (or 4-bit base + LoRA, or all weights trainable)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    kwargs = {}
    # LoRA freezes the base, so it can sit in bf16; full fine-tuning keeps fp32 master weights.
    dtype = torch.bfloat16 if mixed_precision == "bf16" and config.finetuning != "full" else torch.float32
    if config.finetuning == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    model, _ = load_base(config.model, revision=config.model_revision, dtype=dtype,
                         attn_implementation=attn_implementation, **kwargs)
    if config.finetuning == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.finetuning != "full":
        _check_lora_targets(model, config.lora_target_modules)
        if config.gradient_checkpointing:
            model.enable_input_require_grads()
        # peft expands its shorthand only as a string, never inside a list.
        all_linear = config.lora_target_modules == ["all-linear"]
        model = get_peft_model(model, LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules="all-linear" if all_linear else config.lora_target_modules, task_type="CAUSAL_LM"))
    return model


def _check_lora_targets(model, targets: list[str]) -> None:
    """Each target must name modules of this model (peft matches a module's full name or its last parts)."""
    if targets == ["all-linear"]:
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
    if missing:
        linears = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                          if isinstance(module, torch.nn.Linear)})
        raise UserError(f"lora_target_modules {' '.join(missing)}: no such module in {type(model).__name__}; "
                        f"its linear layers are {' '.join(linears)} (or all-linear)")


def resolve_attention(config: TrainConfig) -> str:
    """The attention kernel to load: flex attention only on a GPU that has it, else sdpa with a dense 4-D mask."""
    if config.attn_implementation != "flex_attention":
        return config.attn_implementation
    if not torch.cuda.is_available():
        reason = "no GPU here"
    else:
        try:
            from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401

            return "flex_attention"
        except ImportError:
            reason = "this torch has no flex attention"
    warnings.warn(f"attn_implementation flex_attention: {reason}; using sdpa with a dense 4-D mask (same result, "
                  "more memory)", stacklevel=2)
    return "sdpa"


def _collator(config: TrainConfig, attn_implementation: str, mixed_precision: str):
    if not config.shared_context:
        return flattening_collator
    if attn_implementation == "flash_attention_2":
        raise UserError("shared_context needs sdpa, eager or flex_attention (flash attention takes no custom masks)")
    mask_format = {"flex_attention": "block", "eager": "additive"}.get(attn_implementation, "bool")
    compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)
    return SharedContextCollator(mask_format=mask_format, dtype=compute_dtype)


def _groups(rows, tokenizer, config: TrainConfig) -> tuple[list[Group], object]:
    return build_groups(rows, tokenizer, shared_context=config.shared_context,
                        answer_aware=config.mode == "answer-aware", max_context_tokens=config.max_context_tokens,
                        max_question_tokens=config.max_question_tokens, max_group_tokens=config.batch_tokens)


def _micro_batches(groups: list[Group], config: TrainConfig, num_processes: int) -> list[list[Group]]:
    """Every epoch's micro-batches, each epoch shuffled with its own seed, all fixed before training starts."""
    if config.max_steps > 0:
        needed = config.max_steps * config.gradient_accumulation_steps * num_processes
    batches, epoch = [], 0
    while True:
        epoch_batches = pack_groups(groups, config.batch_tokens, seed=config.seed + epoch)
        if config.max_steps > 0:
            batches += epoch_batches
            if len(batches) >= needed:
                return batches[:needed]
        else:
            share = min(1.0, config.num_epochs - epoch)
            batches += epoch_batches[: math.ceil(len(epoch_batches) * share)]
            if epoch + 1 >= config.num_epochs:
                return batches
        epoch += 1


def _loader(batches: list[list[Group]], collate) -> DataLoader:
    # Its own generator: a DataLoader draws a seed when iteration starts, which must not shift the global RNG
    # (dropout) differently in a resumed run than in an uninterrupted one.
    return DataLoader(batches, batch_size=1, shuffle=False, collate_fn=lambda items: collate(items[0]),
                      generator=torch.Generator())


def labelled_tokens(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


@torch.no_grad()
def evaluate_loss(model, batches: list[dict], device) -> float:
    """Mean validation loss per question token. Every process scores every batch, so all agree exactly."""
    model.eval()
    summed, labelled = 0.0, 0
    for batch in batches:
        summed += float(summed_token_loss(model, {k: v.to(device) for k, v in batch.items()}))
        labelled += labelled_tokens(batch)
    model.train()
    return summed / labelled


class RunLog:
    """`train_log.jsonl` (one object per logged step) and the trackers; written by the main process only."""

    def __init__(self, path: Path, accelerator: Accelerator, resumed_step: int):
        self.path, self.accelerator = path, accelerator
        if accelerator.is_main_process and path.exists():
            text = path.read_text()
            lines = text.splitlines()
            if not text.endswith("\n"):
                # A crash mid-write cut the last record; it was written after the resumed checkpoint, so it goes anyway.
                lines = lines[:-1]
            kept = [line for line in lines if json.loads(line)["step"] <= resumed_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
        if self.accelerator.is_main_process:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []


def save_model(model, tokenizer, accelerator: Accelerator, path: Path) -> None:
    """Adapter (or full model) + tokenizer, written atomically by the main process."""
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP/DeepSpeed: every process calls it
    if accelerator.is_main_process:
        with atomic_dir(path) as tmp:
            accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
    accelerator.wait_for_everyone()


def save_checkpoint(accelerator: Accelerator, output: Path, step: int, state: dict) -> None:
    """`save_state` into a temporary folder, then one rename: a crash mid-save leaves the last checkpoint whole."""
    root = output / CHECKPOINTS
    tmp = root / f".tmp-step-{step}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        os.replace(tmp, root / f"step-{step}")
        for old in sorted(_checkpoints(output))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(root / f"step-{old}")
    accelerator.wait_for_everyone()


def _checkpoints(output: Path) -> list[int]:
    root = output / CHECKPOINTS
    return sorted(int(p.name.split("-")[1]) for p in root.glob("step-*")) if root.is_dir() else []


def _move_final_to_top(output: Path) -> None:
    """The final adapter lives at the top of the run folder; its config moves last, so a loadable adapter is whole."""
    final = output / FINAL
    files = sorted(final.iterdir(), key=lambda p: p.name == "adapter_config.json")
    for file in files:
        os.replace(file, output / file.name)
    final.rmdir()


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train as `config` says; returns the output folder (final adapter at its top, best adapter in `best/`)."""
    check_config(config, resume)
    output = Path(config.output_dir)
    kwargs = accelerator_kwargs(config)
    mixed_precision = kwargs["mixed_precision"]
    accelerator = Accelerator(**kwargs)
    if accelerator.state.deepspeed_plugin is not None:
        give_deepspeed_the_recipe(accelerator.state.deepspeed_plugin.deepspeed_config, config)
    set_seed(config.seed)

    dataset = load_qg_dataset(config.dataset, "pairs")
    tokenizer = load_tokenizer(config.model, config.model_revision)
    train_groups, stats = _groups(dataset["train"], tokenizer, config)
    eval_rows = dataset["validation"].select(range(min(config.max_eval_samples, len(dataset["validation"]))))
    eval_groups, _ = _groups(eval_rows, tokenizer, config)
    if not train_groups:
        raise UserError(f"dataset {config.dataset} has no usable training questions")
    attn_implementation = resolve_attention(config)
    collate = _collator(config, attn_implementation, mixed_precision)
    train_loader = _loader(_micro_batches(train_groups, config, accelerator.num_processes), collate)
    eval_batches = [collate(batch) for batch in pack_groups(eval_groups, config.batch_tokens)]

    model = load_model(config, mixed_precision, attn_implementation)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_process = len(train_loader) // config.gradient_accumulation_steps
    total_steps = min(config.max_steps, steps_per_process) if config.max_steps > 0 else steps_per_process
    if total_steps == 0:
        raise UserError("too little data for one optimizer step: lower batch_tokens or gradient_accumulation_steps")
    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=round(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    # Not `prepare`d: a prepared scheduler steps once per process per step; this one steps once per optimizer step.
    accelerator.register_for_checkpointing(scheduler)

    # One training per folder at a time, as for evaluation: the main process holds the folder (`qg.io.folder_lock`).
    with folder_lock(output) if accelerator.is_main_process else contextlib.nullcontext():
        if accelerator.is_main_process:
            atomic_write_text(output / "train_config.yaml", config_to_yaml(config))
        state = {"step": 0, "tokens": 0, "best_eval_loss": None}
        if resume and _checkpoints(output):
            last = output / CHECKPOINTS / f"step-{_checkpoints(output)[-1]}"
            accelerator.load_state(str(last))
            state = json.loads((last / "trainer_state.json").read_text())
        log = RunLog(output / "train_log.jsonl", accelerator, state["step"])
        accelerator.init_trackers("qg", config={k: str(v) for k, v in asdict(config).items()})
        accelerator.print(f"train: {stats.questions} questions in {len(train_groups)} groups "
                          f"({stats.truncated_contexts} truncated contexts, {stats.dropped_long_questions} "
                          f"questions over {config.max_question_tokens} tokens dropped); {total_steps} optimizer "
                          "steps on "
                          f"{accelerator.num_processes} process{'es' if accelerator.num_processes > 1 else ''}")

        batches = accelerator.skip_first_batches(train_loader, state["step"] * config.gradient_accumulation_steps)
        batch_iter = iter(batches)
        progress = tqdm(total=total_steps, initial=state["step"], desc="training", unit="step",
                        disable=not accelerator.is_local_main_process)
        model.train()
        end_of_turn = end_of_turn_id(tokenizer)  # one per question: counts questions trained
        window = torch.zeros(4, dtype=torch.float64)  # summed loss, labelled tokens, all tokens, questions
        window_start = time.perf_counter()
        while state["step"] < total_steps:
            micro = [next(batch_iter) for _ in range(config.gradient_accumulation_steps)]
            local = torch.tensor(sum(labelled_tokens(b) for b in micro), device=accelerator.device)
            step_labelled = int(accelerator.reduce(local, reduction="sum"))
            for batch in micro:
                with accelerator.accumulate(model):
                    summed = summed_token_loss(model, batch)
                    # Token-level mean over the whole optimizer step on all processes: `backward` divides by the
                    # accumulation steps and DDP averages over processes, so both are multiplied back in.
                    loss = (summed * config.gradient_accumulation_steps * accelerator.num_processes
                            / max(step_labelled, 1))
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        if config.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad()
                window += torch.tensor([float(summed.detach()), labelled_tokens(batch), batch["input_ids"].numel(),
                                        int((batch["labels"] == end_of_turn).sum())])
            state["step"] += 1
            progress.update(1)
            step = state["step"]
            eval_now = config.eval_steps > 0 and (step % config.eval_steps == 0 or step == total_steps)
            if step % config.logging_steps == 0 or eval_now or step == total_steps:
                summed_loss, labelled, tokens, questions = accelerator.reduce(
                    window.to(accelerator.device), reduction="sum").tolist()
                elapsed = time.perf_counter() - window_start
                state["tokens"] += int(tokens)
                record = {"step": step, "loss": summed_loss / labelled, "lr": scheduler.get_last_lr()[0],
                          "tokens": state["tokens"], "tokens_per_second": tokens / elapsed,
                          "questions_per_second": questions / elapsed}
                if eval_now:
                    record["eval_loss"] = evaluate_loss(model, eval_batches, accelerator.device)
                    if state["best_eval_loss"] is None or record["eval_loss"] < state["best_eval_loss"]:
                        state["best_eval_loss"] = record["eval_loss"]
                        save_model(model, tokenizer, accelerator, output / "best")
                log.write(record)
                progress.set_postfix(loss=f"{record['loss']:.3f}")
                window.zero_()
                window_start = time.perf_counter()
            if config.save_steps > 0 and step % config.save_steps == 0 and step < total_steps:
                save_checkpoint(accelerator, output, step, state)
        progress.close()

        save_model(model, tokenizer, accelerator, output / FINAL)
        if accelerator.is_main_process:
            _move_final_to_top(output)
            plot_loss_curve(log.records(), output / "loss_curve.png")
        accelerator.end_training()
    return output


@command
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    resume = "--resume" in argv
    config, _ = parse_config(TrainConfig, [a for a in argv if a != "--resume"], description=__doc__ + (
        "\n--resume: continue the run in output_dir from its last checkpoint (same config required)."))
    output = train(config, resume=resume)
    print(f"adapter, logs and loss curve in {output}")


if __name__ == "__main__":
    main()
