"""The adapter's model card (README.md): Hub metadata and a body rendered from a run folder and an evaluation folder.

    from qg.hub.model_card import read_evaluation, read_run, write_model_card
    write_model_card(Path("README.md"), read_run("outputs/demo/adapter"), read_evaluation("outputs/demo/eval"),
                     model_repo="ORG/tiny-qg-lora", base_model="ORG/tiny-random-exaone-llama",
                     dataset_repo="ORG/korquad-qg-sample", space_repo="ORG/korean-qg-demo")

Every number on the card is read from what training and evaluation wrote (train_config.yaml, train_log.jsonl,
metrics.json, after_outputs.json) and the prompt strings come from `qg.prompt`, so the card cannot drift from the
model it describes. The layout is model_card/template.md, rendered by `huggingface_hub.ModelCard.from_template`.
"""

from __future__ import annotations

import datetime
import importlib.resources
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData, metadata_load

from qg.cli import UserError
from qg.data.korquad import KORQUAD_HUB_ID
from qg.eval.metrics import COVERAGE_CHRF
from qg.io import is_hub_id
from qg.models.tiny import TINY_MODEL
from qg.prompt import SYSTEM_PROMPT, USER_TEMPLATES

TEMPLATE_PATH = Path(str(importlib.resources.files("qg.hub") / "templates" / "model_card.md"))
# The LICENSE file of every repository holding EXAONE-derived weights (the license's own text cannot be fetched).
EXAONE_LICENSE_FILE = Path(str(importlib.resources.files("qg.hub") / "templates" / "EXAONE_LICENSE.md"))
# Where the project's code lives, as the cards link it.
SOURCE_REPOSITORY = "https://github.com/ORG/korean-qg"
# The libraries whose versions the card lists; training records peft's in adapter_config.json.
FRAMEWORKS = ("torch", "transformers", "peft", "accelerate")
# Keys transformers writes into a saved tokenizer_config.json that describe how this machine loaded it.
LOCAL_TOKENIZER_KEYS = ("is_local", "local_files_only")
EXAONE_HUB_ID = "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct"
EXAONE_LICENSE = {"license": "other", "license_name": "exaone",
                  "license_link": f"https://huggingface.co/{EXAONE_HUB_ID}/blob/main/LICENSE"}
TAGS = ["question-generation", "korean", "lora", "peft"]
TASK = {"task_type": "text-generation", "task_name": "Question Generation"}
# Written for this card (not from KorQuAD), so the card's usage example quotes no licensed text.
EXAMPLE_PARAGRAPH = (
    "경복궁은 1395년 조선의 첫 임금인 태조가 한양에 세운 궁궐이다. 임진왜란 때 불에 타 오랫동안 폐허로 남아 "
    "있다가 1867년 흥선대원군의 주도로 다시 지어졌다. 오늘날에는 근정전과 경회루 같은 건물이 복원되어 많은 "
    "관광객이 찾는다."
)
EXAMPLE_ANSWER = "1395년"
NUM_SAMPLES = 5
# The run files the card reads; publish uploads them next to it.
RUN_FILES = ("adapter_config.json", "adapter_model.safetensors", "train_config.yaml", "train_log.jsonl",
             "loss_curve.png")
EVAL_FILES = ("metrics.json", "after_outputs.json")
_GIT_SHA = re.compile(r"[0-9a-f]{40}")


class Score(NamedTuple):
    label: str  # the row's name on the card
    path: tuple[str, ...]  # keys into the scores of metrics.json (the top level, or its "base")
    metric_type: str | None  # the model-index metric id for headline scores; None: on the card only


