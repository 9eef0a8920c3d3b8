"""The model card: Hub metadata read back, every number from metrics.json, the prompt from qg.prompt, demo warnings.

Cards here are rendered from run and evaluation folders written by the helpers below (no training: the files are
what train.py and evaluate_qg.py write, with scores chosen all different so that a number in the wrong place shows).
tests/test_publish.py runs the card's code against a really trained and staged adapter.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load

from qg.cli import UserError
from qg.config import config_to_yaml
from qg.data.korquad import KORQUAD_HUB_ID
from qg.eval.metrics import QGBENCH_KO_MT5_BASE
from qg.eval.runner import score_records
from qg.generate import QuestionGenerator
from qg.hub.model_card import EXAMPLE_PARAGRAPH, read_evaluation, read_run, write_model_card
from qg.io import adapter_sha256
from qg.models.tiny import TINY_MODEL
from qg.prompt import SYSTEM_PROMPT, USER_TEMPLATES
from qg.train.config import TrainConfig
from qg.train.plots import plot_loss_curve

REPOS = dict(model_repo="owner/qg-lora", base_model="owner/tiny-random-exaone-llama", dataset_repo="owner/korquad-qg",
             space_repo="owner/qg-space")
# Not QG-Bench's real numbers: a card that shows these read them from metrics.json.
REFERENCE = {"model": "lmqg/mt5-base-koquad", "bleu4": 11.11, "meteor": 22.22, "rougeL": 33.33}
SAMPLE_IDS = [f"paragraph-{i}" for i in range(7)]
SCORE_KEYS = ("recommendation", "qgbench", "korean", "quality", "bertscore")  # metrics.json's scores, both modes


def write_run(path: Path, model: str = TINY_MODEL, mode: str = "agnostic") -> Path:
    """A finished run folder as train.py leaves it (the weights file is a stand-in: the card does not read it)."""
    path.mkdir(parents=True)
    config = TrainConfig(model=model, dataset="outputs/demo/dataset", output_dir=str(path), mode=mode, lora_r=8,
                         lora_alpha=16, max_steps=30, eval_steps=10)
    (path / "train_config.yaml").write_text(config_to_yaml(config), encoding="utf-8")
    (path / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": "/cache/base", "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8,
        "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["v_proj", "q_proj"]}))
    (path / "adapter_model.safetensors").write_bytes(b"")
    log = [{"step": s, "loss": 9.0 / s, "lr": 1e-4, "tokens": 1000 * s, "tokens_per_second": 1.0,
            "questions_per_second": 1.0, **({"eval_loss": 4.0 / s} if s % 10 == 0 else {})} for s in range(5, 31, 5)]
    (path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    plot_loss_curve(log, path / "loss_curve.png")
    return path


def distinct_scores(mode: str, start: float) -> dict:
    """The score keys evaluate() writes for `mode`, every value different (start, start + 1.37, ...)."""
    values = iter(start + 1.37 * i for i in range(100))
    if mode == "agnostic":
        return {"recommendation": {
            "num_groups": 5, "num_generated": 20, "num_references": 25,
            "best_match": {m: {"precision": next(values), "recall": next(values)} for m in ("chrf", "bleu_morpheme")},
            **{k: next(values) for k in ("coverage", "distinct1", "distinct2", "self_bleu", "near_duplicate_rate",
                                         "grounding", "degenerate_rate")},
            "degenerate_reasons": {}}, "paragraphs_without_questions": 0}
    return {"num_predictions": 12,
            "qgbench": {k: next(values) for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "meteor")},
            "korean": {"bleu_morpheme": next(values), "chrf": next(values)},
            "quality": {"degenerate_rate": next(values), "degenerate_reasons": {}, "distinct1": next(values),
                        "distinct2": next(values), "grounding": next(values)},
            "bertscore": None}


def write_evaluation(path: Path, mode: str = "agnostic", *, dataset: str = "outputs/demo/dataset",
                     dataset_revision: str = "sha256:0123456789abcdef", with_base: bool = True,
                     scores: dict | None = None, samples: list[dict] | None = None,
                     adapter: Path | None = None) -> Path:
    """metrics.json and after_outputs.json as evaluate() writes them; `adapter`: the run folder evaluated."""
    path.mkdir(parents=True, exist_ok=True)
    decoding = ({"do_sample": True, "temperature": 0.7, "top_p": 0.9, "num_questions": 4} if mode == "agnostic"
                else {"do_sample": False, "num_questions": 1}) | {"max_new_tokens": 48}
    model = "outputs/run" if adapter is None else str(adapter)
    metrics = {"model": model, "adapter_sha256": adapter_sha256(model), "base_model": "/cache/base",
               "dataset": dataset, "dataset_revision": dataset_revision, "split": "test", "mode": mode,
               "tokenization": {}, "decoding": decoding, "seed": 3,
               "counts": {"paragraphs": 7, "gold_questions": 21, "generated_questions": 19},
               **(scores or distinct_scores(mode, 10.01)), "qgbench_reference": REFERENCE}
    if with_base:
        metrics["base"] = distinct_scores(mode, 60.03)
    if samples is None:
        samples = [{"id": sample_id, "input": f"{i}번 문단: 훈민정음은 1443년에 세종이 만들었다.",
                    "expected_output": [f"{i}번 금 질문 가?", f"{i}번 금 질문 나?"],
                    "model_output": [f"{i}번 생성 질문?", f"{i}번 또 다른 질문?"] if mode == "agnostic" else
                    [f"{i}번 생성 질문?", ""]} for i, sample_id in enumerate(SAMPLE_IDS)]
        for i, sample in enumerate(samples):
            if mode == "answer-aware":
                sample["answers"] = ["1443년", "세종"]
            if with_base:
                sample["base_output"] = [f"{i}번 기본 모델 출력"]
    (path / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False), encoding="utf-8")
    (path / "after_outputs.json").write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    return path


def render(tmp_path: Path, mode: str = "agnostic", eval_mode: str | None = None, model: str = TINY_MODEL,
           **evaluation) -> tuple[str, dict]:
    run = read_run(write_run(tmp_path / "run", model=model, mode=mode))
    folder = write_evaluation(tmp_path / "eval", eval_mode or mode, **evaluation)
    write_model_card(tmp_path / "README.md", run, read_evaluation(folder), **REPOS)
    return (tmp_path / "README.md").read_text(encoding="utf-8"), json.loads((folder / "metrics.json").read_text())


def section(card: str, title: str) -> str:
    """The text under `## title`, up to the next `## ` heading."""
    return card.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in `text`: rows of cells, the header first, the separator row left out."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r"-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def numeric_leaves(tree: dict, prefix: tuple = ()) -> dict[tuple, float]:
    leaves = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            leaves |= numeric_leaves(value, prefix + (key,))
        elif isinstance(value, float):
            leaves[prefix + (key,)] = value
    return leaves


def source_of(cell: str, scores: dict) -> tuple | None:
    """The one path in `scores` whose value the card shows in `cell` (two decimals); None for a dash."""
    if cell == "—":
        return None
    matches = [path for path, value in numeric_leaves(scores).items() if f"{value:.2f}" == cell]
    assert len(matches) == 1, f"card number {cell} is no score of metrics.json"
    return matches[0]


def python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)


@pytest.mark.parametrize("mode", ["agnostic", "answer-aware"])
def test_metadata_reads_back_with_every_field_the_hub_uses(tmp_path, mode):
    _, metrics = render(tmp_path, mode)
    metadata = metadata_load(tmp_path / "README.md")
    assert metadata["base_model"] == REPOS["base_model"]
    assert metadata["base_model_relation"] == "adapter"
    assert metadata["library_name"] == "peft" and metadata["pipeline_tag"] == "text-generation"
    assert metadata["language"] == ["ko"]
    assert (metadata["license"], metadata["license_name"], metadata["license_link"]) == (
        "other", "exaone", "https://huggingface.co/LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct/blob/main/LICENSE")
    assert metadata["datasets"] == [REPOS["dataset_repo"], KORQUAD_HUB_ID]
    assert {"question-generation", "korean", "lora", "peft"} <= set(metadata["tags"])
    results = ModelCard.load(tmp_path / "README.md").data.eval_results
    assert results and {r.task_type for r in results} == {"text-generation"}
    assert {r.task_name for r in results} == {"Question Generation"}
    assert {(r.dataset_type, r.dataset_split) for r in results} == {(REPOS["dataset_repo"], "test")}
    # A folder's fingerprint is no Hub revision, so none is claimed.
    assert {r.dataset_revision for r in results} == {None}
    headline = {"agnostic": {"chrf", "coverage", "degenerate_rate"},
                "answer-aware": {"bleu", "meteor", "rouge", "chrf"}}
    assert {r.metric_type for r in results} == headline[mode]
    for result in results:
        path = source_of(f"{result.metric_value:.2f}", {k: v for k, v in metrics.items() if k in SCORE_KEYS})
        assert result.metric_value == round(numeric_leaves(metrics)[path], 2)


@pytest.mark.parametrize("mode", ["agnostic", "answer-aware"])
def test_every_number_in_the_evaluation_tables_is_read_from_metrics_json(tmp_path, mode):
    card, metrics = render(tmp_path, mode)
    evaluation = section(card, "Evaluation")
    ours = {k: v for k, v in metrics.items() if k in SCORE_KEYS}
    scores = tables(evaluation)[-1]
    assert scores[0] == ["metric", "this adapter", "base model (no adapter)"]
    shown = set()
    for _, model_cell, base_cell in scores[1:]:
        path = source_of(model_cell, ours)
        assert source_of(base_cell, metrics["base"]) == path  # both columns show the same score
        shown.add(path)
    assert shown - {None} == set(numeric_leaves(ours))  # every score of metrics.json is on the card
    labelled = {row[0]: source_of(row[1], ours) for row in scores[1:]}
    if mode == "agnostic":
        assert labelled["best-match chrF, precision"] == ("recommendation", "best_match", "chrf", "precision")
        assert labelled["best-match chrF, recall"] == ("recommendation", "best_match", "chrf", "recall")
        assert labelled["degenerate rate"] == ("recommendation", "degenerate_rate")
        assert "not comparable" in evaluation
        assert "BLEU-4 11.11, METEOR 22.22" in evaluation and "ROUGE-L 33.33" in evaluation
    else:
        assert labelled["BLEU-4 (QG-Bench)"] == ("qgbench", "bleu4")
        assert labelled["METEOR (QG-Bench)"] == ("qgbench", "meteor")
        assert labelled["ROUGE-L (QG-Bench)"] == ("qgbench", "rougeL")
        assert labelled["BERTScore F1"] is None  # metrics.json holds no BERTScore here
        beside, *_ = tables(evaluation)
        assert beside[0] == ["model", "BLEU-4", "METEOR", "ROUGE-L"]
        keys = ["bleu4", "meteor", "rougeL"]
        for row, scores_of in zip(beside[1:], [metrics, metrics["base"], None], strict=True):
            if scores_of is None:
                assert row[0].startswith("[lmqg/mt5-base-koquad]")
                assert row[1:] == [f"{REFERENCE[k]:.2f}" for k in keys]
            else:
                assert row[1:] == [f"{scores_of['qgbench'][k]:.2f}" for k in keys]
        assert "not comparable" not in evaluation


def test_card_renders_the_scores_evaluation_computes(tmp_path):
    """metrics.json's keys as qg.eval.runner.score_records really writes them, not as this file imagines them."""
    records = [{"id": "a", "context": "훈민정음은 1443년 세종이 창제한 문자이다. 백성을 위해 만들었다.",
                "questions": ["훈민정음은 누가 만들었나?", "훈민정음은 언제 만들어졌나?"],
                "model_output": ["훈민정음을 만든 왕은 누구인가?", "세종은 무엇을 만들었나?"]}]
    scores = score_records(records, "agnostic", "model_output")
    card, metrics = render(tmp_path, scores=scores, with_base=False)
    rows = tables(section(card, "Evaluation"))[-1][1:]
    values = {f"{value:.2f}" for value in numeric_leaves(metrics["recommendation"]).values()}
    assert all(cell in values for _, cell in rows)  # no dash: every row's key exists in the real output


