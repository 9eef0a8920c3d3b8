"""hub_dataset/build_dataset.py, the real command: output layout, card, splits, bad inputs, Hub failures."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import datasets
import httpx2
import pytest
from huggingface_hub import DatasetCard, metadata_load
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

import qg.data.build
import qg.data.korquad
from qg.cli import run
from qg.data.card import size_category

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "hub_dataset" / "build_dataset.py"
_spec = importlib.util.spec_from_file_location("build_dataset", SCRIPT)
build_dataset = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_dataset)


def write_korquad(path: Path, prefix: str, articles: int, paragraphs: int = 3) -> Path:
    """A KorQuAD-shaped file: `articles` titles, `paragraphs` paragraphs each, 2 or 3 questions per paragraph."""
    data = []
    for a in range(articles):
        title = f"{prefix}_{a}"
        ps = []
        for p in range(paragraphs):
            context = f"{title} 문서의 {p}번째 문단은 {1900 + p}년에 {prefix}{a}{p}씨가 썼다. 분량은 {p + 2}쪽이다."
            answers = [f"{1900 + p}년", f"{prefix}{a}{p}씨", f"{p + 2}쪽"][: 2 + (a + p) % 2]
            ps.append({"context": context, "qas": [
                {"id": f"{title}-{p}-{i}", "question": f"{title} {p}번째 문단의 {i}번 질문은?",
                 "answers": [{"text": answer, "answer_start": context.index(answer)}]}
                for i, answer in enumerate(answers)]})
        data.append({"title": title, "paragraphs": ps})
    path.write_text(json.dumps({"version": "test", "data": data}, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def korquad_files(tmp_path: Path) -> tuple[Path, Path]:
    """Like the bundled sample: 12 train articles of 3 paragraphs, 4 dev articles."""
    return write_korquad(tmp_path / "train.json", "학습", 12), write_korquad(tmp_path / "dev.json", "평가", 4)


def cli(capsys, *argv: str | Path) -> tuple[int, str, str]:
    """Run the command in this process, as `python hub_dataset/build_dataset.py ARGV` would: (exit code, out, err)."""
    try:
        run(lambda: build_dataset.main([str(arg) for arg in argv]))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def script(*argv: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=120)


def load(out: Path, config: str = "default", **kwargs) -> datasets.DatasetDict:
    """`datasets.load_dataset(out)`, with a cache of its own: datasets keys a local folder's cache by its README
    alone, and every build here has the same README layout and folder name."""
    return datasets.load_dataset(str(out), config, cache_dir=str(out.parent / "datasets-cache"), **kwargs)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_build_round_trips_through_load_dataset(tmp_path: Path, korquad_files, capsys) -> None:
    train_json, dev_json = korquad_files
    out = tmp_path / "built"
    code, stdout, _ = cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out)
    assert code == 0 and stdout.startswith(f"wrote {out}")

    default = load(out)
    pairs = load(out, "pairs")
    assert set(default) == set(pairs) == {"train", "validation", "test"}
    assert default["train"].features["answers"] == datasets.List(
        {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")})
    for split in default:
        # pairs is default flattened, question by question, in the same order.
        flattened = [(row["title"], row["context"], question, answer["text"], answer["answer_start"])
                     for row in default[split] for question, answer in zip(row["questions"], row["answers"],
                                                                           strict=True)]
        assert flattened == [(r["title"], r["context"], r["question"], r["answer"], r["answer_start"])
                             for r in pairs[split]]
        for row in pairs[split]:
            assert row["context"][row["answer_start"]:row["answer_start"] + len(row["answer"])] == row["answer"]
    for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert not set(default[a]["title"]) & set(default[b]["title"])
        assert not set(default[a]["context"]) & set(default[b]["context"])
    # ceil(0.05 x 12 articles) = 1 validation article; every question of the files is in exactly one split.
    assert len(set(default["validation"]["title"])) == 1
    raw_ids = [qa["id"] for path in korquad_files for article in json.loads(path.read_text())["data"]
               for p in article["paragraphs"] for qa in p["qas"]]
    built_ids = [qid for split in pairs for qid in pairs[split]["id"]]
    assert sorted(built_ids) == sorted(raw_ids)
    assert sorted(pairs["test"]["id"]) == sorted(qid for qid in raw_ids if qid.startswith("평가"))


def test_card_metadata_and_statistics_read_back(tmp_path: Path, korquad_files, capsys) -> None:
    train_json, dev_json = korquad_files
    out = tmp_path / "built"
    assert cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out)[0] == 0
    metadata = metadata_load(out / "README.md")
    card = DatasetCard.load(out / "README.md")
    assert card.data.to_dict() == metadata

    assert metadata["language"] == ["ko"]
    assert (metadata["license"], metadata["license_name"]) == ("other", "cc-by-nd-2.0-kr")
    assert metadata["license_link"] == "https://creativecommons.org/licenses/by-nd/2.0/kr/"
    assert metadata["source_datasets"] == ["KorQuAD/squad_kor_v1"]
    assert metadata["task_categories"] == ["text-generation"]
    assert "question-generation" in metadata["tags"]
    pairs = load(out, "pairs")
    default = load(out)
    assert sum(pairs.num_rows.values()) < 1000 and metadata["size_categories"] == ["n<1K"]
    assert size_category(66_181) == "10K<n<100K"  # the whole KorQuAD 1.0, in the Hub's buckets
    # Each config's patterns name the files on disk, one split each, so the Hub reads them as load_dataset does.
    configs = {c["config_name"]: {f["split"]: f["path"] for f in c["data_files"]} for c in metadata["configs"]}
    assert set(configs) == {"default", "pairs"}
    for files in configs.values():
        assert set(files) == {"train", "validation", "test"}
        for pattern in files.values():
            assert len(list(out.glob(pattern))) == 1
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet")) == sorted(
        str(p.relative_to(out)) for files in configs.values() for pattern in files.values() for p in out.glob(pattern))

    for split in ["train", "validation", "test"]:
        row = (f"| {len(set(default[split]['title'])):,} | {default[split].num_rows:,} | "
               f"{pairs[split].num_rows:,} |")
        assert row in card.text, split
    assert "CC BY-ND 2.0 KR" in card.text and "LG CNS" in card.text and "https://korquad.github.io" in card.text


def test_real_dev_set_becomes_the_test_split(tmp_path: Path, korquad_dev_json: Path, capsys) -> None:
    train_json = write_korquad(tmp_path / "train.json", "학습", 4)
    out = tmp_path / "built"
    code, _, _ = cli(capsys, "--train-json", train_json, "--dev-json", korquad_dev_json, "--output-dir", out)
    assert code == 0

    raw = json.loads(korquad_dev_json.read_text(encoding="utf-8"))

    def norm(text: str) -> str:
        return " ".join(unicodedata.normalize("NFC", text).split())

    questions: dict[tuple[str, str], set[str]] = {}
    for article in raw["data"]:
        for p in article["paragraphs"]:
            questions.setdefault((norm(article["title"]), norm(p["context"])), set()).update(
                norm(q["question"]) for q in p["qas"])
    paragraphs_with_questions = [qs for qs in questions.values() if qs]

    test_default = load(out, split="test")
    test_pairs = load(out, "pairs", split="test")
    assert test_default.num_rows == len(paragraphs_with_questions)
    assert test_pairs.num_rows == sum(len(qs) for qs in paragraphs_with_questions)
    assert len(set(test_default["title"])) == len(raw["data"])
    assert f"| {len(raw['data']):,} | {test_default.num_rows:,} | {test_pairs.num_rows:,} |" in (
        out / "README.md").read_text(encoding="utf-8")


def test_max_train_samples_limits_train_only_with_whole_paragraphs(tmp_path: Path, korquad_files, capsys) -> None:
    train_json, dev_json = korquad_files
    full, limited = tmp_path / "full", tmp_path / "limited"
    assert cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", full, "--seed", 3)[0] == 0
    assert cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", limited,
               "--max-train-samples", 10, "--seed", 3)[0] == 0
    full_ds = load(full)
    limited_ds = load(limited)
    kept = limited_ds["train"].to_list()
    total = sum(len(row["questions"]) for row in kept)
    assert total <= 10
    left_out = [row for row in full_ds["train"].to_list() if row not in kept]
    assert all(row in full_ds["train"].to_list() for row in kept)  # whole paragraphs, unchanged
    assert all(len(row["questions"]) > 10 - total for row in left_out)
    for split in ["validation", "test"]:
        assert limited_ds[split].to_list() == full_ds[split].to_list()
    assert "--max-train-samples 10" in (limited / "README.md").read_text(encoding="utf-8")


def test_misaligned_answers_are_reported_repaired_and_counted_in_the_card(tmp_path: Path, korquad_files,
                                                                          capsys) -> None:
    train_json, dev_json = korquad_files
    raw = json.loads(dev_json.read_text(encoding="utf-8"))
    qas = raw["data"][0]["paragraphs"][0]["qas"]
    qas[0]["answers"][0]["answer_start"] += 3  # still in the paragraph: repaired
    qas[1]["answers"][0]["text"] = "없는 답"  # not in the paragraph: dropped
    dev_json.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "built"
    code, _, err = cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out)
    assert code == 0
    assert err == (f"warning: {dev_json}: 2 answer(s) whose answer_start does not point at the answer text "
                   f"(ids: {qas[0]['id']}, {qas[1]['id']}); repaired 1 by searching the context, dropped 1\n")
    test = load(out, "pairs", split="test")
    assert qas[0]["id"] in test["id"] and qas[1]["id"] not in test["id"]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| answers not at their answer_start | 0 | 2 |" in card
    assert "| … repaired (found elsewhere in the context) | 0 | 1 |" in card
    assert "| … dropped with their question (not in the context) | 0 | 1 |" in card


def break_file(path: Path, how: str) -> str:
    """Write a bad input of kind `how` to `path`; returns what the error line must say after the file name."""
    good = json.loads(path.read_text(encoding="utf-8"))
    if how == "missing":
        path.unlink()
        return "no such file"
    if how == "not json":
        path.write_text('{"data": [', encoding="utf-8")
        return "not JSON (Expecting value: line 1 column 11 (char 10))"
    if how == "not utf-8":
        path.write_bytes(b'{"data": "\xff"}')
        return "not JSON (not UTF-8 text)"
    if how == "no questions":
        for article in good["data"]:
            for p in article["paragraphs"]:
                p["qas"] = []
        path.write_text(json.dumps(good), encoding="utf-8")
        return "no paragraph with a usable question"
    if how == "no data":
        path.write_text(json.dumps({"version": "x", "articles": good["data"]}), encoding="utf-8")
        return "not KorQuAD/SQuAD v1.1 JSON: top level has no 'data'"
    if how == "no paragraphs":
        del good["data"][1]["paragraphs"]
        path.write_text(json.dumps(good), encoding="utf-8")
        return "not KorQuAD/SQuAD v1.1 JSON: data[1] has no 'paragraphs'"
    if how == "no qas":
        good["data"][2]["paragraphs"][1]["questions"] = good["data"][2]["paragraphs"][1].pop("qas")
        path.write_text(json.dumps(good), encoding="utf-8")
        return "not KorQuAD/SQuAD v1.1 JSON: data[2].paragraphs[1] has no 'qas'"
    if how == "misaligned answers":
        for p in good["data"][3]["paragraphs"]:
            p["qas"][0]["answers"][0]["answer_start"] += 1
        path.write_text(json.dumps(good), encoding="utf-8")
        ids = ", ".join(p["qas"][0]["id"] for p in good["data"][3]["paragraphs"])
        return (f"3 answer(s) whose answer_start does not point at the answer text (ids: {ids}); fix them, "
                "or leave out --strict to repair them by searching the context")
    raise ValueError(how)


@pytest.mark.parametrize("which", ["train", "dev"])
@pytest.mark.parametrize("how", ["missing", "not json", "not utf-8", "no data", "no paragraphs", "no qas",
                                 "no questions", "misaligned answers"])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path: Path, korquad_files, capsys, which: str,
                                                    how: str) -> None:
    train_json, dev_json = korquad_files
    bad = train_json if which == "train" else dev_json
    problem = break_file(bad, how)
    out = tmp_path / "out" / "built"
    code, stdout, err = cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out,
                            "--strict")
    assert code == 2
    assert err == f"error: {bad}: {problem}\n"
    assert stdout == ""
    assert not out.exists() and (not out.parent.exists() or leftovers(out.parent) == [])


def test_failed_or_interrupted_build_leaves_the_previous_one(tmp_path: Path, korquad_files, capsys,
                                                             monkeypatch) -> None:
    train_json, dev_json = korquad_files
    out = tmp_path / "built"
    assert cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    dev_json.write_text("[]", encoding="utf-8")
    assert cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out)[0] == 2

    write_korquad(dev_json, "평가", 4)
    written = []

    def interrupted(table, path):  # a Ctrl-C after some files are written
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        path.write_bytes(b"partial")

    monkeypatch.setattr(qg.data.build.pq, "write_table", interrupted)
    code, _, err = cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out,
                       "--seed", 1)
    assert code == 130 and err.startswith("interrupted")
    assert len(written) == 3
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert leftovers(tmp_path) == []


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_folder_shaped_like_a_build_but_not_built_is_never_replaced(tmp_path: Path, korquad_files, capsys) -> None:
    train_json, dev_json = korquad_files
    out = tmp_path / "X"
    (out / "data").mkdir(parents=True)
    (out / "README.md").write_text("n\n")
    (out / "data" / "results.csv").write_text("p\n")
    code, stdout, err = cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out)
    assert code == 2 and stdout == ""
    assert err == (f"error: {out} exists and was not written by qg-build-dataset; choose another output folder or "
                   "remove it yourself\n")
    assert files_of(out) == {"README.md": b"n\n", "data/results.csv": b"p\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X", "dev.json", "train.json"]


def test_a_build_is_replaced_by_the_next_until_a_user_adds_a_file(tmp_path: Path, korquad_files, capsys) -> None:
    train_json, dev_json = korquad_files
    out = tmp_path / "built"
    assert cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out)[0] == 0
    assert cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out,
               "--max-train-samples", 5)[0] == 0
    assert "--max-train-samples 5" in (out / "README.md").read_text(encoding="utf-8")
    assert qg.data.build.load_qg_dataset(str(out))["train"].num_rows <= 5
    capsys.readouterr()  # the progress bars of reading it back

    (out / "data" / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out)
    assert code == 2
    assert err == (f"error: {out} holds data/notes.txt, which qg-build-dataset did not write; move it away or "
                   "choose another output folder\n")
    assert (out / "data" / "notes.txt").read_text() == "mine"
    assert qg.data.build.load_qg_dataset(str(out))["train"].num_rows <= 5


@pytest.mark.parametrize("argv, message", [
    (["--train-json", "t.json"], "--train-json and --dev-json go together"),
    (["--validation-fraction", "1"], "argument --validation-fraction: 1 is not between 0 and 1"),
    (["--validation-fraction", "half"], "argument --validation-fraction: half is not between 0 and 1"),
    (["--max-train-samples", "0"], "argument --max-train-samples: 0 is not a positive number"),
    (["--max-train-samples", "-1"], "argument --max-train-samples: -1 is not a positive number"),
    (["--max-train-samples", "ten"], "argument --max-train-samples: ten is not a positive number"),
    (["--private"], "--private only applies with --push-to-hub"),
])
def test_bad_flags_exit_2_with_no_output(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    code, _, err = cli(capsys, "--output-dir", tmp_path / "built", *argv)
    assert code == 2 and message in err
    assert not (tmp_path / "built").exists()


def a_file(tmp_path: Path) -> Path:
    (tmp_path / "built").write_text("my file")
    return tmp_path / "built"


def inside_a_file(tmp_path: Path) -> Path:
    (tmp_path / "notes").write_text("my file")
    return tmp_path / "notes" / "built"


@pytest.mark.parametrize("output_dir, message", [
    (a_file, "{out} exists and is not a folder; choose another output folder"),
    (inside_a_file, "cannot create {out}: {tmp}/notes is not a folder"),
], ids=["output is a file", "output inside a file"])
def test_bad_output_dir_is_one_line_exit_2_and_nothing_written(tmp_path: Path, korquad_files, capsys, output_dir,
                                                               message: str) -> None:
    train_json, dev_json = korquad_files
    out = output_dir(tmp_path)
    before = files_of(tmp_path)
    code, stdout, err = cli(capsys, "--train-json", train_json, "--dev-json", dev_json, "--output-dir", out)
    assert code == 2 and stdout == ""
    assert err == f"error: {message.format(out=out, tmp=tmp_path)}\n"
    assert files_of(tmp_path) == before and leftovers(tmp_path) == []


def test_read_only_parent_is_one_line_exit_2(tmp_path: Path, korquad_files) -> None:
    from test_convert_cli import run_read_only

    train_json, dev_json = korquad_files
    parent = tmp_path / "read-only"
    parent.mkdir()
    out = parent / "built"
    result = run_read_only(parent, [sys.executable, str(SCRIPT), "--train-json", str(train_json), "--dev-json",
                                    str(dev_json), "--output-dir", str(out)])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: cannot create {out}: {parent} is read-only or not writable by you; choose "
                             "another output folder\n")
    assert list(parent.iterdir()) == []


def offline_env(tmp_path: Path, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"}}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))  # no saved token, no network
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def test_unreachable_hub_is_one_line_suggesting_local_files(tmp_path: Path) -> None:
    result = script("--output-dir", tmp_path / "built", env=offline_env(tmp_path, token=None))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: cannot load KorQuAD/squad_kor_v1 from the Hugging Face Hub")
    assert "--train-json KorQuAD_v1.0_train.json --dev-json KorQuAD_v1.0_dev.json" in result.stderr
    assert not (tmp_path / "built").exists()


def hub_rows(path: Path) -> list[dict]:
    """A KorQuAD-shaped file as the Hub's rows of KorQuAD/squad_kor_v1 (SQuAD layout, one row per question)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return [{"id": qa["id"], "title": article["title"], "context": p["context"], "question": qa["question"],
             "answers": {"text": [a["text"] for a in qa["answers"]],
                         "answer_start": [a["answer_start"] for a in qa["answers"]]}}
            for article in raw["data"] for p in article["paragraphs"] for qa in p["qas"]]