AGNOSTIC_SCORES = [
    Score("best-match chrF, precision", ("recommendation", "best_match", "chrf", "precision"), "chrf"),
    Score("best-match chrF, recall", ("recommendation", "best_match", "chrf", "recall"), "chrf"),
    Score("best-match morpheme BLEU, precision", ("recommendation", "best_match", "bleu_morpheme", "precision"), None),
    Score("best-match morpheme BLEU, recall", ("recommendation", "best_match", "bleu_morpheme", "recall"), None),
    Score(f"coverage (gold questions matched at chrF ≥ {COVERAGE_CHRF:g})", ("recommendation", "coverage"),
          "coverage"),
    Score("distinct-1 (morphemes)", ("recommendation", "distinct1"), None),
    Score("distinct-2 (morphemes)", ("recommendation", "distinct2"), None),
    Score("self-BLEU (lower: more varied)", ("recommendation", "self_bleu"), None),
    Score("near-duplicate rate", ("recommendation", "near_duplicate_rate"), None),
    Score("grounding in the paragraph", ("recommendation", "grounding"), None),
    Score("degenerate rate", ("recommendation", "degenerate_rate"), "degenerate_rate"),
]
# QG-Bench's columns: (label, key in metrics.json's "qgbench" and "qgbench_reference", model-index metric id).
QGBENCH_COLUMNS = [("BLEU-4", "bleu4", "bleu"), ("METEOR", "meteor", "meteor"), ("ROUGE-L", "rougeL", "rouge")]
ANSWER_AWARE_SCORES = [
    *[Score(f"{label} (QG-Bench)", ("qgbench", key), metric) for label, key, metric in QGBENCH_COLUMNS],
    *[Score(f"BLEU-{n} (QG-Bench)", ("qgbench", f"bleu{n}"), None) for n in (1, 2, 3)],
    Score("corpus BLEU over MeCab-ko morphemes", ("korean", "bleu_morpheme"), None),
    Score("corpus chrF", ("korean", "chrf"), "chrf"),
    Score("degenerate rate", ("quality", "degenerate_rate"), None),
    Score("distinct-1 (morphemes)", ("quality", "distinct1"), None),
    Score("distinct-2 (morphemes)", ("quality", "distinct2"), None),
    Score("grounding in the paragraph", ("quality", "grounding"), None),
    Score("BERTScore F1", ("bertscore", "f1"), None),
]
SCORES = {"agnostic": AGNOSTIC_SCORES, "answer-aware": ANSWER_AWARE_SCORES}
# Without these metrics.json is not an evaluation the card can describe.
METRICS_KEYS = ("model", "base_model", "dataset", "split", "mode", "decoding", "seed", "counts", "qgbench_reference")


@dataclass
class TrainingRun:
    """What train.py wrote to a run folder and the card reports."""

    path: Path
    config: dict  # train_config.yaml
    adapter_config: dict
    log: list[dict]  # train_log.jsonl

    @property
    def is_tiny(self) -> bool:
        return self.config["model"] == TINY_MODEL


@dataclass
class Evaluation:
    """What evaluate_qg.py wrote to an evaluation folder."""

    path: Path
    metrics: dict
    samples: list[dict]  # after_outputs.json


def read_run(path: str | Path) -> TrainingRun:
    """The run folder's config, adapter config and log; a folder that is no finished LoRA run is a `UserError`."""
    path = Path(path)
    if not (path / "train_config.yaml").is_file():
        raise UserError(f"{path} is not a training run folder (no train_config.yaml): pass train.py's --output_dir")
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"{path} holds no LoRA adapter (no adapter_config.json): only LoRA/QLoRA runs are published, "
                        "and only once training has finished")
    missing = [name for name in RUN_FILES if not (path / name).is_file()]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: is the run finished?")
    config = yaml.safe_load((path / "train_config.yaml").read_text(encoding="utf-8"))
    log = [json.loads(line) for line in (path / "train_log.jsonl").read_text(encoding="utf-8").splitlines() if line]
    if not log:
        raise UserError(f"{path}/train_log.jsonl is empty: the run logged no step")
    return TrainingRun(path, config, json.loads((path / "adapter_config.json").read_text()), log)


