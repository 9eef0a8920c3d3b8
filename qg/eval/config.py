"""The evaluation recipe: every field a key of an evaluation YAML recipe (configs/eval-*.yaml) and a flag of
qg-evaluate / evaluate_qg.py, parsed by `qg.config.parse_config` as the training recipe is."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Literal

from qg.generate import DEFAULTS, QuestionGenerator

# Decoding defaults are QuestionGenerator's own: an evaluation samples as the product does, from one definition.
GENERATION_DEFAULTS = {name: parameter.default
                       for name, parameter in inspect.signature(QuestionGenerator.generate).parameters.items()
                       if parameter.default is not inspect.Parameter.empty}
MAX_CONTEXT_TOKENS = DEFAULTS.max_context_tokens


@dataclass
class EvalConfig:
    # What to evaluate, on what, and where the results go.
    model: str | None = field(
        default=None,
        metadata={"help": "LoRA adapter folder or Hub id (base from its adapter_config.json), or a plain model "
                          "(folder, Hub id, or tiny-random-exaone). Needs --dataset."},
    )
    predictions: str | None = field(
        default=None,
        metadata={"help": 'Score existing predictions instead of --model: a JSONL file, one {"prediction": str, '
                          '"references": [str, ...], "context": str (optional)} per line. No model is loaded.'},
    )
    base: str | None = field(default=None, metadata={"help": "Base model for the adapter, overriding its "
                                                             "adapter_config.json."})
    dataset: str | None = field(default=None, metadata={"help": "Dataset built by hub_dataset/build_dataset.py "
                                                                "(folder or Hub id)."})
    split: str = field(default="test", metadata={"help": "Split to evaluate (test: the official KorQuAD dev set)."})
    output_dir: str | None = field(default=None, metadata={"help": "Where metrics.json and after_outputs.json go "
                                                                   "(required)."})
    mode: Literal["agnostic", "answer-aware"] = field(
        default="agnostic",
        metadata={"help": "agnostic: N sampled questions per paragraph vs all its gold questions (the product). "
                          "answer-aware: one greedy question per answer, QG-Bench's protocol."},
    )
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N paragraphs."})
    compare_base: bool = field(default=False, metadata={"help": "Also generate with the base model alone and score "
                                                                "it (before/after)."})
    # Decoding.
    num_questions: int = field(default=GENERATION_DEFAULTS["num_questions"],
                               metadata={"help": "Questions per paragraph (agnostic)."})
    temperature: float = field(default=GENERATION_DEFAULTS["temperature"],
                               metadata={"help": "Sampling temperature, >= 0 (agnostic; 0 decodes greedily)."})
    top_p: float = field(default=GENERATION_DEFAULTS["top_p"], metadata={"help": "Nucleus top-p in (0, 1] "
                                                                                 "(agnostic)."})
    max_new_tokens: int = field(default=GENERATION_DEFAULTS["max_new_tokens"],
                                metadata={"help": "Longest question in tokens."})
    seed: int = field(default=GENERATION_DEFAULTS["seed"],
                      metadata={"help": "Sampling seed; each batch of paragraphs draws from a seed derived from it."})
    batch_size: int = field(default=GENERATION_DEFAULTS["batch_size"],
                            metadata={"help": "Paragraphs generated together."})
    # Scoring.
    bertscore_model: str | None = field(default=None, metadata={"help": "Local model folder for BERTScore "
                                                                        "(skipped without it)."})


# What the predictions depend on: a resumed evaluation must agree with run.json on these.
OUTPUT_ONLY_FIELDS = ("output_dir", "predictions", "bertscore_model")