def parquet_bytes(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    datasets.Dataset.from_list(rows).to_parquet(buffer)
    return buffer.getvalue()


def fake_hub_cache(hf_home: Path, branches: dict[str, dict[str, bytes]]) -> None:
    """The Hugging Face cache snapshot_download leaves after downloading KorQuAD/squad_kor_v1 at each branch
    ({branch: {path: bytes}}): refs/BRANCH names a commit, snapshots/COMMIT holds its files."""
    repo = hf_home / "hub" / "datasets--KorQuAD--squad_kor_v1"
    for branch, files in branches.items():
        commit = hashlib.sha1(branch.encode()).hexdigest()
        (repo / "refs" / branch).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / branch).write_text(commit)
        for name, content in files.items():
            (repo / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / "snapshots" / commit / name).write_bytes(content)


MAIN_PARQUET_CARD = b"""---
configs:
- config_name: squad_kor_v1
  data_files:
  - split: train
    path: squad_kor_v1/train-*
  - split: validation
    path: squad_kor_v1/validation-*
---
"""


def script_main_and_parquet_export(train: bytes, validation: bytes) -> dict[str, dict[str, bytes]]:
    """The repository as it was: a loading script on main; the Hub's parquet conversion under refs/convert/parquet."""
    return {"main": {"squad_kor_v1.py": b"import datasets  # a loading script", "README.md": b"# KorQuAD 1.0\n"},
            "refs/convert/parquet": {"squad_kor_v1/train/0000.parquet": train,
                                     "squad_kor_v1/validation/0000.parquet": validation}}


