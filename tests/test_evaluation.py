"""evaluate_qg.py: outputs, resuming, the QG-Bench protocol's sentence grouping, and clear errors."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qg.cli import UserError
from qg.data.build import build_qg_dataset
from qg.data.korquad import read_korquad_json
from qg.eval.config import EvalConfig
from qg.eval.runner import answer_sentence, evaluate
from qg.io import folder_lock
from qg.quality import rejection_reason

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "hub_dataset" / "sample"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "sample"
    build_qg_dataset(read_korquad_json(SAMPLE / "train.json"), read_korquad_json(SAMPLE / "dev.json"), out)
    return out


def settings(dataset, output_dir, **changes) -> EvalConfig:
    values = dict(model="tiny-random-exaone", dataset=str(dataset), output_dir=str(output_dir), num_questions=3,
                  max_samples=3, temperature=1.0, max_new_tokens=24, batch_size=2)
    return EvalConfig(**(values | changes))


def test_answer_sentence_is_the_sentence_holding_the_answer():
    context = "첫째 문장이다. 둘째 문장에 답이 있다! 셋째는 질문인가? 넷째."
    assert answer_sentence(context, context.index("답")) == "둘째 문장에 답이 있다!"
    assert answer_sentence(context, 0) == "첫째 문장이다."
    assert answer_sentence(context, context.index("넷째")) == "넷째."


def test_agnostic_run_writes_gold_and_generated_questions(dataset, tmp_path):
    metrics = evaluate(settings(dataset, tmp_path, compare_base=True))
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
    counts = on_disk["counts"]
    assert (counts["paragraphs"], counts["gold_questions"], counts["truncated_contexts"]) == (
        3, sum(len(p["qas"]) for p in dev), 0)
    assert counts["generated_questions"] <= 3 * 3
    assert on_disk["decoding"]["temperature"] == 1.0 and on_disk["dataset_revision"].startswith("sha256:")
    assert "base" in on_disk
    # A plain model: it is its own base, and there are no adapter weights to fingerprint.
    assert (on_disk["model"], on_disk["base_model"], on_disk["adapter_sha256"]) == (
        "tiny-random-exaone", "tiny-random-exaone", None)


def interrupt(folder: Path, whole_lines: int, mid_character: bool) -> None:
    """As if killed while writing predictions.jsonl: `whole_lines` lines, then the start of the next one (cut
    inside a Hangul character, or before it began), and no results yet."""
    lines = (folder / "predictions.jsonl").read_bytes().split(b"\n")
    next_line = lines[whole_lines]
    cut = 0
    if mid_character:
        cut = next(i for i, byte in enumerate(next_line) if byte >= 0xC0) + 1  # after a lead byte
        with pytest.raises(UnicodeDecodeError):  # what a reader of text stumbles on
            next_line[:cut].decode("utf-8")
    (folder / "predictions.jsonl").write_bytes(b"".join(line + b"\n" for line in lines[:whole_lines])
                                               + next_line[:cut])
    for name in ("metrics.json", "after_outputs.json"):
        (folder / name).unlink()


@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted run over 3 paragraphs in batches of 2: [0, 1], [2]."""
    folder = tmp_path_factory.mktemp("straight")
    return folder, evaluate(settings(dataset, folder, max_samples=3))


@pytest.mark.parametrize(("whole_lines", "mid_character"), [(1, True), (2, False)])
def test_interrupted_run_resumes_to_the_same_result(dataset, straight, tmp_path, whole_lines, mid_character):
    # Interrupted inside the first batch (it is generated again from its start), and between the batches.
    straight_dir, straight_metrics = straight
    shutil.copytree(straight_dir, tmp_path, dirs_exist_ok=True)
    interrupt(tmp_path, whole_lines, mid_character)
    resumed = evaluate(settings(dataset, tmp_path, max_samples=3))
    for name in ("predictions.jsonl", "after_outputs.json"):
        assert (tmp_path / name).read_text() == (straight_dir / name).read_text()
    assert resumed == straight_metrics


def test_adapter_evaluation_records_its_base_and_weights_also_when_resumed(dataset, tmp_path):
    from peft import LoraConfig, get_peft_model

    from qg.models.loading import load_base

    base, _ = load_base("tiny-random-exaone")
    adapter = tmp_path / "adapter"
    get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")).save_pretrained(adapter)
    expected_base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    expected_sha = hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()
    config = settings(dataset, tmp_path / "eval", model=str(adapter), max_samples=1)
    first = evaluate(config)
    (tmp_path / "eval" / "metrics.json").unlink()
    resumed = evaluate(config)  # every paragraph done: no model is loaded this time
    for metrics in (first, resumed, json.loads((tmp_path / "eval" / "metrics.json").read_text())):
        assert (metrics["model"], metrics["base_model"], metrics["adapter_sha256"]) == (
            str(adapter), expected_base, expected_sha)


def test_resume_with_other_settings_is_refused(dataset, tmp_path):
    evaluate(settings(dataset, tmp_path, max_samples=2))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(UserError, match="other settings"):
        evaluate(settings(dataset, tmp_path, max_samples=2, seed=7))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_batches_draw_from_their_own_seeds():
    """Every batch from the same seed would repeat one random stream over the split."""
    from qg.eval.runner import batch_seed

    assert len({batch_seed(0, k) for k in range(100)} | {batch_seed(1, k) for k in range(100)}) == 200


def test_two_evaluations_into_one_folder_are_refused(dataset, tmp_path):
    with folder_lock(tmp_path), pytest.raises(UserError, match="in use by another run"):
        evaluate(settings(dataset, tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_failed_evaluation_leaves_nothing_that_blocks_the_corrected_command(dataset, tmp_path, monkeypatch):
    import qg.generate

    def fail(*args, **kwargs):
        raise UserError("cannot load the model")

    monkeypatch.setattr(qg.generate.QuestionGenerator, "from_pretrained", fail)
    with pytest.raises(UserError, match="cannot load"):
        evaluate(settings(dataset, tmp_path / "out", seed=3))
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.undo()
    evaluate(settings(dataset, tmp_path / "out", max_samples=1))
    assert json.loads((tmp_path / "out" / "run.json").read_text())["seed"] == 0


def test_answer_aware_run_uses_qgbench_protocol(dataset, tmp_path, monkeypatch):
    from qg.generate import QuestionGenerator

    load = QuestionGenerator.from_pretrained
    # A budget every sample paragraph exceeds: each is cut, once per answer it is prompted with.
    monkeypatch.setattr(QuestionGenerator, "from_pretrained",
                        lambda model, base=None: load(model, base=base, max_context_tokens=12))
    metrics = evaluate(settings(dataset, tmp_path, mode="answer-aware", max_samples=2))
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert all(len(r["model_output"]) == len(r["answers"]) == len(r["questions"]) for r in records)
    # Paragraphs, not the (paragraph, answer) prompts.
    assert metrics["counts"]["truncated_contexts"] == 2 < sum(len(r["answers"]) for r in records)
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
