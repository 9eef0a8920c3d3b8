"""lighteval task `korquad_qg`: `evaluate_qg.py --mode answer-aware` run by lighteval, with the same numbers.

One greedy question per (paragraph, answer) of the dataset's `pairs` config, prompted by `qg.prompt`, scored by
`qg.metrics` with QG-Bench's protocol (answers grouped by their sentence, `qg.eval.runner.answer_sentence`):
bleu1-4, rougeL, meteor as QG-Bench computes them, and Korean-aware bleu_morpheme and chrf.

A LoRA adapter is evaluated merged into its base (lighteval's own adapter loader cannot load our EXAONE base, see
below); `qg-export --merged` folds it into the base, loaded as everything else here loads it (EXAONE converted to
Llama format), and saves a plain Llama checkpoint:

    qg-export outputs/adapter --merged outputs/merged

    QG_LIGHTEVAL_MODEL=outputs/merged QG_LIGHTEVAL_DATASET=ORG/korquad-qg \
    qg-lighteval accelerate \
        "model_name=outputs/merged,dtype=bfloat16,batch_size=1,override_chat_template=false,add_special_tokens=false" \
        korquad_qg --custom-tasks qg.eval.lighteval_task --output-dir outputs/lighteval

It reports what this reports on the same merged model:

    python evaluate_qg.py --model outputs/merged --dataset ORG/korquad-qg --mode answer-aware --batch-size 1 \
        --output-dir outputs/eval-qgbench

Environment: QG_LIGHTEVAL_MODEL, the model whose tokenizer writes the prompts (the `model_name` given to
lighteval); QG_LIGHTEVAL_DATASET, a folder built by hub_dataset/build_dataset.py or its Hub id; QG_LIGHTEVAL_SPLIT,
the split to score (default: test). lighteval builds every prompt before it loads the model, so the task has to be
told which tokenizer's chat template and token budget to use.

What makes lighteval's numbers equal ours (tests/test_lighteval_task.py checks it on a tiny model):
- The prompt is `qg.prompt.encode_prompt`'s ids. The doc's query is those ids decoded, checked to tokenize back to
  them; `override_chat_template=false` stops lighteval wrapping it in the chat template a second time and
  `add_special_tokens=false` stops it adding a BOS that `apply_chat_template` does not add. Each response's input
  ids are compared with the expected ones, so a missing option, a prompt lighteval truncated, or a cached
  generation for another prompt fails loudly.
- Decoding is greedy (lighteval's default temperature 0), at most `MAX_NEW_TOKENS`, until the end-of-turn token.
- The prediction is what `QuestionGenerator` keeps: the text before the end-of-turn token, decoded from the output
  ids (lighteval's own text drops special tokens); no end of turn, or a question `qg.quality` rejects, scores as
  an empty prediction, as in evaluate_qg.py.
- lighteval shuffles the docs; the corpus metric restores the dataset order, because QG-Bench keeps the first
  prediction of each answer sentence.
- Not comparable: `--max-samples` (lighteval takes random pairs, evaluate_qg.py the first paragraphs). Batches
  above 1 pad prompts, which in bf16 can flip a near-tied greedy token now and then, in either program.
- lighteval caches generations by model arguments, not weights, in `cache_dir`/`model_name` (for an absolute
  `model_name`, inside the model folder itself): merge a retrained adapter into a new folder.

lighteval 0.13 problems met here, and the way around each:
- Its registry imports every built-in task module before the custom ones, and some fail on import: tiny_benchmarks
  downloads a file (no network: ConnectionError), mt_bench and mix_eval call `HfApi.list_models(model_name=...)`,
  which our huggingface_hub 2.4 rejects (TypeError, network or not). So `lighteval accelerate` fails before it
  reads `--custom-tasks`. `qg-lighteval` is the `lighteval` command with `custom_tasks_only()` in
  force: the registry loads the `--custom-tasks` module alone. Python callers wrap `Pipeline(...)` in it.
- Its adapter loader (`adapter_weights=true`) insists on peft==0.3.0, which predates transformers 5; past that it
  reads a config field that does not exist (`config.pretrained`) and loads the base with `AutoModelForCausalLM`
  in float16, which cannot load an EXAONE checkpoint on transformers 5 (no native EXAONE, its remote code
  breaks). The adapter is merged by our loader instead (above) and lighteval loads a plain Llama model.
- A corpus metric's aggregation is pickled for the bootstrap's process pool, which fails for classes of a module
  lighteval loaded from a file path. Here the classes live in this importable module (pass
  `--custom-tasks qg.eval.lighteval_task`, the module name), and the one aggregation returns every score at once as a
  dict, which lighteval takes as final: no bootstrap (1000 rescorings, each starting a METEOR jar) and no stderr,
  as QG-Bench reports none.
- Its details logger hashes text with xxhash, which from version 4 takes bytes only ("Strings must be encoded
  before hashing"): requirements.txt pins xxhash 3.
- Importing its transformers backend (`lighteval.pipeline`) runs `torch.set_grad_enabled(False)` for the whole
  process: Python callers that train afterwards restore the mode.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qg.cli import UserError
from qg.data.schema import SAMPLE_BUILD_COMMAND, data_file_pattern
from qg.eval.config import GENERATION_DEFAULTS, MAX_CONTEXT_TOKENS
from qg.eval.metrics import group_by_sentence, korean_scores, qgbench_scores
from qg.eval.runner import answer_sentence
from qg.generate import select_questions, text_before_end_of_turn
from qg.models.loading import load_tokenizer
from qg.prompt import encode_prompt, end_of_turn_id

# Every workaround above reads or patches lighteval internals of this release (Registry.load_all_task_configs and
# _extract_configs, a corpus aggregation returning a dict, ModelResponse's token fields): another release can break
# them silently, so it is refused before any of them is imported.
SUPPORTED_LIGHTEVAL = "0.13"


def check_lighteval_version() -> None:
    """Raise ImportError naming the supported release when the installed lighteval is another one."""
    installed = importlib.metadata.version("lighteval")
    if installed.split(".")[:2] != SUPPORTED_LIGHTEVAL.split("."):
        raise ImportError(f"qg.eval.lighteval_task works with lighteval {SUPPORTED_LIGHTEVAL}.x, whose internals it "
                          f"patches; lighteval {installed} is installed: "
                          f"pip install 'lighteval=={SUPPORTED_LIGHTEVAL}.*'")


check_lighteval_version()

from lighteval.metrics.metrics_corpus import CorpusLevelComputation
from lighteval.metrics.metrics_sample import SampleLevelComputation
from lighteval.metrics.utils.metric_utils import CorpusLevelMetricGrouping
from lighteval.models.model_output import ModelResponse
from lighteval.tasks.lighteval_task import LightevalTaskConfig
from lighteval.tasks.registry import Registry
from lighteval.tasks.requests import Doc, SamplingMethod

TASK_NAME = "korquad_qg"
# evaluate_qg.py's decoding length and paragraph budget, both QuestionGenerator's defaults.
MAX_NEW_TOKENS = GENERATION_DEFAULTS["max_new_tokens"]
QGBENCH_NAMES = ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "meteor")
KOREAN_NAMES = ("bleu_morpheme", "chrf")
METRIC_NAMES = QGBENCH_NAMES + KOREAN_NAMES
PAIRS_CONFIG = "pairs"  # one row per (paragraph, answer, gold question): one row, one doc


@functools.cache
def prompt_tokenizer(model: str):
    """The tokenizer of `model` (a folder, Hub id or 'tiny-random-exaone'), loaded once per process."""
    return load_tokenizer(model)


def korquad_qg_doc(line: dict, task_name: str, model: str) -> Doc:
    """A `pairs` row as a doc: `encode_prompt`'s ids as text, the gold question, and what scoring needs."""
    tokenizer = prompt_tokenizer(model)
    prompt_ids = encode_prompt(tokenizer, line["context"], line["answer"], MAX_CONTEXT_TOKENS).input_ids
    query = tokenizer.decode(prompt_ids, clean_up_tokenization_spaces=False)
    # lighteval tokenizes the query again; it must come back as the very same ids.
    if tokenizer(query, add_special_tokens=False)["input_ids"] != prompt_ids:
        raise ValueError(f"row {line['__index']}: the prompt text of {model}'s tokenizer does not tokenize back to "
                         "encode_prompt's ids")
    return Doc(
        task_name=task_name,
        query=query,
        choices=[line["question"]],
        gold_index=0,
        specific={"row": line["__index"], "prompt_ids": prompt_ids, "context": line["context"],
                  "sentence": answer_sentence(line["context"], line["answer_start"])},
    )


