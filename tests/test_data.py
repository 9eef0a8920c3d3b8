"""qg.data: parsing, normalisation, dedup, answer offsets, leak-free splits, the train limit, loading a build."""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path

import datasets
import huggingface_hub
import pytest

from qg.cli import UserError
from qg.data.build import build_qg_dataset, load_qg_dataset
from qg.data.korquad import KorQuADSource, Paragraph, normalize_text, parse_korquad, squad_rows_to_json
from qg.data.splits import limit_questions, split_by_article


def qa(qid: str, question: str, context: str, answer: str, start: int | None = None) -> dict:
    """A KorQuAD question whose answer_start is the first occurrence of `answer` unless given."""
    return {"id": qid, "question": question,
            "answers": [{"text": answer, "answer_start": context.index(answer) if start is None else start}]}


def source(*articles: dict) -> KorQuADSource:
    return KorQuADSource(name="fixture.json", squad={"version": "test", "data": list(articles)})


def reference_normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def assert_answers_in_place(paragraphs: list[Paragraph]) -> None:
    for p in paragraphs:
        assert len(p.questions) == len(p.answers) == len(p.question_ids)
        for answer in p.answers:
            start = answer["answer_start"]
            assert p.context[start:start + len(answer["text"])] == answer["text"]


def test_normalize_text_is_nfc_with_single_spaces() -> None:
    samples = [
        unicodedata.normalize("NFD", "한국어 질문 생성"),  # decomposed jamo, as some web text is
        "  앞뒤 공백\t\t과 탭\n줄바꿈\r\n ",
        "no\u00a0break\u3000ideographic\u2009thin space",
        "",
        "   ",
    ]
    for text in samples:
        normalized = normalize_text(text)
        assert normalized == reference_normalize(text)
        assert unicodedata.is_normalized("NFC", normalized)
        assert "  " not in normalized and normalized == normalized.strip()


def test_parse_normalises_merges_dedups_and_keeps_answers_in_place() -> None:
    decomposed = unicodedata.normalize("NFD", "세종대왕은  1443년에\n\n훈민정음을 창제하였다.  집현전 학자들이 도왔다.")
    repeated = "서울은 대한민국의 수도이다."
    squad = source(
        {"title": "세종", "paragraphs": [
            {"context": decomposed, "qas": [
                qa("q1", "훈민정음을 창제한 해는?", decomposed, unicodedata.normalize("NFD", "1443년")),
                qa("q2", "훈민정음을   창제한 해는?", decomposed, unicodedata.normalize("NFD", "1443년")),  # dup
                qa("q3", "누가 도왔나?", decomposed, unicodedata.normalize("NFD", "집현전 학자들")),
                qa("q4", "  \n ", decomposed, unicodedata.normalize("NFD", "1443년")),  # empty question
                qa("q5", "창제된 것은?", decomposed, unicodedata.normalize("NFD", "\n\n훈민정음")),  # spaces ahead
            ]},
            {"context": "질문이 없는 문단.", "qas": []},
        ]},
        {"title": "서울", "paragraphs": [
            {"context": repeated, "qas": [qa("q6", "대한민국의 수도는?", repeated, "서울")]},
            {"context": repeated + " ", "qas": [qa("q7", "서울은 어느 나라의 수도?", repeated, "대한민국")]},
            {"context": repeated, "qas": [qa("q8", "대한민국의 수도는?", repeated, "서울")]},  # dup after merging
        ]},
    )
    paragraphs, report = parse_korquad(squad)

    assert_answers_in_place(paragraphs)
    assert [(p.title, p.context) for p in paragraphs] == [
        ("세종", reference_normalize(decomposed)), ("서울", repeated)]
    sejong, seoul = paragraphs
    assert sejong.questions == ["훈민정음을 창제한 해는?", "누가 도왔나?", "창제된 것은?"]
    assert sejong.question_ids == ["q1", "q3", "q5"]
    assert [a["text"] for a in sejong.answers] == ["1443년", "집현전 학자들", "훈민정음"]
    # Normalisation shifted the answers: their offsets are those of the text in the normalised paragraph.
    assert [a["answer_start"] for a in sejong.answers] == [sejong.context.index(a["text"]) for a in sejong.answers]
    assert seoul.questions == ["대한민국의 수도는?", "서울은 어느 나라의 수도?"]
    assert (report.articles, report.paragraphs_read, report.questions_read) == (2, 5, 8)
    assert report.duplicate_paragraphs_merged == 2
    assert report.duplicate_questions_dropped == 2
    assert report.empty_questions_dropped == 1
    assert report.paragraphs_without_questions_dropped == 1
    assert report.misaligned_answer_ids == []
    assert len({p.id for p in paragraphs}) == len(paragraphs)


