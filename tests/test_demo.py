"""qg-demo replaces only a folder an earlier demo wrote: a user's folder given as --output-dir is left alone."""

from __future__ import annotations

import subprocess
import sys


def run_demo(output_dir, cwd):
    return subprocess.run([sys.executable, "-m", "qg.demo", "--output-dir", str(output_dir)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_a_folder_the_demo_did_not_write_is_refused_and_kept(tmp_path):
    target = tmp_path / "results"
    (target / "data").mkdir(parents=True)
    (target / "data" / "results.csv").write_text("precious\n")
    result = run_demo(target, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {target} exists and was not written by qg-demo; choose another --output-dir or remove it yourself"]
    assert (target / "data" / "results.csv").read_text() == "precious\n"


def test_a_file_as_output_dir_is_refused(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep\n")
    result = run_demo(target, tmp_path)
    assert result.returncode == 2
    assert "is not a folder" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert target.read_text() == "keep\n"