class GeneratedQuestion(SampleLevelComputation):
    """One doc's prediction as QuestionGenerator keeps it, with what the corpus score needs; under every name of
    the grouping, whose single aggregation scores them all."""

    def __init__(self, model: str):
        self.model = model

    def compute(self, doc: Doc, model_response: ModelResponse, **kwargs) -> dict[str, dict]:
        tokenizer = prompt_tokenizer(self.model)
        _check_prompt(doc, model_response, tokenizer.eos_token_id)
        candidate = text_before_end_of_turn(tokenizer, [int(t) for t in model_response.output_tokens[0]])
        kept, _ = select_questions([candidate], doc.specific["context"], 1)
        item = {"row": doc.specific["row"], "prediction": kept[0] if kept else "", "question": doc.choices[0],
                "sentence": doc.specific["sentence"]}
        return dict.fromkeys(METRIC_NAMES, item)


def _check_prompt(doc: Doc, model_response: ModelResponse, pad_token_id: int) -> None:
    """The model must have been given `encode_prompt`'s ids (lighteval pads batches with EOS)."""
    received = [int(t) for t in model_response.input_tokens]
    expected = doc.specific["prompt_ids"]
    start = next((i for i, t in enumerate(received) if t != pad_token_id), len(received))
    end = start + len(expected)
    if received[start:end] != expected or any(t != pad_token_id for t in received[end:]):
        raise ValueError(f"doc {doc.specific['row']}: the model was not given qg.prompt's ids; pass "
                         "override_chat_template=false,add_special_tokens=false in the model arguments (and keep the "
                         "prompt within the model's max_length)")


