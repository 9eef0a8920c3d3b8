"""Packed and shared-context batches train exactly like the same examples run one at a time (float32, CPU)."""

import random

import pytest
import torch
from peft import LoraConfig, get_peft_model

from qg.models.loading import load_base
from qg.models.tiny import TINY_MODEL
from qg.prompt import IGNORE_INDEX
from qg.train.config import TrainConfig
from qg.train.loop import _collator
from qg.train.packing import Group, SharedContextCollator, build_groups, flattening_collator, pack_groups

ROWS = [
    {"context": "경복궁은 1395년에 지어진 조선의 법궁이다. 임진왜란 때 불에 탔다.", "question": q, "answer": a}
    for q, a in [("경복궁이 지어진 해는 언제인가?", "1395년"), ("경복궁이 불에 탄 전쟁은?", "임진왜란"),
                 ("경복궁은 어느 나라의 궁궐인가?", "조선")]
] + [
    {"context": "광합성은 빛 에너지로 포도당을 만드는 과정이다. 엽록체에서 일어난다.", "question": q, "answer": a}
    for q, a in [("광합성이 일어나는 곳은?", "엽록체"), ("광합성으로 만들어지는 것은 무엇인가?", "포도당")]
] + [{"context": "한라산은 제주도에 있는 산이다.", "question": "한라산은 어디에 있는가?", "answer": "제주도"}]


@pytest.fixture(scope="module")
def base():
    return load_base(TINY_MODEL)


def lora_model(model, seed=0):
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"]))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # zero at init; made non-zero so the adapters change outputs and A gets gradients
            torch.nn.init.normal_(param, std=0.05)
    return peft_model


def token_losses(model, batch) -> torch.Tensor:
    """Loss of every labelled token, in order (the independent reference: plain cross-entropy on shifted logits)."""
    logits = model(input_ids=batch["input_ids"], position_ids=batch.get("position_ids"),
                   attention_mask=batch.get("attention_mask"), use_cache=False).logits[0, :-1]
    labels = batch["labels"][0, 1:]
    keep = labels != IGNORE_INDEX
    return torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="none")


def one_by_one(model, groups: list[Group]):
    """Each (prompt, question) example alone, unpacked, no position ids or masks: the reference run."""
    model.zero_grad()
    losses = []
    for group in groups:
        for example in group.examples():
            batch = {"input_ids": torch.tensor([example["input_ids"]]), "labels": torch.tensor([example["labels"]])}
            losses.append(token_losses(model, batch))
    torch.cat(losses).sum().backward()
    return losses, lora_grads(model)


def lora_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("shared", [False, True])
def test_packed_batch_equals_examples_run_one_by_one(base, shared):
    model, tokenizer = base
    model = lora_model(model)
    try:
        groups, stats = build_groups(ROWS, tokenizer, shared_context=shared, answer_aware=False,
                                     max_context_tokens=512, max_question_tokens=64)
        assert stats.questions == len(ROWS) and len(groups) == (3 if shared else len(ROWS))
        reference_losses, reference_grads = one_by_one(model, groups)

        model.zero_grad()
        collate = SharedContextCollator() if shared else flattening_collator
        packed = token_losses(model, collate(groups))
        packed.sum().backward()
        grads = lora_grads(model)
        # Per question, in order: each branch's tokens are exactly its example's tokens.
        torch.testing.assert_close(packed, torch.cat(reference_losses), atol=2e-5, rtol=1e-5)
        assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference_grads[name], atol=1e-5, rtol=1e-4)
    finally:
        model.unload()


def test_shared_context_needs_far_fewer_tokens(base):
    _, tokenizer = base
    separate, _ = build_groups(ROWS, tokenizer, shared_context=False, answer_aware=False, max_context_tokens=512,
                               max_question_tokens=64)
    shared, _ = build_groups(ROWS, tokenizer, shared_context=True, answer_aware=False, max_context_tokens=512,
                             max_question_tokens=64)
    assert sum(len(g.branches) for g in shared) == len(separate)
    prompt_tokens = {len(g.prefix) for g in separate}
    saved = sum(g.num_tokens for g in separate) - sum(g.num_tokens for g in shared)
    # Every question after the first of its paragraph saves its prompt (less the repeated last token).
    assert saved == sum(len(g.prefix) * (len(g.branches) - 1) for g in shared) and min(prompt_tokens) > 0


