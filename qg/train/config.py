"""The training recipe: every field a key of configs/*.yaml and a flag of qg-train / train.py."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from qg.cli import UserError

# The recipes (configs/ in a checkout) are package data, so the demo runs from an installed package too.
RECIPES_DIR = Path(str(importlib.resources.files("qg") / "configs"))
# transformers.get_scheduler's schedules that need nothing beyond the warmup and total steps the loop gives them.
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")


@dataclass
class TrainConfig:
    # What to train on what.
    model: str = field(
        default="tiny-random-exaone",
        metadata={"help": "Base model: an EXAONE-3.5 Hub id or folder (converted to Llama format once), any model "
                          "transformers supports natively, or 'tiny-random-exaone' (built offline, for CPU runs)."},
    )
    model_revision: str | None = field(
        default=None, metadata={"help": "Hub revision of model (branch, tag or commit); default: the main branch."},
    )
    dataset: str = field(
        default="outputs/demo/dataset",
        metadata={"help": "Dataset built by hub_dataset/build_dataset.py: a local folder or a Hub id."},
    )
    output_dir: str = field(default="outputs/run", metadata={"help": "Where the adapter, logs and checkpoints go."})
    mode: Literal["agnostic", "answer-aware"] = field(
        default="agnostic",
        metadata={"help": "agnostic: paragraph -> question; answer-aware: (paragraph, answer) -> question."},
    )
    # How to fine-tune.
    finetuning: Literal["lora", "qlora", "full"] = field(
        default="lora", metadata={"help": "lora, qlora (4-bit base, bitsandbytes, GPU only) or full fine-tuning."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "Modules that get LoRA adapters.", "nargs": "+"},
    )
    # Optimisation.
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler: str = field(default="cosine", metadata={"help": f"One of {', '.join(LR_SCHEDULERS)}."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Share of the optimizer steps spent warming up."})
    num_epochs: float = field(default=1.0, metadata={"help": "Passes over the train split (ignored if max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; -1 means num_epochs passes."})
    batch_tokens: int = field(
        default=8192, metadata={"help": "Token budget of one micro-batch per process (padding-free packing)."},
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step (DeepSpeed gets it from here too)."},
    )
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Gradient clipping norm; 0 disables clipping (DeepSpeed gets it from here too)."},
    )
    # Sequences.
    max_context_tokens: int = field(
        default=1024, metadata={"help": "Paragraph budget in tokens; longer ones are cut at a sentence boundary."},
    )
    max_question_tokens: int = field(default=64, metadata={"help": "Questions longer than this are dropped."})
    shared_context: bool = field(
        default=False,
        metadata={"help": "Encode each paragraph once with all its questions as branches (same loss, fewer tokens)."},
    )
    # Hardware.
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = field(
        default="auto",
        metadata={"help": "auto: what `accelerate launch` was given (--mixed_precision or its config file); run "
                          "directly, bf16 on a GPU that supports it and fp32 on CPU. A set value always applies."},
    )
    attn_implementation: Literal["sdpa", "eager", "flex_attention", "flash_attention_2"] = field(
        default="sdpa", metadata={"help": "Attention kernel; flex_attention/flash_attention_2 need a GPU."},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    # Bookkeeping.
    seed: int = field(default=0, metadata={"help": "Seed for model init, LoRA init, shuffling and dropout."})
    logging_steps: int = field(default=10, metadata={"help": "Log train loss every N optimizer steps."})
    eval_steps: int = field(default=100, metadata={"help": "Validation loss every N optimizer steps (0: never)."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every N optimizer steps (0: never)."})
    max_eval_samples: int = field(default=512, metadata={"help": "Validation questions used for eval loss."})
    report_to: Literal["tensorboard", "wandb", "none"] = field(
        default="tensorboard", metadata={"help": "Experiment tracker (TensorBoard writes offline files)."},
    )

    def __post_init__(self) -> None:
        """Refuse a value no run can use, wherever it comes from (recipe, flag, code), before anything is loaded."""
        positive = ("lora_r", "lora_alpha", "learning_rate", "num_epochs", "batch_tokens", "gradient_accumulation_steps",
                    "max_context_tokens", "max_question_tokens", "logging_steps", "max_eval_samples")
        for name in positive:
            if not getattr(self, name) > 0:  # `not >` also refuses NaN
                raise UserError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "max_grad_norm", "eval_steps", "save_steps"):
            if not getattr(self, name) >= 0:
                raise UserError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not 0 <= self.lora_dropout < 1:
            raise UserError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio <= 1:
            raise UserError(f"warmup_ratio is a share of the steps, in [0, 1]; got {self.warmup_ratio}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise UserError(f"max_steps must be positive, or -1 for num_epochs passes; got {self.max_steps}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise UserError(f"lr_scheduler {self.lr_scheduler!r} is not one of {', '.join(LR_SCHEDULERS)}")
        if not self.lora_target_modules:
            raise UserError("lora_target_modules is empty: name the modules that get adapters, e.g. q_proj v_proj")