def parquet_main(train: bytes, validation: bytes) -> dict[str, dict[str, bytes]]:
    """The repository once converted: parquet files on main, named by its card."""
    return {"main": {"README.md": MAIN_PARQUET_CARD, "squad_kor_v1/train-00000-of-00001.parquet": train,
                     "squad_kor_v1/validation-00000-of-00001.parquet": validation}}


@pytest.mark.parametrize("layout", [script_main_and_parquet_export, parquet_main])
def test_korquad_loads_from_the_hub_cache_whether_main_is_a_script_or_parquet(tmp_path: Path, korquad_files,
                                                                              layout) -> None:
    train_json, dev_json = korquad_files
    env = offline_env(tmp_path, token=None)
    train_rows, dev_rows = hub_rows(train_json), hub_rows(dev_json)
    fake_hub_cache(Path(env["HF_HOME"]), layout(parquet_bytes(train_rows), parquet_bytes(dev_rows)))
    out = tmp_path / "built"
    result = script("--output-dir", out, env=env)
    assert result.returncode == 0, result.stderr
    pairs = qg.data.build.load_qg_dataset(str(out))
    assert sorted(pairs["test"]["id"]) == sorted(row["id"] for row in dev_rows)
    assert sorted([*pairs["train"]["id"], *pairs["validation"]["id"]]) == sorted(row["id"] for row in train_rows)
    assert "KorQuAD/squad_kor_v1 (validation)" in (out / "README.md").read_text(encoding="utf-8")


