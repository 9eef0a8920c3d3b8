"""The training loss where the loss is: the LM head and the fp32 cross-entropy only at labelled positions.

Only a question and its end-of-turn token carry loss: ~6% of a packed row's positions, ~25% with shared context.
The model still runs every position through its decoder (the prompt's keys and values are needed), but its
`logits_to_keep` takes the positions whose next token is labelled, so the vocabulary projection (the largest
matmul of a small model with a 102k vocabulary) and the logits exist only there. The call goes through the model's
own forward, so DDP, FSDP and DeepSpeed wrappers, peft and QLoRA see an ordinary forward pass.

The fp32 cross-entropy then runs chunk by chunk, each chunk under activation checkpointing: autograd keeps only
the compute-dtype logits, and the fp32 copy, log-probabilities and their gradient exist for one chunk at a time
(recomputed in the backward pass; log_softmax is cheap next to the LM head that is not recomputed).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from qg.prompt import IGNORE_INDEX

# Logits per loss chunk: one chunk's fp32 transients (copy, log-probabilities, their gradients) are 64 MiB each
# at any vocabulary, while a chunk still holds ~160 positions of a 102k vocabulary, so the per-chunk kernel launches
# are noise next to the log_softmax work itself.
LOSS_CHUNK_LOGITS = 2**24


def loss_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions of a packed row ([1, T] labels) whose next token is labelled: where a prediction is scored."""
    if labels.size(0) != 1:
        raise ValueError(f"expected one packed row, got a batch of {labels.size(0)}")
    return (labels[0, 1:] != IGNORE_INDEX).nonzero()[:, 0]


def _summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")


def chunked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                          chunk_logits: int = LOSS_CHUNK_LOGITS) -> torch.Tensor:
    """Summed fp32 cross-entropy of [K, V] logits against K targets, `chunk_logits` logits at a time."""
    chunk = max(1, chunk_logits // logits.size(-1))
    return sum(checkpoint(_summed_cross_entropy, logit_chunk, target_chunk, use_reentrant=False)
               for logit_chunk, target_chunk in zip(logits.split(chunk), targets.split(chunk)))


def summed_token_loss(model, batch: dict, chunk_logits: int = LOSS_CHUNK_LOGITS) -> torch.Tensor:
    """Summed next-token loss over the packed row's labelled tokens (normalised by the caller)."""
    positions = loss_positions(batch["labels"])
    outputs = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                    attention_mask=batch.get("attention_mask"), use_cache=False, logits_to_keep=positions)
    return chunked_cross_entropy(outputs.logits[0], batch["labels"][0, positions + 1], chunk_logits)


def full_logits_token_loss(model, batch: dict) -> torch.Tensor:
    """The same sum the way it was computed before: the LM head and fp32 cross-entropy at every position.

    The reference for tests and the benchmark's baseline arm (bench/bench_train.py).
    """
    outputs = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                    attention_mask=batch.get("attention_mask"), use_cache=False)
    logits = outputs.logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                             ignore_index=IGNORE_INDEX, reduction="sum")
