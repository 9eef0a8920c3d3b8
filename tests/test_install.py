"""`pip install .` (not editable) works: the installed package finds its own data and `qg-demo` runs from elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A new virtual environment with the project installed from a wheel; its dependencies are this environment's
    (a .pth file points at them: installing torch and the rest again would take minutes and test nothing of ours)."""
    root = tmp_path_factory.mktemp("install")
    # Built from a copy of what the wheel is made of: setuptools writes build/ and *.egg-info into its source tree.
    source = root / "source"
    shutil.copytree(REPO / "qg", source / "qg", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(root / "wheel")], check=True, capture_output=True)
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    site = next((env_dir / "lib").glob("python*/site-packages"))
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = env_dir / "bin" / "python"
    [wheel] = (root / "wheel").glob("qg-*.whl")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, capture_output=True)
    return env_dir


@pytest.mark.slow
def test_demo_runs_from_an_installed_package_outside_the_checkout(installed, tmp_path):
    env = {**os.environ, "QG_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    where = subprocess.run([installed / "bin" / "python", "-c", "import qg; print(qg.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where).is_relative_to(installed)  # the wheel's copy, not the checkout
    result = subprocess.run([installed / "bin" / "qg-demo", "--output-dir", "demo"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    demo = tmp_path / "demo"
    assert (demo / "adapter" / "adapter_model.safetensors").is_file()
    manifest = json.loads((demo / "publish" / "manifest.json").read_text())
    assert set(manifest["repos"]) == {"base", "dataset", "model", "space"}
    card = ModelCard.load(demo / "publish" / "model" / "README.md")
    assert card.data.eval_results  # scores from the installed package's evaluation, rendered by its own template
    staged_space = {f["path"] for f in manifest["repos"]["space"]["files"]}
    assert "app.py" in staged_space and "qg/generate.py" in staged_space
