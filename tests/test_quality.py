"""qg.quality: broken generations are rejected, real KorQuAD questions pass, near-duplicates are found."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from qg.quality import is_near_duplicate, normalize_question, rejection_reason

CONTEXT = (
    "영생교는 1981년 조희성이 세운 신흥 종교 단체이다. 영생교는 다음의 교리를 표방하고 있다. "
    "조희성은 자신을 구세주라고 주장하였다."
)


def dev_questions(path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    return [(qa["question"], p["context"]) for a in articles for p in a["paragraphs"] for qa in p["qas"]]


# The original experiment's broken outputs.
@pytest.mark.parametrize("question", [
    "라",
    "영생교는 다음의 교리를 표방하고 있다?\n###\n###\n###\n###",
    "영생교는 다음의 교리를 표방하고 있다?\n###\n###\n###\n###\n###\n###\n###\n###\n###\n###",
    "영생교는 다음의 교리를 표방하고 있다?\n###",
])
def test_original_broken_outputs_are_rejected(question):
    assert rejection_reason(question, CONTEXT) is not None


@pytest.mark.parametrize(("question", "reason"), [
    ("", "empty"),
    ("  \n\t ", "empty"),
    ("조희성은 누구인가?[|endofturn|]", "role_tag"),
    ("[|assistant|]조희성은 누구인가?", "role_tag"),
    ("[|user|] 질문", "role_tag"),
    ("[|system|]", "role_tag"),
    ("### 질문\n조희성은 누구인가?", "markdown"),
    ("# 조희성은 누구인가?", "markdown"),
    ("조희성은 누구인가?\n---", "markdown"),
    ("**질문:** 조희성은 누구인가?", "markdown"),
    ("```\n조희성은 누구인가?\n```", "markdown"),
    ("조희성은 누구인가?\n조희성은 누구인가?", "repetition"),
    ("조희성은 누구 누구 누구 누구인가?", "repetition"),
    ("영생교의 교리 영생교의 교리 영생교의 교리 무엇인가?", "repetition"),
    ("라라라라라라라라", "repetition"),
    ("Who founded the church?", "no_hangul"),
    ("1981?", "no_hangul"),
    ("누구?", "too_short"),
    ("조희성이 " + ", ".join(f"{year}년" for year in range(1950, 1990)) + "에 세운 단체는?", "too_long"),
    ("영생교는 1981년 조희성이 세운 신흥 종교 단체이다", "context_copy"),
    ("조희성은 자신을 구세주라고 주장하였다. 왜인가?", "context_copy"),
])
def test_reason_codes(question, reason):
    assert rejection_reason(question, CONTEXT) == reason


@pytest.mark.parametrize("question", [
    "영생교를 세운 사람은 누구인가?",
    "체스에서 '#'은 무엇으로 불리는가?",   # a lone '#' is text, not markdown
    "1억은 100000000원인가?",             # digits are not a character loop
    "조희성은 자신을 무엇이라고 주장하였나?",  # shares words with a context sentence without copying it
    "경쟁자는?",                          # the shortest real dev question
])
def test_good_questions_pass(question):
    assert rejection_reason(question, CONTEXT) is None


def test_length_budget_is_the_argument():
    question = "영생교를 세운 사람은 누구인가?"
    assert rejection_reason(question, CONTEXT, max_chars=len(question)) is None
    assert rejection_reason(question, CONTEXT, max_chars=len(question) - 1) == "too_long"


def test_real_dev_questions_pass(korquad_dev_json):
    pairs = dev_questions(korquad_dev_json)
    assert len(pairs) == 5774
    rejected = [(rejection_reason(q, c), q) for q, c in pairs if rejection_reason(q, c) is not None]
    reasons = Counter(reason for reason, _ in rejected)
    assert len(rejected) <= 0.01 * len(pairs), f"{len(rejected)} rejected: {reasons}; first: {rejected[:20]}"


def test_a_copied_dev_sentence_is_rejected(korquad_dev_json):
    # The first sentence of each of the first 50 dev paragraphs, used as the "question".
    pairs = dev_questions(korquad_dev_json)
    contexts = list(dict.fromkeys(c for _, c in pairs))[:50]
    first_sentences = [c.split(". ")[0] + "." for c in contexts]
    # A long budget: many first sentences are longer than a question may be.
    assert [rejection_reason(s, c, max_chars=10_000) for s, c in zip(first_sentences, contexts)] == [
        "context_copy"] * len(contexts)


def test_normalize_question():
    assert normalize_question("  ABC는\n무엇인가 ?! ") == "abc는 무엇인가"
    # NFD (decomposed jamo) and NFC spell the same syllables.
    assert normalize_question("\u1112\u1161\u11ab\u1100\u116e\u11a8") == "한국"
    assert normalize_question("Seoul은?") == "seoul은"
    assert normalize_question("무엇인가...") == "무엇인가"


def test_near_duplicates():
    question = "영생교를 세운 사람은 누구인가?"
    assert is_near_duplicate(question, ["영생교를 세운 사람은 누구인가"])      # punctuation only
    assert is_near_duplicate(question, ["영생교를 세운 사람은 누구인가요?"])   # one ending syllable
    assert is_near_duplicate(question, ["다른 질문", "영생교를  세운 사람은\n누구인가?"])
    assert not is_near_duplicate(question, ["영생교의 교리는 무엇인가?"])
    assert not is_near_duplicate(question, [])
    # ratio = 2 * 16 matching characters / (16 + 17 characters) = 0.9697 after normalisation.
    assert is_near_duplicate(question, ["영생교를 세운 사람은 누구인가요"], threshold=0.96)
    assert not is_near_duplicate(question, ["영생교를 세운 사람은 누구인가요"], threshold=0.97)


def test_near_duplicate_threshold_on_real_paragraphs(korquad_dev_json):
    # Distinct gold questions of one paragraph are different questions: few may count as near-duplicates.
    by_context: dict[str, list[str]] = {}
    for question, context in dev_questions(korquad_dev_json):
        by_context.setdefault(context, []).append(question)
    flagged = total = 0
    for questions in by_context.values():
        distinct = list(dict.fromkeys(normalize_question(q) for q in questions))
        for i, q in enumerate(distinct):
            total += 1
            flagged += is_near_duplicate(q, distinct[:i])
    assert flagged <= 0.02 * total, f"{flagged} of {total}"


def test_broken_byte_sequences_and_control_characters_are_rejected():
    """Seen from a tiny model: a question cut inside multi-byte characters, with a control character."""
    context = "경복궁은 1395년에 창건되었다."
    assert rejection_reason("경복궁�\x052 창건한 왕은 �?", context) == "broken_text"
    assert rejection_reason("경복궁을 창건한 왕은\x07 누구인가?", context) == "broken_text"
    assert rejection_reason("경복궁을 창건한 왕은 누구인가?", context) is None


@pytest.mark.parametrize("tag", ["[|user|]", "[|assistant|]", "[|endofturn|]", "[|System|]", "[||]", "[|tool call|]"])
def test_every_tag_the_prompt_neutralises_is_rejected_in_a_question(tag, exaone_tokenizer_dir):
    from transformers import AutoTokenizer

    from qg.prompt import neutralize

    question = f"조희성은 자신을 무엇이라고 주장하였나?{tag}"
    assert rejection_reason(question, CONTEXT) == "role_tag"
    assert rejection_reason(neutralize(question, AutoTokenizer.from_pretrained(exaone_tokenizer_dir)), CONTEXT) is None
