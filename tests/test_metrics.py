"""qg.eval.metrics against independent references: hand-computed values, pycocoevalcap and sacrebleu called directly."""

from __future__ import annotations

import json
import logging
import math
import random
import shutil

import pytest
import sacrebleu
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge

from qg.eval import metrics

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR runs a Java jar and `java` is absent")


@pytest.fixture
def no_java(monkeypatch):
    """Hide Java: BLEU/ROUGE tests then skip METEOR instead of waiting seconds for its jar."""
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None if name == "java" else shutil.which(name))


# --- QG-Bench hypothesis normalisation, worked out by hand from lmqg's rules ----------------------------------

@pytest.mark.parametrize(("prediction", "expected"), [
    ("함수해석학이 주목하는 탐구는?", "함수해석학이 주목하는 탐구는 ?"),
    ("COVID-19의 원인은?", "covid -19의 원인은 ?"),
    ("Boney M.의 앨범명은?", "boney m .의 앨범명은 ?"),
    ('그가 "사랑"이라 부른 것은?', "그가 `` 사랑 ''이라 부른 것은 ?"),
    ("1,000원(약 10%)은?", "1 ,000원 -lrb -약 10 % -rrb -은 ?"),
    ("  두 줄\n질문?  ", "두 줄 질문 ?"),
])
def test_qgbench_hypothesis(prediction, expected):
    assert metrics.qgbench_hypothesis(prediction) == expected


def test_qgbench_reference_is_left_raw():
    # Not normalised; lmqg's reference files turn line breaks into "." before lines are stripped.
    assert metrics.qgbench_reference(" COVID-19의 원인은? ") == "COVID-19의 원인은?"
    assert metrics.qgbench_reference("두 줄\n질문?\n") == "두 줄.질문?."


# --- QG-Bench BLEU / ROUGE-L -----------------------------------------------------------------------------------

# Two inputs, whitespace tokens, no punctuation for the normalisation to touch:
#   1: hypothesis 서울은 한국의 수도 이다   vs 서울은 한국의 수도 인가
#      unigrams 3/4, bigrams 2/3
#   2: hypothesis 부산은 어디에 있나        vs 부산은 어디인가 | 부산은 어디에 위치하나
#      unigrams 2/3 (counts clipped by the max over references), bigrams 1/2
# Corpus: p1 = 5/7, p2 = 3/5; lengths 7 vs closest references 4 + 3 = 7, so no brevity penalty.
HAND_PREDICTIONS = ["서울은 한국의 수도 이다", "부산은 어디에 있나"]
HAND_REFERENCES = [["서울은 한국의 수도 인가"], ["부산은 어디인가", "부산은 어디에 위치하나"]]


def test_bleu_by_hand(no_java):
    scores = metrics.qgbench_scores(HAND_PREDICTIONS, HAND_REFERENCES)
    assert scores["bleu1"] == pytest.approx(100 * 5 / 7, abs=1e-6)
    assert scores["bleu2"] == pytest.approx(100 * math.sqrt(5 / 7 * 3 / 5), abs=1e-6)


def test_bleu_brevity_penalty_by_hand(no_java):
    # 2 hypothesis tokens, both right, against a 4-token reference: BP = exp(1 - 4/2).
    scores = metrics.qgbench_scores(["서울은 수도"], [["서울은 한국의 수도 이다"]])
    assert scores["bleu1"] == pytest.approx(100 * math.exp(-1), abs=1e-6)


def test_rouge_l_by_hand(no_java):
    # vs "서울은 대한민국의 수도 이다": LCS 3 -> P 3/4, R 3/4;  vs "한국의 수도": LCS 2 -> P 2/4, R 2/2.
    # lmqg takes the best precision and the best recall separately: P 3/4, R 1, beta 1.2.
    p, r, beta2 = 3 / 4, 1.0, 1.2 ** 2
    scores = metrics.qgbench_scores(["서울은 한국의 수도 이다"], [["서울은 대한민국의 수도 이다", "한국의 수도"]])
    assert scores["rougeL"] == pytest.approx(100 * (1 + beta2) * p * r / (r + beta2 * p), abs=1e-6)


def test_identical_korean_scores_100_and_korean_is_not_stripped(no_java):
    question = "서울은 대한민국의 수도 이다"
    scores = metrics.qgbench_scores([question], [[question]])
    assert scores["bleu4"] == pytest.approx(100, abs=1e-6)
    assert scores["rougeL"] == pytest.approx(100, abs=1e-9)
    # Tokenizers that keep only [a-z0-9] would make these two equal (both empty) or fail; Korean must count.
    assert metrics.qgbench_scores(["서울은 수도"], [["부산은 항구"]])["rougeL"] == 0