def test_a_branch_never_sees_another_branch(base):
    model, tokenizer = base
    groups, _ = build_groups(ROWS, tokenizer, shared_context=True, answer_aware=False, max_context_tokens=512,
                             max_question_tokens=64)
    collate = SharedContextCollator()
    with torch.no_grad():
        before = model(**{k: v for k, v in collate(groups).items() if k != "labels"}, use_cache=False).logits[0]
        changed = [Group(g.prefix, [list(b) for b in g.branches]) for g in groups]
        target = changed[0].branches[1]
        target[2:-1] = [random.Random(0).randrange(10, 500) for _ in target[2:-1]]
        after = model(**{k: v for k, v in collate(changed).items() if k != "labels"}, use_cache=False).logits[0]
    start = len(groups[0].prefix) + len(groups[0].branches[0])
    stop = start + len(target)
    assert not torch.equal(before[start + 2:stop], after[start + 2:stop])  # the change is visible to itself
    assert torch.equal(before[:start], after[:start])  # prefix and earlier branch: bit-identical
    assert torch.equal(before[stop:], after[stop:])  # later branches and other groups: bit-identical


def test_groups_over_budget_are_split_and_answer_aware_groups_by_answer(base):
    _, tokenizer = base
    by_answer, _ = build_groups(ROWS, tokenizer, shared_context=True, answer_aware=True, max_context_tokens=512,
                                max_question_tokens=64)
    assert len(by_answer) == len({(r["context"], r["answer"]) for r in ROWS})
    whole, _ = build_groups(ROWS, tokenizer, shared_context=True, answer_aware=False, max_context_tokens=512,
                            max_question_tokens=64)
    budget = len(whole[0].prefix) + len(whole[0].branches[0]) + len(whole[0].branches[1])
    split, _ = build_groups(ROWS, tokenizer, shared_context=True, answer_aware=False, max_context_tokens=512,
                            max_question_tokens=64, max_group_tokens=budget)
    assert [b for g in split for b in g.branches] == [b for g in whole for b in g.branches]
    assert all(g.num_tokens <= budget or len(g.branches) == 1 for g in split) and len(split) > len(whole)


def test_pack_groups_respects_budget_and_keeps_every_group(base):
    _, tokenizer = base
    groups, _ = build_groups(ROWS * 4, tokenizer, shared_context=False, answer_aware=False, max_context_tokens=512,
                             max_question_tokens=64)
    budget = 3 * max(g.num_tokens for g in groups)
    batches = pack_groups(groups, budget, seed=1)
    assert sorted(id(g) for b in batches for g in b) == sorted(id(g) for g in groups)
    assert all(sum(g.num_tokens for g in b) <= budget for b in batches)
    assert pack_groups(groups, budget, seed=1) == batches and pack_groups(groups, budget, seed=2) != batches


def test_flex_attention_block_mask_gives_the_dense_mask_result():
    """The GPU path (flex attention + block mask) follows the same visibility rule as the CPU 4-D mask.

    Flex attention also runs on CPU (compiled), so the rule is checked here even without a GPU.
    """
    dense_model, tokenizer = load_base(TINY_MODEL, attn_implementation="sdpa")
    flex_model, _ = load_base(TINY_MODEL, attn_implementation="flex_attention")
    groups, _ = build_groups(ROWS, tokenizer, shared_context=True, answer_aware=False, max_context_tokens=512,
                             max_question_tokens=64)
    with torch.no_grad():
        dense = token_losses(dense_model, SharedContextCollator(mask_format="bool")(groups))
        flex = token_losses(flex_model, SharedContextCollator(mask_format="block")(groups))
    torch.testing.assert_close(flex, dense, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("attn_implementation", "dtype", "mixed_precision", "mask_dtype"), [
    ("sdpa", torch.float32, "no", torch.bool),
    ("sdpa", torch.bfloat16, "bf16", torch.bool),
    ("eager", torch.float32, "no", torch.float32),
    ("eager", torch.bfloat16, "bf16", torch.bfloat16),
])
def test_the_4d_mask_is_boolean_or_in_the_compute_dtype_and_gives_the_float32_mask_result(
        attn_implementation, dtype, mixed_precision, mask_dtype):
    """sdpa takes a boolean mask (1 byte per entry, not float32's 4); eager adds it to its scores, so it is additive
    in the compute dtype. Either way the model's output is bit-identical to the float32 additive mask's."""
    model, tokenizer = load_base(TINY_MODEL, dtype=dtype, attn_implementation=attn_implementation)
    groups, _ = build_groups(ROWS, tokenizer, shared_context=True, answer_aware=False, max_context_tokens=512,
                             max_question_tokens=64)
    batch = _collator(TrainConfig(shared_context=True), attn_implementation, mixed_precision)(groups)
    float32_mask = SharedContextCollator(mask_format="additive", dtype=torch.float32)(groups)["attention_mask"]
    assert batch["attention_mask"].dtype == mask_dtype
    assert torch.equal(batch["attention_mask"] == 0 if mask_dtype != torch.bool else batch["attention_mask"],
                       float32_mask == 0)
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    with torch.no_grad():
        logits = model(**inputs, attention_mask=batch["attention_mask"]).logits
        reference = model(**inputs, attention_mask=float32_mask).logits
    torch.testing.assert_close(logits, reference, rtol=0, atol=0)
