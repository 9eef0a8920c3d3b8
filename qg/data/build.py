"""Build the Korean question-generation dataset from KorQuAD 1.0: two configs and a dataset card, optionally pushed.

    qg-build-dataset --sample --output-dir outputs/sample-dataset        # the bundled sample (the demo, CPU recipes)
    qg-build-dataset --output-dir outputs/korquad-qg --push-to-hub ORG/korquad-qg     # KorQuAD/squad_kor_v1 (Hub)
    qg-build-dataset --train-json KorQuAD_v1.0_train.json --dev-json KorQuAD_v1.0_dev.json \\
        --output-dir outputs/korquad-qg-1k --max-train-samples 1000      # the official files, 1,000 train questions

(`python hub_dataset/build_dataset.py` is the same command.) One paragraph is one KorQuAD context with the
questions asked about it. The builder writes two configs of the same splits: `default` (one row per paragraph) and
`pairs` (one row per question), as parquet in the layout the Hub uses, with the dataset card, so
`datasets.load_dataset(DIR)` and the Hub read the same thing. `load_qg_dataset(DIR)` reads a build (config `pairs`,
as training does); datasets caches a local folder by its README alone, so after a rebuild into the same folder
`datasets.load_dataset(DIR)` can return the previous build's rows, and `load_qg_dataset` cannot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi, get_token, metadata_load

from qg.cli import UserError, argument_type, command, one_line, positive_int
from qg.data.card import dataset_card, stage_dataset_repo
from qg.data.korquad import (
    KORQUAD_HUB_ID,
    KorQuADSource,
    Paragraph,
    load_korquad_from_hub,
    misaligned_warning,
    parse_korquad,
    read_korquad_json,
    sample_sources,
)
from qg.data.schema import CONFIGS, FEATURES, SAMPLE_BUILD_COMMAND, QGDatasetBuild, data_file_pattern
from qg.data.splits import limit_questions, split_by_article
from qg.io import atomic_dir, check_output_dir, is_hub_id

# Names the marker of a build (see `qg.io.check_output_dir`): only a folder it wrote is ever replaced.
BUILDER = "qg-build-dataset"


def build_qg_dataset(train: KorQuADSource, dev: KorQuADSource, output_dir: str | Path, *,
                     validation_fraction: float = 0.05, max_train_samples: int | None = None, seed: int = 0,
                     strict: bool = False, hub_repo_id: str | None = None) -> QGDatasetBuild:
    """Parse, split and write both configs and the dataset card to `output_dir`, atomically.

    `output_dir` may be absent, empty, or a previous build holding only what the builder wrote (replaced); nothing
    else, so a typo cannot delete a user's files (see `qg.io.check_output_dir`). Any error leaves it as it was.
    `hub_repo_id`: where it will be pushed, for the card's example.
    """
    output_dir = Path(output_dir)
    check_output_dir(output_dir, BUILDER)
    train_paragraphs, train_report = parse_korquad(train, strict)
    test_paragraphs, test_report = parse_korquad(dev, strict)
    for source, paragraphs in [(train, train_paragraphs), (dev, test_paragraphs)]:
        if not paragraphs:
            raise UserError(f"{source.name}: no paragraph with a usable question")
    splits, overlap = split_by_article(train_paragraphs, test_paragraphs, validation_fraction, seed)
    if max_train_samples is not None:
        splits["train"] = limit_questions(splits["train"], max_train_samples, seed)
    build = QGDatasetBuild(splits=splits, reports={"train": train_report, "test": test_report},
                           overlap_paragraphs_dropped=overlap, validation_fraction=validation_fraction,
                           max_train_samples=max_train_samples, seed=seed, hub_repo_id=hub_repo_id)
    with atomic_dir(output_dir, owner=BUILDER) as tmp:
        for config in CONFIGS:
            for split, paragraphs in splits.items():
                path = tmp / data_file_pattern(config, split).replace("*", "00000-of-00001.parquet")
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.Table.from_pydict(_columns(paragraphs, config),
                                                    schema=FEATURES[config].arrow_schema), path)
        dataset_card(build).save(tmp / "README.md")
    return build


def _columns(paragraphs: list[Paragraph], config: str) -> dict[str, list]:
    if config == "default":
        return {
            "id": [p.id for p in paragraphs],
            "title": [p.title for p in paragraphs],
            "context": [p.context for p in paragraphs],
            "questions": [p.questions for p in paragraphs],
            "answers": [p.answers for p in paragraphs],
        }
    pairs = [(p, i) for p in paragraphs for i in range(len(p.questions))]
    return {
        "id": [p.question_ids[i] for p, i in pairs],
        "title": [p.title for p, _ in pairs],
        "context": [p.context for p, _ in pairs],
        "question": [p.questions[i] for p, i in pairs],
        "answer": [p.answers[i]["text"] for p, i in pairs],
        "answer_start": [p.answers[i]["answer_start"] for p, i in pairs],
    }


# ---------------------------------------------------------------------------------------------------- the Hub


def hub_token() -> str:
    """The saved or `HF_TOKEN` Hugging Face token; without one, a `UserError` saying how to get one."""
    token = get_token()
    if token is None:
        raise UserError("pushing to the Hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")
    return token


def push_qg_dataset(output_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> None:
    """Upload a build to the dataset repo `repo_id` as publish.py stages it (`qg.data.card.stage_dataset_repo`), in
    one commit: the parquet files as written, not re-encoded."""
    from qg.hub.upload import hub_errors, push_folder

    output_dir = Path(output_dir)
    with (tempfile.TemporaryDirectory(prefix="qg-dataset-") as tmp,
          hub_errors(f"could not push to {repo_id}", f"the dataset is built in {output_dir}, run again to retry")):
        folder = stage_dataset_repo(output_dir, Path(tmp) / "dataset", repo_id)
        push_folder(HfApi(token=token), folder, repo_id, "dataset", private=private,
                    commit_message="Upload the dataset with build_dataset.py")


def load_qg_dataset(name_or_path: str, config: str = "pairs") -> datasets.DatasetDict:
    """A dataset built by `hub_dataset/build_dataset.py`: a local folder, or a Hub id when no such folder exists."""
    if config not in CONFIGS:
        raise UserError(f"unknown dataset config {config!r}: choose one of {', '.join(CONFIGS)}")
    how_to_build = SAMPLE_BUILD_COMMAND.format(output_dir=name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _load_built_folder(path, config)
    if not is_hub_id(name_or_path):
        raise UserError(f"{name_or_path}: no dataset folder there; build it with: {how_to_build}")
    try:
        return datasets.load_dataset(name_or_path, name=config)
    except OSError as err:  # no connection, no such repo, HTTP errors
        raise UserError(f"{name_or_path} is no local folder and could not be loaded from the Hugging Face Hub "
                        f"({one_line(err)}); to build it locally: {how_to_build}") from None


def _load_built_folder(path: Path, config: str) -> datasets.DatasetDict:
    # Not `datasets.load_dataset(path, name=config)`: that caches a local folder by its README alone, so after a
    # rebuild into the same folder it returns the old rows. Parquet files named explicitly are cached by their path
    # and modification time.
    readme = path / "README.md"
    metadata = (metadata_load(readme) or {}) if readme.is_file() else {}
    data_files = {c["config_name"]: c["data_files"] for c in metadata.get("configs", [])}
    if config not in data_files:
        raise UserError(f"{path} is not a dataset built by hub_dataset/build_dataset.py (no config {config!r} in "
                        f"its README.md); build one with: {SAMPLE_BUILD_COMMAND.format(output_dir=path)}")
    return datasets.load_dataset("parquet", data_files={f["split"]: str(path / f["path"]) for f in data_files[config]})


# ---------------------------------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--sample", action="store_true",
                        help="Build from the bundled sample (original Korean paragraphs in KorQuAD's format, shipped "
                             "with the package) instead of KorQuAD.")
    parser.add_argument("--train-json", type=Path, metavar="PATH",
                        help="KorQuAD 1.0 train file (SQuAD v1.1 JSON, from https://korquad.github.io). With "
                             f"--dev-json; without both, the builder loads {KORQUAD_HUB_ID} from the Hub (the Hub's "
                             "parquet conversion while the repository holds a loading script).")
    parser.add_argument("--dev-json", type=Path, metavar="PATH",
                        help="KorQuAD 1.0 dev file (SQuAD v1.1 JSON): becomes the test split.")
    parser.add_argument("--output-dir", type=Path, required=True, metavar="DIR",
                        help="Folder to write (README.md + data/). Built next to it and renamed at the end; a "
                             "previous build there is replaced when it holds only what the builder wrote, any "
                             "other existing folder is refused.")
    parser.add_argument("--validation-fraction", type=argument_type(float, lambda value: 0 < value < 1,
                                                                     "between 0 and 1"), default=0.05, metavar="F",
                        help="Fraction of the train set's articles (titles) that become the validation split, "
                             "rounded up: at least one article, and train must keep at least one (default 0.05).")
    parser.add_argument("--max-train-samples", type=positive_int, metavar="N",
                        help="Keep at most N train questions, as whole paragraphs: paragraphs are visited in an "
                             "order shuffled with --seed and each is taken when the total stays at most N, so "
                             "every paragraph left out would overshoot N (on KorQuAD the total is N exactly; the "
                             "original experiment used 140, then 1000). Validation and test are never limited. "
                             "Default: all.")
    parser.add_argument("--seed", type=int, default=0,
                        help="Seed for drawing the validation articles and the --max-train-samples paragraphs.")
    parser.add_argument("--strict", action="store_true",
                        help="Fail when an answer_start does not point at its answer text, instead of moving it "
                             "to the nearest occurrence of the text in the paragraph (or dropping the question "
                             "when there is none).")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME",
                        help="After building, push both configs and the card to this Hub dataset repo (needs a "
                             "token: `hf auth login` or HF_TOKEN). Without it nothing touches the network.")
    parser.add_argument("--private", action="store_true", help="Create the --push-to-hub repo as private.")
    args = parser.parse_args(argv)
    if (args.train_json is None) != (args.dev_json is None):
        parser.error("--train-json and --dev-json go together (neither: load KorQuAD from the Hub)")
    if args.sample and args.train_json is not None:
        parser.error("--sample builds from the bundled sample: leave out --train-json and --dev-json")
    if args.private and not args.push_to_hub:
        parser.error("--private only applies with --push-to-hub")
    return args


@command
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    token = hub_token() if args.push_to_hub else None  # before any work: a missing token fails at once
    check_output_dir(args.output_dir, BUILDER)  # and a bad --output-dir, before downloading KorQuAD
    if args.sample:
        train, dev = sample_sources()
    elif args.train_json is not None:
        train, dev = read_korquad_json(args.train_json), read_korquad_json(args.dev_json)
    else:
        train, dev = load_korquad_from_hub()
    build = build_qg_dataset(train, dev, args.output_dir, validation_fraction=args.validation_fraction,
                             max_train_samples=args.max_train_samples, seed=args.seed, strict=args.strict,
                             hub_repo_id=args.push_to_hub)
    for report in build.reports.values():
        if warning := misaligned_warning(report):
            print(f"warning: {warning}", file=sys.stderr)
    sizes = ", ".join(f"{split} {len(paragraphs):,} paragraphs / {sum(len(p.questions) for p in paragraphs):,} "
                      f"questions" for split, paragraphs in build.splits.items())
    print(f"wrote {args.output_dir}: {sizes}")
    if args.push_to_hub:
        push_qg_dataset(args.output_dir, args.push_to_hub, private=args.private, token=token)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
