"""train.py end to end on the tiny model: it learns, it stops at EOS, it resumes exactly, it survives crashes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from qg.cli import UserError
from qg.data.build import build_qg_dataset
from qg.data.korquad import read_korquad_json
from qg.models.loading import load_base
from qg.prompt import encode_prompt
from qg.train.config import TrainConfig
from qg.config import config_to_yaml
from qg.train.loop import RunLog, check_config, load_model, save_checkpoint, train

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "hub_dataset" / "sample"


def run_cli(*args, cwd=REPO, env=None, **kwargs):
    return subprocess.run([*args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


@pytest.fixture(scope="module")
def eight_paragraphs(tmp_path_factory):
    """8 train paragraphs with one question each (greedy decoding can only give one question per prompt)."""
    squad = json.loads((SAMPLE / "train.json").read_text())
    articles = []
    for article in squad["data"][:9]:
        paragraph = article["paragraphs"][0]
        articles.append({"title": article["title"], "paragraphs": [{**paragraph, "qas": paragraph["qas"][:1]}]})
    folder = tmp_path_factory.mktemp("eight")
    (folder / "train.json").write_text(json.dumps({"version": "8", "data": articles}, ensure_ascii=False))
    out = folder / "dataset"
    build_qg_dataset(read_korquad_json(folder / "train.json"), read_korquad_json(SAMPLE / "dev.json"), out,
                     validation_fraction=0.1)
    return out


def smoke_args(dataset, output, *extra):
    return ["--config", "configs/smoke.yaml", "--dataset", str(dataset), "--output_dir", str(output),
            "--report_to", "none", *map(str, extra)]


def log_records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]


def test_overfits_eight_questions_and_stops_at_eos(eight_paragraphs, tmp_path):
    config = TrainConfig(model="tiny-random-exaone", dataset=str(eight_paragraphs), output_dir=str(tmp_path / "run"),
                         lora_r=64, lora_alpha=128, lora_dropout=0.0, learning_rate=3e-3, warmup_ratio=0.0,
                         lr_scheduler="constant", max_steps=100, batch_tokens=4096, eval_steps=0, save_steps=0,
                         report_to="none")
    output = train(config)
    base, tokenizer = load_base("tiny-random-exaone")
    model = PeftModel.from_pretrained(base, output).eval()
    from qg.data.build import load_qg_dataset

    rows = load_qg_dataset(str(eight_paragraphs))["train"]
    assert len(rows) == 8
    exact = 0
    for row in rows:
        prompt = encode_prompt(tokenizer, row["context"]).input_ids
        generated = model.generate(torch.tensor([prompt]), max_new_tokens=64, do_sample=False,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        new = generated[0, len(prompt):].tolist()
        assert new[-1] == tokenizer.eos_token_id, "generation must stop at EOS"
        exact += tokenizer.decode(new[:-1]) == row["question"]
    assert exact >= 7


def test_smoke_recipe_learns_and_writes_every_artefact(sample_dataset, tmp_path):
    output = tmp_path / "smoke"
    result = run_cli(sys.executable, "train.py", *smoke_args(sample_dataset, output))
    assert result.returncode == 0, result.stderr[-2000:]
    records = log_records(output)
    assert records[-1]["loss"] < records[0]["loss"] / 2
    assert [r["step"] for r in records] == sorted({r["step"] for r in records})
    assert all({"step", "loss", "lr", "tokens", "tokens_per_second"} <= set(r) for r in records)
    assert any("eval_loss" in r for r in records)
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "train_config.yaml",
                 "best/adapter_model.safetensors"):
        assert (output / name).is_file(), name
    assert (output / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[|assistant|]" in (output / "chat_template.jinja").read_text()
    assert not list(output.glob(".*"))  # no temporary leftovers


def test_kill_and_resume_gives_the_uninterrupted_adapter(sample_dataset, tmp_path):
    extra = ("--max_steps", 24, "--save_steps", 4, "--eval_steps", 0, "--logging_steps", 4, "--lora_dropout", 0.1)
    straight = tmp_path / "straight"
    assert run_cli(sys.executable, "train.py", *smoke_args(sample_dataset, straight, *extra)).returncode == 0

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "train.py", *smoke_args(sample_dataset, killed, *extra)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-8").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "adapter_model.safetensors").exists(), "killed too late to test resuming"

    resumed = run_cli(sys.executable, "train.py", *smoke_args(sample_dataset, killed, *extra), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = load_file(straight / "adapter_model.safetensors")
    got = load_file(killed / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6)
    assert [r["step"] for r in log_records(killed)] == [r["step"] for r in log_records(straight)]


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path):
    class Accelerator:
        is_main_process = True

        def wait_for_everyone(self):
            pass

        def save_state(self, path):
            Path(path).mkdir(parents=True)
            (Path(path) / "model.safetensors").write_bytes(b"half")
            raise OSError("disk full")

    previous = tmp_path / "checkpoints" / "step-4"
    previous.mkdir(parents=True)
    (previous / "trainer_state.json").write_text('{"step": 4}')
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(Accelerator(), tmp_path, 8, {"step": 8})
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-4"]
    assert json.loads((previous / "trainer_state.json").read_text()) == {"step": 4}


def test_resume_takes_the_output_dir_however_it_is_spelled(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.md").write_text("dataset card")
    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig(dataset=str(tmp_path / "data"), output_dir=str(run), report_to="none")
    (run / "train_config.yaml").write_text(config_to_yaml(config))
    (tmp_path / "link").symlink_to(run)
    monkeypatch.chdir(tmp_path)
    for spelling in (f"{run}/", "./run", "run/", str(tmp_path / "link")):
        check_config(replace(config, output_dir=spelling), resume=True)
    with pytest.raises(UserError, match="differs from the run in .* in lora_r"):
        check_config(replace(config, output_dir="./run", lora_r=8), resume=True)


def test_resume_drops_the_log_record_a_crash_cut_short(tmp_path):
    class Accelerator:
        is_main_process = True

    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 4, "loss": 2.0}\n{"step": 8, "loss": 1.5}\n{"step": 12, "lo')
    assert [r["step"] for r in RunLog(log, Accelerator(), resumed_step=8).records()] == [4, 8]
    assert log.read_text().endswith("}\n")


def test_model_revision_picks_the_model_and_the_tokenizer_of_that_revision(tmp_path):
    """A Hub cache holding two revisions of one repo (main, v1) that differ in weights and chat template; offline."""
    from safetensors.torch import save_file

    from qg.models.tiny import tiny_model_dir

    repo = tmp_path / "hub" / "models--someone--tiny"
    for revision, scale in (("main", 1.0), ("v1", 2.0)):
        snapshot = repo / "snapshots" / f"{revision}-commit"
        shutil.copytree(tiny_model_dir(), snapshot)
        weights = load_file(snapshot / "model.safetensors")
        save_file({k: v * scale for k, v in weights.items()}, snapshot / "model.safetensors", metadata={"format": "pt"})
        (snapshot / "chat_template.jinja").write_text(f"revision {revision}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / revision).write_text(f"{revision}-commit")
    script = (
        "from qg.models.loading import load_base, load_tokenizer\n"
        "model, tokenizer = load_base('someone/tiny', revision='v1')\n"
        "print(tokenizer.chat_template, load_tokenizer('someone/tiny', 'v1').chat_template,"
        " load_tokenizer('someone/tiny').chat_template, float(model.lm_head.weight.abs().sum()))\n"
        "print(float(load_base('someone/tiny')[0].lm_head.weight.abs().sum()))\n"
    )
    result = run_cli(sys.executable, "-c", script, env={"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = result.stdout.strip().splitlines()[-2:]
    *templates, v1_sum = first.split()
    assert " ".join(templates) == "revision v1 revision v1 revision main"
    assert float(v1_sum) == pytest.approx(2 * float(second))


def test_all_linear_puts_adapters_on_every_decoder_linear():
    model = load_model(TrainConfig(lora_target_modules=["all-linear"], lora_r=4), "no", "sdpa")
    adapted = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_shared_context_reaches_the_same_validation_loss_with_fewer_tokens(sample_dataset, tmp_path):
    common = dict(model="tiny-random-exaone", dataset=str(sample_dataset), lora_r=32, lora_alpha=64,
                  lora_dropout=0.0, learning_rate=3e-3, num_epochs=4, batch_tokens=2048, logging_steps=5,
                  eval_steps=1000, save_steps=0, report_to="none")
    runs = {}
    for shared in (False, True):
        output = train(TrainConfig(**common, shared_context=shared, output_dir=str(tmp_path / str(shared))))
        runs[shared] = log_records(output)
    final = {shared: records[-1] for shared, records in runs.items()}
    assert final[True]["tokens"] < final[False]["tokens"] / 2
    # Different batches give different trajectories, but the same objective: the validation losses agree.
    assert abs(final[True]["eval_loss"] - final[False]["eval_loss"]) < 0.05 * final[False]["eval_loss"]


def test_a_second_training_into_a_folder_in_use_is_refused(sample_dataset, tmp_path):
    """As for evaluation: while a run holds its output folder, another into it stops before writing anything."""
    from qg.config import parse_config
    from qg.io import folder_lock

    output = tmp_path / "run"
    config, _ = parse_config(TrainConfig, smoke_args(sample_dataset, output, "--max_steps", "1"))
    with folder_lock(output), pytest.raises(UserError, match="is in use by another run"):
        train(config)
    assert list(output.iterdir()) == []