def test_training_table_holds_the_whole_train_config(tmp_path):
    card, _ = render(tmp_path)
    config = yaml.safe_load((tmp_path / "run" / "train_config.yaml").read_text())
    rows, versions = tables(section(card, "Training"))
    assert versions[0] == ["library", "version", "from"]
    table = {key.strip("`"): value.strip("`") for key, value in rows[1:]}
    # Every key but the output folder (a path of the machine that trained); the dataset as its Hub repository.
    assert list(table) == [f.name for f in dataclasses.fields(TrainConfig) if f.name != "output_dir"]
    assert list(config) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert table["dataset"] == REPOS["dataset_repo"] and config["dataset"] == "outputs/demo/dataset"
    for key, value in config.items():
        if key in ("output_dir", "dataset"):
            continue
        assert table[key] == (", ".join(value) if isinstance(value, list) else
                              yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip())
    assert "30 optimizer steps, 30,000 tokens" in card and "best validation loss: 0.13" in card  # 4.0 / 30
    assert "![Train and validation loss per optimizer step](loss_curve.png)" in card


def test_usage_snippet_prompts_exactly_as_qg_prompt(tmp_path):
    for mode in ("agnostic", "answer-aware"):
        card, _ = render(tmp_path / mode, mode)
        snippet, generator_snippet = python_blocks(card)
        assigned = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(snippet).body
                    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)}
        assert assigned["SYSTEM_PROMPT"] == SYSTEM_PROMPT
        assert assigned["USER_TEMPLATE"] == USER_TEMPLATES[mode]
        assert assigned["context"] == EXAMPLE_PARAGRAPH
        assert (assigned["base_id"], assigned["adapter_id"]) == (REPOS["base_model"], REPOS["model_repo"])
        assert ("answer=answer" in snippet) == ("answers=[" in generator_snippet) == (mode == "answer-aware")
        ast.parse(generator_snippet)