def test_misaligned_answers_are_repaired_to_the_nearest_occurrence_or_dropped() -> None:
    context = "사과는 빨갛다. 바나나는 노랗다. 사과는 달다."
    second_apple = context.rindex("사과")
    squad = source({"title": "과일", "paragraphs": [{"context": context, "qas": [
        qa("ok", "노란 과일은?", context, "바나나"),
        qa("near-second", "단 과일은?", context, "사과", start=second_apple + 2),  # two off, near the second
        qa("near-first", "빨간 과일은?", context, "사과", start=1),
        qa("absent", "보라색 과일은?", context, "포도", start=0),  # not in the paragraph at all
        qa("empty", "무슨 과일?", context, "", start=0),
        qa("negative", "사과는 어떤가?", context, "달다.", start=-3),  # counted from the end, as Python would
    ]}]})
    paragraphs, report = parse_korquad(squad)

    assert_answers_in_place(paragraphs)
    [paragraph] = paragraphs
    assert paragraph.question_ids == ["ok", "near-second", "near-first", "negative"]
    assert [a["answer_start"] for a in paragraph.answers] == [context.index("바나나"), second_apple, 0,
                                                              context.index("달다.")]
    assert report.misaligned_answer_ids == ["near-second", "near-first", "absent", "empty", "negative"]
    assert (report.answers_repaired, report.answers_dropped) == (3, 2)

    with pytest.raises(UserError) as strict:
        parse_korquad(squad, strict=True)
    message = str(strict.value)
    assert message.startswith("fixture.json: 5 answer(s) whose answer_start does not point at the answer text")
    assert all(qid in message for qid in ["near-second", "near-first", "absent", "empty", "negative"])


def test_real_dev_set_matches_an_independent_count(korquad_dev_json: Path) -> None:
    raw = json.loads(korquad_dev_json.read_text(encoding="utf-8"))
    # Independent reference: distinct (title, paragraph) pairs with a question, distinct questions within them.
    questions_by_paragraph: dict[tuple[str, str], set[str]] = {}
    for article in raw["data"]:
        for p in article["paragraphs"]:
            key = (reference_normalize(article["title"]), reference_normalize(p["context"]))
            questions_by_paragraph.setdefault(key, set()).update(reference_normalize(q["question"]) for q in p["qas"])
    expected = {key: questions for key, questions in questions_by_paragraph.items() if questions}

    paragraphs, report = parse_korquad(KorQuADSource(str(korquad_dev_json), raw))

    assert_answers_in_place(paragraphs)
    assert {(p.title, p.context): set(p.questions) for p in paragraphs} == expected
    assert sum(len(p.questions) for p in paragraphs) == sum(len(qs) for qs in expected.values())
    # The shared README's figures for the raw file: 140 articles, 964 paragraphs, 5,774 questions.
    assert (report.articles, report.paragraphs_read, report.questions_read) == (140, 964, 5774)
    assert report.misaligned_answer_ids == []
    pair_ids = [qid for p in paragraphs for qid in p.question_ids]
    assert len(pair_ids) == len(set(pair_ids))


def test_hub_rows_parse_like_the_json_they_came_from(korquad_dev_json: Path) -> None:
    raw = json.loads(korquad_dev_json.read_text(encoding="utf-8"))
    # The Hub's SQuAD layout: one row per question, answers as parallel lists.
    rows = [{"id": q["id"], "title": a["title"], "context": p["context"], "question": q["question"],
             "answers": {"text": [x["text"] for x in q["answers"]],
                         "answer_start": [x["answer_start"] for x in q["answers"]]}}
            for a in raw["data"] for p in a["paragraphs"] for q in p["qas"]]
    from_rows, _ = parse_korquad(KorQuADSource("rows", squad_rows_to_json(rows)))
    from_json, _ = parse_korquad(KorQuADSource("json", raw))
    assert from_rows == from_json


def fake_paragraphs(titles: list[str], per_title: int = 2, questions: int = 3) -> list[Paragraph]:
    return [Paragraph(id=f"{t}-{i}", title=t, context=f"{t} 문단 {i}", questions=[f"{t} {i} 질문 {q}"
                                                                              for q in range(questions)])
            for t in titles for i in range(per_title)]


