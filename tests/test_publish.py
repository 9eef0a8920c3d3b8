"""publish.py, the real command, on a tiny adapter trained here: what is staged, that it loads and generates as the
trained adapter did, that the card's code runs as written, that online publishing uploads exactly the staged
folders, and that the token, an unreachable Hub and bad inputs are handled."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
import torch
import yaml
from fake_hub import EchoingHub, FakeHub
from huggingface_hub import HfApi, ModelCard, SpaceCard, metadata_load
from test_model_card import python_blocks, tables, write_evaluation

import qg.data.build
import qg.hub.model_card
from qg.cli import run
from qg.data.build import build_qg_dataset
from qg.data.korquad import read_korquad_json
from qg.eval.runner import dataset_revision
from qg.hub.model_card import EXAMPLE_PARAGRAPH
from qg.io import cache_dir
from qg.models.tiny import TINY_MODEL
from qg.prompt import encode_prompt
from qg.train.config import TrainConfig
from qg.train.loop import train

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "hub_dataset" / "sample"
_spec = importlib.util.spec_from_file_location("publish_script", REPO / "publish.py")
publish_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(publish_script)
_spec = importlib.util.spec_from_file_location("build_dataset_script", REPO / "hub_dataset" / "build_dataset.py")
build_dataset_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_dataset_script)

MODEL_REPO, SPACE_REPO, DATASET_REPO = "owner/tiny-qg-lora", "owner/tiny-qg", "owner/korquad-qg-sample"
BASE_REPO = f"owner/{TINY_MODEL}-llama"  # the default: the model repo's owner, the base's name, -llama
MERGED_REPO, CT2_REPO = "owner/tiny-qg-merged", "owner/tiny-qg-ct2"
FAKE_TOKEN = "hf_publishTestTokenThatMustNeverLeak0123"
MODEL_FILES = {"README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "chat_template.jinja", "train_config.yaml", "train_log.jsonl",
               "loss_curve.png", "metrics.json", "after_outputs.json", "LICENSE"}


def cli(*argv: str | Path) -> tuple[int, str, str]:
    """Run the command in this process, as `python publish.py ARGV` would: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run(lambda: publish_script.main([str(arg) for arg in argv]))
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "dataset"
    build_qg_dataset(read_korquad_json(SAMPLE / "train.json"), read_korquad_json(SAMPLE / "dev.json"), out)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, dataset_dir) -> Path:
    """A tiny LoRA run with everything a run folder holds: checkpoints/ and best/ too (eval and save every 3 steps);
    a high learning rate so that the adapter visibly changes the base's outputs."""
    out = tmp_path_factory.mktemp("run") / "adapter"
    train(TrainConfig(model=TINY_MODEL, dataset=str(dataset_dir), output_dir=str(out), max_steps=6, batch_tokens=1024,
                      learning_rate=3e-3, lora_r=8, lora_alpha=16, report_to="none", eval_steps=3, save_steps=3,
                      max_eval_samples=4, logging_steps=3))
    assert (out / "best").is_dir() and (out / "checkpoints").is_dir()
    return out


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory, dataset_dir, run_dir) -> Path:
    return write_evaluation(tmp_path_factory.mktemp("eval") / "eval", dataset=str(dataset_dir), adapter=run_dir,
                            dataset_revision=dataset_revision(str(dataset_dir)))


def publish_args(run_dir: Path, eval_dir: Path, dataset_dir: Path, staging: Path, *extra: str) -> list:
    return ["--adapter", run_dir, "--eval-dir", eval_dir, "--model-repo", MODEL_REPO, "--space-repo", SPACE_REPO,
            "--dataset-repo", DATASET_REPO, "--dataset-dir", dataset_dir, "--staging-dir", staging, *extra]