def test_identical_question_with_question_mark_is_not_100_like_in_qgbench(no_java):
    # lmqg splits "?" off the hypothesis only: 서울은 한국의 수도 인가 ? (5 tokens) vs 서울은 한국의 수도 인가? (4).
    question = "서울은 한국의 수도 인가?"
    scores = metrics.qgbench_scores([question], [[question]])
    assert scores["bleu1"] == pytest.approx(100 * 3 / 5, abs=1e-6)
    p, r, beta2 = 3 / 5, 3 / 4, 1.2 ** 2
    assert scores["rougeL"] == pytest.approx(100 * (1 + beta2) * p * r / (r + beta2 * p), abs=1e-6)


def test_bleu_and_rouge_equal_pycocoevalcap_called_directly(no_java, caplog):
    predictions = ["영생교를 세운 사람은 누구인가?", "Boney M.의 앨범명은?", "조희성은 자신을 무엇이라 했나?"]
    references = [["영생교를 세운 사람은?", "영생교의 창시자는 누구인가?"], ["Boney M.의 1984년 앨범은?"],
                  ["조희성은 자신을 무엇이라고 주장하였나?"]]
    # The hypotheses as lmqg hands them to pycocoevalcap, normalised by hand.
    res = {0: ["영생교를 세운 사람은 누구인가 ?"], 1: ["boney m .의 앨범명은 ?"], 2: ["조희성은 자신을 무엇이라 했나 ?"]}
    gts = dict(enumerate(references))
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    with caplog.at_level(logging.WARNING, logger="qg.eval.metrics"):
        scores = metrics.qgbench_scores(predictions, references)
    assert [scores[f"bleu{n}"] for n in (1, 2, 3, 4)] == pytest.approx([100 * b for b in bleu], abs=1e-9)
    assert scores["rougeL"] == pytest.approx(100 * rouge, abs=1e-9)
    assert scores["meteor"] is None
    assert "METEOR skipped" in caplog.text and "java" in caplog.text


def test_group_by_sentence():
    records = metrics.group_by_sentence(
        predictions=["p1", "p2", "p3"],
        questions=["q1", "q2", "q3"],
        sentences=["그는 왔다.", " 그는 왔다. ", "그는 갔다."],
    )
    assert records == [{"prediction": "p1", "references": ["q1", "q2"]}, {"prediction": "p3", "references": ["q3"]}]


@pytest.mark.parametrize(("predictions", "references"), [
    (["a"], [[]]),
    (["a"], ["a gold question given as a string, not a list"]),
    (["a", "b"], [["a"]]),
    ([], []),
])
def test_bad_references_are_refused(predictions, references):
    with pytest.raises(ValueError):
        metrics.korean_scores(predictions, references)


# --- METEOR (Java) ---------------------------------------------------------------------------------------------

@needs_java
def test_meteor_equals_pycocoevalcap_and_identical_scores_100():
    predictions = ["영생교를 세운 사람은 누구인가?", "Boney M.의 앨범명은?", "라", ""]
    references = [["영생교를 세운 사람은?", "영생교의 창시자는 누구인가?"], ["Boney M.의 1984년 앨범은?"], ["무엇인가?"],
                  ["영생교는 언제\n세워졌나?"]]
    identical = ["서울은 대한민국의 수도 이다", "부산은 항구 도시 이다"]
    ours = metrics.qgbench_scores(predictions, references)["meteor"]
    ours_identical = metrics.qgbench_scores(identical, [[q] for q in identical])["meteor"]
    # pycocoevalcap's wrapper called directly (on the jar already running), hypotheses normalised by hand, the
    # reference's line break turned into "." as in lmqg's reference files.
    expected, _ = metrics._meteor_jar().compute_score(
        {0: references[0], 1: references[1], 2: references[2], 3: ["영생교는 언제.세워졌나?"]},
        {0: ["영생교를 세운 사람은 누구인가 ?"], 1: ["boney m .의 앨범명은 ?"], 2: ["라"], 3: [""]},
    )
    assert ours == pytest.approx(100 * expected, abs=1e-9)
    assert 0 < ours < 100
    assert ours_identical == pytest.approx(100, abs=1e-9)


# --- Korean-aware scores: sacrebleu called directly ------------------------------------------------------------

KOREAN_PREDICTIONS = ["영생교를 세운 사람은 누구인가?", "조희성은 자신을 무엇이라 했나?", "영생교는 언제 세워졌나?"]
KOREAN_REFERENCES = [
    ["영생교의 창시자는 누구인가?", "영생교를 세운 사람은?"],
    ["조희성은 자신을 무엇이라고 주장하였나?", "조희성이 자칭한 것은?"],
    ["영생교가 세워진 해는?", "영생교는 몇 년에 세워졌나?"],
]


