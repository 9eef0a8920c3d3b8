"""qg.text.sentence_spans, the one sentence splitter (prompt cuts, copied-sentence checks, QG-Bench grouping)."""

from __future__ import annotations

import json

import pytest

from qg.text import sentence_ends, sentence_spans

SENTENCE_ENDS = ".!?。"


def spans_text(text: str) -> list[str]:
    return [text[start:end] for start, end in sentence_spans(text)]


@pytest.mark.parametrize(("text", "sentences"), [
    ("첫째 문장이다. 둘째 문장에 답이 있다! 셋째? 넷째.",
     ["첫째 문장이다.", "둘째 문장에 답이 있다!", "셋째?", "넷째."]),
    ("값은 1.5이다. U.S.에서 왔다", ["값은 1.5이다.", "U.S.에서 왔다"]),  # no space after the stop: one sentence
    ("  제목\n\n본문이다.  다음。끝  ", ["제목", "본문이다.", "다음。끝"]),  # a line break ends a sentence too
    ("", []),
    (" \n ", []),
])
def test_sentences(text, sentences):
    assert spans_text(text) == sentences


def test_spans_partition_real_paragraphs(korquad_dev_json):
    """On every dev paragraph: spans in order, apart, covering every character but the whitespace between them,
    and each one but the last closed by a stop that whitespace follows."""
    articles = json.loads(korquad_dev_json.read_text(encoding="utf-8"))["data"]
    contexts = [p["context"] for a in articles for p in a["paragraphs"]]
    for context in contexts:
        spans = sentence_spans(context)
        assert spans and all(a < b for a, b in spans)
        assert all(end < start for (_, end), (start, _) in zip(spans, spans[1:]))
        gaps = [context[:spans[0][0]], context[spans[-1][1]:],
                *(context[end:start] for (_, end), (start, _) in zip(spans, spans[1:]))]
        assert all(not gap.strip() for gap in gaps)
        for start, end in spans[:-1]:
            assert context[end - 1] in SENTENCE_ENDS and context[end].isspace()
            assert not context[start].isspace() and not context[end - 1].isspace()
    assert sum(len(sentence_spans(c)) for c in contexts) > 3 * len(contexts)  # real splitting, not whole paragraphs


@pytest.mark.parametrize("text", ["첫째다. 둘째다! 셋째? 넷째", "값은 1.5이다. U.S.에서 왔다.",
                                  "제목\n\n본문이다.  끝 ", "문장 하나"])
def test_ends_are_where_spans_end_before_a_break(text):
    """Every span but the last ends at a sentence end; the last does when it closes with punctuation."""
    ends = [end for _, end in sentence_spans(text)]
    if text.rstrip()[-1] not in SENTENCE_ENDS:
        ends.pop()
    assert sentence_ends(text) == ends
