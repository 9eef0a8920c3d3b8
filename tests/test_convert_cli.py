"""qg-convert, the command: what --overwrite may replace, and bad inputs as one line, exit 2, nothing written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from qg.cli import run
from qg.models import exaone

REPO = Path(__file__).resolve().parents[1]


def convert(capsys, *argv: str | Path) -> tuple[int, str, str]:
    """Run `qg-convert ARGV` in this process: (exit code, out, err)."""
    try:
        run(lambda: exaone.main([str(arg) for arg in argv]))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under `folder`: a file's bytes, None for a folder."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


@pytest.fixture
def src(tmp_path: Path, exaone_tiny_a_dir: Path) -> Path:
    """A writable copy of the tiny EXAONE checkpoint (the shared one is read-only)."""
    copy = Path(shutil.copytree(exaone_tiny_a_dir, tmp_path / "src", copy_function=shutil.copyfile,
                                ignore=shutil.ignore_patterns("reference.safetensors")))
    copy.chmod(0o755)
    return copy


def test_overwrite_replaces_only_a_previous_conversion(tmp_path: Path, src: Path, capsys) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "README.md").write_text("my notes")
    (dst / "config.json").write_text("{}")
    code, stdout, err = convert(capsys, src, dst, "--overwrite")
    assert code == 2 and stdout == ""
    assert err == (f"error: {dst} exists and was not written by qg-convert; choose another output folder or "
                   "remove it yourself\n")
    assert files_of(dst) == {"README.md": b"my notes", "config.json": b"{}"}

    shutil.rmtree(dst)
    assert convert(capsys, src, dst)[0] == 0
    first = files_of(dst)
    (dst / "model.safetensors").write_bytes(b"stale")  # a previous conversion's file may differ: it is replaced
    assert convert(capsys, src, dst, "--overwrite")[0] == 0
    assert files_of(dst) == first

    (dst / "notes.txt").write_text("mine")
    code, _, err = convert(capsys, src, dst, "--overwrite")
    assert code == 2
    assert err == (f"error: {dst} holds notes.txt, which qg-convert did not write; move it away or choose another "
                   "output folder\n")
    assert files_of(dst) == {**first, "notes.txt": b"mine"}


def edit_config(src: Path, change) -> None:
    config = json.loads((src / "config.json").read_text())
    change(config)
    (src / "config.json").write_text(json.dumps(config))


def shard(src: Path) -> None:
    """Split model.safetensors in two shards and an index, as the Hub stores larger checkpoints."""
    weights = load_file(src / "model.safetensors")
    (src / "model.safetensors").unlink()
    names = sorted(weights)
    weight_map = {}
    for i, part in enumerate([names[::2], names[1::2]]):
        file = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: weights[k] for k in part}, src / file)
        weight_map.update(dict.fromkeys(part, file))
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


class FullDisk:
    """A file opened for writing on a disk that fills up after the first `room` bytes."""

    def __init__(self, file, room: int = 4096):
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def fill_disk(monkeypatch) -> None:
    monkeypatch.setattr(exaone, "open", lambda path, mode="r": FullDisk(open(path, mode)), raising=False)


# (name, setup(src, tmp_path, monkeypatch) -> (SRC, DST) arguments, what the error line says)
BAD_INPUTS = [
    ("config not JSON", lambda s, t, m: (s / "config.json").write_text('{"model_type": "exaone",'),
     "{src}/config.json: not valid JSON (Expecting property name enclosed in double quotes"),
    ("config not an object", lambda s, t, m: (s / "config.json").write_text("[1, 2]"),
     "{src}/config.json: not a JSON object"),
    ("config without sizes", lambda s, t, m: edit_config(s, lambda c: [c.pop("hidden_size"), c.pop("num_layers")]),
     "config.json lacks hidden_size, num_layers: not a complete EXAONE-3.5 config"),
    ("config size not a number", lambda s, t, m: edit_config(s, lambda c: c.update(hidden_size="64")),
     "config.json: hidden_size is '64', not a positive integer"),
    ("config rope incomplete", lambda s, t, m: edit_config(s, lambda c: c["rope_scaling"].pop("low_freq_factor")),
     "config.json: \"Missing required keys in `rope_parameters` for 'rope_type'='llama3': {{'low_freq_factor'}}\""),
    ("no config", lambda s, t, m: (s / "config.json").unlink(), "no config.json in {src}"),
    ("weights truncated", lambda s, t, m: truncate(s / "model.safetensors"),
     "{src}/model.safetensors: not a readable safetensors file (Error while deserializing header: incomplete "
     "metadata, file not fully covered)"),
    ("weights overwritten", lambda s, t, m: (s / "model.safetensors").write_bytes(b"<html>Not Found</html>"),
     "{src}/model.safetensors: not a readable safetensors file (Error while deserializing header:"),
    ("shard missing", lambda s, t, m: [shard(s), (s / "model-00002-of-00002.safetensors").unlink()],
     "{src}/model.safetensors.index.json names model-00002-of-00002.safetensors, which is not in {src}"),
    ("shard truncated", lambda s, t, m: [shard(s), truncate(s / "model-00001-of-00002.safetensors")],
     "{src}/model-00001-of-00002.safetensors: not a readable safetensors file"),
    ("index not JSON", lambda s, t, m: [shard(s), (s / "model.safetensors.index.json").write_text('{"weight_map": ')],
     "{src}/model.safetensors.index.json: not valid JSON"),
    ("index without weight_map", lambda s, t, m: [shard(s), (s / "model.safetensors.index.json").write_text("{}")],
     "{src}/model.safetensors.index.json: no weight_map from tensor names to files"),
    ("unknown Hub id", lambda s, t, m: ("nobody-here/no-such-model", t / "dst"),
     "cannot reach the Hugging Face Hub to download nobody-here/no-such-model, and it is not in the local cache"),
    ("output is a file", lambda s, t, m: (t / "dst").write_text("my file"),
     "{dst} exists and is not a folder; choose another output folder"),
    ("output inside a file", lambda s, t, m: [(t / "notes").write_text("my file"), (s, t / "notes" / "dst")][1],
     "cannot create {dst}: {tmp}/notes is not a folder"),
    ("disk full", lambda s, t, m: fill_disk(m),
     "no space left to write {dst} (the weights alone take 0.00 GB); free space there or choose another output"),
]


@pytest.mark.parametrize(("setup", "message"), [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path, src: Path, capsys, monkeypatch, setup,
                                                          message: str) -> None:
    arguments = setup(src, tmp_path, monkeypatch)
    source, dst = arguments if isinstance(arguments, tuple) else (src, tmp_path / "dst")
    before = tree(tmp_path)
    code, stdout, err = convert(capsys, source, dst)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message.format(src=src, dst=dst, tmp=tmp_path) in err
    assert tree(tmp_path) == before


def run_read_only(folder: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """Run `argv` with `folder` read-only: a read-only bind mount for root (whom permissions do not stop), chmod 555
    for anyone else."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        finally:
            folder.chmod(0o755)
    mount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" || exit 99; exec "$@"'
    result = subprocess.run(["unshare", "--mount", "sh", "-c", mount, str(folder), *argv], capture_output=True,
                            text=True, env=env, timeout=300)
    if result.returncode == 99:
        pytest.skip(f"cannot mount {folder} read-only here: {result.stderr.strip()}")
    return result


def test_read_only_output_folder_is_one_line_before_converting(tmp_path: Path, src: Path) -> None:
    parent = tmp_path / "read-only"
    parent.mkdir()
    dst = parent / "dst"
    result = run_read_only(parent, [sys.executable, "-m", "qg.models.exaone", str(src), str(dst)])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: cannot create {dst}: {parent} is read-only or not writable by you; choose "
                             "another output folder\n")
    assert list(parent.iterdir()) == []