def test_korean_scores_equal_sacrebleu():
    streams = [[refs[k] for refs in KOREAN_REFERENCES] for k in range(2)]
    scores = metrics.korean_scores(KOREAN_PREDICTIONS, KOREAN_REFERENCES)
    assert scores["bleu_morpheme"] == pytest.approx(
        sacrebleu.corpus_bleu(KOREAN_PREDICTIONS, streams, tokenize="ko-mecab").score, abs=1e-9)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(KOREAN_PREDICTIONS, streams).score, abs=1e-9)


def test_korean_scores_with_uneven_reference_counts():
    # One gold question fewer for the first input equals repeating its remaining gold question: the best match,
    # the clipped n-gram counts and the closest reference length stay the same.
    uneven = [KOREAN_REFERENCES[0][:1], *KOREAN_REFERENCES[1:]]
    repeated = [KOREAN_REFERENCES[0][:1] * 2, *KOREAN_REFERENCES[1:]]
    streams = [[refs[k] for refs in repeated] for k in range(2)]
    scores = metrics.korean_scores(KOREAN_PREDICTIONS, uneven)
    assert scores["bleu_morpheme"] == pytest.approx(
        sacrebleu.corpus_bleu(KOREAN_PREDICTIONS, streams, tokenize="ko-mecab").score, abs=1e-9)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(KOREAN_PREDICTIONS, streams).score, abs=1e-9)


def test_identical_questions_score_100_on_korean_scores():
    questions = ["영생교를 세운 사람은 누구인가?", "조희성은 자신을 무엇이라 했나?"]
    scores = metrics.korean_scores(questions, [[q] for q in questions])
    assert scores == {"bleu_morpheme": pytest.approx(100), "chrf": pytest.approx(100)}


def test_sentence_scores_equal_sacrebleu():
    hypothesis, reference = "영생교를 세운 사람은 누구인가?", "영생교의 창시자는 누구인가?"
    assert metrics.sentence_chrf(hypothesis, reference) == pytest.approx(
        sacrebleu.sentence_chrf(hypothesis, [reference]).score)
    assert metrics.sentence_bleu_morpheme(hypothesis, [reference]) == pytest.approx(
        sacrebleu.sentence_bleu(hypothesis, [reference], tokenize="ko-mecab").score)


# --- Agnostic mode ---------------------------------------------------------------------------------------------

def test_recommendation_scores_by_hand():
    # The second generated question shares no syllable with any gold question, so its chrF and BLEU are 0.
    group = {
        "context": "서울은 수도인가 하는 물음에 답한다.",
        "generated": ["서울은 수도인가", "대전 과학"],
        "references": ["서울은 수도인가", "부산 항구", "광주 무등산"],
    }
    scores = metrics.score_recommendations([group])
    for name in ("chrf", "bleu_morpheme"):
        assert scores["best_match"][name]["precision"] == pytest.approx(100 / 2)  # (100 + 0) / 2 generated
        assert scores["best_match"][name]["recall"] == pytest.approx(100 / 3)     # (100 + 0 + 0) / 3 gold
    assert scores["coverage"] == pytest.approx(100 / 3)
    assert scores["self_bleu"] == pytest.approx(0)
    assert (scores["num_groups"], scores["num_generated"], scores["num_references"]) == (1, 2, 3)


def test_distinct_self_bleu_near_duplicates_by_hand():
    assert metrics.morphemes("서울 부산") == ["서울", "부산"]
    assert metrics.morphemes("서울 대구") == ["서울", "대구"]
    # unigrams 서울 부산 서울 대구: 3 distinct of 4; bigrams (서울 부산) (서울 대구): 2 of 2.
    assert metrics.distinct_n(["서울 부산", "서울 대구"], 1) == pytest.approx(75)
    assert metrics.distinct_n(["서울 부산", "서울 대구"], 2) == pytest.approx(100)
    assert metrics.self_bleu(["영생교를 세운 사람은 누구인가?"] * 2) == pytest.approx([100, 100])
    scores = metrics.score_recommendations([{
        "context": "영생교는 조희성이 세웠다.",
        "generated": ["영생교를 세운 사람은 누구인가?", "영생교를 세운 사람은 누구인가"],
        "references": ["영생교를 세운 사람은?"],
    }])
    assert scores["near_duplicate_rate"] == pytest.approx(50)
    assert scores["distinct1"] < 100


# --- Grounding -------------------------------------------------------------------------------------------------