class QGBenchCorpusScores(CorpusLevelComputation):
    """Every score at once, in dataset order: QG-Bench's grouping by answer sentence, then qg.eval.metrics."""

    def compute_corpus(self, items: list[dict]) -> dict[str, float]:
        items = sorted(items, key=lambda item: item["row"])
        grouped = group_by_sentence([i["prediction"] for i in items], [i["question"] for i in items],
                                    [i["sentence"] for i in items])
        predictions = [record["prediction"] for record in grouped]
        references = [record["references"] for record in grouped]
        scores = {**qgbench_scores(predictions, references), **korean_scores(predictions, references)}
        # METEOR is None without Java; lighteval's table needs a number.
        return {name: math.nan if scores[name] is None else scores[name] for name in METRIC_NAMES}


def korquad_qg_config(model: str, dataset: str, split: str = "test") -> LightevalTaskConfig:
    """The task for prompts written by `model`'s tokenizer, on `split` of `dataset` (a built folder or Hub id)."""
    folder = Path(dataset).expanduser()
    if folder.is_dir():
        # The parquet folder itself, not the dataset folder: `load_dataset(folder, name)` caches a local folder by
        # its README alone and returns stale rows after a rebuild; files found by their names are cached by mtime.
        pairs = folder / Path(data_file_pattern(PAIRS_CONFIG, split)).parent
        if not pairs.is_dir():
            raise UserError(f"{folder} holds no {pairs.relative_to(folder)}: build the dataset with: "
                            + SAMPLE_BUILD_COMMAND.format(output_dir=folder))
        hf_repo, hf_subset = str(pairs), "default"
    else:
        hf_repo, hf_subset = dataset, PAIRS_CONFIG
    tokenizer = prompt_tokenizer(model)
    end = end_of_turn_id(tokenizer)
    return LightevalTaskConfig(
        name=TASK_NAME,
        prompt_function=functools.partial(korquad_qg_doc, model=model),
        hf_repo=hf_repo,
        hf_subset=hf_subset,
        evaluation_splits=[split],
        metrics=[CorpusLevelMetricGrouping(
            metric_name=list(METRIC_NAMES),
            higher_is_better=dict.fromkeys(METRIC_NAMES, True),
            category=SamplingMethod.GENERATIVE,
            sample_level_fn=GeneratedQuestion(model),
            corpus_level_fn=dict.fromkeys(METRIC_NAMES, QGBenchCorpusScores()),
        )],
        generation_size=MAX_NEW_TOKENS,
        # lighteval always stops at EOS; a chat template whose turn ends otherwise (Gemma) needs that token too.
        # A list, not a tuple: lighteval appends it to a list of stop strings.
        stop_sequence=[] if end == tokenizer.eos_token_id else [tokenizer.convert_ids_to_tokens(end)],
    )


def __getattr__(name: str) -> list[LightevalTaskConfig]:
    # TASKS_TABLE is what lighteval reads; built on first access from the environment, so importing this module
    # (the launcher below, tests) needs none.
    if name != "TASKS_TABLE":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    missing = [var for var in ("QG_LIGHTEVAL_MODEL", "QG_LIGHTEVAL_DATASET") if not os.environ.get(var)]
    if missing:
        raise UserError(f"the {TASK_NAME} task needs {' and '.join(missing)}: the model whose tokenizer writes the "
                        "prompts, and the dataset folder or Hub id (see qg/eval/lighteval_task.py)")
    return [korquad_qg_config(os.environ["QG_LIGHTEVAL_MODEL"], os.environ["QG_LIGHTEVAL_DATASET"],
                              os.environ.get("QG_LIGHTEVAL_SPLIT", "test"))]


def _custom_task_configs(custom_tasks=None, load_multilingual: bool = False) -> dict[str, LightevalTaskConfig]:
    """`Registry.load_all_task_configs` without the built-in tasks."""
    if custom_tasks is None:
        return {}
    return Registry._extract_configs(Registry.create_custom_tasks_module(custom_tasks))


@contextmanager
def custom_tasks_only() -> Iterator[None]:
    """lighteval's registry, while in force, loads the `--custom-tasks` module alone (see the module docstring)."""
    builtin = Registry.__dict__["load_all_task_configs"]
    Registry.load_all_task_configs = staticmethod(_custom_task_configs)
    try:
        yield
    finally:
        Registry.load_all_task_configs = builtin


def main() -> None:
    """The `lighteval` command line with only `--custom-tasks` registered (see the module docstring)."""
    from lighteval.__main__ import app

    with custom_tasks_only():
        app()


if __name__ == "__main__":
    main()
