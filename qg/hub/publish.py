"""Publish a trained adapter to the Hugging Face Hub: adapter + card, its Llama-format base, Space, dataset.

    # offline: write exactly what would be uploaded, one folder per repository, and DIR/manifest.json
    qg-publish --adapter outputs/demo/adapter --eval-dir outputs/demo/eval \\
        --model-repo ORG/tiny-random-exaone-korquad-qg-lora --space-repo ORG/korean-qg-demo \\
        --dataset-repo ORG/korquad-qg-sample --dataset-dir outputs/demo/dataset \\
        --offline --staging-dir outputs/demo/publish

    # the published adapter (token: `hf auth login` or HF_TOKEN); base -> ORG/EXAONE-3.5-2.4B-Instruct-llama
    qg-publish --adapter outputs/exaone-3.5-2.4b-qg-lora --eval-dir outputs/eval \\
        --model-repo ORG/exaone-3.5-2.4b-korquad-qg-lora --space-repo ORG/korean-qg \\
        --dataset-repo ORG/korquad-qg --dataset-dir outputs/korquad-qg

Online, the same folders are staged (in a temporary folder, or --staging-dir) and uploaded as they are, in the
order base, dataset, model, merged, CTranslate2, Space; each repository's files become the staged ones. The model
card is rendered from the run and evaluation folders (model_card/template.md) and refused when its metadata does not
read back.

Publishing to the Hugging Face Hub: stage exactly what each repository receives, then upload the staged folders.

    from qg.hub.publish import Repos, publish
    publish("outputs/demo/adapter", "outputs/demo/eval", Repos(model="ORG/tiny-qg-lora", space="ORG/tiny-qg"),
            staging_dir="outputs/demo/publish", offline=True)

A staging folder holds one folder per repository and `manifest.json` (repo id, type, and path/size/sha256 of every
file). Online publishing stages first and uploads those folders, so `--offline` writes exactly what is uploaded:
- `base/`: the Llama-format base the adapter was trained on (a converted EXAONE-3.5, or the tiny model) with a card,
  so that plain `PeftModel.from_pretrained` works for anyone. A base that is a Hub model transformers loads
  natively is referenced as it is, and no base repository is made;
- `dataset/` (with a dataset folder): the built dataset's README.md, data/ and KorQuAD's LICENSE
  (`qg.data.card.stage_dataset_repo`);
- `model/`: the adapter, its adapter_config.json pointing at the base repository, tokenizer, card (README.md), loss
  curve, training config and log, metrics.json and after_outputs.json, the LICENSE; no path of the machine that
  trained or evaluated;
- `merged/`, `ctranslate2/` (with --merged-dir, --ctranslate2-dir): qg-export's folders with a card and the LICENSE;
- `space/`: space/app.py, requirements.txt, Dockerfile and the qg modules app.py imports, unchanged, and its card
  (README.md), which names the adapter and the repositories above; the Space variable QG_MODEL (in manifest.json)
  gives app.py the adapter.
That is also the upload order: a repository is on the Hub before anything that points at it. Every model repository
carries the EXAONE license as LICENSE. Each folder goes up with `qg.hub.upload.push_folder` (`HfApi.upload_folder`,
one commit), as `build_dataset.py --push-to-hub` does.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.resources
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from huggingface_hub import HfApi, SpaceCard
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from qg.cli import UserError, command
from qg.data.card import stage_dataset_repo
from qg.hub.model_card import (
    EXAONE_LICENSE_FILE,
    RUN_FILES,
    Evaluation,
    TrainingRun,
    published_config,
    published_metrics,
    publishable_tokenizer_config,
    read_evaluation,
    read_run,
    render_base_card,
    render_export_card,
    write_model_card,
)
from qg.hub.upload import hub_errors, push_folder
from qg.io import ADAPTER_WEIGHTS, atomic_dir, atomic_write_json, sha256_file
from qg.models.exaone import TOKENIZER_FILES

SPACE_SOURCE = Path(str(importlib.resources.files("qg") / "space"))
PACKAGE_SOURCE = Path(str(importlib.resources.files("qg")))
MANIFEST = "manifest.json"
FOLDERS = ("base", "dataset", "model", "merged", "ctranslate2", "space")  # the upload order
# The model folders qg-export writes, which publishing can push too: the files each must hold (any one of a group).
EXPORT_FILES = {
    "merged": [("config.json",), ("model.safetensors", "model.safetensors.index.json"), ("tokenizer.json",),
               ("tokenizer_config.json",)],
    "ctranslate2": [("model.bin",), ("config.json",), ("tokenizer.json",), ("tokenizer_config.json",)],
}
# Repo ids in space/ that stand for the published repositories until publishing names them (ORG/NAME).
PLACEHOLDER = re.compile(r"\bORG/[\w.-]+")
# What the Space runs, from space/; next to them go the qg modules app.py imports.
SPACE_FILES = ("app.py", "requirements.txt", "README.md", "Dockerfile")
SPACE_SDK = "docker"  # Streamlit runs in a Docker Space: the Hub deprecated its Streamlit SDK
# The environment variable app.py reads its model from; publishing sets it as a Space variable.
MODEL_VARIABLE = "QG_MODEL"
CPU_MODEL_VARIABLE = "QG_CPU_MODEL"  # the CTranslate2 model app.py answers with on CPU hardware
OFFLINE_HINT = "`--offline --staging-dir DIR` writes what would be uploaded without the Hub"


@dataclass
class Repos:
    """Where each part goes: ORG/NAME ids. `base` None: OWNER-OF-MODEL/<base name>-llama."""

    model: str
    space: str
    base: str | None = None
    dataset: str | None = None  # the dataset the card names; pushed too when a dataset folder is given
    merged: str | None = None  # with a merged model folder from qg-export
    ctranslate2: str | None = None  # with a CTranslate2 folder from qg-export


def publish(adapter: str | Path, eval_dir: str | Path, repos: Repos, *, dataset_dir: str | Path | None = None,
            merged_dir: str | Path | None = None, ctranslate2_dir: str | Path | None = None,
            staging_dir: str | Path | None = None, offline: bool = False, private: bool = False) -> dict:
    """Stage into `staging_dir` and, unless `offline`, upload; returns the manifest.

    Online: a missing token fails first, then everything is staged (so local mistakes surface before any network
    call), then the token is checked against the Hub, then the folders go up. Without `staging_dir` the staging
    folder is temporary, in the qg cache: on the converted base's file system, so the base is hard-linked.
    """
    if offline:
        if staging_dir is None:
            raise UserError("--offline needs --staging-dir: the folder that receives what would be uploaded")
        return stage(adapter, eval_dir, repos, staging_dir, dataset_dir=dataset_dir, merged_dir=merged_dir,
                     ctranslate2_dir=ctranslate2_dir, private=private)
    from qg.data.build import hub_token
    from qg.io import cache_dir

    placeholders = [r for r in vars(repos).values() if r and PLACEHOLDER.fullmatch(r)]
    if placeholders:  # fine for an offline demo staging, a mistake on the Hub
        raise UserError(f"{', '.join(placeholders)}: ORG is a placeholder; give your user or organisation")
    token = hub_token()
    with contextlib.ExitStack() as stack:
        if staging_dir is None:
            cache_dir().mkdir(parents=True, exist_ok=True)
            staging_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=cache_dir()))) / "staging"
        manifest = stage(adapter, eval_dir, repos, staging_dir, dataset_dir=dataset_dir, merged_dir=merged_dir,
                         ctranslate2_dir=ctranslate2_dir, private=private)
        api = HfApi(token=token)
        with hub_errors("reaching the Hugging Face Hub failed", OFFLINE_HINT):
            api.whoami()
        upload(staging_dir, api)
    return manifest


def stage(adapter: str | Path, eval_dir: str | Path, repos: Repos, staging_dir: str | Path, *,
          dataset_dir: str | Path | None = None, merged_dir: str | Path | None = None,
          ctranslate2_dir: str | Path | None = None, private: bool = False) -> dict:
    """Write every repository's files and manifest.json to `staging_dir`, atomically; returns the manifest.

    Refuses (`UserError`) a run or evaluation that is incomplete, an evaluation of another adapter, a card whose
    metadata does not read back, a dataset folder that is not the one evaluated, an exported model folder that lacks
    a file, and a `staging_dir` that holds anything but a previous staging.
    """
    check_repo_ids(repos, dataset_dir)
    given = [("merged", merged_dir, repos.merged), ("ctranslate2", ctranslate2_dir, repos.ctranslate2)]
    exports = {kind: (None if folder is None else Path(folder), repo) for kind, folder, repo in given
               if folder is not None or repo is not None}
    for kind, (folder, repo) in exports.items():
        check_export_dir(kind, folder, repo)
    run, evaluation = read_run(adapter), read_evaluation(eval_dir)
    check_evaluated_adapter(run, evaluation)
    base_folder = locate_base(run)
    if base_folder is None:
        if repos.base is not None:
            raise UserError(f"--base-repo: the adapter's base {run.adapter_config['base_model_name_or_path']} is a "
                            "Hub model transformers loads natively; it is referenced as it is, nothing to push")
        base_model = run.adapter_config["base_model_name_or_path"]
    else:
        base_model = repos.base or default_base_repo(repos.model, run.config["model"])
    dataset_repo = repos.dataset or evaluated_dataset_repo(evaluation)
    if dataset_dir is not None:
        check_evaluated_dataset(Path(dataset_dir), evaluation)
    staging_dir = Path(staging_dir)
    check_staging_dir(staging_dir)
    with atomic_dir(staging_dir) as out:
        manifest = {"private": private, "repos": {}}
        if base_folder is not None:
            stage_base(out / "base", base_folder, base_repo=base_model, run=run, adapter_repo=repos.model)
            manifest["repos"]["base"] = folder_manifest(out / "base", base_model, "model")
        if dataset_dir is not None:
            stage_dataset_repo(Path(dataset_dir), out / "dataset", dataset_repo)
            manifest["repos"]["dataset"] = folder_manifest(out / "dataset", dataset_repo, "dataset")
        stage_model(out / "model", run, evaluation, model_repo=repos.model, base_model=base_model,
                    dataset_repo=dataset_repo, space_repo=repos.space)
        manifest["repos"]["model"] = folder_manifest(out / "model", repos.model, "model")
        for kind, (folder, repo) in exports.items():
            stage_export(out / kind, folder, kind, repo=repo, base_model=base_model, adapter_repo=repos.model,
                         run=run)
            manifest["repos"][kind] = folder_manifest(out / kind, repo, "model")
        variables = stage_space(out / "space", model_repo=repos.model, base_model=base_model,
                                dataset_repo=dataset_repo, cpu_model_repo=repos.ctranslate2)
        manifest["repos"]["space"] = folder_manifest(out / "space", repos.space, "space", space_sdk=SPACE_SDK,
                                                     space_variables=variables)
        atomic_write_json(out / MANIFEST, manifest)
    return manifest


def upload(staging_dir: str | Path, api: HfApi) -> None:
    """Create each repository of the staged manifest and make its files the staged folder's, one commit each
    (remote files that are not staged are deleted, .gitattributes excepted)."""
    staging_dir = Path(staging_dir)
    manifest = json.loads((staging_dir / MANIFEST).read_text())
    for name, repo in manifest["repos"].items():
        with hub_errors(f"publishing {repo['repo_id']} failed", OFFLINE_HINT):
            push_folder(api, staging_dir / name, repo["repo_id"], repo["repo_type"], private=manifest["private"],
                        commit_message=f"Publish the {name} with publish.py", space_sdk=repo.get("space_sdk"),
                        space_variables=repo.get("space_variables"))


# ------------------------------------------------------------------------------------------------------ checks


def check_repo_ids(repos: Repos, dataset_dir: str | Path | None) -> None:
    if dataset_dir is not None and repos.dataset is None:
        raise UserError("--dataset-dir needs --dataset-repo: the dataset repository to push it to")
    named = {"--model-repo": repos.model, "--space-repo": repos.space, "--base-repo": repos.base,
             "--dataset-repo": repos.dataset, "--merged-repo": repos.merged, "--ctranslate2-repo": repos.ctranslate2}
    for flag, repo_id in named.items():
        if repo_id is None:
            continue
        try:
            validate_repo_id(repo_id)
        except HFValidationError as err:
            raise UserError(f"{flag} {repo_id!r} is not a Hub repo id ({_first_sentence(err)})") from None
        if repo_id.count("/") != 1:
            raise UserError(f"{flag} {repo_id!r}: give OWNER/NAME with your user or organisation as OWNER")
    models = {flag: repo_id for flag, repo_id in named.items()
              if repo_id is not None and flag not in ("--space-repo", "--dataset-repo")}
    for flag, repo_id in models.items():
        same = [other for other, other_id in models.items() if other_id == repo_id and other != flag]
        if same:
            raise UserError(f"{flag} and {same[0]} must differ: each model repository receives one folder")


def check_staging_dir(path: Path) -> None:
    """Only a missing or empty folder, or a previous staging, may be replaced: a typo must not delete a folder."""
    if not path.exists():
        return
    names = {entry.name for entry in path.iterdir()} if path.is_dir() else None
    if names is None or (names and not (MANIFEST in names and names <= {MANIFEST, *FOLDERS})):
        raise UserError(f"--staging-dir {path} exists and is not a previous staging (manifest.json + "
                        f"{', '.join(FOLDERS)}); choose another folder or remove it")


def evaluated_dataset_repo(evaluation: Evaluation) -> str:
    """The Hub dataset the evaluation read; a local folder cannot be named on the card, so then ask for the repo."""
    evaluated = evaluation.metrics["dataset"]
    # evaluate() fingerprints a local folder as sha256:..., a Hub dataset by its commit.
    local = (evaluation.metrics.get("dataset_revision") or "").startswith("sha256:") or Path(evaluated).exists()
    if not local and re.fullmatch(r"[\w.-]+/[\w.-]+", evaluated):
        return evaluated
    raise UserError(f"pass --dataset-repo: {evaluation.path} evaluated the local folder {evaluated}, and the card "
                    "names the Hub dataset repository it is published as")


def check_export_dir(kind: str, folder: Path | None, repo: str | None) -> None:
    """A qg-export folder and its repository come together, and the folder holds what loading it needs."""
    flag = f"--{kind}"
    if folder is None or repo is None:
        raise UserError(f"{flag}-dir and {flag}-repo go together: the folder and the repository it is published as")
    missing = [" or ".join(group) for group in EXPORT_FILES[kind] if not any((folder / n).is_file() for n in group)]
    if missing:
        raise UserError(f"{flag}-dir {folder} is not a {kind} model folder written by qg-export (no "
                        f"{', '.join(missing)})")


def check_evaluated_adapter(run: TrainingRun, evaluation: Evaluation) -> None:
    """The card reports the evaluation's scores as the adapter's: the evaluation must have read these weights."""
    evaluated = evaluation.metrics.get("adapter_sha256")
    if evaluated is None:
        raise UserError(f"{evaluation.path}/metrics.json does not say which adapter it evaluated (no adapter_sha256): "
                        f"evaluate this one with evaluate_qg.py --model {run.path}")
    if evaluated != sha256_file(run.path / ADAPTER_WEIGHTS):
        raise UserError(f"--eval-dir {evaluation.path} evaluated another adapter ({evaluation.metrics['model']}) "
                        f"than --adapter {run.path}: evaluate this one with evaluate_qg.py --model {run.path}")


def check_evaluated_dataset(dataset_dir: Path, evaluation: Evaluation) -> None:
    """The dataset pushed must be the one evaluated, when metrics.json fingerprinted a folder."""
    from qg.eval.runner import dataset_revision

    if not ((dataset_dir / "README.md").is_file() and (dataset_dir / "data").is_dir()):
        raise UserError(f"--dataset-dir {dataset_dir} is not a dataset built by hub_dataset/build_dataset.py "
                        "(README.md + data/)")
    evaluated = evaluation.metrics.get("dataset_revision") or ""
    if evaluated.startswith("sha256:") and dataset_revision(str(dataset_dir)) != evaluated:
        raise UserError(f"--dataset-dir {dataset_dir} is not the dataset {evaluation.path} was evaluated on "
                        f"({evaluation.metrics['dataset']}, {evaluated}): the card would report scores on other data")


# ------------------------------------------------------------------------------------------------------ staging


def locate_base(run: TrainingRun) -> Path | None:
    """The folder of the base the adapter was trained on, or None when that base is a Hub model loaded natively.

    Training records the folder it loaded (a converted EXAONE or the tiny model in the qg cache). If that folder is
    gone, the run's model is resolved again, which rebuilds the tiny model or converts the EXAONE checkpoint anew.
    """
    recorded = run.adapter_config["base_model_name_or_path"]
    if Path(recorded).is_dir():
        return Path(recorded)
    if recorded == run.config["model"]:
        return None
    from qg.models.loading import resolve_base

    resolved = resolve_base(run.config["model"])
    if not Path(resolved).is_dir():
        raise UserError(f"the adapter's base folder {recorded} is gone and {run.config['model']} could not be "
                        "converted again (is the Hub reachable?)")
    return Path(resolved)


def default_base_repo(model_repo: str, model: str) -> str:
    """OWNER/<base name>-llama: the adapter's owner, and the converted base's name (it is in Llama format)."""
    return f"{model_repo.split('/')[0]}/{Path(model).name}-llama"


def stage_weights(out: Path, folder: Path) -> None:
    """A model folder's files, hard-linked where possible (weights are gigabytes), without its card or dotfiles
    (markers of how it was made here, such as qg-convert's), with the EXAONE LICENSE, and its tokenizer_config.json
    without how it was loaded on this machine."""
    out.mkdir()
    for file in sorted(folder.iterdir()):
        if file.name.startswith("."):
            continue
        if file.name == "tokenizer_config.json":
            publishable_tokenizer_config(file, out / file.name)
        elif file.is_file() and file.name not in ("README.md", "LICENSE"):
            link_or_copy(file, out / file.name)
    shutil.copy2(EXAONE_LICENSE_FILE, out / "LICENSE")


def stage_base(out: Path, base_folder: Path, *, base_repo: str, run: TrainingRun, adapter_repo: str) -> None:
    stage_weights(out, base_folder)
    render_base_card(base_repo=base_repo, original_base=run.config["model"], adapter_repo=adapter_repo,
                     is_tiny=run.is_tiny).save(out / "README.md")


def stage_export(out: Path, folder: Path, kind: str, *, repo: str, base_model: str, adapter_repo: str,
                 run: TrainingRun) -> None:
    """A qg-export folder as `stage_weights` stages it, with its card."""
    stage_weights(out, folder)
    render_export_card(kind, repo=repo, base_model=base_model, adapter_repo=adapter_repo, run=run).save(
        out / "README.md")


def stage_model(out: Path, run: TrainingRun, evaluation: Evaluation, *, model_repo: str, base_model: str,
                dataset_repo: str, space_repo: str) -> None:
    """The run's adapter, tokenizer and training record, the evaluation's results, the card rendered from them and
    the LICENSE. Nothing names a path of the machines that trained and evaluated: train_config.yaml and metrics.json
    name the repositories instead, train_config.yaml leaves out the output folder, tokenizer_config.json how it was
    loaded there.

    Copies, not hard links: a run folder can still change in place (a resumed run appends to train_log.jsonl).
    """
    out.mkdir()
    tokenizer = [name for name in TOKENIZER_FILES if (run.path / name).is_file()]
    for name in [*RUN_FILES, *tokenizer]:
        if name == "tokenizer_config.json":
            publishable_tokenizer_config(run.path / name, out / name)
        elif name != "train_config.yaml":
            shutil.copy2(run.path / name, out / name)
    (out / "train_config.yaml").write_text(yaml.safe_dump(published_config(run.config, dataset_repo), sort_keys=False,
                                                          allow_unicode=True), encoding="utf-8")
    shutil.copy2(evaluation.path / "after_outputs.json", out / "after_outputs.json")
    atomic_write_json(out / "metrics.json", published_metrics(evaluation.metrics, model_repo=model_repo,
                                                              base_model=base_model, dataset_repo=dataset_repo))
    shutil.copy2(EXAONE_LICENSE_FILE, out / "LICENSE")
    adapter_config = dict(run.adapter_config, base_model_name_or_path=base_model)
    # peft's own layout (sorted keys, indent 2), so the file differs from the run's in that one value only.
    (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True), encoding="utf-8")
    write_model_card(out / "README.md", run, evaluation, model_repo=model_repo, base_model=base_model,
                     dataset_repo=dataset_repo, space_repo=space_repo)


def stage_space(out: Path, *, model_repo: str, base_model: str, dataset_repo: str,
                cpu_model_repo: str | None = None) -> dict[str, str]:
    """SPACE_FILES of space/ and the qg modules app.py imports, as they are, but for the card, whose models,
    preload_from_hub and datasets name the published repos (`base_model`: the adapter's base, which app.py loads
    too); returns the Space's variables, which tell app.py the adapter to load and, with `cpu_model_repo` (the
    CTranslate2 export), the model it answers with on CPU hardware, which the card then preloads as well.

    An explicit list, not a copy of the folders: nothing else there (a .streamlit/secrets.toml, an .env, an
    editor's backup) can reach a public repository.
    """
    out.mkdir()
    for name in SPACE_FILES:
        shutil.copy2(SPACE_SOURCE / name, out / name)
    for module in imported_modules(SPACE_SOURCE / "app.py", PACKAGE_SOURCE):
        target = out / "qg" / module.relative_to(PACKAGE_SOURCE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(module, target)

    card = SpaceCard.load(out / "README.md")
    data = card.data
    # The card's placeholders: its models are [adapter, base], as in preload_from_hub, its first dataset ours.
    renamed = dict(zip(data.models or [], [model_repo, base_model])) | {(data.datasets or [""])[0]: dataset_repo}
    renamed = {old: new for old, new in renamed.items() if PLACEHOLDER.fullmatch(old)}
    data.models = [renamed.get(m, m) for m in data.models or []]
    data.datasets = [renamed.get(d, d) for d in data.datasets or []]
    # Each entry is "REPO [FILES [REVISION]]".
    data["preload_from_hub"] = [" ".join([renamed.get(repo, repo), *rest])
                                for repo, *rest in (entry.split() for entry in data.get("preload_from_hub") or [])]
    if cpu_model_repo is not None:
        data.models = [*data.models, cpu_model_repo]
        data["preload_from_hub"] = [*data["preload_from_hub"], cpu_model_repo]
    text = card.text
    for old, new in renamed.items():
        text = text.replace(old, new)  # links in the prose, e.g. https://huggingface.co/ORG/...
    card.text = text
    card.save(out / "README.md")
    published = {model_repo, base_model, dataset_repo, cpu_model_repo}  # placeholders in an offline demo staging
    left = sorted(set(PLACEHOLDER.findall((out / "README.md").read_text(encoding="utf-8"))) - published)
    if left:
        raise UserError(f"space/README.md names {', '.join(left)}, which publishing cannot map to a real "
                        f"repository (it knows {', '.join(renamed)}); use one of those placeholders")
    return {MODEL_VARIABLE: model_repo} | ({CPU_MODEL_VARIABLE: cpu_model_repo} if cpu_model_repo else {})


def imported_modules(script: Path, package: Path) -> list[Path]:
    """The files of the modules of `package` (a folder, imported by its name) that `script` imports, directly or
    through one another, with the __init__.py of each package on the way; imports inside functions count (they
    run when the function does)."""
    found: set[Path] = set()
    todo = [script]
    while todo:
        for node in ast.walk(ast.parse(todo.pop().read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from qg.x import y`: y is a module or a name in qg.x (qg imports absolutely, never `from .`)
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                top, *parts = name.split(".")
                if top != package.name:
                    continue
                candidates = [package.joinpath(*parts[:i], "__init__.py") for i in range(len(parts) + 1)]
                candidates.append(package.joinpath(*parts).with_suffix(".py") if parts else package / "__init__.py")
                for file in candidates:
                    if file.is_file() and file not in found:
                        found.add(file)
                        todo.append(file)
    return sorted(found)


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the file system allows it (the real base is 4.8 GB), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def folder_manifest(folder: Path, repo_id: str, repo_type: str, **create: object) -> dict:
    """What the repository receives: every file of `folder`, with size and sha256."""
    files = [{"path": file.relative_to(folder).as_posix(), "size": file.stat().st_size, "sha256": sha256_file(file)}
             for file in sorted(p for p in folder.rglob("*") if p.is_file())]
    return {"repo_id": repo_id, "repo_type": repo_type, **create, "files": files}


def _first_sentence(err: BaseException) -> str:
    return " ".join(str(err).split()).split(". ")[0]


# ----------------------------------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, required=True, metavar="RUN_DIR",
                        help="Run folder written by train.py (its --output_dir): the final adapter at its top, "
                             "train_config.yaml, train_log.jsonl, loss_curve.png. checkpoints/, best/ and tracker "
                             "logs are not published.")
    parser.add_argument("--eval-dir", type=Path, required=True, metavar="EVAL_DIR",
                        help="Folder written by evaluate_qg.py --model for this adapter: metrics.json and "
                             "after_outputs.json, the card's scores and samples (published next to it).")
    parser.add_argument("--model-repo", required=True, metavar="ORG/NAME",
                        help="Model repository of the adapter and its card.")
    parser.add_argument("--space-repo", required=True, metavar="ORG/NAME",
                        help="Space repository (a Docker Space running Streamlit) for space/app.py, its Dockerfile "
                             "and the qg modules it imports.")
    parser.add_argument("--base-repo", metavar="ORG/NAME",
                        help="Model repository for the Llama-format base the adapter was trained on; the uploaded "
                             "adapter_config.json points there, so PeftModel.from_pretrained works for anyone. "
                             "Default: ORG/<base name>-llama with the --model-repo's ORG (e.g. "
                             "ORG/EXAONE-3.5-2.4B-Instruct-llama). Not allowed when the base is a Hub model that "
                             "transformers loads natively (it is referenced as it is).")
    parser.add_argument("--dataset-repo", metavar="ORG/NAME",
                        help="Dataset repository the card and the Space name as training and evaluation data. "
                             "Needed when the evaluation read a local dataset folder.")
    parser.add_argument("--dataset-dir", type=Path, metavar="DIR",
                        help="Also push this dataset folder (hub_dataset/build_dataset.py output) to "
                             "--dataset-repo. It must be the folder the evaluation read.")
    parser.add_argument("--merged-dir", type=Path, metavar="DIR",
                        help="Also push this merged model folder (qg-export: the adapter merged into its base, a "
                             "plain transformers model) to --merged-repo, with a card and the LICENSE.")
    parser.add_argument("--merged-repo", metavar="ORG/NAME", help="Model repository for --merged-dir.")
    parser.add_argument("--ctranslate2-dir", type=Path, metavar="DIR",
                        help="Also push this CTranslate2 model folder (qg-export: model.bin, config.json, tokenizer "
                             "files) to --ctranslate2-repo, with a card and the LICENSE.")
    parser.add_argument("--ctranslate2-repo", metavar="ORG/NAME", help="Model repository for --ctranslate2-dir.")
    parser.add_argument("--private", action="store_true", help="Create the repositories as private.")
    parser.add_argument("--offline", action="store_true",
                        help="Touch no network: only write the staging folder (needs --staging-dir).")
    parser.add_argument("--staging-dir", type=Path, metavar="DIR",
                        help="Where to stage: DIR/model, DIR/base, DIR/space, DIR/dataset (exactly the files each "
                             "repository receives) and DIR/manifest.json (repo id, type, path/size/sha256 per "
                             "file). Replaced if it holds a previous staging. Online it is kept after the upload; "
                             "without it a temporary folder is used.")
    args = parser.parse_args(argv)
    if args.offline and args.staging_dir is None:
        parser.error("--offline needs --staging-dir")
    if args.dataset_dir is not None and args.dataset_repo is None:
        parser.error("--dataset-dir needs --dataset-repo")
    for kind in EXPORT_FILES:
        if (getattr(args, f"{kind}_dir") is None) != (getattr(args, f"{kind}_repo") is None):
            parser.error(f"--{kind}-dir and --{kind}-repo go together")
    return args


@command
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    repos = Repos(model=args.model_repo, space=args.space_repo, base=args.base_repo, dataset=args.dataset_repo,
                  merged=args.merged_repo, ctranslate2=args.ctranslate2_repo)
    manifest = publish(args.adapter, args.eval_dir, repos, dataset_dir=args.dataset_dir, merged_dir=args.merged_dir,
                       ctranslate2_dir=args.ctranslate2_dir, staging_dir=args.staging_dir, offline=args.offline,
                       private=args.private)
    for name, repo in manifest["repos"].items():
        size = sum(f["size"] for f in repo["files"])
        url_prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo["repo_type"]]
        done = "staged" if args.offline else "published"
        where = f" in {args.staging_dir / name}" if args.staging_dir else ""
        print(f"{done} {name:<7} https://huggingface.co/{url_prefix}{repo['repo_id']}  "
              f"({len(repo['files'])} files, {size / 1e6:.1f} MB){where}")
    if args.staging_dir:
        print(f"manifest: {args.staging_dir / 'manifest.json'}")


if __name__ == "__main__":
    main()