def read_evaluation(path: str | Path) -> Evaluation:
    """metrics.json and after_outputs.json; missing files, keys or scores are a `UserError` (nothing to report)."""
    path = Path(path)
    missing = [name for name in EVAL_FILES if not (path / name).is_file()]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: run evaluate_qg.py --output-dir {path} first")
    try:
        metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        samples = json.loads((path / "after_outputs.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: metrics.json or after_outputs.json is not JSON ({err})") from None
    absent = [key for key in METRICS_KEYS if key not in metrics]
    if absent or metrics.get("mode") not in SCORES:
        raise UserError(f"{path}/metrics.json is not a model evaluation by evaluate_qg.py --model (missing "
                        f"{', '.join(absent) or 'an agnostic or answer-aware mode'})")
    if not any(score_value(metrics, s.path) is not None for s in SCORES[metrics["mode"]] if s.metric_type):
        raise UserError(f"{path}/metrics.json has no headline score (the model produced no accepted question?): "
                        "nothing to report as evaluation results")
    if not samples:
        raise UserError(f"{path}/after_outputs.json holds no sample")
    return Evaluation(path, metrics, samples)


def score_value(scores: dict | None, path: tuple[str, ...]) -> float | None:
    """The score at `path`, or None where metrics.json has none (no Java for METEOR, no BERTScore model, ...)."""
    for key in path:
        if not isinstance(scores, dict):
            return None
        scores = scores.get(key)
    return scores


def usage_decoding(mode: str, metrics: dict) -> dict:
    """Decoding for the card's transformers example: the evaluation's when it decoded in the trained mode (sampled
    for agnostic, greedy for answer-aware), else `QuestionGenerator.generate`'s defaults."""
    from qg.generate import QuestionGenerator

    defaults = {name: parameter.default for name, parameter in
                inspect.signature(QuestionGenerator.generate).parameters.items()
                if name in ("temperature", "top_p", "num_questions", "max_new_tokens")}
    return defaults | metrics["decoding"] if metrics["mode"] == mode else defaults


def card_number(value: float | None) -> str:
    """How the card writes a score: two decimals (the model-index holds the same rounding), or a dash."""
    return "—" if value is None else f"{value:.2f}"


def eval_results(evaluation: Evaluation, dataset_repo: str) -> list[EvalResult]:
    """The model-index entries: the headline scores of this adapter, on the dataset repo's evaluated split."""
    metrics = evaluation.metrics
    revision = metrics.get("dataset_revision")
    results = []
    for score in SCORES[metrics["mode"]]:
        value = score_value(metrics, score.path)
        if score.metric_type is None or value is None:
            continue
        results.append(EvalResult(
            **TASK, dataset_type=dataset_repo, dataset_name=f"KorQuAD 1.0 question generation ({metrics['mode']})",
            dataset_config="default", dataset_split=metrics["split"],
            # A folder's fingerprint ("sha256:...") is no Hub revision; only a commit of the repo is.
            dataset_revision=revision if revision and _GIT_SHA.fullmatch(revision) else None,
            metric_type=score.metric_type, metric_name=score.label, metric_value=round(value, 2)))
    return results


def card_data(run: TrainingRun, evaluation: Evaluation, *, model_repo: str, base_model: str,
              dataset_repo: str) -> ModelCardData:
    results = eval_results(evaluation, dataset_repo)
    return ModelCardData(
        base_model=base_model,
        base_model_relation="adapter",
        library_name="peft",
        pipeline_tag="text-generation",
        language=["ko"],
        **EXAONE_LICENSE,
        datasets=list(dict.fromkeys([dataset_repo, KORQUAD_HUB_ID])),
        metrics=list(dict.fromkeys(r.metric_type for r in results)),
        tags=TAGS + (["demo", "tiny-random"] if run.is_tiny else []),
        model_name=model_repo,
        eval_results=results,
    )


def published_config(config: dict, dataset_repo: str) -> dict:
    """train_config.yaml as published: the dataset is the Hub repository it is published as, and the output folder,
    a path on the machine that trained, is left out (train.py's --output_dir says where a rerun writes)."""
    return {key: dataset_repo if key == "dataset" else value for key, value in config.items() if key != "output_dir"}


def published_metrics(metrics: dict, *, model_repo: str, base_model: str, dataset_repo: str) -> dict:
    """metrics.json as published: what was evaluated named by the repositories it is published as, not by the
    folders of the machine that evaluated it (publishing checked they are the same: the adapter's sha256 and the
    dataset's fingerprint)."""
    return metrics | {"model": model_repo, "base_model": base_model, "dataset": dataset_repo}


def framework_versions(run: TrainingRun) -> list[dict]:
    """(library, version, where the version comes from) for FRAMEWORKS: what training recorded (peft's version in
    adapter_config.json), else the version installed where the card is rendered, said as such."""
    from importlib.metadata import version

    recorded = {"peft": run.adapter_config.get("peft_version")}
    return [{"library": name, "version": recorded.get(name) or version(name),
             "source": "recorded by training (adapter_config.json)" if recorded.get(name) else
             "installed where this card was rendered (the run does not record it)"} for name in FRAMEWORKS]


def publishable_tokenizer_config(src: Path, dst: Path) -> None:
    """`src` (a tokenizer_config.json) without LOCAL_TOKENIZER_KEYS, written to `dst`."""
    config = json.loads(src.read_text(encoding="utf-8"))
    dst.write_text(json.dumps({k: v for k, v in config.items() if k not in LOCAL_TOKENIZER_KEYS}, indent=2,
                              ensure_ascii=False) + "\n", encoding="utf-8")


def render_model_card(run: TrainingRun, evaluation: Evaluation, *, model_repo: str, base_model: str,
                      dataset_repo: str, space_repo: str | None = None) -> ModelCard:
    """The card of the adapter published as `model_repo`, loading on `base_model` (its adapter_config's base)."""
    metrics = evaluation.metrics
    mode, eval_mode = run.config["mode"], metrics["mode"]
    has_base = "base" in metrics
    rows = [{"label": s.label, "model": card_number(score_value(metrics, s.path)),
             "base": card_number(score_value(metrics.get("base"), s.path))} for s in SCORES[eval_mode]]
    reference = metrics["qgbench_reference"]
    qgbench_rows = [{"model": "this adapter", **{key: card_number(score_value(metrics, ("qgbench", key)))
                                                 for _, key, _ in QGBENCH_COLUMNS}}]
    if has_base:
        qgbench_rows.append({"model": "base model (no adapter)",
                             **{key: card_number(score_value(metrics["base"], ("qgbench", key)))
                                for _, key, _ in QGBENCH_COLUMNS}})
    qgbench_rows.append({"model": f"[{reference['model']}](https://huggingface.co/{reference['model']}) (QG-Bench)",
                         **{key: card_number(reference.get(key)) for _, key, _ in QGBENCH_COLUMNS}})
    evaluated = [r for r in run.log if "eval_loss" in r]
    context = dict(
        model_repo=model_repo,
        model_name=model_repo.split("/")[-1],
        owner=model_repo.split("/")[0],
        base_model=base_model,
        original_base=run.config["model"],
        original_base_link=hub_link(run.config["model"]),
        converted=base_model != run.config["model"],
        is_tiny=run.is_tiny,
        tiny_model=TINY_MODEL,
        dataset_repo=dataset_repo,
        korquad_hub_id=KORQUAD_HUB_ID,
        space_repo=space_repo,
        exaone_hub_id=EXAONE_HUB_ID,
        license_link=EXAONE_LICENSE["license_link"],
        answer_aware=mode == "answer-aware",  # how it was trained: the usage examples prompt that way
        comparable=eval_mode == "answer-aware",  # how it was evaluated: QG-Bench's setting or not
        # The prompt as qg/prompt.py builds it; Python literals, so the usage snippet runs as written.
        system_prompt=SYSTEM_PROMPT,
        user_template=USER_TEMPLATES[mode],
        system_prompt_literal=repr(SYSTEM_PROMPT),
        user_template_literal=repr(USER_TEMPLATES[mode]),
        example_paragraph_literal=repr(EXAMPLE_PARAGRAPH),
        example_answer_literal=repr(EXAMPLE_ANSWER),
        lora=run.adapter_config,
        config_rows=[(key, _config_value(value))
                     for key, value in published_config(run.config, dataset_repo).items()],
        frameworks=framework_versions(run),
        source_repository=SOURCE_REPOSITORY,
        max_context_tokens=run.config["max_context_tokens"],
        training={"steps": run.log[-1]["step"], "tokens": f"{run.log[-1]['tokens']:,}",
                  "final_loss": card_number(run.log[-1]["loss"]),
                  "best_eval_loss": card_number(min(r["eval_loss"] for r in evaluated)) if evaluated else None},
        metrics=metrics,
        decoding=metrics["decoding"],
        usage=usage_decoding(mode, metrics),
        counts=metrics["counts"],
        has_base=has_base,
        score_rows=rows,
        qgbench_columns=QGBENCH_COLUMNS,
        qgbench_rows=qgbench_rows,
        reference={key: card_number(reference.get(key)) for _, key, _ in QGBENCH_COLUMNS} | {
            "model": reference["model"]},
        samples=[_sample(number, s) for number, s in enumerate(evaluation.samples[:NUM_SAMPLES], start=1)],
        year=datetime.date.today().year,
    )
    data = card_data(run, evaluation, model_repo=model_repo, base_model=base_model, dataset_repo=dataset_repo)
    return ModelCard.from_template(data, template_path=str(TEMPLATE_PATH), **context)


def render_base_card(*, base_repo: str, original_base: str, adapter_repo: str, is_tiny: bool) -> ModelCard:
    """The card of the converted Llama-format base: what it is, where it comes from, its license."""
    data = ModelCardData(
        base_model=None if is_tiny else original_base, library_name="transformers", pipeline_tag="text-generation",
        language=["ko", "en"], **EXAONE_LICENSE,
        tags=["llama", "exaone"] + (["demo", "tiny-random"] if is_tiny else []))
    if is_tiny:
        origin = (f"> [!WARNING]\n> **A demo, not a language model.** `{TINY_MODEL}` has random weights in "
                  "EXAONE-3.5's architecture, built offline by the project's tests and demo.\n\n")
    else:
        origin = (f"[{original_base}](https://huggingface.co/{original_base}) converted to `LlamaForCausalLM`: "
                  "the same weights under Llama's names, so that transformers loads it natively, without remote "
                  "code (EXAONE-3.5's own code does not run on transformers 5).\n\n")
    body = (f"# {base_repo.split('/')[-1]}\n\n{origin}It is the base of the LoRA adapter "
            f"[{adapter_repo}](https://huggingface.co/{adapter_repo}), whose `adapter_config.json` points here, so "
            "`PeftModel.from_pretrained` and `AutoPeftModelForCausalLM.from_pretrained` find it. Converted by "
            f"[the project's code]({SOURCE_REPOSITORY}).\n\n"
            "## License\n\nThe EXAONE AI Model License Agreement 1.1 - NC (non-commercial), as the original "
            f"(the repository's [LICENSE](LICENSE)): {EXAONE_LICENSE['license_link']}\n")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def render_export_card(kind: str, *, repo: str, base_model: str, adapter_repo: str, run: TrainingRun) -> ModelCard:
    """The short card of a qg-export folder: a merged transformers model or a CTranslate2 model of the adapter on
    its base; what it is, how to load it, its license."""
    name = repo.split("/")[-1]
    adapter = f"[{adapter_repo}](https://huggingface.co/{adapter_repo})"
    base = hub_link(base_model)
    demo = ["demo", "tiny-random"] if run.is_tiny else []
    if kind == "merged":
        data = ModelCardData(base_model=base_model, base_model_relation="finetune", library_name="transformers",
                             pipeline_tag="text-generation", language=["ko"], **EXAONE_LICENSE,
                             tags=["question-generation", "korean", "merged-lora", *demo])
        what = (f"The LoRA adapter {adapter} merged into its base {base}: one plain transformers model, the same "
                "outputs as the adapter on its base, without peft.")
        load = ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
                f'model = AutoModelForCausalLM.from_pretrained("{repo}", dtype="auto", device_map="auto")\n```\n\n'
                f"It takes the adapter's prompt (system and user turns in the chat template); {adapter}'s card shows "
                "it and how to generate with it.")
    else:
        data = ModelCardData(base_model=base_model, library_name="ctranslate2", pipeline_tag="text-generation",
                             language=["ko"], **EXAONE_LICENSE, tags=["question-generation", "korean", "ctranslate2",
                                                                      *demo])
        what = (f"The LoRA adapter {adapter} merged into its base {base} and converted to "
                "[CTranslate2](https://github.com/OpenNMT/CTranslate2), a fast inference engine for CPU and GPU.")
        load = ("```python\nimport ctranslate2\nfrom huggingface_hub import snapshot_download\n"
                "from transformers import AutoTokenizer\n\n"
                f'path = snapshot_download("{repo}")\n'
                'generator = ctranslate2.Generator(path, device="cpu")\n'
                "tokenizer = AutoTokenizer.from_pretrained(path)\n```\n\n"
                "`generator.generate_batch` takes the tokens of the adapter's prompt "
                "(`tokenizer.convert_ids_to_tokens` of the chat template's ids, with `add_generation_prompt=True`); "
                f"{adapter}'s card shows the prompt.")
    warning = (f"> [!WARNING]\n> **A demo, not a language model:** built from `{TINY_MODEL}`, random weights.\n\n"
               if run.is_tiny else "")
    body = (f"# {name}\n\n{warning}{what} Made by [the project's code]({SOURCE_REPOSITORY}) (`qg-export`).\n\n"
            f"## How to load\n\n{load}\n\n## License\n\nThe EXAONE AI Model License Agreement 1.1 - NC "
            f"(non-commercial) of {EXAONE_HUB_ID} (the repository's [LICENSE](LICENSE)): "
            f"{EXAONE_LICENSE['license_link']}\n")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_model_card(path: Path, run: TrainingRun, evaluation: Evaluation, *, model_repo: str, base_model: str,
                     dataset_repo: str, space_repo: str | None = None) -> ModelCard:
    """Render the card to `path` and read it back as the Hub would: metadata that does not parse, or that differs
    from what was meant, is a `UserError` (a template edit can break the YAML block or shadow a field)."""
    repos = dict(model_repo=model_repo, base_model=base_model, dataset_repo=dataset_repo)
    try:
        card = render_model_card(run, evaluation, space_repo=space_repo, **repos)  # RepoCard parses what it renders
        card.save(path)
        metadata = metadata_load(path)
        loaded = ModelCard.load(path).data
    except (ValueError, yaml.YAMLError) as err:
        raise UserError(f"the rendered model card's metadata does not parse ({_first_line(err)}); "
                        f"check {TEMPLATE_PATH}") from None
    if metadata is None:
        raise UserError(f"the rendered model card has no metadata block; check {TEMPLATE_PATH}")
    meant = card_data(run, evaluation, **repos).to_dict()
    differing = sorted(key for key in meant.keys() | metadata.keys() if loaded.to_dict().get(key) != meant.get(key))
    if differing:
        raise UserError(f"the rendered model card's metadata reads back different in {', '.join(differing)}; "
                        f"check {TEMPLATE_PATH}")
    return card


def hub_link(name: str) -> str:
    """A markdown link for a Hub id, a code span for anything else (a local folder, the tiny model)."""
    if is_hub_id(name):
        return f"[{name}](https://huggingface.co/{name})"
    return f"`{name}`"


def _config_value(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def _cell(text: str) -> str:
    """Text that stays inside one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _sample(number: int, sample: dict) -> dict:
    """One after_outputs.json record, ready for the template (questions escaped for lists and table cells)."""
    out = {"number": number, "id": sample["id"], "paragraph": _cell(sample["input"]),
           "gold": [_cell(q) for q in sample["expected_output"]], "model": [_cell(q) for q in sample["model_output"]]}
    if "base_output" in sample:
        out["base"] = [_cell(q) for q in sample["base_output"]]
    if "answers" in sample:
        out["answers"] = [_cell(a) for a in sample["answers"]]
    return out


def _first_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__