def test_grounding_by_hand():
    assert metrics.content_lemmas("무엇을 어떻게 먹었나?") == ["먹다"]  # question words are not content
    shares = metrics.grounding(
        ["임종석이 주도한 시위는?", "누가 소리를 들었나?", "박정희가 들었나?", "무엇인가?"],
        ["임종석은 시위를 주도하였다.", "그는 소리를 들었다.", "그는 소리를 들었다.", "아무 내용."],
    )
    # 임종석 주도 시위: 3/3;  소리 듣다 (들었다 -> 듣다 on both sides): 2/2;  박정희 듣다: 1/2;  no content: left out.
    assert shares == pytest.approx([100, 100, 50])


def test_grounding_separates_own_and_other_paragraphs(korquad_dev_json):
    with open(korquad_dev_json, encoding="utf-8") as f:
        paragraphs = [p for a in json.load(f)["data"] for p in a["paragraphs"] if p["qas"]][:100]
    questions = [p["qas"][0]["question"] for p in paragraphs]
    own = [p["context"] for p in paragraphs]
    other = own[1:] + own[:1]
    own_share = metrics._mean(metrics.grounding(questions, own))
    other_share = metrics._mean(metrics.grounding(questions, other))
    assert own_share > 70 and other_share < 40, (own_share, other_share)


# --- BERTScore -------------------------------------------------------------------------------------------------

@pytest.fixture
def tiny_bert(tmp_path):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    syllables = sorted(set("영생교를세운사람은누구인가창시자조희성부산항구"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", *syllables, *(f"##{s}" for s in syllables)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(tmp_path / "vocab.txt"), model_max_length=64).save_pretrained(tmp_path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(tmp_path)
    return tmp_path


def test_bertscore_identical_is_100_and_picks_the_best_reference(tiny_bert):
    question = "영생교를 세운 사람은 누구인가?"
    identical = metrics.bertscore([question], [["부산 항구", question]], tiny_bert)
    assert identical["f1"] == pytest.approx(100, abs=1e-4)
    different = metrics.bertscore([question], [["부산 항구"]], tiny_bert)
    assert different["f1"] < 99


def test_bertscore_only_with_a_model_folder(tiny_bert, no_java):
    records = [{"prediction": "영생교를 세운 사람은 누구인가?", "references": ["영생교를 세운 사람은 누구인가?"]}]
    assert metrics.score_predictions(records)["bertscore"] is None
    assert metrics.score_predictions(records, bertscore_model=tiny_bert)["bertscore"]["f1"] == pytest.approx(
        100, abs=1e-4)


# --- Top level -------------------------------------------------------------------------------------------------

@needs_java
def test_score_predictions_on_real_questions(korquad_dev_json):
    with open(korquad_dev_json, encoding="utf-8") as f:
        paragraphs = [p for a in json.load(f)["data"] for p in a["paragraphs"]][:40]
    rng = random.Random(0)
    records = []
    for p in paragraphs:
        for qa in p["qas"]:
            words = qa["question"].split()
            del words[rng.randrange(len(words))]
            records.append({"prediction": " ".join(words), "references": [qa["question"]], "context": p["context"]})
    records.append({"prediction": "라", "references": ["영생교를 세운 사람은?"], "context": "영생교는 조희성이 세웠다."})
    scores = metrics.score_predictions(records)
    json.dumps(scores)
    assert scores["num_predictions"] == len(records)
    qgbench = scores["qgbench"]
    assert set(qgbench) == {"bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "meteor"}
    assert 0 < qgbench["bleu4"] < qgbench["bleu1"] < 100 and 0 < qgbench["meteor"] < 100
    quality = scores["quality"]
    assert quality["degenerate_reasons"]["too_short"] >= 1
    assert 60 < quality["grounding"] <= 100
    assert set(metrics.QGBENCH_KO_MT5_BASE) <= set(qgbench)


def test_grounding_needs_every_context(no_java):
    records = [{"prediction": "영생교를 세운 사람은?", "references": ["영생교를 세운 사람은?"]},
               {"prediction": "영생교는 언제?", "references": ["영생교는 언제 세워졌나?"], "context": "영생교."}]
    assert "grounding" not in metrics.score_predictions(records)["quality"]


@needs_java
def test_a_dead_meteor_jar_raises_instead_of_hanging():
    # Last in this file: it leaves no jar running, so a test after it would pay for a new one.
    question = "서울은 대한민국의 수도 이다"
    jar = metrics._start_meteor()
    jar.meteor_p.kill()
    jar.meteor_p.wait()
    with pytest.raises((BrokenPipeError, ValueError)):
        metrics.qgbench_scores([question], [[question]])
    assert metrics._meteor_jar.cache_info().currsize == 0  # the next call starts a fresh jar
