"""The one prompt format: (paragraph, optional answer) -> chat messages -> token ids, for training and inference.

Training and generation share `encode_prompt`, so the training sequence is the generation prompt followed by the
question and EOS, token for token. Only the question and its EOS carry loss: a wrong mask or a missing EOS is
what made the original 1B baseline answer "라" or repeat "###" forever.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from qg.cli import UserError
from qg.text import normalize_text, sentence_ends

SYSTEM_PROMPT = (
    "당신은 문단을 읽고 독자가 궁금해할 만한 질문을 만드는 도우미입니다. "
    "문단의 내용만으로 답할 수 있는 자연스러운 한국어 질문 하나를 쓰세요."
)
USER_TEMPLATES = {
    "agnostic": "문단:\n{context}\n\n이 문단으로 답할 수 있는 질문 하나를 만드세요.",
    "answer-aware": "문단:\n{context}\n\n답: {answer}\n\n답이 위의 '답'이 되는 질문 하나를 만드세요.",
}
IGNORE_INDEX = -100
# EXAONE writes its role tags as plain text: `[|user|]` in a paragraph would open a turn, so tags lose their bars
# there, and a generated question holding one is rejected (qg.quality).
ROLE_TAG_PATTERN = re.compile(r"\[\|([^\[\]|]*)\|\]")
_SPACE = re.compile(r"\s")
_WORD_JOINER = "\u2060"
# A sentence end (or, failing that, a space) is where a long paragraph is cut only when the text before it keeps
# at least this share of what fits: one short first sentence followed by 5,000 tokens without a full stop must not
# leave a 4-token paragraph. Half the budget still gives the model most of the context; past that a cut
# mid-sentence loses less than dropping the rest of the budget does.
MIN_KEPT_SHARE = 0.5


class EmptyParagraphError(UserError, ValueError):
    """The paragraph (or a given answer) holds nothing once normalised: there is nothing to ask about."""


@dataclass
class EncodedPrompt:
    input_ids: list[int]
    truncated: bool  # the paragraph was cut to the token budget
    messages: list[dict]  # the chat messages `input_ids` encode: normalised, neutralised, truncated


@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def neutralize(text: str, tokenizer) -> str:
    """User text that cannot open or close a turn: role tags lose their bars, special tokens are broken up."""
    text = ROLE_TAG_PATTERN.sub(r"[\1]", text)
    for token in sorted(special_token_strings(tokenizer), key=len, reverse=True):
        if token in text:
            text = text.replace(token, token[0] + _WORD_JOINER + token[1:])
    return text


def special_token_strings(tokenizer) -> set[str]:
    added = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    return {t for t in added | set(tokenizer.all_special_tokens) if len(t) > 1}


@functools.cache
def max_token_chars(tokenizer) -> int:
    """An upper bound on the characters one token covers: its longest vocabulary string.

    A byte-level BPE vocabulary string (GPT-2, EXAONE) holds one symbol per byte, and a character is at least one
    byte; a SentencePiece piece holds one symbol per character ("▁" for the space). EXAONE's longest is 31
    (a run of spaces).
    """
    return max(map(len, tokenizer.get_vocab()))


def context_char_bound(tokenizer, max_tokens: int) -> int:
    """How many characters of a paragraph `truncate_context` tokenizes for a budget of `max_tokens` tokens.

    `max_tokens` tokens cover at most `max_tokens * max_token_chars` characters, so a paragraph within budget is
    never capped. Twice that: the first `max_tokens` tokens of a capped paragraph then lie far from the cap, where
    cutting the text cannot change how the words before them tokenize.
    """
    return 2 * max_tokens * max_token_chars(tokenizer)


def _offsets(text: str, tokenizer) -> list[tuple[int, int]]:
    return tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]


def truncate_context(context: str, tokenizer, max_tokens: int | None) -> tuple[str, bool]:
    """Cut `context` to at most `max_tokens` tokens: at the last sentence end that fits when that keeps at least
    `MIN_KEPT_SHARE` of the characters that fit, else at the last space that does, else between tokens.

    Only the first `context_char_bound` characters are tokenized, so a paragraph of millions of characters costs
    what one of a few budgets does.
    """
    if max_tokens is None:
        return context, False
    bound = context_char_bound(tokenizer, max_tokens)
    offsets = _offsets(context[:bound], tokenizer)
    if len(offsets) <= max_tokens:
        if len(context) <= bound:
            return context, False
        offsets = _offsets(context, tokenizer)  # a tokenizer whose tokens skip characters: the cap proves nothing
        if len(offsets) <= max_tokens:
            return context, False
    # Up to the first token beyond the budget: a character split between two byte tokens is left out whole.
    limit = offsets[max_tokens][0]
    window = context[:limit + 1]  # one more character, to see whether a sentence end or a word ends at the limit
    ends = [end for end in sentence_ends(window) if end <= limit]
    spaces = [m.start() for m in _SPACE.finditer(window)]
    keep = MIN_KEPT_SHARE * limit
    if ends and ends[-1] >= keep:
        cut = ends[-1]
    elif spaces and spaces[-1] >= keep:
        cut = spaces[-1]
    else:
        cut = limit
    return context[:cut].rstrip(), True


def build_messages(context: str, answer: str | None = None, question: str | None = None) -> list[dict]:
    """Chat messages for one example; `question` adds the assistant turn (training targets, not generation)."""
    template = USER_TEMPLATES["agnostic" if answer is None else "answer-aware"]
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": template.format(context=context, answer=answer)},
    ]
    if question is not None:
        messages.append({"role": "assistant", "content": question})
    return messages


def encode_prompt(tokenizer, context: str, answer: str | None = None,
                  max_context_tokens: int | None = None) -> EncodedPrompt:
    """Token ids of the generation prompt: system, user turn, up to and including `[|assistant|]`.

    The paragraph and answer are normalised first (`qg.text.normalize_text`, as the dataset builder does); an
    empty paragraph or answer is an `EmptyParagraphError`, for every engine alike.
    """
    context = normalize_text(context)
    if not context:
        raise EmptyParagraphError("the paragraph is empty (nothing but whitespace): give a paragraph to ask about")
    if answer is not None:
        answer = normalize_text(answer)
        if not answer:
            raise EmptyParagraphError("the answer is empty (nothing but whitespace): give an answer, or none")
        answer = neutralize(answer, tokenizer)
    context, truncated = truncate_context(neutralize(context, tokenizer), tokenizer, max_context_tokens)
    messages = build_messages(context, answer)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"]
    return EncodedPrompt(list(ids), truncated, messages)


@functools.cache
def end_of_turn_id(tokenizer) -> int:
    """The token that closes an assistant turn in the chat template: where training ends and generation stops.

    EXAONE's is its EOS `[|endofturn|]`; Gemma's is `<end_of_turn>`, not its EOS `<eos>`.
    """
    marker = "\u2063"  # any text the template passes through unchanged
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "?"}, {"role": "assistant", "content": marker}], tokenize=False)
    after = tokenizer(rendered.split(marker, 1)[1], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return next((i for i in after if i in special), tokenizer.eos_token_id)


def encode_question(tokenizer, question: str) -> list[int]:
    """The assistant turn's ids: the question, then the end-of-turn token, which is where generation stops."""
    ids = tokenizer(neutralize(normalize_text(question), tokenizer), add_special_tokens=False)["input_ids"]
    return ids + [end_of_turn_id(tokenizer)]


def encode_example(tokenizer, context: str, question: str, answer: str | None = None,
                   max_context_tokens: int | None = None) -> EncodedExample:
    """Training ids: prompt + question + EOS; labels are -100 everywhere but the question and its EOS."""
    prompt = encode_prompt(tokenizer, context, answer, max_context_tokens)
    target = encode_question(tokenizer, question)
    return EncodedExample(prompt.input_ids + target, [IGNORE_INDEX] * len(prompt.input_ids) + target, prompt.truncated)