@pytest.mark.parametrize(("mode", "eval_mode"), [("agnostic", "answer-aware"), ("answer-aware", "agnostic")])
def test_evaluation_in_another_mode_than_training_is_said(tmp_path, mode, eval_mode):
    card, _ = render(tmp_path, mode=mode, eval_mode=eval_mode)
    names = {"agnostic": "answer-agnostic", "answer-aware": "answer-aware"}
    assert f"trained {names[mode]} and is evaluated here\n{names[eval_mode]}" in card
    assert ("### Beside QG-Bench" in card) == (eval_mode == "answer-aware")
    snippet, generator_snippet = python_blocks(card)
    assert ("answer=answer" in snippet) == (mode == "answer-aware")  # the examples prompt as trained
    # ... and decode as trained (sampling for agnostic, greedy answer-aware), with settings that exist: the
    # evaluation decoded the other way, so they are QuestionGenerator's defaults.
    defaults = inspect.signature(QuestionGenerator.generate).parameters
    sampling = f"do_sample=True, temperature={defaults['temperature'].default}, top_p={defaults['top_p'].default}"
    assert (sampling in snippet) == (mode == "agnostic")
    assert ("do_sample=False" in snippet) == (mode == "answer-aware")
    ast.parse(snippet), ast.parse(generator_snippet)


