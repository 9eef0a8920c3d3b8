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


def fit_lora(model, examples, steps: int, lr: float = 1e-2) -> None:
    """Fit a peft model to prompt/question examples (`qg.prompt.encode_example` results) in one padded batch."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.tensor([e.input_ids + [0] * (width - len(e.input_ids)) for e in examples])
    labels = torch.tensor([e.labels + [-100] * (width - len(e.labels)) for e in examples])
    attention_mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in examples])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.fixture(scope="session")
def korquad_dev_json() -> Path:
    return shared_path("data/korquad/KorQuAD_v1.0_dev.json")


@pytest.fixture(scope="session")
def exaone_tokenizer_dir() -> Path:
    return shared_path("fixtures/exaone-3.5-tokenizer")


@pytest.fixture(scope="session")
def exaone_tiny_a_dir() -> Path:
    return shared_path("fixtures/exaone-tiny-a")


@pytest.fixture(scope="session")
def paragraph_adapter(tmp_path_factory):
    """(adapter folder, contexts, questions): a LoRA on the tiny model fitted to one question for each of 16 sample
    paragraphs. Greedy decoding gives each paragraph its own question, so answers mixed up between paragraphs show,
    and sampling gives varied accepted questions (the random model's almost never pass the quality checks)."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model

    from qg.data.korquad import SAMPLE_DIR
    from qg.generate import QuestionGenerator, TransformersEngine
    from qg.models.loading import load_base
    from qg.models.tiny import TINY_MODEL
    from qg.prompt import encode_example

    train = json.loads((SAMPLE_DIR / "train.json").read_text(encoding="utf-8"))
    paragraphs = [p for article in train["data"] for p in article["paragraphs"]][:16]
    contexts = [p["context"] for p in paragraphs]
    questions = [p["qas"][0]["question"] for p in paragraphs]
    base, tokenizer = load_base(TINY_MODEL)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    fit_lora(model, [encode_example(tokenizer, c, q) for c, q in zip(contexts, questions)], steps=20)
    model.eval()
    # Guards every test that relies on it: each paragraph's greedy question is the one it was fitted to.
    assert [r.questions for r in QuestionGenerator(TransformersEngine(model, tokenizer)).generate(contexts, temperature=0)] == \
        [[q] for q in questions]
    folder = tmp_path_factory.mktemp("paragraph-adapter")
    model.save_pretrained(folder)
    return folder, contexts, questions


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: tiny models run as fast on one, a busy two-core machine ran them 10x slower on
    two, and it is the thread count of each process under `accelerate launch`, so their numbers match exactly."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """The dataset built from the bundled sample, once per session (tests read it, none writes it)."""
    from qg.data.build import build_qg_dataset
    from qg.data.korquad import sample_sources

    out = tmp_path_factory.mktemp("data") / "sample"
    build_qg_dataset(*sample_sources(), out)
    return out
