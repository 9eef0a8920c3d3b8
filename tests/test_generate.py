"""QuestionGenerator: shared prefill gives plain `generate`'s tokens, rejections are counted, seeds reproduce."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import fit_lora
from peft import LoraConfig, get_peft_model

from qg.cli import UserError
from qg.generate import (DUPLICATE, NO_EOS, PrefilledPrompts, QuestionGenerator, TransformersEngine, derived_seed,
                         select_questions)
from qg.models.loading import load_base
from qg.models.tiny import TINY_MODEL, build_tiny_exaone
from qg.prompt import encode_example, encode_prompt
from qg.quality import is_near_duplicate, rejection_reason

SAMPLE = Path(__file__).resolve().parents[1] / "hub_dataset" / "sample"
# Three lengths, so the batch is left-padded.
CONTEXTS = [
    "훈민정음은 1443년 세종이 창제한 문자이다.",
    "서울은 대한민국의 수도이며 인구가 가장 많은 도시이다. 한강이 도시를 동서로 가로지른다. "
    "조선 시대에는 한양이라 불렸다.",
    "짧은 문단.",
]
# What the original 1B experiment produced instead of questions.
BROKEN_OUTPUTS = ["라", "영생교는 다음의 교리를 표방하고 있다?\n###\n###\n###\n###"]
SHRINE_CONTEXT = "영생교는 1981년에 세워진 신흥 종교이다. 영생교는 다음의 교리를 표방하고 있다."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_base(TINY_MODEL)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def real_vocab(tmp_path_factory, exaone_tokenizer_dir):
    tmp = tmp_path_factory.mktemp("tiny-real-vocab")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QG_CACHE", str(tmp / "cache"))  # its conversion is for this run only
        model, tokenizer = load_base(str(build_tiny_exaone(tmp / "exaone", exaone_tokenizer_dir)))
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def memorised():
    """A LoRA on the tiny model fitted to a sample paragraph's four questions: sampling then yields Korean questions
    that end in EOS, several of them distinct, unlike the random model's gibberish."""
    base, tokenizer = load_base(TINY_MODEL)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    paragraph = json.loads((SAMPLE / "train.json").read_text(encoding="utf-8"))["data"][0]["paragraphs"][0]
    examples = [encode_example(tokenizer, paragraph["context"], qa["question"]) for qa in paragraph["qas"]]
    fit_lora(model, examples, steps=15)
    model.eval()
    with torch.inference_mode(), model.disable_adapter():
        unadapted = greedy_continuations(model, tokenizer, CONTEXTS)
    # Guards the LoRA cases below: the adapter must change what the model generates.
    assert not torch.equal(greedy_continuations(model, tokenizer, CONTEXTS), unadapted)
    return model, tokenizer, paragraph["context"]


