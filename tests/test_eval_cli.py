"""qg-evaluate's command line: a bad input is one line, exit code 2, and the output folder as it was."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from qg.data.build import build_qg_dataset
from qg.data.korquad import sample_sources
from qg.eval.config import EvalConfig
from qg.eval.runner import main, parse_args
from qg.generate import QuestionGenerator

GOOD_LINE = json.dumps({"prediction": "질문은?", "references": ["질문은?"]}, ensure_ascii=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "sample"
    build_qg_dataset(*sample_sources(), out)
    return out


def model_args(dataset: Path, *extra: str) -> list[str]:
    return ["--model", "tiny-random-exaone", "--dataset", str(dataset), *extra]


# (arguments, files to write first {name: bytes}, expected message fragment)
BAD_INPUTS = {
    "negative temperature": (lambda d: model_args(d, "--temperature", "-1"), {}, "--temperature must be a number >= 0"),
    "nan temperature": (lambda d: model_args(d, "--temperature", "nan"), {}, "--temperature must be a number >= 0"),
    "top-p above 1": (lambda d: model_args(d, "--top-p", "2"), {}, "--top-p must be in (0, 1]"),
    "top-p 0": (lambda d: model_args(d, "--top-p", "0"), {}, "--top-p must be in (0, 1]"),
    "no questions": (lambda d: model_args(d, "--num-questions", "0"), {}, "--num-questions must be at least 1"),
    "non-UTF-8 predictions": (lambda d: ["--predictions", "preds.jsonl"], {"preds.jsonl": b"\xff\xfe{}\n"},
                              "preds.jsonl: not UTF-8 text"),
    "malformed line 2": (lambda d: ["--predictions", "preds.jsonl"],
                         {"preds.jsonl": (GOOD_LINE + "\n{not json\n").encode()}, "preds.jsonl:2: not JSON"),
    "missing predictions": (lambda d: ["--predictions", "preds.jsonl"], {}, "predictions file preds.jsonl not found"),
    "no predictions": (lambda d: ["--predictions", "preds.jsonl"], {"preds.jsonl": b"\n"},
                       "preds.jsonl holds no predictions"),
    "line without references": (lambda d: ["--predictions", "preds.jsonl"], {"preds.jsonl": '{"prediction": "질문"}\n'.encode()},
                                'preds.jsonl:1: expected {"prediction": str, "references": [str, ...]}'),
    "missing BERTScore folder": (lambda d: ["--predictions", "preds.jsonl", "--bertscore-model", "no-such-bert"],
                                 {"preds.jsonl": (GOOD_LINE + "\n").encode()}, "--bertscore-model no-such-bert: no such folder"),
    "missing dataset": (lambda d: model_args(d)[:3] + ["no-such-dataset"], {}, "no-such-dataset: no dataset folder there"),
    "unknown split": (lambda d: model_args(d, "--split", "dev"), {}, "has no split 'dev'"),
    "missing model": (lambda d: ["--model", "no/such/model", "--dataset", str(d)], {},
                      "--model no/such/model: no such folder, and not a Hub id"),
    "model and predictions": (lambda d: model_args(d, "--predictions", "p.jsonl"), {}, "give --model"),
    "unknown flag": (lambda d: model_args(d, "--colour", "blue"), {}, "unknown argument(s) --colour blue"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
@pytest.mark.parametrize("output_state", ["absent", "previous results"])
def test_bad_input_is_one_line_exit_2_and_the_folder_as_before(case, output_state, dataset, tmp_path, monkeypatch,
                                                               capsys):
    args, files, message = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    out = tmp_path / "out"
    if output_state == "previous results":
        out.mkdir()
        (out / "metrics.json").write_text('{"previous": true}\n')
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as exit_:
        main([*args(dataset), "--output-dir", str(out)])
    assert exit_.value.code == 2
    # Loading the dataset may draw datasets' progress bars first; the error is one line, the last, no traceback.
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line for line in lines if line.startswith(("error", "Traceback"))] == lines[-1:], lines
    assert lines[-1].startswith("error: ") and message in lines[-1], lines
    assert {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert out.exists() == (output_state == "previous results")


def test_recipe_sets_defaults_and_flags_override_it(tmp_path):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text("mode: answer-aware\nmax_new_tokens: 32\nsplit: validation\n")
    config = parse_args(["--config", str(recipe), "--model", "m/m", "--dataset", "d/d", "--output-dir", "o",
                         "--split", "test", "--compare-base"])
    assert config == EvalConfig(model="m/m", dataset="d/d", output_dir="o", mode="answer-aware", max_new_tokens=32,
                                split="test", compare_base=True)


def test_generation_defaults_are_question_generators():
    """The CLI samples as QuestionGenerator.generate does by default: the product's decoding, never a copy."""
    config = parse_args(["--model", "m/m", "--dataset", "d/d", "--output-dir", "o"])
    defaults = inspect.signature(QuestionGenerator.generate).parameters
    for name in ("num_questions", "temperature", "top_p", "max_new_tokens", "seed", "batch_size"):
        assert getattr(config, name) == defaults[name].default, name
