"""qg-train and qg-memory refuse bad input in one line, exit code 2, before loading a model, writing nothing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from qg.train import loop, memory
from qg.train.config import RECIPES_DIR

REPO = Path(__file__).resolve().parents[1]


def read_only_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write in: chmod for a user; for root (who ignores modes) /sys."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        os.rmdir(tempfile.mkdtemp(dir="/sys"))
    except OSError:
        return Path("/sys")
    pytest.skip("no folder here that root cannot write in")


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = (captured.err + captured.out).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# (flags, message fragment). {out} is the output folder, {file}/{read_only} other places, {yaml_...} a recipe.
TRAIN_ROWS = [
    (["--learning_rate", "-1"], "error: learning_rate must be positive, got -1.0"),
    (["--lora_dropout", "1.5"], "error: lora_dropout must be in [0, 1), got 1.5"),
    (["--lr_scheduler", "warp"], "error: lr_scheduler 'warp' is not one of linear, cosine,"),
    (["--warmup_ratio", "5"], "error: warmup_ratio is a share of the steps, in [0, 1]; got 5.0"),
    (["--logging_steps", "0"], "error: logging_steps must be positive, got 0"),
    (["--max_eval_samples", "0"], "error: max_eval_samples must be positive, got 0"),
    (["--max_steps", "0"], "error: max_steps must be positive, or -1"),
    (["--model", "nobody/unknown-model"], "error: model nobody/unknown-model is not in the local Hugging Face cache"),
    (["--model", "not a model"], "error: model not a model is neither a folder nor a Hub id"),
    (["--model", "{no_model}"], "error: model {no_model} has no config.json: not a model folder"),
    (["--model_revision", "v1"], "error: model_revision is for Hub ids; tiny-random-exaone is a local model"),
    (["--output_dir", "{file}"], "error: output_dir {file} is a file; choose a folder"),
    (["--output_dir", "{file}/run"], "error: output_dir {file}/run: {file} is a file, not a folder"),
    (["--output_dir", "{read_only}/run"], "error: output_dir {read_only}/run cannot be written"),
    (["--config", "{yaml_malformed}"], "error: config file {yaml_malformed} is not valid YAML"),
    (["--config", "{yaml_unknown_key}"], "error: config file {yaml_unknown_key}: unknown key(s) colour"),
    (["--config", "{yaml_wrong_type}"], "error: config key 'model_revision' should be str, got 3"),
    (["--config", "{missing}"], "error: config file {missing} not found"),
    (["--report_to", "wandb"], "error: --report_to wandb needs wandb: pip install wandb"),
    (["--dataset", "{missing}"], "error: dataset {missing} not found: build it with"),
    (["--finetuning", "qlora"], "error: QLoRA (4-bit bitsandbytes) needs a CUDA GPU"),
    (["--output_dir", "{occupied}"], "error: output dir {occupied} already holds another run; pass --resume"),
    (["--resume", "--output_dir", "{empty}"], "error: --resume: {empty} holds no run to resume"),
]
RECIPES = {"malformed": "model: [tiny\n", "unknown_key": "colour: blue\n", "wrong_type": "model_revision: 3\n"}


@pytest.mark.parametrize(("flags", "message"), TRAIN_ROWS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_qg_train_refuses_bad_input_in_one_line_before_loading_anything(flags, message, sample_dataset, tmp_path,
                                                                         monkeypatch, capsys):
    if "wandb" in flags and importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    places = {"file": tmp_path / "a-file", "missing": tmp_path / "none.yaml", "out": tmp_path / "out"}
    places["file"].write_text("not a folder")
    places["occupied"], places["empty"] = tmp_path / "occupied", tmp_path / "empty"
    places["occupied"].mkdir()
    places["no_model"] = tmp_path / "no-model"
    places["no_model"].mkdir()
    (places["occupied"] / "train_config.yaml").write_text("model: other\n")
    if any("{read_only}" in f for f in flags):
        places["read_only"] = read_only_dir(tmp_path)
    for name, text in RECIPES.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        places[f"yaml_{name}"] = tmp_path / f"{name}.yaml"
    fill = lambda text: text.format_map({k: str(v) for k, v in places.items()})  # noqa: E731
    cache = tmp_path / "cache"
    monkeypatch.setenv("QG_CACHE", str(cache))
    argv = ["--dataset", str(sample_dataset), "--output_dir", str(places["out"]), "--report_to", "none",
            *map(fill, flags)]
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_:
        loop.main(argv)
    assert exit_.value.code == 2
    assert one_error_line(capsys).startswith(fill(message))
    assert sorted(tmp_path.rglob("*")) == before, "nothing may be written"
    assert places["file"].read_text() == "not a folder"
    assert not cache.exists(), "no model may be built or loaded before the input is checked"


def test_an_unknown_lora_target_is_refused_after_loading_the_model_leaving_no_files(sample_dataset, tmp_path, capsys):
    """Module names come with the model, so this one is checked once it is loaded, before anything is written."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        loop.main(["--dataset", str(sample_dataset), "--output_dir", str(out), "--report_to", "tensorboard",
                   "--lora_target_modules", "q_proj", "foo_proj"])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    line = captured.err.strip().splitlines()[-1]  # after the data and model loading messages
    assert line.startswith("error: lora_target_modules foo_proj: no such module in LlamaForCausalLM; its linear "
                           "layers are down_proj gate_proj k_proj lm_head o_proj q_proj up_proj v_proj"), line
    assert not out.exists()


def test_an_unknown_hub_model_is_one_line_from_the_command_line(sample_dataset, tmp_path):
    result = subprocess.run([sys.executable, "train.py", "--dataset", str(sample_dataset), "--output_dir",
                             str(tmp_path / "out"), "--model", "nobody/unknown-model"],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "QG_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model nobody/unknown-model is not in the local Hugging Face cache and the Hub cannot be reached "
        "(offline or HF_HUB_OFFLINE set)"]
    assert not list(tmp_path.iterdir())


MEMORY_ROWS = [
    (["--lora_r", "-8"], "error: lora_r must be positive, got -8"),
    (["--gpu-memory", "0GB"], "error: the GPU size '0GB' must be more than 0 bytes"),
    (["--gpu-memory", "abc"], "error: cannot read the size 'abc'"),
    (["--warmup_ratio", "-0.5"], "error: warmup_ratio is a share of the steps"),
]


@pytest.mark.parametrize(("flags", "message"), MEMORY_ROWS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_qg_memory_refuses_bad_input_in_one_line(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        memory.main(["--config", str(RECIPES_DIR / "exaone-3.5-2.4b-lora.yaml"), *flags])
    assert exit_.value.code == 2
    assert one_error_line(capsys).startswith(message)
