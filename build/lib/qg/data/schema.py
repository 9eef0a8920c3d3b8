"""What a built dataset is: its two configs, their features, where their files live, and the build record."""

from __future__ import annotations

from dataclasses import dataclass

import datasets

from qg.data.korquad import Paragraph, ParseReport

CONFIGS = ("default", "pairs")
SAMPLE_BUILD_COMMAND = "qg-build-dataset --sample --output-dir {output_dir}"

FEATURES = {
    "default": datasets.Features({
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "questions": datasets.List(datasets.Value("string")),
        "answers": datasets.List({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
    }),
    "pairs": datasets.Features({
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "answer_start": datasets.Value("int32"),
    }),
}


def data_file_pattern(config: str, split: str) -> str:
    """Where a split's parquet files live: the folder `push_to_hub(data_dir=f"data/{config}")` writes to."""
    return f"data/{config}/{split}-*"


@dataclass
class QGDatasetBuild:
    """A finished build: the splits and everything the dataset card reports about how they were made."""

    splits: dict[str, list[Paragraph]]
    reports: dict[str, ParseReport]  # "train": the official train set, "test": the official dev set
    overlap_paragraphs_dropped: int  # train-side paragraphs sharing an article or a context with a later split
    validation_fraction: float
    max_train_samples: int | None
    seed: int
    hub_repo_id: str | None = None
