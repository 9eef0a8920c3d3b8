"""qg-generate: every input format gives one output line per row in order, bad input ends in one line and exit 2
with nothing written, an interrupted run resumes to the uninterrupted output, two processes write what one does."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qg.generate import QuestionGenerator
from qg.serving.batch import EMPTY_TEXT, PARTIAL_SUFFIX, main

REPO = Path(__file__).resolve().parents[1]
SAMPLING = ["--temperature", "1.0", "--top-p", "1.0", "--num-questions", "3", "--batch-size", "2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(*argv) -> int:
    try:
        main([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code
    return 0


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class GenerateSpy:
    """Counts the paragraphs `QuestionGenerator.generate` is asked for; optionally interrupts its `stop_at`-th call
    as Ctrl-C would."""

    def __init__(self, monkeypatch, stop_at: int | None = None):
        self.paragraphs = 0
        self.calls = 0
        original = QuestionGenerator.generate

        def spied(generator, contexts, **kwargs):
            self.calls += 1
            if self.calls == stop_at:
                raise KeyboardInterrupt
            self.paragraphs += len(contexts)
            return original(generator, contexts, **kwargs)

        monkeypatch.setattr(QuestionGenerator, "generate", spied)


def test_each_format_gives_one_line_per_row_in_input_order(paragraph_adapter, tmp_path):
    adapter, contexts, questions = paragraph_adapter
    order = [3, 0, 15, 7, 1]
    texts = [contexts[i] for i in order]
    ids = [f"doc-{i}" for i in order]
    inputs = {
        "jsonl": write_jsonl(tmp_path / "in.jsonl", [{"text": t, "doc": d} for t, d in zip(texts, ids)]),
        "parquet": tmp_path / "in.parquet",
        "csv": tmp_path / "in.csv",
        "dataset": tmp_path / "dataset",
    }
    pq.write_table(pa.table({"doc": ids, "text": texts}), inputs["parquet"])
    (inputs["dataset"] / "data").mkdir(parents=True)
    pq.write_table(pa.table({"doc": ids, "text": texts}), inputs["dataset"] / "data" / "train-00000-of-00001.parquet")
    import csv

    with inputs["csv"].open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["doc", "text"])
        writer.writerows(zip(ids, texts))
    expected = [{"id": d, "questions": [questions[i]], "rejected": {}, "truncated": False, "error": None}
                for d, i in zip(ids, order)]
    for name, path in inputs.items():
        source = ["--dataset", path] if name == "dataset" else [path]
        assert run(*source, "--id-column", "doc", "--model", adapter, "--temperature", 0,
                   "--output", tmp_path / f"{name}.jsonl") == 0
        assert read_jsonl(tmp_path / f"{name}.jsonl") == expected, name
        assert not (tmp_path / f"{name}.jsonl{PARTIAL_SUFFIX}").exists()

    # Plain text: paragraphs between blank lines (a line of spaces is blank too), ids are paragraph numbers.
    (tmp_path / "in.txt").write_text("\n\n".join(texts[:2]) + "\n  \n\n" + texts[2] + "\n", encoding="utf-8")
    assert run(tmp_path / "in.txt", "--model", adapter, "--temperature", 0, "--output", tmp_path / "txt.parquet",
               "--format", "parquet") == 0
    rows = pq.read_table(tmp_path / "txt.parquet").to_pylist()
    assert [(r["id"], r["questions"], r["error"]) for r in rows] == [(n, [questions[i]], None)
                                                                    for n, i in enumerate(order[:3])]


def test_an_empty_text_row_keeps_its_place_with_an_error(paragraph_adapter, tmp_path):
    adapter, contexts, questions = paragraph_adapter
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": contexts[0]}, {"text": " \n"}, {"text": None},
                                                 {"text": contexts[1]}])
    assert run(source, "--model", adapter, "--temperature", 0, "--output", tmp_path / "out.jsonl") == 0
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [(r["id"], r["questions"], r["error"]) for r in rows] == [
        (0, [questions[0]], None), (1, [], EMPTY_TEXT), (2, [], EMPTY_TEXT), (3, [questions[1]], None)]


BAD_INPUTS = {
    "missing column": ("in.jsonl", '{"body": "문단"}\n', [], "no column 'text' (it has body)"),
    "missing id column": ("in.jsonl", '{"text": "문단"}\n', ["--id-column", "doc"], "no column 'doc'"),
    "missing csv column": ("in.csv", "id,body\n1,문단\n", [], "header has no column 'text' (it has id, body)"),
    "empty jsonl": ("in.jsonl", "", [], "has no rows"),
    "empty csv": ("in.csv", "", [], "has no rows"),
    "blank text file": ("in.txt", "\n \n", [], "has no rows"),
    "malformed line": ("in.jsonl", '{"text": "가"}\n{"text": "나"}\n{"text": "다\n', [], "line 3 is not valid JSON"),
    "not an object": ("in.jsonl", '{"text": "가"}\n["나"]\n', [], "line 2 is a JSON list, not an object"),
    "short csv row": ("in.csv", "id,text\n1,가\n2\n", ["--id-column", "id"], "line 3 does not have the header's 2"),
    "text not a string": ("in.jsonl", '{"text": 7}\n', [], "line 1: column 'text' holds int 7, not text"),
    "unknown format": ("in.json", '{"text": "가"}\n', [], "unknown input format '.json'"),
    "not parquet": ("in.parquet", "text\n가\n", [], "is not a readable Parquet file"),
    "not utf-8": ("in.txt", b"\xff\xfe\x00", [], "is not UTF-8 text"),
    "missing file": (None, None, [], "does not exist"),
    "mixed ids for parquet": ("in.jsonl", '{"text": "가", "id": 1}\n{"text": "나", "id": "b"}\n',
                              ["--id-column", "id", "--format", "parquet"], "the ids mix int and str"),
    "offline dataset": (None, None, ["--dataset", "someone/absent"], "cannot load dataset someone/absent"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_before_any_model_loads_and_nothing_written(case, tmp_path, monkeypatch,
                                                                                capsys):
    name, content, extra, message = BAD_INPUTS[case]
    source = [] if "--dataset" in extra else [tmp_path / (name or "absent.jsonl")]
    if content is not None:
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.setattr(QuestionGenerator, "from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
    output = tmp_path / "out" / "questions.jsonl"
    assert run(*source, *extra, "--model", "tiny-random-exaone", "--output", output) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_interrupted_run_resumes_to_the_uninterrupted_output(paragraph_adapter, tmp_path, monkeypatch, capsys):
    adapter, contexts, _ = paragraph_adapter
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": c} for c in contexts])
    command = [source, "--model", adapter, *SAMPLING]
    assert run(*command, "--output", tmp_path / "straight.jsonl") == 0
    straight = (tmp_path / "straight.jsonl").read_bytes()
    # Sampling: the resumed chunks must draw what they drew the first time, so their questions vary and matter.
    assert len({tuple(r["questions"]) for r in read_jsonl(tmp_path / "straight.jsonl")}) > 8

    output = tmp_path / "resumed.jsonl"
    partial = tmp_path / f"resumed.jsonl{PARTIAL_SUFFIX}"
    with monkeypatch.context() as patch:
        GenerateSpy(patch, stop_at=4)  # Ctrl-C during the 4th chunk
        assert run(*command, "--output", output) == 130
    assert not output.exists()
    assert "6 paragraphs are kept" in capsys.readouterr().err
    assert [r["row"] for r in read_jsonl(partial)[1:]] == list(range(6))
    with partial.open("a", encoding="utf-8") as file:
        file.write('{"row": 6, "id": 6, "questions": ["경복')  # what kill -9 in the middle of a write leaves

    assert run(*command, "--temperature", "0.5", "--output", output) == 2
    assert "other settings or other input" in capsys.readouterr().err

    spy = GenerateSpy(monkeypatch)
    assert run(*command, "--output", output) == 0
    assert spy.paragraphs == len(contexts) - 6
    assert output.read_bytes() == straight
    assert not partial.exists()


def test_killed_process_resumes_to_the_uninterrupted_output(paragraph_adapter, tmp_path):
    adapter, contexts, _ = paragraph_adapter
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": c} for c in contexts * 2])
    command = [str(a) for a in (source, "--model", adapter, *SAMPLING)]
    assert run(*command, "--output", tmp_path / "straight.jsonl") == 0

    output = tmp_path / "killed.jsonl"
    partial = tmp_path / f"killed.jsonl{PARTIAL_SUFFIX}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "qg.serving.batch", *command, "--output", str(output)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if partial.exists() and len(partial.read_text(encoding="utf-8").splitlines()) > 1:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    kept = len(read_jsonl(partial)) - 1
    assert not output.exists() and 0 < kept < 2 * len(contexts), "killed too late to test resuming"

    assert run(*command, "--output", output) == 0
    assert output.read_bytes() == (tmp_path / "straight.jsonl").read_bytes()


def test_two_accelerate_processes_write_what_one_process_writes(paragraph_adapter, tmp_path):
    adapter, contexts, _ = paragraph_adapter
    # An odd number of chunks, so one process has one more than the other; an empty row, kept in place.
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": c} for c in contexts[:9]] + [{"text": ""}])
    command = [str(a) for a in (source, "--model", adapter, *SAMPLING)]
    assert run(*command, "--output", tmp_path / "one.jsonl") == 0

    # accelerate 1.15 starts one process for --cpu; --multi_gpu without GPUs starts two, which form a CPU group.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    result = subprocess.run([*launch, "-m", "qg.serving.batch", *command, "--output", str(tmp_path / "two.jsonl")],
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert result.stdout.count(" rows -> ") == 1 and "2 processes" in result.stdout  # written once, by the main one
