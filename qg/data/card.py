"""The dataset card (README.md) of a built question-generation dataset: Hub metadata, statistics, provenance.

The layout is templates/dataset_card.md, rendered by `huggingface_hub.DatasetCard.from_template` as the model card is.
"""

from __future__ import annotations

import importlib.resources
import math
import shutil
import statistics
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData

from qg.data.korquad import KORQUAD_HUB_ID
from qg.data.schema import CONFIGS, QGDatasetBuild, data_file_pattern

TEMPLATE_PATH = Path(str(importlib.resources.files("qg.data") / "templates" / "dataset_card.md"))
LICENSE_NAME = "cc-by-nd-2.0-kr"
LICENSE_URL = "https://creativecommons.org/licenses/by-nd/2.0/kr/"
# What the card's examples load when the build was made without --push-to-hub; staging names the real repo.
REPO_PLACEHOLDER = "ORG/NAME"
KORQUAD_ARXIV = "https://arxiv.org/abs/1909.07005"
KORQUAD_BIBTEX = """@article{lim2019korquad1,
  title   = {{KorQuAD1.0}: Korean {QA} Dataset for Machine Reading Comprehension},
  author  = {Lim, Seungyoung and Kim, Myungji and Lee, Jooyoul},
  journal = {arXiv preprint arXiv:1909.07005},
  year    = {2019},
  url     = {https://arxiv.org/abs/1909.07005}
}"""
# The dataset repository's LICENSE file: KorQuAD's license, which the card links.
LICENSE_TEXT = f"""KorQuAD 1.0 is by LG CNS and is licensed under the Creative Commons Attribution-NoDerivs 2.0 Korea
license (CC BY-ND 2.0 KR):

    {LICENSE_URL}

This dataset carries the KorQuAD 1.0 text, normalised and regrouped as its README.md describes, with nothing added.
Attribution: Seungyoung Lim, Myungji Kim, Jooyoul Lee. KorQuAD1.0: Korean QA Dataset for Machine Reading
Comprehension. arXiv:1909.07005, 2019. {KORQUAD_ARXIV} https://korquad.github.io
"""
SPLIT_SOURCES = {
    "train": "official train set, minus the validation articles",
    "validation": "articles drawn from the official train set",
    "test": "official dev set",
}


def dataset_card(build: QGDatasetBuild) -> DatasetCard:
    """The card: metadata the Hub and `datasets` read (configs, license, sizes), then statistics and provenance."""
    questions = sum(len(p.questions) for paragraphs in build.splits.values() for p in paragraphs)
    metadata = DatasetCardData(
        pretty_name="KorQuAD 1.0 for question generation",
        language=["ko"],
        # KorQuAD's questions and answers were written by crowd workers about paragraphs found on Wikipedia.
        annotations_creators=["crowdsourced"],
        language_creators=["found"],
        multilinguality=["monolingual"],
        license="other",
        license_name=LICENSE_NAME,
        license_link=LICENSE_URL,
        source_datasets=[KORQUAD_HUB_ID],
        task_categories=["text-generation"],
        tags=["question-generation"],
        size_categories=[size_category(questions)],
        configs=[
            {"config_name": config,
             "data_files": [{"split": split, "path": data_file_pattern(config, split)} for split in build.splits]}
            for config in CONFIGS
        ],
    )
    return DatasetCard.from_template(metadata, template_path=str(TEMPLATE_PATH), **_template_context(build))


def stage_dataset_repo(build_dir: Path, out: Path, repo_id: str) -> Path:
    """Write to `out` what the dataset repository `repo_id` receives: the build's data/, its card, whose examples
    load `repo_id`, and KorQuAD's LICENSE; returns `out`."""
    out.mkdir()
    shutil.copytree(build_dir / "data", out / "data")
    (out / "LICENSE").write_text(LICENSE_TEXT, encoding="utf-8")
    card = DatasetCard.load(build_dir / "README.md")
    card.text = card.text.replace(f'"{REPO_PLACEHOLDER}"', f'"{repo_id}"')
    card.save(out / "README.md")
    return out


