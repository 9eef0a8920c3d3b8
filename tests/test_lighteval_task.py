"""The lighteval task `korquad_qg`: run through lighteval's Pipeline, it feeds the model qg.prompt's ids and reports
the scores evaluate_qg.py writes for the same model and split."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import fit_lora
from lighteval.models.model_output import ModelResponse
from lighteval.tasks.lighteval_task import LightevalTask
from lighteval.tasks.registry import Registry
from peft import LoraConfig, get_peft_model

from qg.cli import UserError
from qg.data.build import build_qg_dataset, load_qg_dataset
from qg.data.korquad import read_korquad_json
from qg.eval import lighteval_task
from qg.eval.config import EvalConfig
from qg.eval.lighteval_task import (
    KOREAN_NAMES,
    MAX_CONTEXT_TOKENS,
    MAX_NEW_TOKENS,
    METRIC_NAMES,
    QGBENCH_NAMES,
    TASK_NAME,
    GeneratedQuestion,
    custom_tasks_only,
    korquad_qg_config,
    prompt_tokenizer,
)
from qg.eval.runner import evaluate
from qg.generate import QuestionGenerator
from qg.models.loading import load_base, load_tokenizer
from qg.models.tiny import TINY_MODEL
from qg.prompt import encode_example, encode_prompt, end_of_turn_id

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "hub_dataset" / "sample"


def build_dataset(out: Path, dev_articles: int | None = None) -> Path:
    dev = read_korquad_json(SAMPLE / "dev.json")
    dev.squad["data"] = dev.squad["data"][:dev_articles]
    build_qg_dataset(read_korquad_json(SAMPLE / "train.json"), dev, out)
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    # One dev article: two paragraphs, ten (paragraph, answer) pairs in the test split, so the test stays quick.
    return build_dataset(tmp_path_factory.mktemp("data") / "korquad-qg", dev_articles=1)


@pytest.fixture(scope="module")
def merged_model(tmp_path_factory, dataset) -> Path:
    """The tiny model with a LoRA fitted to the test split's answer-aware examples, merged and saved as the module
    docstring says. The random model never reaches its end of turn, so every prediction would be empty; after ten
    steps this one writes a question for every pair, some of them another pair's, so the scores compared below
    are neither 0 nor 100."""
    base, tokenizer = load_base(TINY_MODEL)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    rows = load_qg_dataset(str(dataset), "pairs")["test"]
    examples = [encode_example(tokenizer, r["context"], r["question"], r["answer"]) for r in rows]
    fit_lora(model, examples, steps=10)
    adapter = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(adapter)
    merged = tmp_path_factory.mktemp("merged")
    generator = QuestionGenerator.from_pretrained(str(adapter), merge=True, device="cpu")
    generator.model.save_pretrained(merged)
    generator.tokenizer.save_pretrained(merged)
    return merged


@pytest.fixture
def task_environment(monkeypatch, merged_model, dataset):
    monkeypatch.setenv("QG_LIGHTEVAL_MODEL", str(merged_model))
    monkeypatch.setenv("QG_LIGHTEVAL_DATASET", str(dataset))
    monkeypatch.delenv("QG_LIGHTEVAL_SPLIT", raising=False)


def run_lighteval(tmp_path: Path, model: Path) -> tuple[dict, list[list[int]]]:
    """lighteval's results for korquad_qg, and the prompt ids its model.generate calls received."""
    # Importing lighteval's transformers backend switches autograd off for the whole process (a module-level
    # `torch.set_grad_enabled(False)`); the other tests train, so the mode is restored afterwards.
    with torch.set_grad_enabled(torch.is_grad_enabled()):
        from lighteval.logging.evaluation_tracker import EvaluationTracker
        from lighteval.models.transformers.transformers_model import TransformersModelConfig
        from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters

        with custom_tasks_only():
            pipeline = Pipeline(
                tasks=TASK_NAME,
                pipeline_parameters=PipelineParameters(launcher_type=ParallelismManager.ACCELERATE,
                                                       custom_tasks_directory="qg.eval.lighteval_task"),
                evaluation_tracker=EvaluationTracker(output_dir=str(tmp_path / "lighteval"), save_details=False),
                model_config=TransformersModelConfig(model_name=str(model), batch_size=1, dtype="float32",
                                                     override_chat_template=False, add_special_tokens=False),
            )
        received = []
        generate = pipeline.model.model.generate

        def recording_generate(input_ids, attention_mask, **kwargs):
            received.extend(row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask))
            return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

        pipeline.model.model.generate = recording_generate
        pipeline.evaluate()
        return pipeline.get_results()["results"][f"{TASK_NAME}:0"], received


