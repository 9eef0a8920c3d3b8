"""qg.sampling.NucleusSampling keeps exactly the tokens transformers' temperature + top-p warpers keep."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from qg.models.loading import load_base
from qg.models.tiny import TINY_MODEL
from qg.sampling import HEAD, TAIL, NucleusSampling

VOCAB = 102_400  # EXAONE-3.5's


def transformers_warpers(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """What `generate` applies: temperature, then top-p unless top_p is 1 (off)."""
    ids = torch.zeros(len(scores), 1, dtype=torch.long)
    scores = TemperatureLogitsWarper(temperature)(ids, scores.clone())
    return scores if top_p == 1 else TopPLogitsWarper(top_p)(ids, scores)


def mass_before(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per token, in float64: the probability of the tokens more likely than it, which top-p compares with `top_p`."""
    probs = (scores.double() / temperature).softmax(-1)
    order = probs.argsort(-1, descending=True)
    sorted_probs = probs.gather(-1, order)
    return torch.empty_like(probs).scatter_(-1, order, sorted_probs.cumsum(-1) - sorted_probs)


@pytest.mark.parametrize(("temperature", "top_p"), [(0.8, 0.95), (1.0, 0.9), (0.5, 0.5), (1.3, 0.99), (0.8, 1.0)])
def test_same_scores_as_transformers_from_flat_to_peaked_rows(temperature, top_p):
    torch.manual_seed(0)
    # Logit spreads from a random model's (nearly uniform) to a trained model's (a few likely tokens).
    scores = torch.cat([torch.randn(12, VOCAB) * spread for spread in (0.05, 0.1, 0.5, 1, 2, 3, 4, 6, 8, 12)])
    expected = transformers_warpers(scores, temperature, top_p)
    got = NucleusSampling(temperature, top_p)(torch.zeros(len(scores), 1, dtype=torch.long), scores.clone())
    # Both sum float32 probabilities, in different orders: a token whose float64 mass-before is within rounding of
    # top_p may fall either side. 1e-6 is a tenth of one token's probability in the flattest rows.
    differ = (got > -torch.inf) != (expected > -torch.inf)
    assert ((mass_before(scores, temperature)[differ] - top_p).abs() < 1e-6).all()
    assert torch.equal(got[~differ], expected[~differ])
    if top_p == 1:
        return
    # Rows of each kind: the nucleus among the HEAD most likely tokens, the dropped tail among the TAIL least likely,
    # neither (sorted). At top-p <= 0.9 even the flattest rows here drop more than TAIL tokens.
    kept = (expected > -torch.inf).sum(-1).tolist()
    kinds = {"head" if k < HEAD else "tail" if VOCAB - k < TAIL else "sorted" for k in kept}
    assert kinds == ({"head", "tail", "sorted"} if top_p > 0.9 else {"head", "sorted"})


def test_ties_at_the_boundary_all_stay():
    scores = torch.tensor([[3.0, 1.0, 1.0, 1.0, -5.0]])
    got = NucleusSampling(1.0, 0.9)(torch.zeros(1, 1, dtype=torch.long), scores.clone())
    assert torch.equal(got, torch.tensor([[3.0, 1.0, 1.0, 1.0, -torch.inf]]))


@pytest.mark.parametrize(("temperature", "top_p"), [(0, 0.9), (0.8, 0), (0.8, 1.5)])
def test_out_of_range_settings_are_refused(temperature, top_p):
    with pytest.raises(ValueError, match="need temperature > 0 and 0 < top_p <= 1"):
        NucleusSampling(temperature, top_p)


@torch.inference_mode()
def test_seeded_generate_samples_the_tokens_of_transformers_warpers():
    model, tokenizer = load_base(TINY_MODEL)
    prompt = tokenizer("훈민정음은 1443년에 창제되었다.", return_tensors="pt")

    def sample(**kwargs):
        torch.manual_seed(7)
        return model.generate(**prompt, do_sample=True, top_k=0, num_return_sequences=6, max_new_tokens=12,
                              min_new_tokens=12, pad_token_id=tokenizer.eos_token_id, **kwargs)

    expected = sample(temperature=0.8, top_p=0.95)
    got = sample(temperature=1.0, top_p=1.0, logits_processor=LogitsProcessorList([NucleusSampling(0.8, 0.95)]))
    assert torch.equal(got, expected) and len({tuple(row) for row in got.tolist()}) > 1
