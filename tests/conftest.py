"""Shared fixtures: the ../shared material (real KorQuAD dev set, EXAONE tokenizer, reference checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite is offline by design: a Hub call fails at once instead of retrying a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QG_SHARED_DIR", REPO.parent / "shared"))


def shared_path(relative: str) -> Path:
    """Path of `relative` inside ../shared (or $QG_SHARED_DIR); skips the test with a reason when it is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: set QG_SHARED_DIR to the folder holding the shared material")
    return path


@pytest.fixture(scope="session")
def korquad_dev_json() -> Path:
    return shared_path("data/korquad/KorQuAD_v1.0_dev.json")


@pytest.fixture(scope="session")
def exaone_tokenizer_dir() -> Path:
    return shared_path("fixtures/exaone-3.5-tokenizer")


@pytest.fixture(scope="session")
def exaone_tiny_a_dir() -> Path:
    return shared_path("fixtures/exaone-tiny-a")
