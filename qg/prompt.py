"""The one prompt format: (paragraph, optional answer) -> chat messages -> token ids, for training and inference.

Training and generation share `encode_prompt`, so the training sequence is the generation prompt followed by the
question and EOS, token for token. Only the question and its EOS carry loss: a wrong mask or a missing EOS is
what made the original 1B baseline answer "라" or repeat "###" forever.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

SYSTEM_PROMPT = (
    "당신은 문단을 읽고 독자가 궁금해할 만한 질문을 만드는 도우미입니다. "
    "문단의 내용만으로 답할 수 있는 자연스러운 한국어 질문 하나를 쓰세요."
)
USER_TEMPLATES = {
    "agnostic": "문단:\n{context}\n\n이 문단으로 답할 수 있는 질문 하나를 만드세요.",
    "answer-aware": "문단:\n{context}\n\n답: {answer}\n\n답이 위의 '답'이 되는 질문 하나를 만드세요.",
}
IGNORE_INDEX = -100
# EXAONE writes its role tags as plain text: `[|user|]` in a paragraph would open a turn, so tags lose their bars.
_ROLE_TAG = re.compile(r"\[\|([^\[\]|]*)\|\]")
_SENTENCE_END = re.compile(r"(?<=[.!?。])(?=\s|$)")
_WORD_JOINER = "\u2060"


@dataclass
class EncodedPrompt:
    input_ids: list[int]
    truncated: bool  # the paragraph was cut to the token budget
    messages: list[dict]  # what `input_ids` encode, for engines that apply the chat template themselves


@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def neutralize(text: str, tokenizer) -> str:
    """User text that cannot open or close a turn: role tags lose their bars, special tokens are broken up."""
    text = _ROLE_TAG.sub(r"[\1]", text)
    for token in sorted(special_token_strings(tokenizer), key=len, reverse=True):
        if token in text:
            text = text.replace(token, token[0] + _WORD_JOINER + token[1:])
    return text


def special_token_strings(tokenizer) -> set[str]:
    added = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    return {t for t in added | set(tokenizer.all_special_tokens) if len(t) > 1}


def truncate_context(context: str, tokenizer, max_tokens: int | None) -> tuple[str, bool]:
    """Cut `context` to at most `max_tokens` tokens, at the last sentence end that fits (else at a token)."""
    if max_tokens is None:
        return context, False
    encoding = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    if len(encoding["input_ids"]) <= max_tokens:
        return context, False
    limit = encoding["offset_mapping"][max_tokens - 1][1]
    ends = [m.start() for m in _SENTENCE_END.finditer(context[:limit])]
    cut = ends[-1] if ends else limit
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
    """Token ids of the generation prompt: system, user turn, up to and including `[|assistant|]`."""
    context, truncated = truncate_context(neutralize(context, tokenizer), tokenizer, max_context_tokens)
    answer = None if answer is None else neutralize(answer, tokenizer)
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
    return tokenizer(neutralize(question, tokenizer), add_special_tokens=False)["input_ids"] + [end_of_turn_id(tokenizer)]


def encode_example(tokenizer, context: str, question: str, answer: str | None = None,
                   max_context_tokens: int | None = None) -> EncodedExample:
    """Training ids: prompt + question + EOS; labels are -100 everywhere but the question and its EOS."""
    prompt = encode_prompt(tokenizer, context, answer, max_context_tokens)
    target = encode_question(tokenizer, question)
    return EncodedExample(prompt.input_ids + target, [IGNORE_INDEX] * len(prompt.input_ids) + target, prompt.truncated)
