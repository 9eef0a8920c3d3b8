"""qg.train.loss: the LM head and cross-entropy at labelled positions only give the full-logits loss and gradients."""

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from qg.data.build import load_qg_dataset
from qg.models.loading import load_base
from qg.models.tiny import TINY_MODEL
from qg.prompt import IGNORE_INDEX
from qg.train import loop
from qg.train.config import TrainConfig
from qg.train.loss import full_logits_token_loss, loss_positions, summed_token_loss
from qg.train.packing import SharedContextCollator, build_groups, flattening_collator

@pytest.fixture(scope="module")
def lora_model():
    model, tokenizer = load_base(TINY_MODEL)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # zero at init; made non-zero so that lora_A gets gradients too
            torch.nn.init.normal_(param, std=0.05)
    return model, tokenizer


def loss_and_grads(model, batch, loss_fn) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = loss_fn(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("chunk_logits", [None, 5000])  # one chunk; several (5000 // 2048 vocab = 2 positions each)
@pytest.mark.parametrize("shared", [False, True])
def test_loss_and_lora_gradients_equal_the_full_logits_computation(lora_model, sample_dataset, shared, chunk_logits):
    model, tokenizer = lora_model
    rows = load_qg_dataset(str(sample_dataset))["train"].select(range(16))
    groups, _ = build_groups(rows, tokenizer, shared_context=shared, answer_aware=False, max_context_tokens=512,
                             max_question_tokens=64)
    collate = SharedContextCollator() if shared else flattening_collator
    batch = collate(groups)
    positions = loss_positions(batch["labels"])
    labelled = int((batch["labels"] != IGNORE_INDEX).sum())
    assert len(positions) == labelled < batch["labels"].numel() / 2  # the point: far fewer logits than positions
    selective = summed_token_loss if chunk_logits is None else (
        lambda m, b: summed_token_loss(m, b, chunk_logits=chunk_logits))

    expected_loss, expected_grads = loss_and_grads(model, batch, full_logits_token_loss)
    loss, grads = loss_and_grads(model, batch, selective)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=0)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-6, atol=1e-9)


def test_a_batch_of_several_rows_is_refused():
    with pytest.raises(ValueError, match="one packed row"):
        loss_positions(torch.zeros(2, 5, dtype=torch.long))


def train_run(dataset, output: Path, **overrides) -> Path:
    config = TrainConfig(model=TINY_MODEL, dataset=str(dataset), output_dir=str(output), lora_r=8, lora_alpha=16,
                         lora_dropout=0.0, learning_rate=3e-3, warmup_ratio=0.0, batch_tokens=1024,
                         logging_steps=1, eval_steps=0, save_steps=0, report_to="none", **overrides)
    return loop.train(config)


@pytest.mark.parametrize("shared", [False, True])
def test_training_gives_the_adapter_of_the_full_logits_loss(sample_dataset, tmp_path, monkeypatch, shared):
    selective = load_file(train_run(sample_dataset, tmp_path / "selective", max_steps=3, shared_context=shared)
                          / "adapter_model.safetensors")
    monkeypatch.setattr(loop, "summed_token_loss", full_logits_token_loss)
    full = load_file(train_run(sample_dataset, tmp_path / "full", max_steps=3, shared_context=shared)
                     / "adapter_model.safetensors")
    assert selective.keys() == full.keys()
    assert any(t.abs().sum() > 0 for n, t in selective.items() if "lora_B" in n)  # the adapter did move
    for name in full:
        torch.testing.assert_close(selective[name], full[name], rtol=1e-5, atol=1e-7)