@torch.inference_mode()
def greedy_continuations(model, tokenizer, contexts, max_new_tokens=24) -> torch.Tensor:
    prefilled = PrefilledPrompts(model, [encode_prompt(tokenizer, c).input_ids for c in contexts],
                                 tokenizer.pad_token_id)
    sequences = prefilled.generate([1] * len(contexts), do_sample=False, max_new_tokens=max_new_tokens,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return sequences[:, prefilled.width:]


class GenerateSpy:
    """Records every `model.generate` call the generator makes: the prompts it was given and what it returned."""

    def __init__(self, model, monkeypatch):
        self.calls = []
        original = model.generate

        def spied(**kwargs):
            output = original(**kwargs)
            self.calls.append((kwargs["input_ids"], kwargs["attention_mask"], output))
            return output

        monkeypatch.setattr(model, "generate", spied)

    def rows(self) -> list[tuple[list[int], list[int]]]:
        """(unpadded prompt ids, continuation ids) of every sampled row, over all calls."""
        rows = []
        for input_ids, attention_mask, output in self.calls:
            for ids, mask, sequence in zip(input_ids, attention_mask, output):
                rows.append((ids[mask.bool()].tolist(), sequence[input_ids.shape[1]:].tolist()))
        return rows


def test_original_broken_outputs_are_rejected():
    candidates = [*BROKEN_OUTPUTS, "영생교가 세워진 해는 언제인가?"]
    accepted, rejected = select_questions(candidates, SHRINE_CONTEXT, num_questions=5)
    assert accepted == ["영생교가 세워진 해는 언제인가?"]
    assert rejected == Counter(rejection_reason(text, SHRINE_CONTEXT) for text in BROKEN_OUTPUTS)
    assert None not in rejected


def test_selection_keeps_order_counts_reasons_and_stops_at_n():
    earlier = ["훈민정음을 창제한 사람은 누구인가?"]
    candidates = [
        "훈민정음을 창제한 사람은 누구인가요",  # near-duplicate of an earlier round's question
        None,  # cut off at max_new_tokens
        "훈민정음이 창제된 해는 언제인가?",
        "훈민정음이 창제된 해는 언제인가 ?",  # the same question, spaced differently
        "###",
        "훈민정음은 몇 개의 글자로 이루어졌는가?",
        "세종은 어느 왕조의 왕인가?",  # after the third accepted question: not examined
    ]
    accepted, rejected = select_questions(candidates, CONTEXTS[0], num_questions=3, accepted=earlier)
    assert accepted == [earlier[0], candidates[2], candidates[5]]
    assert rejected == Counter({DUPLICATE: 2, NO_EOS: 1, rejection_reason("###", CONTEXTS[0]): 1})
    assert len(accepted) - len(earlier) + sum(rejected.values()) == 6


@pytest.mark.parametrize("which", ["tiny", "real_vocab", "memorised"])
def test_greedy_shared_prefill_gives_the_tokens_of_plain_generate(which, request):
    model, tokenizer = request.getfixturevalue(which)[:2]
    prompts = [encode_prompt(tokenizer, c).input_ids for c in CONTEXTS]
    assert len({len(p) for p in prompts}) == len(prompts)
    decoding = dict(do_sample=False, max_new_tokens=24, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id, output_scores=True, return_dict_in_generate=True)
    with torch.inference_mode():
        prefilled = PrefilledPrompts(model, prompts, tokenizer.pad_token_id)
        shared = prefilled.generate([2, 1, 3], **decoding)
        plain = model.generate(input_ids=prefilled.input_ids, attention_mask=prefilled.attention_mask, **decoding)
    rows = torch.tensor([0, 0, 1, 2, 2, 2])
    assert torch.equal(shared.sequences, plain.sequences[rows])
    torch.testing.assert_close(torch.stack(shared.scores), torch.stack(plain.scores)[:, rows])


def test_each_prompt_is_prefilled_once(tiny):
    model, tokenizer = tiny
    prompts = [encode_prompt(tokenizer, c).input_ids for c in CONTEXTS]
    samples, new_tokens = [5, 5, 5], 6
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda module, args, output: seen.append(args[0].numel()))
    try:
        with torch.inference_mode():
            prefilled = PrefilledPrompts(model, prompts, tokenizer.pad_token_id)
            prefilled.generate(samples, do_sample=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    finally:
        hook.remove()
    # The batch once up to its last token, then every row feeds one token per new token (its first: the prompt's last).
    assert sum(seen) == len(prompts) * (prefilled.width - 1) + sum(samples) * new_tokens


def test_sampled_questions_are_distinct_accepted_and_all_candidates_counted(memorised, monkeypatch):
    model, tokenizer, learnt = memorised
    contexts = [learnt, CONTEXTS[0]]  # the second was never learnt
    spy = GenerateSpy(model, monkeypatch)
    results = QuestionGenerator(TransformersEngine(model, tokenizer)).generate(
        contexts, num_questions=3, temperature=1.0, top_p=1.0, max_new_tokens=48, max_rounds=4)
    prompts = [tuple(encode_prompt(tokenizer, c, max_context_tokens=1024).input_ids) for c in contexts]
    rows = spy.rows()
    for prompt, context, result in zip(prompts, contexts, results):
        continuations = [continuation for ids, continuation in rows if tuple(ids) == prompt]
        assert len(result.questions) + sum(result.rejected.values()) == len(continuations)
        assert result.rejected[NO_EOS] == sum(tokenizer.eos_token_id not in c for c in continuations)
        assert len(result.questions) <= 3 and not result.truncated
        for index, question in enumerate(result.questions):
            assert rejection_reason(question, context) is None
            assert not is_near_duplicate(question, result.questions[:index])
    assert {tuple(ids) for ids, _ in rows} <= set(prompts)
    # Four different questions were learnt for the first paragraph: three are found within the rounds.
    assert len(results[0].questions) == 3


def test_same_seed_same_samples_other_seed_other_samples(memorised, monkeypatch):
    model, tokenizer, learnt = memorised
    generator = QuestionGenerator(TransformersEngine(model, tokenizer))
    contexts = [learnt, CONTEXTS[0]]
    spy = GenerateSpy(model, monkeypatch)
    state = torch.random.get_rng_state()
    runs = {}
    for name, seed in [("first", 7), ("again", 7), ("other", 8)]:
        spy.calls.clear()
        questions = generator.generate(contexts, num_questions=3, temperature=1.0, top_p=1.0, seed=seed, max_rounds=1)
        runs[name] = (questions, spy.rows())
    assert runs["first"] == runs["again"]
    assert runs["first"][1] != runs["other"][1]
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone


def test_prompts_are_the_project_format_and_cut_off_candidates_are_counted(tiny, monkeypatch):
    model, tokenizer = tiny
    answers = ["1443년", "한양", "문단"]
    spy = GenerateSpy(model, monkeypatch)
    results = QuestionGenerator(TransformersEngine(model, tokenizer), max_context_tokens=12).generate(
        CONTEXTS, num_questions=2, answers=answers, max_new_tokens=4, max_rounds=1)
    expected = [encode_prompt(tokenizer, c, a, max_context_tokens=12) for c, a in zip(CONTEXTS, answers)]
    rows = spy.rows()
    assert [ids for ids, _ in rows] == [p.input_ids for p in expected for _ in range(2)]
    assert [r.truncated for r in results] == [p.truncated for p in expected]
    assert any(p.truncated for p in expected) and not all(p.truncated for p in expected)
    # Four new tokens are too few for the random model to reach EOS: the cut-off candidates are counted as such.
    cut_off = [tokenizer.eos_token_id not in continuation for _, continuation in rows]
    assert any(cut_off)
    assert [r.rejected[NO_EOS] for r in results] == [sum(cut_off[2 * i:2 * i + 2]) for i in range(3)]
    with pytest.raises(ValueError, match="one answer per context"):
        QuestionGenerator(TransformersEngine(model, tokenizer)).generate(CONTEXTS, answers=answers[:2])


class ScriptedEngine:
    """An engine whose sampling rounds answer with scripted candidates; records what each round was asked."""

    def __init__(self, tokenizer, rounds):
        self.tokenizer = tokenizer
        self.rounds = iter(rounds)
        self.asked = []

    def prepare(self, prompts):
        self.prompts = prompts
        return self

    def sample(self, counts, decoding):
        self.asked.append((list(counts), decoding.seed))
        return next(self.rounds)

    def describe(self):
        return {"engine": "scripted", "model": None, "base": None, "revision": None}


def test_each_round_asks_for_what_each_paragraph_lacks_with_its_own_seed(tiny):
    creator, when, letters = "훈민정음을 창제한 사람은 누구인가?", "훈민정음이 창제된 해는 언제인가?", "훈민정음은 몇 개의 글자인가?"
    seoul = ["서울은 어느 나라의 수도인가?", "서울의 옛 이름은 무엇인가?", "서울을 가로지르는 강은 무엇인가?"]
    engine = ScriptedEngine(tiny[1], [
        [[creator, creator + " ", None], seoul],
        [[when, "###"], []],
        [[letters], []],
    ])
    results = QuestionGenerator(engine).generate(CONTEXTS[:2], num_questions=3, seed=7, max_rounds=3)
    assert engine.asked == [([3, 3], 7), ([2, 0], derived_seed(7, 1)), ([1, 0], derived_seed(7, 2))]
    assert len({seed for _, seed in engine.asked}) == 3
    assert [p.messages[-1]["content"] for p in engine.prompts] == [
        encode_prompt(tiny[1], c).messages[-1]["content"] for c in CONTEXTS[:2]]
    assert [r.questions for r in results] == [[creator, when, letters], seoul]
    assert results[0].rejected == Counter({DUPLICATE: 1, NO_EOS: 1, rejection_reason("###", CONTEXTS[0]): 1})
    assert results[1].rejected == Counter()


def test_greedy_gives_one_question_per_paragraph(memorised):
    model, tokenizer, learnt = memorised
    results = QuestionGenerator(TransformersEngine(model, tokenizer)).generate([learnt, CONTEXTS[0]], num_questions=5,
                                                                               temperature=0)
    assert [len(r.questions) + sum(r.rejected.values()) for r in results] == [1, 1]
    assert results[0].questions  # learnt: a real question, not a rejected one


def test_adapter_folder_merged_and_plain_model_load_what_was_saved(memorised, tiny, tmp_path):
    model, tokenizer, learnt = memorised
    contexts = [learnt, *CONTEXTS]
    model.save_pretrained(tmp_path / "adapter")
    in_memory = greedy_continuations(model, tokenizer, contexts)
    unmerged = QuestionGenerator.from_pretrained(str(tmp_path / "adapter"), device="cpu")
    merged = QuestionGenerator.from_pretrained(str(tmp_path / "adapter"), base=TINY_MODEL, merge=True)
    assert not any("lora_" in name for name, _ in merged.model.named_parameters())
    for loaded in (unmerged, merged):
        assert torch.equal(greedy_continuations(loaded.model, loaded.tokenizer, contexts), in_memory)
    plain = QuestionGenerator.from_pretrained(TINY_MODEL)
    assert torch.equal(greedy_continuations(plain.model, plain.tokenizer, contexts),
                       greedy_continuations(tiny[0], tiny[1], contexts))
    with pytest.raises(UserError, match="not a peft adapter"):
        QuestionGenerator.from_pretrained(TINY_MODEL, base=TINY_MODEL)


def test_an_adapters_base_loads_at_the_revision_its_peft_config_records(tmp_path, monkeypatch):
    base, _ = load_base(TINY_MODEL)
    adapter = get_peft_model(base, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    adapter.peft_config["default"].revision = "v1.2"
    adapter.save_pretrained(tmp_path / "adapter")
    loads = []

    def recording_load_base(name, revision=None, **kwargs):
        loads.append((name, revision))
        return load_base(TINY_MODEL, **kwargs)

    monkeypatch.setattr("qg.generate.load_base", recording_load_base)
    generator = QuestionGenerator.from_pretrained(str(tmp_path / "adapter"), device="cpu")
    QuestionGenerator.from_pretrained(str(tmp_path / "adapter"), base=TINY_MODEL, device="cpu")
    assert loads == [(base.name_or_path, "v1.2"), (TINY_MODEL, None)]  # a base given by hand: its own revision
    assert generator.engine.describe() == {"engine": "transformers", "model": str(tmp_path / "adapter"),
                                           "base": base.name_or_path, "revision": None}
