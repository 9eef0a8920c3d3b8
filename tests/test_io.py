"""qg.io: atomic writes clean up after writers that died, and leave the permissions a plain write would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qg.io import atomic_dir, atomic_file

# A writer killed with SIGKILL inside an atomic write: what kill -9 or the out-of-memory killer leaves behind.
KILLED_WRITER = """
import os, signal, sys
from qg.io import atomic_dir, atomic_file
target, kind = sys.argv[1], sys.argv[2]
with (atomic_dir if kind == "dir" else atomic_file)(target) as tmp:
    (tmp / "half.bin" if kind == "dir" else tmp).write_bytes(b"half-written")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_writer(target: Path, kind: str) -> Path:
    """Run an atomic write of `target` that is killed midway; returns the temporary it left."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target), kind], env=env, timeout=60)
    assert result.returncode == -9
    (left,) = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.tmp-")]
    return left


def live_temp(target: Path, kind: str) -> Path:
    """A temporary named as this process's atomic writes name theirs: a concurrent writer still at work."""
    temp = target.parent / f".{target.name}.tmp-{os.getpid()}@{socket.gethostname()}-inprogress"
    temp.mkdir() if kind == "dir" else temp.write_bytes(b"in progress")
    return temp


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_a_killed_writers_temporary_goes_on_the_next_write_and_a_live_one_stays(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "out"
    stale = killed_writer(target, kind)
    live = live_temp(target, kind)
    other_name = killed_writer(tmp_path / "other", kind)  # a write of another path: not this write's business
    assert not target.exists()

    with (atomic_dir if kind == "dir" else atomic_file)(target) as tmp:
        (tmp / "done.txt" if kind == "dir" else tmp).write_text("done")

    assert not stale.exists()
    assert live.exists() and other_name.exists()
    assert (target / "done.txt" if kind == "dir" else target).read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name, other_name.name])


def test_automatic_conversion_clears_dead_conversions_of_any_source(tmp_path: Path, exaone_tiny_a_dir: Path,
                                                                   monkeypatch) -> None:
    from qg.models.loading import resolve_base

    monkeypatch.setenv("QG_CACHE", str(tmp_path / "cache"))
    converted = tmp_path / "cache" / "converted"
    converted.mkdir(parents=True)
    # A conversion of an earlier version of some checkpoint, killed midway: its name will never be written again.
    stale = killed_writer(converted / "exaone-tiny-a-0123456789ab", "dir")
    live = live_temp(converted / "exaone-tiny-a-ba9876543210", "dir")

    resolved = Path(resolve_base(str(exaone_tiny_a_dir)))

    assert resolved.parent == converted
    assert json.loads((resolved / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in converted.iterdir()) == sorted([resolved.name, live.name])


@pytest.fixture(params=[0o022, 0o002], ids=["umask-022", "umask-002"])
def umask(request) -> int:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_atomic_writes_get_the_permissions_of_plain_writes(tmp_path: Path, umask: int) -> None:
    plain_file, plain_dir = tmp_path / "plain.txt", tmp_path / "plain"
    plain_file.write_text("x")
    plain_dir.mkdir()
    with atomic_file(tmp_path / "new.txt") as tmp:
        tmp.write_text("x")
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "inside.txt").write_text("x")
    assert mode(tmp_path / "new.txt") == mode(plain_file) == 0o666 & ~umask
    assert mode(tmp_path / "folder") == mode(plain_dir) == 0o777 & ~umask
    assert mode(tmp_path / "folder" / "inside.txt") == 0o666 & ~umask

    # Rewriting a file keeps its permissions, as open(path, "w") does: a private file stays private.
    private = tmp_path / "private.json"
    private.write_text("{}")
    private.chmod(0o600)
    with atomic_file(private) as tmp:
        tmp.write_text('{"a": 1}')
    assert mode(private) == 0o600 and json.loads(private.read_text()) == {"a": 1}
