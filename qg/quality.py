"""Question quality checks: reject broken generations, spot near-duplicates.

Generation post-processing calls `rejection_reason` on each sampled question and samples again when it returns a
reason; `qg.metrics` counts the same rejections as the degenerate rate, so both sides agree on what "broken" means.

    >>> rejection_reason("영생교는 다음의 교리를 표방하고 있다?\\n###\\n###", context="...")
    'markdown'
    >>> is_near_duplicate("영생교의 교리는 무엇인가?", ["영생교의 교리는 무엇인가요"])
    True
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable

from qg.prompt import ROLE_TAG_PATTERN
from qg.text import normalize_text, sentence_spans

# The shortest real KorQuAD 1.0 dev question ("경쟁자는?") has 4 Hangul syllables; broken generations such as
# "라" have one or two.
MIN_HANGUL_SYLLABLES = 3

# Measured on KorQuAD 1.0 dev (normalised questions, difflib ratio): 0.64% of pairs of distinct gold questions
# asked about the same paragraph reach 0.85, while 91% of gold questions with one word dropped do.
NEAR_DUPLICATE_RATIO = 0.85

_HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e]")
_HANGUL_SYLLABLE = re.compile(r"[\uac00-\ud7a3]")
# A heading, a run of '#', a horizontal rule, a code fence or bold markup; a lone '#' inside a question
# ("체스에서 '#'은 무엇으로 불리는가?") is real text and must pass.
_MARKDOWN = re.compile(r"##|^\s*#\s|^\s*([-*_=~])\1{2,}\s*$|```|\*\*", re.MULTILINE)
# Loops without spaces ("라라라라", "하는하는하는하는"): a Hangul unit of 1-8 characters four times in a row.
# Digits are left out on purpose: "100000000원" is a number, not a loop.
_CHARACTER_LOOP = re.compile(r"([\uac00-\ud7a3\u3131-\u318e]{1,8})\1{3,}")

# A copied sentence shorter than this is too likely to be a short phrase a real question also uses.
_MIN_COPIED_SENTENCE_TOKENS = 3
_MAX_LOOP_NGRAM = 4
_LOOP_REPEATS = 3


def normalize_question(question: str) -> str:
    """`qg.text.normalize_text`, no trailing punctuation, case-folded: the form duplicates are compared in."""
    text = normalize_text(question)
    while text and unicodedata.category(text[-1]).startswith("P"):
        text = text[:-1].rstrip()
    return text.casefold()


def is_near_duplicate(question: str, others: Iterable[str], threshold: float = NEAR_DUPLICATE_RATIO) -> bool:
    """True when `question` matches any of `others` with a difflib ratio >= `threshold` after normalisation.

    difflib's ratio (2 * matching characters / total characters) is symmetric, unlike chrF, so the answer does not
    depend on which of the two questions was generated first.
    """
    normalized = normalize_question(question)
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(normalized)
    for other in others:
        matcher.set_seq1(normalize_question(other))
        # quick_ratio() is a cheap upper bound of ratio(): most pairs are dismissed without the full alignment.
        if matcher.quick_ratio() >= threshold and matcher.ratio() >= threshold:
            return True
    return False


def _has_token_loop(tokens: list[str]) -> bool:
    """The same token n-gram (n <= 4) three times back to back."""
    for n in range(1, _MAX_LOOP_NGRAM + 1):
        span = n * _LOOP_REPEATS
        for start in range(len(tokens) - span + 1):
            unit = tokens[start:start + n]
            if all(tokens[start + k * n:start + (k + 1) * n] == unit for k in range(1, _LOOP_REPEATS)):
                return True
    return False


def _has_repeated_line(text: str) -> bool:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return len(lines) != len(set(lines))


def _words(text: str) -> str:
    """Normalised words with punctuation removed, padded with spaces for whole-word containment tests."""
    text = normalize_text(text).casefold()
    text = "".join(" " if unicodedata.category(char).startswith("P") else char for char in text)
    return f" {' '.join(text.split())} "


def _copies_context_sentence(question: str, context: str) -> bool:
    """The question's words equal, or contain as a contiguous run, the words of a whole context sentence."""
    question_words = _words(question)
    for start, end in sentence_spans(context):
        sentence_words = _words(context[start:end])
        if len(sentence_words.split()) >= _MIN_COPIED_SENTENCE_TOKENS and sentence_words in question_words:
            return True
    return False


# Reason codes of `rejection_reason`, as they appear in counts, metrics.json and the Space's labels.
EMPTY = "empty"
BROKEN_TEXT = "broken_text"
ROLE_TAG = "role_tag"
MARKDOWN = "markdown"
REPETITION = "repetition"
NO_HANGUL = "no_hangul"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
CONTEXT_COPY = "context_copy"
REASONS = (EMPTY, BROKEN_TEXT, ROLE_TAG, MARKDOWN, REPETITION, NO_HANGUL, TOO_SHORT, TOO_LONG, CONTEXT_COPY)


# U+FFFD appears when generation stops inside a multi-byte character; control characters are never in a question.
_BROKEN_TEXT = re.compile(r"[\ufffd\x00-\x08\x0b-\x1f\x7f]")


def rejection_reason(question: str, context: str, max_chars: int = 120) -> str | None:
    """Why `question` is not a usable question about `context`, or None when it is.

    Reason codes, checked in this order: "empty", "role_tag" (a chat-template marker such as [|assistant|]),
    "markdown" (heading, ###, rule, code fence, bold), "repetition" (an n-gram or character loop, or a repeated
    line), "no_hangul", "too_short" (under 3 Hangul syllables), "too_long" (over `max_chars` characters),
    "context_copy" (a whole sentence of the context, normalised, copied into the question), after "broken_text"
    (a replacement character from split byte tokens, or a control character).
    """
    text = question.strip()
    if not text:
        return EMPTY
    if _BROKEN_TEXT.search(text):
        return BROKEN_TEXT
    if ROLE_TAG_PATTERN.search(text):
        return ROLE_TAG
    if _MARKDOWN.search(text):
        return MARKDOWN
    if _has_repeated_line(text) or _CHARACTER_LOOP.search(text) or _has_token_loop(text.split()):
        return REPETITION
    if not _HANGUL.search(text):
        return NO_HANGUL
    if len(_HANGUL_SYLLABLE.findall(text)) < MIN_HANGUL_SYLLABLES:
        return TOO_SHORT
    if len(text) > max_chars:
        return TOO_LONG
    if _copies_context_sentence(text, context):
        return CONTEXT_COPY
    return None
