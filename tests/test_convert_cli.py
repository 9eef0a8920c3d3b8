"""qg-convert, the command: what --overwrite may replace, and bad inputs as one line, exit 2, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qg.cli import run
from qg.models import exaone


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


@pytest.fixture
def src(tmp_path: Path, exaone_tiny_a_dir: Path) -> Path:
    """A writable copy of the tiny EXAONE checkpoint."""
    return Path(shutil.copytree(exaone_tiny_a_dir, tmp_path / "src"))


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
