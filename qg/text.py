"""The one text normaliser: the dataset builder, training and every inference path see paragraphs in this form.

    normalize_text("훈민정음은\n\n\t1443년에\x00 창제되었다.  ")  ->  "훈민정음은 1443년에 창제되었다."

Line breaks are not kept: every whitespace run, newlines included, becomes one space. KorQuAD's contexts, the
training data, are single paragraphs without line breaks (none of the 964 dev contexts has one), so a prompt with
line breaks inside its paragraph would show the model a layout it never trained on; and a paragraph that a RAG
system extracted from HTML or PDF often holds hundreds of empty lines that would only spend the token budget.

`sentence_ends` and `sentence_spans` are the one sentence splitter: where a long prompt paragraph is cut, which
context sentence a question must not copy, and which sentence holds an answer (QG-Bench's grouping).
"""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
# A full stop, "!", "?" or "。" ends a sentence only before whitespace or the end of the text, so "1.5" and "U.S."
# stay whole; a line break ends one too (a heading, a list item), though normalised text has none.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?。])(?:\s+|$)|\s*\n\s*")
# Control characters (Unicode category Cc) that are not whitespace, and lone surrogates, which cannot be written
# as UTF-8. Whitespace controls (tab, newline, ...) become spaces instead, so that words stay apart.
_INVISIBLE = re.compile("[" + "".join(re.escape(chr(c)) for c in range(0xA0)
                                      if unicodedata.category(chr(c)) == "Cc" and not chr(c).isspace())
                        + "\ud800-\udfff]")


def _normalize_unstripped(text: str) -> str:
    return _WHITESPACE.sub(" ", _INVISIBLE.sub("", unicodedata.normalize("NFC", text)))


def normalize_text(text: str) -> str:
    """Unicode NFC, control characters removed, every whitespace run (newlines too) one space, no space at the ends."""
    return _normalize_unstripped(text).strip()


def normalized_offset(text: str, offset: int) -> int:
    """Where character `offset` of `text` lands in `normalize_text(text)`: the length of its normalised prefix."""
    return len(_normalize_unstripped(text[:offset]).lstrip())


def sentence_ends(text: str) -> list[int]:
    """Where the sentences of `text` end, in order: after the closing punctuation, or where a line break starts."""
    return [match.start() for match in _SENTENCE_BREAK.finditer(text)]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`, in order: `text[start:end]` runs from its first character to its
    closing punctuation, without the whitespace between sentences; the last may end without punctuation."""
    spans, start = [], len(text) - len(text.lstrip())
    for match in _SENTENCE_BREAK.finditer(text):
        if match.start() > start:
            spans.append((start, match.start()))
        start = match.end()
    end = len(text.rstrip())
    if start < end:
        spans.append((start, end))
    return spans
