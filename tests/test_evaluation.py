"""evaluate_qg.py: outputs, resuming, the QG-Bench protocol's sentence grouping, and clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qg.data.build import build_qg_dataset
from qg.data.korquad import read_korquad_json
from qg.eval.runner import EvalSettings, answer_sentence, evaluate
from qg.quality import rejection_reason

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "hub_dataset" / "sample"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "sample"
    build_qg_dataset(read_korquad_json(SAMPLE / "train.json"), read_korquad_json(SAMPLE / "dev.json"), out)
    return out


def settings(dataset, **changes) -> EvalSettings:
    values = dict(model="tiny-random-exaone", base=None, dataset=str(dataset), split="test", mode="agnostic",
                  num_questions=3, max_samples=3, compare_base=False, temperature=1.0, top_p=0.95,
                  max_new_tokens=24, seed=0, batch_size=2)
    return EvalSettings(**(values | changes))


def test_answer_sentence_is_the_sentence_holding_the_answer():
    context = "첫째 문장이다. 둘째 문장에 답이 있다! 셋째는 질문인가? 넷째."
    assert answer_sentence(context, context.index("답")) == "둘째 문장에 답이 있다!"
    assert answer_sentence(context, 0) == "첫째 문장이다."
    assert answer_sentence(context, context.index("넷째")) == "넷째."


def test_agnostic_run_writes_gold_and_generated_questions(dataset, tmp_path):
    metrics = evaluate(settings(dataset, compare_base=True), tmp_path)
    outputs = json.loads((tmp_path / "after_outputs.json").read_text())
    dev = [p for a in read_korquad_json(SAMPLE / "dev.json").squad["data"] for p in a["paragraphs"]][:3]
    assert [o["input"] for o in outputs] == [p["context"] for p in dev]
    assert [o["expected_output"] for o in outputs] == [[qa["question"] for qa in p["qas"]] for p in dev]
    for output in outputs:
        for key in ("model_output", "base_output"):
            assert len(output[key]) <= 3 and len(set(output[key])) == len(output[key])
            assert all(rejection_reason(q, output["input"]) is None for q in output[key])
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["counts"] == {"paragraphs": 3, "gold_questions": sum(len(p["qas"]) for p in dev),
                                 "generated_questions": sum(len(o["model_output"]) for o in outputs)}
    assert on_disk["decoding"]["temperature"] == 1.0 and on_disk["dataset_revision"].startswith("sha256:")
    assert "base" in on_disk


def test_interrupted_run_resumes_to_the_same_result(dataset, tmp_path):
    straight = tmp_path / "straight"
    evaluate(settings(dataset, batch_size=1), straight)
    resumed = tmp_path / "resumed"
    evaluate(settings(dataset, batch_size=1, max_samples=3), resumed)
    lines = (resumed / "predictions.jsonl").read_text().splitlines()
    # As if killed while writing the third paragraph: two whole lines and half of the next one.
    (resumed / "predictions.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:20])
    (resumed / "metrics.json").unlink()
    evaluate(settings(dataset, batch_size=1), resumed)
    assert (resumed / "after_outputs.json").read_text() == (straight / "after_outputs.json").read_text()
    with pytest.raises(Exception, match="other settings"):
        evaluate(settings(dataset, batch_size=1, seed=7), resumed)


def test_answer_aware_run_uses_qgbench_protocol(dataset, tmp_path):
    metrics = evaluate(settings(dataset, mode="answer-aware", max_samples=2), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert all(len(r["model_output"]) == len(r["answers"]) == len(r["questions"]) for r in records)
    sentences = {s.strip().lower() for r in records for s in r["sentences"]}
    assert metrics["num_predictions"] == len(sentences)
    assert set(metrics["qgbench"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "meteor"}
    assert metrics["decoding"]["do_sample"] is False


def run_cli(*args, **env):
    return subprocess.run([sys.executable, "evaluate_qg.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **env})


def test_predictions_file_is_scored_without_a_model(tmp_path):
    predictions = tmp_path / "preds.jsonl"
    lines = [{"prediction": "훈민정음을 만든 왕은 누구인가", "references": ["훈민정음을 만든 왕은 누구인가"]},
             {"prediction": "첨성대는 어디에 있나", "references": ["첨성대는 어디에 있나", "첨성대의 위치는"],
              "context": "첨성대는 경주에 있다."}]
    predictions.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n")
    result = run_cli("--predictions", predictions, "--output-dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["counts"] == {"predictions": 2}
    assert metrics["qgbench"]["bleu4"] == pytest.approx(100) and metrics["qgbench"]["rougeL"] == pytest.approx(100)
    assert metrics["korean"]["chrf"] == pytest.approx(100)
    outputs = json.loads((tmp_path / "out" / "after_outputs.json").read_text())
    assert [o["model_output"] for o in outputs] == [[line["prediction"]] for line in lines]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "predictions file {path} not found"),
        ('{"prediction": "질문", "references": ["질문"]}\n{not json\n', "{path}:2: not JSON"),
        ('{"prediction": "질문"}\n', '{path}:1: expected {{"prediction": str, "references": [str, ...]}}'),
        ("\n", "{path} holds no predictions"),
    ],
)
def test_bad_predictions_file_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "preds.jsonl"
    if content is not None:
        path.write_text(content)
    result = run_cli("--predictions", path, "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message.format(path=path)}")
    assert not (tmp_path / "out" / "metrics.json").exists()