def test_lighteval_reports_evaluate_qg_scores(tmp_path, task_environment, merged_model, dataset):
    metrics = evaluate(EvalConfig(model=str(merged_model), dataset=str(dataset), output_dir=str(tmp_path / "evaluate"),
                                  mode="answer-aware", max_new_tokens=MAX_NEW_TOKENS, batch_size=1))
    records = [json.loads(line) for line in (tmp_path / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    predictions = [q for r in records for q in r["model_output"]]
    # A meaningful comparison: questions were written, and not all of them the gold ones.
    assert any(predictions) and 0 < metrics["qgbench"]["bleu1"] < 100

    results, received = run_lighteval(tmp_path, merged_model)

    tokenizer = load_tokenizer(str(merged_model))
    rows = load_qg_dataset(str(dataset), "pairs")["test"]
    expected = [encode_prompt(tokenizer, r["context"], r["answer"], MAX_CONTEXT_TOKENS).input_ids for r in rows]
    assert len(received) == len(rows) == len(predictions)
    assert sorted(received) == sorted(expected)  # lighteval orders the docs its own way
    ours = {**{name: metrics["qgbench"][name] for name in QGBENCH_NAMES},
            **{name: metrics["korean"][name] for name in KOREAN_NAMES}}
    assert {name: results[name] for name in METRIC_NAMES} == ours  # the same floats, not close ones


@pytest.fixture
def doc(task_environment):
    [config] = lighteval_task.TASKS_TABLE
    [doc] = LightevalTask(config).get_docs(max_samples=1)
    return doc


def response(doc, output_ids: list[int], prompt_ids: list[int] | None = None) -> ModelResponse:
    prompt_ids = doc.specific["prompt_ids"] if prompt_ids is None else prompt_ids
    return ModelResponse(input_tokens=prompt_ids, output_tokens=[output_ids])


def test_prediction_is_the_question_question_generator_keeps(doc, merged_model):
    tokenizer = prompt_tokenizer(str(merged_model))
    metric = GeneratedQuestion(str(merged_model))
    end = end_of_turn_id(tokenizer)
    question = "첨성대는 어느 도시에 있는가?"
    ids = tokenizer(question, add_special_tokens=False)["input_ids"]

    def prediction(output_ids):
        return metric.compute(doc, response(doc, output_ids))["bleu4"]["prediction"]

    assert prediction(ids + [end] + ids) == question
    assert prediction(ids) == ""  # no end of turn: cut off, so no question
    assert prediction(tokenizer("### 첨성대 ###", add_special_tokens=False)["input_ids"] + [end]) == ""  # qg.quality


def test_a_prompt_other_than_qg_prompts_is_refused(doc, merged_model):
    metric = GeneratedQuestion(str(merged_model))
    prompt = doc.specific["prompt_ids"]
    assert metric.compute(doc, response(doc, [5, 6]))["chrf"]["row"] == doc.specific["row"]
    # lighteval pads a batch with EOS, on the left.
    eos = prompt_tokenizer(str(merged_model)).eos_token_id
    padded = response(doc, [5, 6], prompt_ids=[eos, eos, *prompt])
    assert metric.compute(doc, padded)["chrf"]["row"] == doc.specific["row"]
    # What lighteval sends with its chat template left on, or with a BOS added, is another prompt.
    with pytest.raises(ValueError, match="override_chat_template=false,add_special_tokens=false"):
        metric.compute(doc, response(doc, [5, 6], prompt_ids=[1, *prompt]))


def test_rebuilt_dataset_folder_is_read_again(tmp_path, merged_model):
    # datasets caches a dataset folder by its README; the task must see the rows of a rebuild all the same.
    folder = build_dataset(tmp_path / "korquad-qg", dev_articles=1)
    before = len(LightevalTask(korquad_qg_config(str(merged_model), str(folder))).get_docs())
    build_dataset(folder, dev_articles=2)
    after = len(LightevalTask(korquad_qg_config(str(merged_model), str(folder))).get_docs())
    assert before < after == len(load_qg_dataset(str(folder), "pairs")["test"])


def test_tasks_table_without_environment_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("QG_LIGHTEVAL_MODEL", raising=False)
    monkeypatch.setenv("QG_LIGHTEVAL_DATASET", "ORG/korquad-qg")
    with pytest.raises(UserError, match="QG_LIGHTEVAL_MODEL"):
        Registry._extract_configs(lighteval_task)  # how lighteval reads TASKS_TABLE


def test_registry_loads_only_the_custom_tasks_and_is_restored(task_environment):
    builtin = Registry.__dict__["load_all_task_configs"]
    with custom_tasks_only():
        registry = Registry(tasks=TASK_NAME, custom_tasks="qg.eval.lighteval_task")
    assert set(registry._task_registry) == {TASK_NAME}
    assert Registry.__dict__["load_all_task_configs"] is builtin


@pytest.mark.parametrize("installed", ["0.14.0", "0.12.1", "1.13.0"])
def test_another_lighteval_release_is_refused_at_import(monkeypatch, installed):
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: installed if name == "lighteval" else real_version(name))
    # A fresh copy of the module, so the one already imported stays as it is.
    spec = importlib.util.find_spec("qg.eval.lighteval_task")
    with pytest.raises(ImportError, match=rf"works with lighteval 0\.13\.x.*lighteval {installed} is installed"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_the_supported_lighteval_release_is_accepted(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.13.7")
    lighteval_task.check_lighteval_version()