@pytest.fixture(scope="module")
def staged(tmp_path_factory, run_dir, eval_dir, dataset_dir) -> tuple[Path, str, str]:
    """An offline staging, made with a token in the environment: (staging folder, stdout, stderr)."""
    staging = tmp_path_factory.mktemp("publish") / "staging"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_TOKEN", FAKE_TOKEN)
        code, out, err = cli(*publish_args(run_dir, eval_dir, dataset_dir, staging, "--offline"))
    assert code == 0, err
    return staging, out, err


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, staged) -> Path:
    """A Hugging Face cache holding the staged base and model folders as downloads of their repo ids would leave
    them, so that the ids in the staged files resolve offline, exactly as written."""
    cache = tmp_path_factory.mktemp("hub-cache")
    staging = staged[0]
    for folder, repo_id in [("model", MODEL_REPO), ("base", BASE_REPO)]:
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        shutil.copytree(staging / folder, repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    return cache


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def publishable_files_of(folder: Path) -> dict[str, bytes]:
    """files_of without dotfiles: markers of how a folder was made here (.qg-build-dataset.json) stay here."""
    return {name: content for name, content in files_of(folder).items() if not name.startswith(".")}


def test_manifest_lists_exactly_the_staged_files(staged):
    staging, stdout, _ = staged
    manifest = json.loads((staging / "manifest.json").read_text())
    assert sorted(p.name for p in staging.iterdir()) == ["base", "dataset", "manifest.json", "model", "space"]
    assert list(manifest["repos"]) == ["base", "dataset", "model", "space"]  # the upload order
    assert {name: (r["repo_id"], r["repo_type"]) for name, r in manifest["repos"].items()} == {
        "base": (BASE_REPO, "model"), "dataset": (DATASET_REPO, "dataset"), "model": (MODEL_REPO, "model"),
        "space": (SPACE_REPO, "space")}
    assert manifest["repos"]["space"]["space_sdk"] == "docker" and manifest["private"] is False
    for name, repo in manifest["repos"].items():
        on_disk = files_of(staging / name)
        assert [f["path"] for f in repo["files"]] == list(on_disk)
        assert not [path for path in on_disk if any(part.startswith(".") for part in Path(path).parts)]
        for entry in repo["files"]:
            content = on_disk[entry["path"]]
            assert entry["size"] == len(content) and entry["sha256"] == hashlib.sha256(content).hexdigest()
    assert f"https://huggingface.co/{MODEL_REPO}" in stdout and "manifest.json" in stdout


def test_model_folder_holds_adapter_card_and_records_but_no_checkpoints(staged, run_dir, eval_dir):
    model = staged[0] / "model"
    assert set(files_of(model)) == MODEL_FILES
    rewritten = {"README.md", "LICENSE", "adapter_config.json", "train_config.yaml", "tokenizer_config.json",
                 "metrics.json", "after_outputs.json"}
    for name in MODEL_FILES - rewritten:
        assert (model / name).read_bytes() == (run_dir / name).read_bytes()
    assert (model / "after_outputs.json").read_bytes() == (eval_dir / "after_outputs.json").read_bytes()
    # What was evaluated, named as published (publishing checked it is this adapter on this dataset).
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert json.loads((model / "metrics.json").read_text()) == metrics | {
        "model": MODEL_REPO, "base_model": BASE_REPO, "dataset": DATASET_REPO}
    config = yaml.safe_load((run_dir / "train_config.yaml").read_text())
    assert yaml.safe_load((model / "train_config.yaml").read_text()) == {
        key: DATASET_REPO if key == "dataset" else value for key, value in config.items() if key != "output_dir"}
    tokenizer_config = json.loads((run_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["is_local"] is True  # as transformers saves it, loaded with local_files_only
    assert json.loads((model / "tokenizer_config.json").read_text()) == {
        key: value for key, value in tokenizer_config.items() if key not in ("is_local", "local_files_only")}
    staged_config = json.loads((model / "adapter_config.json").read_text())
    run_config = json.loads((run_dir / "adapter_config.json").read_text())
    assert staged_config == run_config | {"base_model_name_or_path": BASE_REPO}
    card = ModelCard.load(model / "README.md")
    assert card.data.base_model == BASE_REPO and card.data.base_model_relation == "adapter"
    assert "![Train and validation loss per optimizer step](loss_curve.png)" in card.text


def test_base_folder_is_the_converted_base_with_a_card_hard_linked(staged, run_dir):
    base_source = Path(json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"])
    base = staged[0] / "base"
    # Markers such as qg-convert's .qg-convert.json record how a folder was made here: they are not published.
    assert set(files_of(base)) == {p.name for p in base_source.iterdir() if not p.name.startswith(".")} | {
        "README.md", "LICENSE"}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= set(files_of(base))
    weights, source = (base / "model.safetensors").stat(), (base_source / "model.safetensors").stat()
    if weights.st_dev == source.st_dev:  # a hard link only within one file system
        assert weights.st_ino == source.st_ino
    assert (base / "config.json").read_bytes() == (base_source / "config.json").read_bytes()
    metadata = metadata_load(base / "README.md")
    assert (metadata["license"], metadata["license_name"]) == ("other", "exaone")
    assert "not a language model" in (base / "README.md").read_text()  # the tiny base says what it is


def text_files(folder: Path) -> dict[str, str]:
    return {name: content.decode() for name, content in files_of(folder).items()
            if not name.endswith((".safetensors", ".png", ".parquet"))}


def test_repos_carry_their_licenses_linked_from_the_cards_and_no_local_paths(staged, run_dir, dataset_dir):
    staging = staged[0]
    for folder in ("model", "base"):
        license_text = (staging / folder / "LICENSE").read_text()
        assert "EXAONE AI Model License Agreement 1.1 - NC" in license_text
        assert "https://huggingface.co/LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct/blob/main/LICENSE" in license_text
        assert "[LICENSE](LICENSE)" in (staging / folder / "README.md").read_text()
    dataset_license = (staging / "dataset" / "LICENSE").read_text()
    assert "CC BY-ND 2.0 KR" in dataset_license
    assert "https://creativecommons.org/licenses/by-nd/2.0/kr/" in dataset_license
    dataset_card = (staging / "dataset" / "README.md").read_text()
    assert "[LICENSE](LICENSE)" in dataset_card
    assert "@article{lim2019korquad1" in dataset_card and "https://arxiv.org/abs/1909.07005" in dataset_card
    metadata = metadata_load(staging / "dataset" / "README.md")
    assert (metadata["annotations_creators"], metadata["language_creators"], metadata["multilinguality"]) == (
        ["crowdsourced"], ["found"], ["monolingual"])
    card = (staging / "model" / "README.md").read_text()
    assert f"https://huggingface.co/datasets/{DATASET_REPO}/blob/main/LICENSE" in card
    assert qg.hub.model_card.SOURCE_REPOSITORY in card
    # Paths of the machine that trained and evaluated: the run's and the dataset's folders, the cached base.
    local = [str(run_dir.parent.parent), str(cache_dir()), "outputs/"]
    for folder in ("model", "base", "dataset"):
        for name, text in text_files(staging / folder).items():
            assert not [path for path in local if path in text], f"{folder}/{name}"
        assert '"is_local"' not in text_files(staging / folder).get("tokenizer_config.json", "")


def test_card_lists_the_framework_versions_and_where_they_come_from(staged, run_dir):
    from importlib.metadata import version

    card = (staged[0] / "model" / "README.md").read_text()
    [versions] = tables(card.split("### Framework versions", 1)[1].split("\n## ", 1)[0])
    rows = {row[0]: row[1:] for row in versions[1:]}
    peft_version = json.loads((run_dir / "adapter_config.json").read_text())["peft_version"]
    assert rows["peft"] == [peft_version, "recorded by training (adapter_config.json)"]
    for name in ("torch", "transformers", "accelerate"):
        assert rows[name] == [version(name), "installed where this card was rendered (the run does not record it)"]


@pytest.fixture(scope="module")
def trained_generation(run_dir):
    """(prompt ids, greedy ids, logits) of the trained adapter on its original base, and the base's logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_path = json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    prompt = torch.tensor([encode_prompt(tokenizer, EXAMPLE_PARAGRAPH).input_ids])
    base = AutoModelForCausalLM.from_pretrained(base_path)
    with torch.inference_mode():
        base_logits = base(prompt).logits
        model = PeftModel.from_pretrained(base, run_dir).eval()
        return prompt, *greedy(model, prompt), base_logits


def greedy(model, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        ids = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=16,
                             pad_token_id=0)
        return ids, model(prompt).logits


def test_staged_adapter_on_staged_base_generates_what_the_trained_one_did(staged, trained_generation):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    prompt, ids, logits, base_logits = trained_generation
    assert not torch.allclose(logits, base_logits, atol=1e-3)  # the adapter matters: the comparison means something
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(staged[0] / "base"), staged[0] / "model")
    staged_ids, staged_logits = greedy(model.eval(), prompt)
    assert torch.equal(staged_ids, ids) and torch.equal(staged_logits, logits)


def test_auto_peft_model_finds_the_base_by_the_repo_id_in_adapter_config(staged, hub_cache, trained_generation):
    """AutoPeftModelForCausalLM reads base_model_name_or_path (the base repo id) from the staged adapter_config.json
    unchanged; the id resolves to the staged base through a Hub cache, as after downloading it."""
    from peft import AutoPeftModelForCausalLM

    prompt, ids, logits, _ = trained_generation
    model = AutoPeftModelForCausalLM.from_pretrained(staged[0] / "model", cache_dir=hub_cache, local_files_only=True)
    assert model.peft_config["default"].base_model_name_or_path == BASE_REPO
    staged_ids, staged_logits = greedy(model.eval(), prompt)
    assert torch.equal(staged_ids, ids) and torch.equal(staged_logits, logits)


def test_card_code_runs_as_written(staged, hub_cache, tmp_path):
    """Both python blocks of the staged card, verbatim, in a fresh interpreter where the repo ids resolve offline."""
    card = staged[0] / "model" / "README.md"
    assert len(python_blocks(card.read_text())) == 2
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import json, re, sys\n"
        "card = open(sys.argv[1], encoding='utf-8').read()\n"
        "plain, generator = re.findall(r'```python\\n(.*?)```', card, flags=re.S)\n"
        "a, b = {}, {}\n"
        "exec(plain, a)\n"
        "exec(generator, b)\n"
        "json.dump({'questions': a['questions'], 'prompt': a['inputs']['input_ids'][0].tolist(),\n"
        "           'accepted': b['result'].questions}, open(sys.argv[2], 'w'))\n")
    # One thread: a tiny model gains nothing from more, and on a busy machine their spinning costs minutes.
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_TOKEN", None)
    result = subprocess.run([sys.executable, str(driver), str(card), str(tmp_path / "out.json")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    wanted = json.loads((staged[0] / "model" / "metrics.json").read_text())["decoding"]["num_questions"]
    assert len(out["questions"]) == wanted and all(isinstance(q, str) for q in out["questions"])  # as evaluated
    assert isinstance(out["accepted"], list)  # the tiny model's gibberish may all be rejected; it must run
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(staged[0] / "model")
    assert out["prompt"] == encode_prompt(tokenizer, EXAMPLE_PARAGRAPH).input_ids  # the prompt it was trained on


def test_space_folder_is_space_as_it_is_but_its_card_and_names_the_adapter_in_a_variable(staged):
    space = staged[0] / "space"
    changed = {name for name, content in files_of(space).items()
               if content != (REPO / ("space" if "/" not in name else "") / name).read_bytes()}
    assert changed == {"README.md"}  # app.py and the qg modules as they are
    card = SpaceCard.load(space / "README.md").data
    assert card.models[:2] == [MODEL_REPO, BASE_REPO] and card.datasets[0] == DATASET_REPO
    text = (space / "README.md").read_text()
    assert "ORG/" not in text and f"https://huggingface.co/{MODEL_REPO}" in text
    # app.py loads os.environ["QG_MODEL"]: the Space variable publishing sets.
    manifest = json.loads((staged[0] / "manifest.json").read_text())
    assert manifest["repos"]["space"]["space_variables"] == {"QG_MODEL": MODEL_REPO}
    assert 'os.environ.get("QG_MODEL"' in (space / "app.py").read_text()


def test_space_is_a_docker_space_whose_card_names_the_published_repos(staged):
    space = staged[0] / "space"
    card = SpaceCard.load(space / "README.md").data
    assert (card.sdk, card.app_port, card.get("suggested_hardware")) == ("docker", 8501, "cpu-basic")
    assert card.models == [MODEL_REPO, BASE_REPO]  # the adapter and the base it loads on
    assert card.get("preload_from_hub") == [MODEL_REPO, BASE_REPO]  # the weights app.py loads, fetched at build
    assert card.datasets == [DATASET_REPO, "KorQuAD/squad_kor_v1"]
    assert 0 < len(card.get("short_description")) <= 60  # the Hub's limit
    assert card.get("sdk_version") is None and card.get("python_version") is None  # the Dockerfile decides
    instructions = [line.split(maxsplit=1) for line in (space / "Dockerfile").read_text().replace("\\\n", " ")
                    .splitlines() if line.strip() and not line.startswith("#")]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    [useradd] = [args for op, args in instructions if op == "RUN" and "useradd" in args]
    assert "-u 1000 user" in useradd
    users = [args for op, args in instructions if op == "USER"]
    assert users[-1] == "user"  # the app runs as uid 1000, not root
    runs = [args for op, args in instructions if op == "RUN"]
    assert any("pip install" in run and "-r requirements.txt" in run for run in runs)
    [cmd] = [json.loads(args) for op, args in instructions if op == "CMD"]
    assert cmd == ["streamlit", "run", "app.py", "--server.port", str(card.app_port), "--server.address", "0.0.0.0"]
    copied = [args.split()[-2] for op, args in instructions if op == "COPY"]
    assert all((space / source).exists() for source in copied)


STAGED_APP_DRIVER = """
import json, sys, time
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app.py", default_timeout=240).run()
deadline = time.monotonic() + 240
while any(c.value.startswith("\N{HOURGLASS WITH FLOWING SAND}") for c in at.caption) and time.monotonic() < deadline:
    time.sleep(0.1)  # the model loads in a background thread; the page says so until it is ready
    at.run()
assert not at.exception, at.exception
at.button[0].click().run()
assert not at.exception, at.exception
modules = sorted(m.__file__ for name, m in sys.modules.items() if name == "qg" or name.startswith("qg."))
json.dump({"modules": modules, "model": [c.value for c in at.caption][0], "errors": [e.value for e in at.error],
           "shown": len(at.code) + len(at.warning)}, open(sys.argv[1], "w"))
"""


def test_staged_space_runs_from_its_own_files_with_its_variable(staged, hub_cache, tmp_path):
    """The staged Space, copied on its own and run headless as the Space runs it (app.py from its folder, the Space
    variables in the environment, not this checkout on the path): it loads the published adapter, generates, and
    every qg module it imports is a staged file, and nothing else is staged but the CPU engine's modules."""
    space = shutil.copytree(staged[0] / "space", tmp_path / "space")
    variables = json.loads((staged[0] / "manifest.json").read_text())["repos"]["space"]["space_variables"]
    env = {**os.environ, **variables, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_TOKEN", None)
    # -E: no PYTHONPATH (the checkout); -B: no bytecode written next to the staged files.
    result = subprocess.run([sys.executable, "-E", "-B", "-c", STAGED_APP_DRIVER, str(tmp_path / "out.json")],
                            cwd=space, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["errors"] == [] and out["shown"] > 0 and f"`{MODEL_REPO}`" in out["model"]
    staged_modules = {p.relative_to(space).as_posix() for p in (space / "qg").rglob("*.py")}
    imported = {Path(m).resolve().relative_to(space.resolve()).as_posix() for m in out["modules"]}
    # Staged too, as imported inside functions: the CPU engine's modules, which this GPU-or-transformers run skips.
    assert imported <= staged_modules and staged_modules - imported <= {
        "qg/serving/__init__.py", "qg/serving/ctranslate2.py", "qg/serving/export.py", "qg/serving/openai.py"}


def test_space_stages_an_explicit_list_and_never_planted_secrets(tmp_path, monkeypatch, run_dir, eval_dir,
                                                                 dataset_dir):
    package = shutil.copytree(REPO / "qg", tmp_path / "source" / "qg", ignore=shutil.ignore_patterns("__pycache__"))
    planted = [package / "space" / ".streamlit" / "secrets.toml", package / ".env", package / "x.py~",
               package / "space" / ".env"]
    for file in planted:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(f'HF_TOKEN = "{FAKE_TOKEN}"\n')
    monkeypatch.setattr(qg.hub.publish, "PACKAGE_SOURCE", package)
    monkeypatch.setattr(qg.hub.publish, "SPACE_SOURCE", package / "space")
    staging = tmp_path / "staging"
    code, _, err = cli(*publish_args(run_dir, eval_dir, dataset_dir, staging, "--offline"))
    assert code == 0, err
    space_files = set(files_of(staging / "space"))
    assert {name for name in space_files if not name.startswith("qg/")} == set(qg.hub.publish.SPACE_FILES)
    assert {name for name in space_files if name.startswith("qg/")} == {
        "qg/__init__.py", "qg/cli.py", "qg/io.py", "qg/prompt.py", "qg/quality.py", "qg/generate.py", "qg/sampling.py",
        "qg/text.py", "qg/data/__init__.py", "qg/data/korquad.py", "qg/models/__init__.py", "qg/models/exaone.py",
        "qg/models/loading.py", "qg/models/tiny.py", "qg/serving/__init__.py", "qg/serving/ctranslate2.py",
        "qg/serving/export.py", "qg/serving/openai.py"}  # what app.py imports, directly or not
    manifest = (staging / "manifest.json").read_text()
    assert not [p for p in staging.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]
    assert all(f'"{name}"' not in manifest for name in ("secrets.toml", ".env", "x.py~", ".streamlit"))
    assert "secrets.toml" not in manifest and ".env" not in manifest and "~" not in manifest


def test_dataset_folder_is_the_build_with_its_card_naming_the_repo(staged, dataset_dir):
    dataset = staged[0] / "dataset"
    assert set(files_of(dataset)) == set(publishable_files_of(dataset_dir)) | {"LICENSE"}
    for name, content in publishable_files_of(dataset_dir).items():
        if name != "README.md":
            assert (dataset / name).read_bytes() == content
    assert metadata_load(dataset / "README.md") == metadata_load(dataset_dir / "README.md")
    card = (dataset / "README.md").read_text()
    assert "ORG/" in (dataset_dir / "README.md").read_text() and "ORG/" not in card  # built without a repo id
    assert f'load_dataset("{DATASET_REPO}", "pairs")' in card


def test_local_evaluation_dataset_needs_dataset_repo(tmp_path, run_dir, eval_dir):
    code, _, err = cli("--adapter", run_dir, "--eval-dir", eval_dir, "--model-repo", MODEL_REPO, "--space-repo",
                       SPACE_REPO, "--offline", "--staging-dir", tmp_path / "staging")
    one_error_line(code, err, f"pass --dataset-repo: {eval_dir} evaluated the local folder")


def test_offline_staging_never_writes_or_prints_the_token(staged):
    staging, stdout, stderr = staged
    assert FAKE_TOKEN not in stdout + stderr
    assert not [p for p in staging.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]


def sent_files_match_manifest(hub: FakeHub, staging: Path) -> None:
    """Every repository of manifest.json received exactly its listed files, each with the listed size and sha256."""
    manifest = json.loads((staging / "manifest.json").read_text())
    for repo in manifest["repos"].values():
        sent = hub.repos[repo["repo_type"], repo["repo_id"]]
        assert sorted(sent) == [f["path"] for f in repo["files"]]
        for entry in repo["files"]:
            content = sent[entry["path"]]
            assert (len(content), hashlib.sha256(content).hexdigest()) == (entry["size"], entry["sha256"])


def test_online_publish_sends_exactly_the_manifest_files(tmp_path, monkeypatch, run_dir, eval_dir, dataset_dir):
    hub = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    staging = tmp_path / "staging"
    code, out, err = cli(*publish_args(run_dir, eval_dir, dataset_dir, staging, "--base-repo", "owner/the-base",
                                       "--private"))
    assert code == 0, err
    assert hub.calls == [
        ("whoami",),
        ("create_repo", "owner/the-base", "model", True, None), ("upload_folder", "owner/the-base", "model", "*"),
        ("create_repo", DATASET_REPO, "dataset", True, None), ("upload_folder", DATASET_REPO, "dataset", "*"),
        ("create_repo", MODEL_REPO, "model", True, None), ("upload_folder", MODEL_REPO, "model", "*"),
        ("create_repo", SPACE_REPO, "space", True, "docker"),
        ("add_space_variable", SPACE_REPO, "QG_MODEL", MODEL_REPO), ("upload_folder", SPACE_REPO, "space", "*")]
    assert sorted(hub.repos) == [("dataset", DATASET_REPO), ("model", "owner/the-base"), ("model", MODEL_REPO),
                                 ("space", SPACE_REPO)]
    sent_files_match_manifest(hub, staging)
    assert hub.repos["dataset", DATASET_REPO]["data/pairs/train-00000-of-00001.parquet"] == \
        (dataset_dir / "data" / "pairs" / "train-00000-of-00001.parquet").read_bytes()  # as built, not re-encoded
    assert json.loads((staging / "model" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "owner/the-base"
    assert SpaceCard.load(staging / "space" / "README.md").data.models[1] == "owner/the-base"
    assert FAKE_TOKEN not in out + err
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]
    assert f"published model   https://huggingface.co/{MODEL_REPO}" in out

    # Without --staging-dir: a temporary staging in the qg cache, the same uploads, nothing left behind.
    first, hub.calls[:] = dict(hub.repos), []
    monkeypatch.setenv("QG_CACHE", str(tmp_path / "cache"))
    args = publish_args(run_dir, eval_dir, dataset_dir, staging, "--base-repo", "owner/the-base", "--private")
    code, _, err = cli(*args[:args.index("--staging-dir")], *args[args.index("--staging-dir") + 2:])
    assert code == 0, err
    assert hub.repos == first and len(hub.calls) == 10 and list((tmp_path / "cache").iterdir()) == []


def test_build_dataset_push_uploads_the_folder_publish_stages(tmp_path, monkeypatch, staged):
    """build_dataset.py --push-to-hub sends the files publish.py stages for a dataset repo: the parquet files as
    written, in one upload_folder commit."""
    hub = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    out = tmp_path / "dataset"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        run(lambda: build_dataset_script.main(["--sample", "--output-dir", str(out), "--push-to-hub", DATASET_REPO]))
    assert hub.calls == [("create_repo", DATASET_REPO, "dataset", False, None),
                         ("upload_folder", DATASET_REPO, "dataset", "*")]
    assert hub.repos["dataset", DATASET_REPO] == files_of(staged[0] / "dataset")  # the same build, staged alike
    assert f"pushed to https://huggingface.co/datasets/{DATASET_REPO}" in stdout.getvalue()


def one_error_line(code: int, err: str, starts: str) -> None:
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {starts}"), err


def test_unreachable_hub_is_one_line_and_nothing_is_created(tmp_path, monkeypatch, run_dir, eval_dir, dataset_dir):
    def unreachable(self, *args, **kwargs):
        raise httpx2.ConnectError(f"[Errno 111] Connection refused (token {FAKE_TOKEN})")

    def create_repo(self, *args, **kwargs):
        raise AssertionError("no repository is created when the Hub cannot be reached")

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(HfApi, "whoami", unreachable)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    code, out, err = cli(*publish_args(run_dir, eval_dir, dataset_dir, tmp_path / "staging"))
    one_error_line(code, err, "reaching the Hugging Face Hub failed ([Errno 111] Connection refused")
    assert FAKE_TOKEN not in out + err  # the error text held the token; it is cut out


# Not shaped like a Hugging Face token, so only scrubbing the exact value of HF_TOKEN can hide it.
ECHOED_TOKEN = "qgSecretThatTheHubEchoes0123456789"


def echoing_hub_env(tmp_path: Path, hub: EchoingHub) -> dict[str, str]:
    return {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": ECHOED_TOKEN,
            "HF_HOME": str(tmp_path / "hf-home")}


@pytest.mark.parametrize(("failing", "message"), [
    ("whoami", "reaching the Hugging Face Hub failed ("), ("create", f"publishing {BASE_REPO} failed ("),
    ("upload", f"publishing {BASE_REPO} failed (")])
def test_hub_errors_that_echo_the_token_are_one_line_without_it(tmp_path, failing, message, run_dir, eval_dir,
                                                                dataset_dir):
    with EchoingHub({failing}) as hub:
        result = subprocess.run([sys.executable, "publish.py",
                                 *map(str, publish_args(run_dir, eval_dir, dataset_dir, tmp_path / "staging"))],
                                cwd=REPO, env=echoing_hub_env(tmp_path, hub), capture_output=True, text=True,
                                timeout=300)
    assert f"Bearer {ECHOED_TOKEN}" in hub.authorizations  # it was sent, and came back in an error
    one_error_line(result.returncode, result.stderr, message)
    assert ECHOED_TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize("failing", ["create", "upload"])
def test_build_dataset_push_errors_that_echo_the_token_are_one_line_without_it(tmp_path, failing):
    out = tmp_path / "built"
    with EchoingHub({failing}) as hub:
        result = subprocess.run([sys.executable, "hub_dataset/build_dataset.py", "--sample", "--output-dir", str(out),
                                 "--push-to-hub", DATASET_REPO], cwd=REPO, env=echoing_hub_env(tmp_path, hub),
                                capture_output=True, text=True, timeout=300)
    assert f"Bearer {ECHOED_TOKEN}" in hub.authorizations
    assert result.returncode == 2 and ECHOED_TOKEN not in result.stdout + result.stderr
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"error: could not push to {DATASET_REPO} (") and "<token>" in error
    assert error.endswith(f"the dataset is built in {out}, run again to retry")


def test_hub_offline_mode_is_one_line_from_the_real_command(tmp_path, run_dir, eval_dir, dataset_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": FAKE_TOKEN}
    result = subprocess.run([sys.executable, "publish.py",
                             *map(str, publish_args(run_dir, eval_dir, dataset_dir, tmp_path / "staging"))],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    one_error_line(result.returncode, result.stderr, "reaching the Hugging Face Hub failed")
    assert "offline mode is enabled" in result.stderr and FAKE_TOKEN not in result.stdout + result.stderr


def test_missing_token_is_one_line(tmp_path, monkeypatch, run_dir, eval_dir, dataset_dir):
    monkeypatch.setattr(qg.data.build, "get_token", lambda: None)
    code, _, err = cli(*publish_args(run_dir, eval_dir, dataset_dir, tmp_path / "staging"))
    one_error_line(code, err, "pushing to the Hub needs a Hugging Face token")


def test_missing_metrics_are_refused(tmp_path, run_dir, dataset_dir):
    empty_eval = tmp_path / "eval"
    empty_eval.mkdir()
    code, _, err = cli(*publish_args(run_dir, empty_eval, dataset_dir, tmp_path / "staging", "--offline"))
    one_error_line(code, err, f"{empty_eval} lacks metrics.json, after_outputs.json")
    assert not (tmp_path / "staging").exists()


def test_card_that_does_not_parse_is_refused_and_the_previous_staging_stays(tmp_path, monkeypatch, staged, run_dir,
                                                                            eval_dir, dataset_dir):
    staging = tmp_path / "staging"
    shutil.copytree(staged[0], staging)
    before = files_of(staging)
    broken = tmp_path / "template.md"
    broken.write_text("---\n{{ card_data }}\nlicense: [unclosed\n---\n\n# card\n")
    monkeypatch.setattr(qg.hub.model_card, "TEMPLATE_PATH", broken)
    code, _, err = cli(*publish_args(run_dir, eval_dir, dataset_dir, staging, "--offline"))
    one_error_line(code, err, "the rendered model card's metadata does not parse")
    assert files_of(staging) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["staging", "template.md"]  # no temporary left behind


def test_placeholder_repos_stage_offline_but_are_refused_online(tmp_path, monkeypatch, run_dir, eval_dir,
                                                                 dataset_dir):
    args = ["--adapter", run_dir, "--eval-dir", eval_dir, "--model-repo", "ORG/tiny-qg-lora", "--space-repo",
            "ORG/tiny-qg", "--dataset-repo", "ORG/korquad-qg-sample", "--staging-dir", tmp_path / "staging"]
    code, _, err = cli(*args, "--offline")  # as `make demo` stages
    assert code == 0, err
    assert SpaceCard.load(tmp_path / "staging" / "space" / "README.md").data.models[0] == "ORG/tiny-qg-lora"
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    code, _, err = cli(*args)
    one_error_line(code, err, "ORG/tiny-qg-lora, ORG/tiny-qg, ORG/korquad-qg-sample: ORG is a placeholder")


def test_folder_that_is_no_staging_is_not_replaced(tmp_path, run_dir, eval_dir, dataset_dir):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    code, _, err = cli(*publish_args(run_dir, eval_dir, dataset_dir, precious, "--offline"))
    one_error_line(code, err, f"--staging-dir {precious} exists and is not a previous staging")
    assert (precious / "notes.txt").read_text() == "keep me"


def test_dataset_that_was_not_evaluated_is_refused(tmp_path, run_dir, eval_dir):
    other = tmp_path / "other-dataset"
    build_qg_dataset(read_korquad_json(SAMPLE / "train.json"), read_korquad_json(SAMPLE / "dev.json"), other,
                     validation_fraction=0.3)
    code, _, err = cli(*publish_args(run_dir, eval_dir, other, tmp_path / "staging", "--offline"))
    one_error_line(code, err, f"--dataset-dir {other} is not the dataset")


def test_evaluation_of_another_adapter_is_refused(tmp_path, run_dir, dataset_dir):
    """Run B's evaluation next to run A's adapter: the card would publish B's scores as A's."""
    from safetensors.torch import load_file, save_file

    other = shutil.copytree(run_dir, tmp_path / "run-b", ignore=shutil.ignore_patterns("checkpoints", "best"))
    weights = load_file(other / "adapter_model.safetensors")
    save_file({name: tensor + 1 for name, tensor in weights.items()}, other / "adapter_model.safetensors")
    revision = dataset_revision(str(dataset_dir))
    eval_b = write_evaluation(tmp_path / "eval-b", dataset=str(dataset_dir), dataset_revision=revision, adapter=other)
    code, _, err = cli(*publish_args(run_dir, eval_b, dataset_dir, tmp_path / "staging", "--offline"))
    one_error_line(code, err, f"--eval-dir {eval_b} evaluated another adapter ({other}) than --adapter {run_dir}")
    unrecorded = write_evaluation(tmp_path / "eval-hub", dataset=str(dataset_dir), dataset_revision=revision)
    code, _, err = cli(*publish_args(run_dir, unrecorded, dataset_dir, tmp_path / "staging", "--offline"))
    one_error_line(code, err, f"{unrecorded}/metrics.json does not say which adapter it evaluated")
    assert not (tmp_path / "staging").exists()


@pytest.fixture
def export_dirs(tmp_path, run_dir) -> tuple[Path, Path]:
    """Small stand-ins for qg-export's folders: the tiny base as a merged model (a real transformers folder), and a
    CTranslate2 layout; both with the tokenizer_config.json as transformers saved it."""
    base_source = Path(json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"])
    merged = shutil.copytree(base_source, tmp_path / "merged")
    ctranslate2 = tmp_path / "ctranslate2"
    ctranslate2.mkdir()
    (ctranslate2 / "model.bin").write_bytes(b"ctranslate2 weights stand-in")
    (ctranslate2 / "config.json").write_text(json.dumps({"bos_token": "[BOS]", "eos_token": "[|endofturn|]"}))
    for folder in (merged, ctranslate2):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy2(run_dir / name, folder / name)
    return merged, ctranslate2


def test_exported_folders_are_staged_with_card_and_license_and_uploaded(tmp_path, monkeypatch, run_dir, eval_dir,
                                                                        dataset_dir, export_dirs):
    merged, ctranslate2 = export_dirs
    hub = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    staging = tmp_path / "staging"
    code, _, err = cli(*publish_args(run_dir, eval_dir, dataset_dir, staging, "--merged-dir", merged, "--merged-repo",
                                     MERGED_REPO, "--ctranslate2-dir", ctranslate2, "--ctranslate2-repo", CT2_REPO))
    assert code == 0, err
    manifest = json.loads((staging / "manifest.json").read_text())
    assert {name: repo["repo_id"] for name, repo in manifest["repos"].items()} == {
        "base": BASE_REPO, "dataset": DATASET_REPO, "model": MODEL_REPO, "merged": MERGED_REPO,
        "ctranslate2": CT2_REPO, "space": SPACE_REPO}  # in this order: what a card links is up first
    sent_files_match_manifest(hub, staging)
    for folder, source, repo_id, library in [("merged", merged, MERGED_REPO, "transformers"),
                                             ("ctranslate2", ctranslate2, CT2_REPO, "ctranslate2")]:
        staged_files, source_files = files_of(staging / folder), publishable_files_of(source)
        assert set(staged_files) == set(source_files) | {"README.md", "LICENSE"}
        assert all(staged_files[name] == content for name, content in source_files.items()
                   if name != "tokenizer_config.json")
        assert json.loads(staged_files["tokenizer_config.json"]) == {
            key: value for key, value in json.loads(source_files["tokenizer_config.json"]).items()
            if key not in ("is_local", "local_files_only")}
        assert staged_files["LICENSE"] == (staging / "model" / "LICENSE").read_bytes()
        card = ModelCard.load(staging / folder / "README.md")
        assert (card.data.base_model, card.data.library_name, card.data.license_name) == (BASE_REPO, library, "exaone")
        assert f"[{MODEL_REPO}](https://huggingface.co/{MODEL_REPO})" in card.text  # the adapter it comes from
        assert f'"{repo_id}"' in card.text and "[LICENSE](LICENSE)" in card.text
    # The Space answers with the CTranslate2 export on CPU hardware: named in a variable, preloaded with the rest.
    assert manifest["repos"]["space"]["space_variables"] == {"QG_MODEL": MODEL_REPO, "QG_CPU_MODEL": CT2_REPO}
    space_card = SpaceCard.load(staging / "space" / "README.md").data
    assert space_card.models == [MODEL_REPO, BASE_REPO, CT2_REPO]
    assert space_card.preload_from_hub == [MODEL_REPO, BASE_REPO, CT2_REPO]


def test_export_folder_that_lacks_a_file_is_refused_in_one_line(tmp_path, run_dir, eval_dir, dataset_dir,
                                                                export_dirs):
    merged, ctranslate2 = export_dirs
    (ctranslate2 / "model.bin").unlink()
    (merged / "model.safetensors").unlink()
    staging = tmp_path / "staging"
    code, _, err = cli(*publish_args(run_dir, eval_dir, dataset_dir, staging, "--offline", "--ctranslate2-dir",
                                     ctranslate2, "--ctranslate2-repo", CT2_REPO))
    one_error_line(code, err, f"--ctranslate2-dir {ctranslate2} is not a ctranslate2 model folder written by "
                              "qg-export (no model.bin)")
    code, _, err = cli(*publish_args(run_dir, eval_dir, dataset_dir, staging, "--offline", "--merged-dir", merged,
                                     "--merged-repo", MERGED_REPO))
    one_error_line(code, err, f"--merged-dir {merged} is not a merged model folder written by qg-export (no "
                              "model.safetensors or model.safetensors.index.json)")
    code, _, err = cli(*publish_args(run_dir, eval_dir, dataset_dir, staging, "--offline", "--merged-dir", merged,
                                     "--merged-repo", MODEL_REPO))
    assert code == 2 and "--model-repo and --merged-repo must differ" in err
    assert not staging.exists()


def test_help_explains_every_flag():
    result = subprocess.run([sys.executable, "publish.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0
    for flag in ("--adapter", "--eval-dir", "--model-repo", "--space-repo", "--base-repo", "--dataset-repo",
                 "--dataset-dir", "--merged-dir", "--merged-repo", "--ctranslate2-dir", "--ctranslate2-repo",
                 "--private", "--offline", "--staging-dir"):
        assert flag in result.stdout
    assert "qg-publish --adapter" in result.stdout  # the ready-to-paste commands
