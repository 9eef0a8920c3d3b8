"""The one text normaliser: the dataset builder, training and every inference path see paragraphs in this form.

    normalize_text("훈민정음은\n\n\t1443년에\x00 창제되었다.  ")  ->  "훈민정음은 1443년에 창제되었다."

Line breaks are not kept: every whitespace run, newlines included, becomes one space. KorQuAD's contexts, the
training data, are single paragraphs without line breaks (none of the 964 dev contexts has one), so a prompt with
line breaks inside its paragraph would show the model a layout it never trained on; and a paragraph that a RAG
system extracted from HTML or PDF often holds hundreds of empty lines that would only spend the token budget.
"""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
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
