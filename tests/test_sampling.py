"""qg.sampling.NucleusSampling keeps exactly the tokens transformers' temperature + top-p warpers keep, and draws
them in proportion to their probabilities."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

import qg.sampling
from qg.models.loading import load_base
from qg.models.tiny import TINY_MODEL
from qg.sampling import NucleusSampling

VOCAB = 102_400  # EXAONE-3.5's


def transformers_kept(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Which tokens `generate` can sample after its temperature and top-p warpers (top_p 1 is off)."""
    ids = torch.zeros(len(scores), 1, dtype=torch.long)
    scores = TemperatureLogitsWarper(temperature)(ids, scores.clone())
    return (scores if top_p == 1 else TopPLogitsWarper(top_p)(ids, scores)) > -torch.inf


def mass_before(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per token, in float64: the probability of the tokens more likely than it, which top-p compares with `top_p`."""
    probs = (scores.double() / temperature).softmax(-1)
    order = probs.argsort(-1, descending=True)
    sorted_probs = probs.gather(-1, order)
    return torch.empty_like(probs).scatter_(-1, order, sorted_probs.cumsum(-1) - sorted_probs)


def rows_of_every_kind(vocab: int) -> torch.Tensor:
    """Logit spreads from a random model's (nearly uniform) to a trained model's (a few likely tokens), a row with
    tokens ruled out (-inf), and one whose boundary falls among more than BOUNDARY equal scores."""
    torch.manual_seed(0)
    scores = torch.cat([torch.randn(12, vocab) * spread for spread in (0.05, 0.1, 0.5, 1, 2, 3, 4, 6, 8, 12)])
    scores[::7, ::5] = -torch.inf
    ties = torch.zeros(1, vocab)
    ties[0, :3] = 4.0
    return torch.cat([scores, ties])


@pytest.mark.parametrize(("temperature", "top_p"), [(0.8, 0.95), (1.0, 0.9), (0.5, 0.5), (1.3, 0.99), (1.0, 0.999)])
def test_same_kept_tokens_as_transformers_from_flat_to_peaked_rows(temperature, top_p, monkeypatch):
    scores = rows_of_every_kind(VOCAB)
    sorted_rows = []

    class SortedRows(TopPLogitsWarper):
        def __call__(self, input_ids, rows):
            sorted_rows.append(len(rows))
            return super().__call__(input_ids, rows)

    monkeypatch.setattr(qg.sampling, "TopPLogitsWarper", SortedRows)
    sampler = NucleusSampling(temperature, top_p)
    scaled = scores / temperature
    threshold, found, _ = sampler.threshold(scaled, scaled.logsumexp(-1))
    got = scaled >= threshold[:, None]
    expected = transformers_kept(scores, temperature, top_p)
    # Both sum float32 probabilities, in different orders: a token whose float64 mass-before is within rounding of
    # top_p may fall either side. 1e-6 is a tenth of one token's probability in the flattest rows.
    differ = got[:-1] != expected[:-1]
    assert ((mass_before(scores[:-1], temperature)[differ] - top_p).abs() < 1e-6).all()
    assert differ.sum() < 0.001 * expected.sum()
    # transformers keeps some of the equal scores at the boundary, in its sort's order; all of them stay here.
    assert (got[-1] >= expected[-1]).all() and got[-1].all()
    # Each way of finding the boundary ran: the head for some rows, the histogram for the others, and the row of
    # ties was sorted.
    assert 0 < found.sum() < len(scores) and sorted_rows == [1]


def test_ties_at_the_boundary_all_stay():
    scores = torch.tensor([[3.0, 1.0, 1.0, 1.0, -5.0]])
    threshold, _, _ = NucleusSampling(1.0, 0.9).threshold(scores, scores.logsumexp(-1))
    assert torch.equal(scores >= threshold[:, None], torch.tensor([[True, True, True, True, False]]))


@pytest.mark.parametrize(("temperature", "top_p"), [(0.8, 0.95), (1.0, 0.5), (0.7, 1.0)])
def test_draws_are_in_proportion_to_the_kept_probabilities(temperature, top_p):
    """With `draws` evenly spaced uniform numbers, inverse transform sampling draws each token the number of times
    its probability among the kept tokens says, within one, and a dropped token never. (Which tokens are kept is
    the test above's.)"""
    vocab, draws = 2048, 4096
    uniforms = (torch.arange(draws, dtype=torch.float64) + 0.5) / draws
    sampler = NucleusSampling(temperature, top_p)
    for row in rows_of_every_kind(vocab)[::12] / temperature:
        if top_p == 1:
            kept = row > -torch.inf
        else:
            kept = row >= sampler.threshold(row[None], row[None].logsumexp(-1))[0]
        tokens = sampler.draw(row.expand(draws, vocab), uniforms.float())
        counts = torch.bincount(tokens, minlength=vocab)
        probs = row.double().softmax(-1) * kept
        expected = draws * probs / probs.sum()
        assert counts[~kept].sum() == 0 and ((counts - expected).abs() <= 1 + 1e-6).all()


@pytest.mark.parametrize(("temperature", "top_p"), [(0, 0.9), (0.8, 0), (0.8, 1.5)])
def test_out_of_range_settings_are_refused(temperature, top_p):
    with pytest.raises(ValueError, match="need temperature > 0 and 0 < top_p <= 1"):
        NucleusSampling(temperature, top_p)


@torch.inference_mode()
def test_generate_takes_the_drawn_tokens_each_one_that_transformers_could_sample():
    model, tokenizer = load_base(TINY_MODEL)
    prompt = tokenizer(["훈민정음은 1443년에 창제되었다."] * 6, return_tensors="pt")

    def generate(processor, seed=7):
        torch.manual_seed(seed)
        return model.generate(**prompt, do_sample=False, max_new_tokens=12,
                              min_new_tokens=12, pad_token_id=tokenizer.eos_token_id, output_logits=True,
                              return_dict_in_generate=True, logits_processor=LogitsProcessorList([processor]))

    out = generate(NucleusSampling(0.8, 0.95))
    tokens = out.sequences[:, prompt.input_ids.shape[1]:]
    # generate's min_new_tokens rules out the end of sequence before NucleusSampling sees the scores.
    ruled_out = model.generation_config.eos_token_id
    kept = torch.stack([transformers_kept(logits.index_fill(-1, torch.tensor(ruled_out).view(-1), -torch.inf),
                                          0.8, 0.95) for logits in out.logits], dim=1)
    assert kept.gather(-1, tokens[..., None]).all()
    assert len({tuple(row) for row in tokens.tolist()}) > 1
    assert torch.equal(generate(NucleusSampling(0.8, 0.95)).sequences, out.sequences)
    assert not torch.equal(generate(NucleusSampling(0.8, 0.95), seed=8).sequences, out.sequences)
    # A nucleus of one token is greedy decoding.
    greedy = model.generate(**prompt, do_sample=False, max_new_tokens=12, min_new_tokens=12,
                            pad_token_id=tokenizer.eos_token_id)
    assert torch.equal(generate(NucleusSampling(1.0, 1e-9)).sequences, greedy)