def test_script_only_hub_cache_without_its_parquet_export_is_one_line(tmp_path: Path, korquad_files) -> None:
    env = offline_env(tmp_path, token=None)
    fake_hub_cache(Path(env["HF_HOME"]), {"main": script_main_and_parquet_export(b"", b"")["main"]})
    result = script("--output-dir", tmp_path / "built", env=env)
    assert result.returncode == 2
    assert result.stderr == (
        "error: cannot load KorQuAD/squad_kor_v1 from the Hugging Face Hub (the Hub cannot be reached and it is not "
        "in the local cache); build from the official files instead: download KorQuAD_v1.0_train.json and "
        "KorQuAD_v1.0_dev.json from https://korquad.github.io and pass --train-json KorQuAD_v1.0_train.json "
        "--dev-json KorQuAD_v1.0_dev.json\n")
    assert not (tmp_path / "built").exists()


def hub_error(kind: type, status: int) -> Exception:
    url = "https://huggingface.co/api/datasets/KorQuAD/squad_kor_v1"
    return kind(f"{status} Client Error for url: {url}",
                response=httpx2.Response(status, request=httpx2.Request("GET", url)))


@pytest.mark.parametrize("fails_at, error, problem", [
    ("main", hub_error(RepositoryNotFoundError, 404), "no such dataset on the Hub, or it is private"),
    ("refs/convert/parquet", hub_error(RevisionNotFoundError, 404),
     "it holds only a loading script, which datasets no longer runs, and the Hub has no parquet conversion of it "
     "(refs/convert/parquet)"),
])
def test_hub_refusals_are_one_line_saying_to_use_the_official_files(tmp_path: Path, capsys, monkeypatch,
                                                                    fails_at: str, error: Exception,
                                                                    problem: str) -> None:
    script_only = tmp_path / "main"
    script_only.mkdir()
    (script_only / "README.md").write_text("# KorQuAD 1.0")  # all of a script-only main that is downloaded

    def snapshot_download(repo_id, *, repo_type, revision, allow_patterns):
        assert (repo_id, repo_type) == ("KorQuAD/squad_kor_v1", "dataset")
        if revision == fails_at:
            raise error
        return str(script_only)

    monkeypatch.setattr(qg.data.korquad, "snapshot_download", snapshot_download)
    code, stdout, err = cli(capsys, "--output-dir", tmp_path / "built")
    assert code == 2 and stdout == ""
    assert err == (f"error: cannot load KorQuAD/squad_kor_v1 from the Hugging Face Hub ({problem}); build from the "
                   "official files instead: download KorQuAD_v1.0_train.json and KorQuAD_v1.0_dev.json from "
                   "https://korquad.github.io and pass --train-json KorQuAD_v1.0_train.json "
                   "--dev-json KorQuAD_v1.0_dev.json\n")
    assert not (tmp_path / "built").exists()


