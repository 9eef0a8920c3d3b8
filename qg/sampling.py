"""Temperature and top-p for `model.generate`, keeping the tokens transformers keeps without sorting the vocabulary.

transformers' `TopPLogitsWarper` sorts every row of logits at every decoding step. Over EXAONE's 102,400-token
vocabulary that sort can cost more on CPU than a small model's forward pass, far more than a `topk` of 64, and
batching cannot share it: it grows with the rows.
Top-p keeps the most likely tokens for as long as the mass before them stays under `top_p`; where that boundary lies
can be found from a few candidates at one end of the distribution:
- a peaked row (a trained model's usual case) keeps few tokens: the `HEAD` most likely ones hold its boundary;
- a flat row (a random model's) drops few: the `TAIL` least likely ones hold its boundary;
- any other row is sorted, as transformers does.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, TopPLogitsWarper

HEAD = 64
TAIL = 8192


class NucleusSampling(LogitsProcessor):
    """`TemperatureLogitsWarper(temperature)` then `TopPLogitsWarper(top_p)`, as one processor: the same tokens kept
    (ties at the boundary aside, which all stay), their scores divided by `temperature`, the rest `-inf`.

    transformers runs processors passed to `generate` before its own temperature and top-p, so `generate` gets
    temperature=1.0 and top_p=1.0 (off) and this processor does both.
    """

    def __init__(self, temperature: float, top_p: float):
        if not (temperature > 0 and 0 < top_p <= 1):
            raise ValueError(f"need temperature > 0 and 0 < top_p <= 1, not {temperature} and {top_p}")
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores / self.temperature
        if self.top_p == 1:
            return scores
        rows, vocab = scores.shape
        # The smallest score each row keeps; NaN until one of the three ways below finds it.
        threshold = scores.new_full((rows,), float("nan"))
        log_total = scores.logsumexp(-1)
        head, tail = min(HEAD, vocab), min(TAIL, vocab)

        top = scores.topk(head, dim=-1).values
        probs = (top - log_total[:, None]).exp()
        kept = ((probs.cumsum(-1) - probs) < self.top_p).sum(-1).clamp(min=1)
        found = kept < head  # the first token dropped is among the candidates
        threshold[found] = top[found, kept[found] - 1]

        rest = (~found).nonzero().squeeze(-1)
        if len(rest):
            low = scores[rest].topk(tail, dim=-1, largest=False).values
            dropped = ((low - log_total[rest, None]).exp().cumsum(-1) <= 1 - self.top_p).sum(-1)
            found = dropped < tail  # the first token kept is among the candidates
            threshold[rest[found]] = low[found, dropped[found]]
            rest = rest[~found]
        if len(rest):
            scores[rest] = TopPLogitsWarper(self.top_p)(input_ids[rest], scores[rest])
            threshold[rest] = -float("inf")
        return scores.masked_fill(scores < threshold[:, None], -float("inf"))