def test_samples_and_before_after_come_from_after_outputs(tmp_path):
    card, _ = render(tmp_path)
    samples = json.loads((tmp_path / "eval" / "after_outputs.json").read_text())
    shown = section(card, "Samples")
    for number, sample in enumerate(samples, start=1):
        assert (f"**Sample {number}**" in shown) == (number <= 5)
        assert (sample["input"] in shown) == (number <= 5)
        assert all((f"«{q}»" in shown) == (number <= 5) for q in sample["expected_output"] + sample["model_output"])
    [before_after] = tables(section(card, "Before and after fine-tuning"))
    assert before_after[1:] == [[str(n), s["base_output"][0], "<br>".join(s["model_output"])]
                                for n, s in enumerate(samples[:5], start=1)]


def test_without_base_outputs_there_is_no_before_after(tmp_path):
    card, _ = render(tmp_path, with_base=False)
    assert "## Before and after" not in card
    assert tables(section(card, "Evaluation"))[-1][0] == ["metric", "this adapter"]


def test_tiny_model_card_says_it_is_a_demo_and_a_real_one_does_not(tmp_path):
    tiny, _ = render(tmp_path / "tiny")
    real, _ = render(tmp_path / "real", model="LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct")
    intro = tiny.split("\n## ", 1)[0]
    assert "**This is a demo card for a tiny random model, not a real question generator.**" in intro
    assert "tiny random demo model" in section(tiny, "Limitations")
    assert "demo" in metadata_load(tmp_path / "tiny" / "README.md")["tags"]
    assert "not a real question generator" not in real and "tiny random" not in real
    assert "demo" not in metadata_load(tmp_path / "real" / "README.md")["tags"]
    assert "[LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct](https://huggingface.co/LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct)" in real