def test_push_without_a_token_fails_before_building(tmp_path: Path, korquad_files) -> None:
    train_json, dev_json = korquad_files
    result = script("--train-json", train_json, "--dev-json", dev_json, "--output-dir", tmp_path / "built",
                    "--push-to-hub", "me/korquad-qg", env=offline_env(tmp_path, token=None))
    assert result.returncode == 2
    assert result.stderr == ("error: pushing to the Hub needs a Hugging Face token: run `hf auth login` "
                             "or set HF_TOKEN\n")
    assert not (tmp_path / "built").exists()


def test_push_network_failure_is_one_line_and_keeps_the_build(tmp_path: Path, korquad_files) -> None:
    train_json, dev_json = korquad_files
    out = tmp_path / "built"
    result = script("--train-json", train_json, "--dev-json", dev_json, "--output-dir", out,
                    "--push-to-hub", "me/korquad-qg", env=offline_env(tmp_path, token="hf_not_a_real_token"))
    assert result.returncode == 2
    error = result.stderr.splitlines()[-1]  # after the progress bars of reading the build back
    assert error.startswith("error: could not push to me/korquad-qg (")
    assert error.endswith(f"the dataset is built in {out}, run again to retry")
    assert load(out, "pairs")["test"].num_rows > 0
    assert 'load_dataset("me/korquad-qg", "pairs")' in (out / "README.md").read_text(encoding="utf-8")