def size_category(rows: int) -> str:
    """The Hub's size bucket for a number of rows (here: questions, the rows of the `pairs` config)."""
    for bound, label in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]:
        if rows < bound:
            return label
    return "1M<n<10M"


def _template_context(build: QGDatasetBuild) -> dict:
    splits = build.splits
    train, test = build.reports["train"], build.reports["test"]
    provenance = [
        ("source", _source(train.source, train.sha256), _source(test.source, test.sha256)),
        ("articles", f"{train.articles:,}", f"{test.articles:,}"),
        ("paragraphs read", f"{train.paragraphs_read:,}", f"{test.paragraphs_read:,}"),
        ("questions read", f"{train.questions_read:,}", f"{test.questions_read:,}"),
        ("repeated paragraphs merged into one", train.duplicate_paragraphs_merged, test.duplicate_paragraphs_merged),
        ("empty questions dropped", train.empty_questions_dropped, test.empty_questions_dropped),
        ("duplicate questions dropped", train.duplicate_questions_dropped, test.duplicate_questions_dropped),
        ("answers not at their answer_start", len(train.misaligned_answer_ids), len(test.misaligned_answer_ids)),
        ("… repaired (found elsewhere in the context)", train.answers_repaired, test.answers_repaired),
        ("… dropped with their question (not in the context)", train.answers_dropped, test.answers_dropped),
        ("paragraphs left without questions, dropped", train.paragraphs_without_questions_dropped,
         test.paragraphs_without_questions_dropped),
    ]
    from_files = train.sha256 is not None  # else from the Hub, the builder's default
    return {
        "korquad": KORQUAD_HUB_ID,
        "repo": build.hub_repo_id or REPO_PLACEHOLDER,
        "splits": [{"split": split, "source": SPLIT_SOURCES[split], "articles": f"{len({p.title for p in ps}):,}",
                    "paragraphs": f"{len(ps):,}", "questions": f"{sum(len(p.questions) for p in ps):,}"}
                   for split, ps in splits.items()],
        "lengths": [{"split": split,
                     "questions_per_paragraph": f"{statistics.mean(len(p.questions) for p in ps):.1f} / "
                                                f"{max(len(p.questions) for p in ps)}",
                     "paragraph": _distribution([len(p.context) for p in ps]),
                     "question": _distribution([len(q) for p in ps for q in p.questions]),
                     "answer": _distribution([len(a["text"]) for p in ps for a in p.answers])}
                    for split, ps in splits.items()],
        "validation_fraction": build.validation_fraction,
        "seed": build.seed,
        "train_limit": "all of them" if build.max_train_samples is None else (
            f"limited with `--max-train-samples {build.max_train_samples}`: paragraphs visited in an order shuffled "
            f"with seed {build.seed}, each taken whole when the total stays at most {build.max_train_samples} "
            "questions"),
        "overlap_dropped": f"{build.overlap_paragraphs_dropped:,}",
        "provenance": provenance,
        "command": ("python hub_dataset/build_dataset.py "
                    + (f"--train-json {Path(train.source).name} --dev-json {Path(test.source).name} "
                       if from_files else "")
                    + f"--output-dir OUTPUT_DIR --validation-fraction {build.validation_fraction} --seed {build.seed}"
                    + ("" if build.max_train_samples is None else f" --max-train-samples {build.max_train_samples}")),
        "license_url": LICENSE_URL,
        "arxiv": KORQUAD_ARXIV,
        "bibtex": KORQUAD_BIBTEX,
    }


def _distribution(values: list[int]) -> str:
    ordered = sorted(values)
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]  # nearest rank
    return f"{statistics.median(ordered):g} / {p95} / {ordered[-1]}"


def _source(name: str, sha256: str | None) -> str:
    return f"`{name}`" if sha256 is None else f"`{Path(name).name}` (sha256 `{sha256[:12]}…`)"
