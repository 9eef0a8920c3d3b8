"""Temperature and top-p sampling for `model.generate`, drawing from the tokens transformers keeps without sorting
the vocabulary and without `torch.multinomial` over it.

Over EXAONE's 102,400-token vocabulary, transformers' `TopPLogitsWarper` (a sort of every row at every step) and the
`multinomial` draw after it cost more on CPU than a small model's forward pass, and batching cannot share that: it
grows with the rows. Top-p keeps the most likely tokens for as long as the mass before them stays under `top_p`;
where that boundary lies is found
- in a peaked row (a trained model's usual case) among the `HEAD` most likely tokens, from one `topk`;
- in any other row from a histogram of the probability mass over `BUCKETS` score intervals: only the interval where
  the mass reaches `top_p` needs its tokens ordered, and it holds few (a row whose boundary interval holds more than
  `BOUNDARY` tokens, such as a row of equal scores, is sorted, as transformers does).
The token is then drawn by inverse transform sampling, one uniform number per row. Masks are float tensors (a
comparison with a float `out` writes 0 and 1 directly, on any device), applied by multiplication: on CPU, torch's
`masked_fill`, sums over booleans and bool-to-float conversions cost several times that.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, TopPLogitsWarper

HEAD = 64
BUCKETS = 1024
BOUNDARY = 512
# Scores this far below a row's best share its lowest interval: each such token has under e^-40 of the best one's
# probability, so even a million of them hold less mass than float32 resolves.
SPAN = 40.0


class NucleusSampling(LogitsProcessor):
    """Draws each row's next token from `TemperatureLogitsWarper(temperature)` then `TopPLogitsWarper(top_p)`:
    the same tokens kept (ties at the boundary aside, which all stay), in proportion to their probabilities.

    It returns the temperature-scaled scores with the drawn token raised to +inf, so `generate` runs with
    `do_sample=False` and its argmax takes that token; the draws come from torch's random state (`torch.manual_seed`).
    """

    def __init__(self, temperature: float, top_p: float):
        if not (temperature > 0 and 0 < top_p <= 1):
            raise ValueError(f"need temperature > 0 and 0 < top_p <= 1, not {temperature} and {top_p}")
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores / self.temperature
        tokens = self.draw(scores, torch.rand(len(scores), device=scores.device))
        return scores.index_put_((torch.arange(len(scores), device=scores.device), tokens),
                                 scores.new_tensor(float("inf")))

    def threshold(self, scores: torch.Tensor, log_total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """(the smallest score each row keeps, whether all of a row's kept tokens are among its candidates, the
        candidates: `topk` of the `HEAD` best scores, values and token ids)."""
        candidates = scores.topk(min(HEAD, scores.shape[-1]), dim=-1)
        threshold, found = boundary_among(candidates.values, log_total, scores.new_zeros(len(scores)), self.top_p)
        # A kept token beyond the candidates could only tie with the last one.
        found &= (candidates.values[:, -1] < threshold) | (candidates.values.shape[-1] == scores.shape[-1])
        if not found.all():
            rest = every_row_or(~found)
            threshold[rest] = self.histogram_threshold(scores[rest], log_total[rest], candidates.values[rest, 0])
        return threshold, found, candidates

    def draw(self, scores: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Row i's token for the number `uniforms[i]` in [0, 1): the first token, in some fixed order of the kept
        ones, at which their cumulative probability exceeds `uniforms[i]` of their total."""
        log_total = scores.logsumexp(-1)
        if self.top_p == 1:
            return inverse_transform(scores, log_total, scores.new_full((len(scores),), -float("inf")), uniforms)
        threshold, found, (top, top_ids) = self.threshold(scores, log_total)
        tokens = torch.empty(len(scores), dtype=torch.long, device=scores.device)
        if found.any():
            tokens[found] = top_ids[found].gather(-1, inverse_transform(
                top[found], log_total[found], threshold[found], uniforms[found])[:, None]).squeeze(-1)
        if not found.all():
            rest = every_row_or(~found)
            tokens[rest] = inverse_transform(scores[rest], log_total[rest], threshold[rest], uniforms[rest])
        return tokens

    def histogram_threshold(self, scores: torch.Tensor, log_total: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """The smallest score each row keeps, from its mass per score interval."""
        # -inf (a token another processor ruled out) must not stretch the intervals.
        low = scores.nan_to_num(neginf=float("inf")).clamp_min_(best[:, None] - SPAN).amin(-1)
        width = ((best - low) / BUCKETS).clamp_min(torch.finfo(scores.dtype).tiny)
        bucket = (scores - low[:, None]).div_(width[:, None]).floor_().clamp_(0, BUCKETS - 1)
        mass = scores.new_zeros(len(scores), BUCKETS).scatter_add_(-1, bucket.long(),
                                                                   (scores - log_total[:, None]).exp_())
        from_top = mass.flip(-1).cumsum(-1).flip(-1)  # the mass of each interval and of those above it
        reached = from_top >= self.top_p
        # The highest interval where the mass from the top reaches top-p; all of them are kept when rounding leaves
        # the total short of top-p.
        boundary = torch.where(reached.any(-1), BUCKETS - 1 - reached.flip(-1).long().argmax(-1), 0)[:, None]
        above = (from_top.gather(-1, boundary) - mass.gather(-1, boundary)).squeeze(-1)
        inside = torch.eq(bucket, boundary, out=torch.empty_like(bucket))
        count = inside.sum(-1)
        threshold = scores.new_empty(len(scores))
        few = count <= BOUNDARY
        if few.any():
            rows = every_row_or(few)
            # Tokens outside the interval fall to the float minimum, behind every token inside it.
            outside = inside[rows].sub_(1).mul_(torch.finfo(scores.dtype).max)
            candidates = (scores[rows] + outside).topk(int(count[rows].max()), dim=-1).values
            threshold[rows] = boundary_among(candidates, log_total[rows], above[rows], self.top_p,
                                             count[rows].long())[0]
        many = (~few).nonzero().squeeze(-1)
        if len(many):
            kept = TopPLogitsWarper(self.top_p)(None, scores[many].clone()) > -float("inf")
            threshold[many] = scores[many].masked_fill(~kept, float("inf")).amin(-1)
        return threshold


def every_row_or(rows: torch.Tensor) -> torch.Tensor | slice:
    """The indices where the boolean `rows` holds, or a slice of every row when it holds everywhere, which indexes
    a tensor without copying it."""
    return slice(None) if rows.all() else rows.nonzero().squeeze(-1)


def boundary_among(candidates: torch.Tensor, log_total: torch.Tensor, mass_above: torch.Tensor, top_p: float,
                   count: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(threshold, found) for rows of `candidates` sorted in descending order, the tokens more likely than all of
    them holding `mass_above`: the smallest candidate kept (among the first `count`, when given), and whether the
    first token dropped is among the candidates."""
    probs = (candidates - log_total[:, None]).exp()
    kept = ((mass_above[:, None] + probs.cumsum(-1) - probs) < top_p).sum(-1).clamp(min=1)
    if count is not None:
        kept = torch.minimum(kept, count)
    return candidates.gather(-1, (kept - 1)[:, None]).squeeze(-1), kept < candidates.shape[-1]


def inverse_transform(scores: torch.Tensor, log_total: torch.Tensor, threshold: torch.Tensor,
                      uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the index of the token drawn by `uniforms` from the tokens scoring at least `threshold`."""
    kept = torch.ge(scores, threshold[:, None], out=torch.empty_like(scores))
    cumulative = (scores - log_total[:, None]).exp_().mul_(kept).cumsum(-1)
    total = cumulative[:, -1:]
    # Rounding can make uniforms * total equal total: the last token with any probability is then drawn.
    return torch.minimum(torch.searchsorted(cumulative, uniforms[:, None] * total, right=True),
                         torch.searchsorted(cumulative, total.contiguous())).squeeze(-1)