def test_splits_share_no_article_and_no_paragraph() -> None:
    test = fake_paragraphs(["시험1", "시험2"])
    train = fake_paragraphs([f"문서{n}" for n in range(20)])
    train += fake_paragraphs(["시험1"])  # an article of the dev set, also in train
    train.append(Paragraph(id="x", title="문서0", context=test[0].context, questions=["같은 문단"]))
    # The same paragraph in every article: whichever articles validation draws, train must lose its copies.
    train += [Paragraph(id=f"s{n}", title=f"문서{n}", context="모든 문서의 같은 문단", questions=["질문"])
              for n in range(20)]
    for seed in range(10):
        splits, dropped = split_by_article(train, test, validation_fraction=0.1, seed=seed)
        assert splits["test"] == test
        for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]:
            assert not {p.title for p in splits[a]} & {p.title for p in splits[b]}
            assert not {p.context for p in splits[a]} & {p.context for p in splits[b]}
        assert len({p.title for p in splits["validation"]}) == math.ceil(0.1 * 20)
        assert dropped == len(train) - len(splits["train"]) - len(splits["validation"]) >= 3 + 18
    draws = {tuple(p.title for p in split_by_article(train, test, 0.1, seed)[0]["validation"]) for seed in range(5)}
    assert len(draws) > 1


def test_a_tiny_train_set_still_gets_one_validation_article_and_keeps_one_for_train() -> None:
    test = fake_paragraphs(["시험"])
    splits, _ = split_by_article(fake_paragraphs([f"문서{n}" for n in range(12)]), test, 0.05, seed=0)
    assert len({p.title for p in splits["validation"]}) == 1
    assert len({p.title for p in splits["train"]}) == 11
    with pytest.raises(UserError, match="leaves none for train"):
        split_by_article(fake_paragraphs(["문서1", "문서2"]), test, 0.6, seed=0)
    with pytest.raises(UserError, match="1 article"):
        split_by_article(fake_paragraphs(["문서1", "시험"]), test, 0.05, seed=0)


def test_limit_takes_whole_paragraphs_up_to_the_limit() -> None:
    paragraphs = [Paragraph(id=str(i), title="t", context=str(i), questions=["q"] * size)
                  for i, size in enumerate([1, 5, 2, 7, 3, 1, 4, 6, 2, 3] * 5)]
    for limit in [1, 7, 50, 140]:
        for seed in range(3):
            kept = limit_questions(paragraphs, limit, seed)
            total = sum(len(p.questions) for p in kept)
            assert total <= limit
            assert all(len(p.questions) > limit - total for p in paragraphs if p not in kept)
            assert kept == [p for p in paragraphs if p in kept]  # original order
            assert kept == limit_questions(paragraphs, limit, seed)
    assert limit_questions(paragraphs, 50, 0) != limit_questions(paragraphs, 50, 1)
    with pytest.raises(UserError, match="smaller than every train paragraph"):
        limit_questions([p for p in paragraphs if len(p.questions) > 1], 1, 0)


def tiny_sources() -> tuple[KorQuADSource, KorQuADSource]:
    def articles(prefix: str, count: int) -> list[dict]:
        out = []
        for n in range(count):
            context = f"{prefix}{n}번 문서는 {n + 1900}년에 쓰였다. 저자는 김{prefix}{n}이다."
            out.append({"title": f"{prefix}{n}", "paragraphs": [{"context": context, "qas": [
                qa(f"{prefix}{n}-0", f"{prefix}{n}번 문서가 쓰인 해는?", context, f"{n + 1900}년"),
                qa(f"{prefix}{n}-1", f"{prefix}{n}번 문서의 저자는?", context, f"김{prefix}{n}")]}]})
        return out
    return source(*articles("학습", 6)), source(*articles("평가", 2))


def test_load_qg_dataset_reads_a_build_and_explains_what_is_missing(tmp_path: Path, monkeypatch) -> None:
    train, dev = tiny_sources()
    build = build_qg_dataset(train, dev, tmp_path / "built")
    for config in ["default", "pairs"]:
        loaded = load_qg_dataset(str(tmp_path / "built"), config)
        assert {split: loaded[split].num_rows for split in loaded} == {
            split: sum(1 if config == "default" else len(p.questions) for p in paragraphs)
            for split, paragraphs in build.splits.items()}

    # A rebuild into the same folder is what the next load returns (datasets' own folder cache would not).
    rebuilt = build_qg_dataset(train, dev, tmp_path / "built", max_train_samples=3)
    assert load_qg_dataset(str(tmp_path / "built"))["train"]["id"] == [
        qid for p in rebuilt.splits["train"] for qid in p.question_ids]

    with pytest.raises(UserError) as missing:
        load_qg_dataset(str(tmp_path / "nowhere"))
    assert "qg-build-dataset --sample --output-dir" in str(missing.value)
    assert str(missing.value).endswith(f"--output-dir {tmp_path / 'nowhere'}")

    with pytest.raises(UserError, match="unknown dataset config 'paragraphs'"):
        load_qg_dataset(str(tmp_path / "built"), "paragraphs")

    # What an unreachable Hub looks like to datasets and huggingface_hub (no retry loop, no network).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as unreachable:
        load_qg_dataset("outputs/sample-dataset")
    message = str(unreachable.value)
    assert "\n" not in message
    assert "could not be loaded from the Hugging Face Hub" in message
    assert "--output-dir outputs/sample-dataset" in message