def test_licenses_and_citations(tmp_path):
    card, _ = render(tmp_path)
    licenses = section(card, "Licenses")
    assert "[LICENSE](LICENSE)" in licenses  # the model repository's own LICENSE file
    assert f"https://huggingface.co/datasets/{REPOS['dataset_repo']}/blob/main/LICENSE" in licenses
    assert "EXAONE AI Model License Agreement 1.1 - NC" in licenses and "non-commercial" in licenses
    assert "CC BY-ND 2.0 KR" in licenses and "LG CNS" in licenses
    bibtex = section(card, "Citation")
    for needle in ("@misc{owner-qg-lora", "arXiv:2412.04862", "arXiv:1909.07005", "Ushio, Asahi", "2022"):
        assert needle in bibtex


@pytest.mark.parametrize("problem", ["no metrics.json", "no scores", "not an evaluation"])
def test_evaluation_without_scores_is_refused(tmp_path, problem):
    folder = write_evaluation(tmp_path / "eval")
    metrics = json.loads((folder / "metrics.json").read_text())
    if problem == "no metrics.json":
        (folder / "metrics.json").unlink()
    elif problem == "no scores":
        metrics["recommendation"] = None
    else:
        del metrics["counts"]
    if problem != "no metrics.json":
        (folder / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(UserError, match="metrics.json"):
        read_evaluation(folder)


def test_qgbench_reference_is_the_projects_constant():
    """evaluate() writes qg.metrics' QG-Bench numbers; the card shows whatever metrics.json holds (tested above)."""
    assert set(REFERENCE) - {"model"} == set(QGBENCH_KO_MT5_BASE)


def test_template_whose_metadata_breaks_is_refused(tmp_path, monkeypatch):
    import qg.hub.model_card

    broken = tmp_path / "template.md"
    broken.write_text("---\n{{ card_data }}\ntags: [unclosed\n---\n\n# card\n")
    monkeypatch.setattr(qg.hub.model_card, "TEMPLATE_PATH", broken)
    with pytest.raises(UserError, match="does not parse"):
        render(tmp_path / "a")
    shadowing = tmp_path / "shadowing.md"
    shadowing.write_text("---\n{{ card_data }}\nlicense_name: apache-2.0\n---\n\n# card\n")
    monkeypatch.setattr(qg.hub.model_card, "TEMPLATE_PATH", shadowing)
    with pytest.raises(UserError, match="license_name"):
        render(tmp_path / "b")
