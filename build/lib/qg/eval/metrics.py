"""Automatic metrics for Korean question generation, shared by evaluate_qg.py and the lighteval task.

Two entry points:

    from qg.eval.metrics import score_predictions, score_recommendations
    score_predictions([{"prediction": "...", "references": ["...", "..."], "context": "..."}])
    score_recommendations([{"context": "...", "generated": ["...", "..."], "references": ["...", "..."]}])

`score_predictions` is the answer-aware mode (one prediction per input, scored against that input's gold
questions); `score_recommendations` is the agnostic mode (N questions per paragraph against all of the paragraph's
gold questions). Both return a JSON-serialisable dict in which every score is on a 0-100 scale, rates included.

Three families of scores:
- "qgbench": BLEU-1..4, ROUGE-L, METEOR exactly as QG-Bench (lmqg) computes them, so numbers can sit in one table
  with `QGBENCH_KO_MT5_BASE`;
- "korean": corpus BLEU over MeCab-ko morphemes and chrF (sacrebleu), which do not penalise Korean particles and
  spacing the way whitespace tokens do;
- quality: degenerate rate (`qg.quality`), distinct-n, self-BLEU, grounding in the paragraph, optional BERTScore.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import shutil
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from sacrebleu.metrics import BLEU, CHRF

from qg.quality import is_near_duplicate, rejection_reason

logger = logging.getLogger(__name__)

# QG-Bench's Korean reference: lmqg/mt5-base-koquad on the lmqg/qg_koquad test split (QG_BENCH.md in
# asahi417/lm-question-generation; Ushio et al., EMNLP 2022).
QGBENCH_KO_MT5_BASE = {"bleu4": 12.18, "meteor": 29.62, "rougeL": 28.57}

# A gold question counts as covered when some generated question reaches this sentence chrF against it. Measured
# on KorQuAD 1.0 dev: a gold question with one word dropped reaches 50 in 97.6% of cases, another annotator's
# question about the same paragraph in 3.2%.
COVERAGE_CHRF = 50.0

# ---------------------------------------------------------------------------------------------------------------
# QG-Bench (lmqg) compatibility.
#
# What lmqg does, read in asahi417/lm-question-generation:
# - lmqg/automatic_evaluation.py, compute_metrics(): no tokenizer for Korean (only 'ja' and 'zh' get spaCy), so
#   tokens are whitespace tokens. Gold questions are the raw `question` lines of the dataset's reference file
#   (lmqg/data.py and the lmqg/qg_koquad dataset's generate_reference_files.py: '\n' -> '.'; then
#   `line.strip()`), never normalised. Predictions are grouped under a key and all gold questions under the same
#   key are the references of that key's prediction. The published numbers are the files
#   "metric.first.sentence.paragraph_answer.question..." (lmqg/lmqg_cl/readme_template.py; the default
#   --prediction-level of lmqg/lmqg_cl/model_evaluation.py): the key is the answer's sentence
#   (`sentence.strip().lower()`) and only the first prediction of each key is scored; see `group_by_sentence`.
# - lmqg/automatic_evaluation_tool/text_normalization.py, text_normalization(): applied to the hypothesis only
#   (bleu/bleu.py, rouge.py, meteor/meteor.py all call it on the hypothesis and never on references).
# - bleu/bleu.py: pycocoevalcap's BleuScorer, corpus BLEU, option 'closest' reference length.
# - rouge.py: pycocoevalcap's ROUGE-L, tokens = split(" "), beta 1.2, best precision and best recall over the
#   references taken separately, mean over keys.
# - meteor/meteor.py: Meteor 1.5 jar with `-l en -norm`, whitespace runs collapsed in the line sent to Java, the
#   corpus score is the jar's aggregate line (not the mean of segment scores).
# Consequences worth knowing: a hypothesis identical to its Korean gold question does not get 100 BLEU, because
# "탐구는?" becomes "탐구는 ?" on the hypothesis side only. METEOR is unaffected: `-norm` splits punctuation and,
# measured here, turns every Hangul syllable into its own token, so Korean METEOR is close to a character metric.
# ---------------------------------------------------------------------------------------------------------------

# PTB-style bracket names the NQG (SQuAD) gold questions use; lmqg rewrites hypotheses into that form.
_PTB_BRACKETS = str.maketrans({"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"})
# Applied in this order, each to the output of the previous one, as lmqg does.
_QGBENCH_REWRITES = [
    *[(re.compile(r"\s*" + re.escape(mark)), " " + mark) for mark in ("'s", "?", ",", "'", "$", "%")],
    (re.compile(r'"([^"]+)"'), r"`` \1 ''"),
    (re.compile(r"\s*(\..{2})"), r" \1"),
    (re.compile(r"\s*(-.{2})"), r" \1"),
]


def qgbench_hypothesis(prediction: str) -> str:
    """A prediction as lmqg scores it: lower-cased, PTB brackets, space before ? , ' $ % and before '.xx'/'-xx'.

    lmqg reads predictions one per line, so a prediction can never hold a line break there; here line breaks
    become spaces first.
    """
    text = " ".join(prediction.splitlines()).strip().lower().translate(_PTB_BRACKETS)
    for pattern, replacement in _QGBENCH_REWRITES:
        text = pattern.sub(replacement, text)
    return text


def qgbench_reference(question: str) -> str:
    """A gold question as lmqg's reference files hold it."""
    return question.replace("\n", ".").strip()


def group_by_sentence(predictions: Sequence[str], questions: Sequence[str], sentences: Sequence[str]) -> list[dict]:
    """QG-Bench's published protocol: one record per answer sentence, holding the first prediction made for that
    sentence and every gold question whose answer lies in it (sentences compared stripped and lower-cased)."""
    records: dict[str, dict] = {}
    for prediction, question, sentence in zip(predictions, questions, sentences, strict=True):
        record = records.setdefault(sentence.strip().lower(), {"prediction": prediction, "references": []})
        record["references"].append(question)
    return list(records.values())


def _meteor_line_text(text: str) -> str:
    # "|||" separates fields and a line break ends the request in the jar's stdio protocol; lmqg also collapses
    # every whitespace run.
    return " ".join(text.replace("|||", "").split())


@functools.cache
def _meteor_jar() -> Meteor:
    """The Meteor 1.5 jar, one per process: it loads its tables for seconds (in its own process), so it is started
    early and kept for later calls."""
    return Meteor()


def _start_meteor() -> Meteor | None:
    if shutil.which("java") is None:
        logger.warning("METEOR skipped: it runs the Meteor 1.5 jar and no `java` is on PATH (install Java 8+).")
        return None
    return _meteor_jar()


def _meteor_score(meteor: Meteor, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    try:
        score, _ = meteor.compute_score(
            {key: [_meteor_line_text(ref) for ref in refs] for key, refs in gts.items()},
            {key: [_meteor_line_text(hyp) for hyp in hyps] for key, hyps in res.items()},
        )
    except BaseException:
        # A failed exchange leaves the jar mid-protocol and pycocoevalcap's lock held; its __del__ would then wait
        # for that lock forever, or fail closing a broken pipe. Free both and drop this jar, so that the error
        # surfaces and the next call starts a fresh jar.
        if meteor.lock.locked():
            meteor.lock.release()
        with contextlib.suppress(OSError):
            meteor.meteor_p.stdin.close()
        _meteor_jar.cache_clear()
        raise
    return 100 * score


def _qgbench_scores(predictions: Sequence[str], references: Sequence[Sequence[str]],
                    meteor: Meteor | None) -> dict[str, float | None]:
    res = {i: [qgbench_hypothesis(p)] for i, p in enumerate(predictions)}
    gts = {i: [qgbench_reference(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    scores = {f"bleu{n}": 100 * value for n, value in enumerate(bleu, start=1)}
    scores["rougeL"] = 100 * float(rouge)
    scores["meteor"] = None if meteor is None else _meteor_score(meteor, gts, res)
    return scores


def qgbench_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float | None]:
    """{bleu1, bleu2, bleu3, bleu4, rougeL, meteor} on 0-100, as QG-Bench computes them; meteor is None without Java.

    `references[i]` are all gold questions of the input `predictions[i]` was generated for.
    """
    _check_references(predictions, references)
    return _qgbench_scores(predictions, references, _start_meteor())


# ---------------------------------------------------------------------------------------------------------------
# Korean-aware scores (sacrebleu).
# ---------------------------------------------------------------------------------------------------------------


@functools.cache
def _corpus_bleu_morpheme() -> BLEU:
    return BLEU(tokenize="ko-mecab")


@functools.cache
def _sentence_bleu_morpheme() -> BLEU:
    # Short questions often have no matching 4-gram; effective order keeps sentence BLEU informative.
    return BLEU(tokenize="ko-mecab", effective_order=True)


@functools.cache
def _chrf() -> CHRF:
    return CHRF()


def _reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """sacrebleu wants one stream per reference position; None pads inputs that have fewer gold questions."""
    width = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def korean_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """{bleu_morpheme, chrf}: corpus BLEU over MeCab-ko morphemes and corpus chrF, all references of each input."""
    _check_references(predictions, references)
    hypotheses = [p.strip() for p in predictions]
    streams = _reference_streams([[r.strip() for r in refs] for refs in references])
    return {
        "bleu_morpheme": _corpus_bleu_morpheme().corpus_score(hypotheses, streams).score,
        "chrf": _chrf().corpus_score(hypotheses, streams).score,
    }


def sentence_chrf(hypothesis: str, reference: str) -> float:
    return _chrf().sentence_score(hypothesis.strip(), [reference.strip()]).score


def sentence_bleu_morpheme(hypothesis: str, references: Sequence[str]) -> float:
    return _sentence_bleu_morpheme().sentence_score(hypothesis.strip(), [r.strip() for r in references]).score


def morphemes(text: str) -> list[str]:
    """MeCab-ko morphemes, the same tokens morpheme BLEU counts (sacrebleu caches the analysis)."""
    return _corpus_bleu_morpheme().tokenizer(text.strip()).split()


# ---------------------------------------------------------------------------------------------------------------
# Agnostic mode: N generated questions against all gold questions of the paragraph.
# ---------------------------------------------------------------------------------------------------------------


def best_match(generated: Sequence[str], references: Sequence[str],
               similarity: Callable[[str, str], float]) -> tuple[list[float], list[float]]:
    """Best similarity of each generated question to any gold one, and of each gold question to any generated one.

    `similarity(hypothesis, reference)` is always called with the generated question as hypothesis, so that both
    directions use the same, asymmetric, metric orientation.
    """
    matrix = [[similarity(g, r) for r in references] for g in generated]
    precision = [max(row) for row in matrix]
    recall = [max(column) for column in zip(*matrix)]
    return precision, recall


def distinct_n(questions: Sequence[str], n: int) -> float | None:
    """Unique morpheme n-grams / all morpheme n-grams over `questions` (Li et al., 2016), 0-100."""
    ngrams = Counter()
    for question in questions:
        tokens = morphemes(question)
        ngrams.update(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    total = sum(ngrams.values())
    return 100 * len(ngrams) / total if total else None


def self_bleu(questions: Sequence[str]) -> list[float]:
    """Morpheme sentence BLEU of each question against the other questions of the same set (Zhu et al., 2018)."""
    if len(questions) < 2:
        return []
    return [sentence_bleu_morpheme(q, [*questions[:i], *questions[i + 1:]]) for i, q in enumerate(questions)]


# ---------------------------------------------------------------------------------------------------------------
# Grounding: how much of a question's content is in its paragraph.
# ---------------------------------------------------------------------------------------------------------------

# Nouns, numerals, verbs, adjectives, foreign words, numbers, Hanja: the words that carry a question's content.
# Left out: dependent nouns (NNB: 것, 수, 년) and pronouns (NP: 무엇, 누구, 어디), which every question uses and
# no paragraph needs to contain.
CONTENT_TAGS = frozenset({"NNG", "NNP", "NR", "VV", "VA", "SL", "SN", "SH"})
# Interrogative adjectives Kiwi tags VA ("어떻게" -> 어떻/VA-I): question words, not content.
_INTERROGATIVE_LEMMAS = frozenset({"어떻다", "어떠하다", "어찌하다"})


@functools.cache
def _kiwi():
    from kiwipiepy import Kiwi  # loads its model (about 1 s), so only when grounding is asked for

    return Kiwi()


def _content_lemmas(tokens) -> list[str]:
    return [
        token.lemma.casefold() for token in tokens
        if token.tag.split("-")[0] in CONTENT_TAGS and token.lemma not in _INTERROGATIVE_LEMMAS
    ]


def content_lemmas(text: str) -> list[str]:
    """Lemmas of the content morphemes of `text` (Kiwi), irregular conjugations restored: 들었다 -> 듣다."""
    return _content_lemmas(_kiwi().tokenize(text))


def grounding(questions: Sequence[str], contexts: Sequence[str]) -> list[float]:
    """Per question with content: share (0-100) of its content lemmas found among its context's content lemmas."""
    if len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
    # Kiwi analyses a list of texts on all its worker threads; each distinct paragraph is analysed once.
    unique_contexts = list(dict.fromkeys(contexts))
    analyses = _kiwi().tokenize(unique_contexts)
    context_lemmas = {context: frozenset(_content_lemmas(tokens)) for context, tokens in zip(unique_contexts, analyses)}
    shares = []
    for context, tokens in zip(contexts, _kiwi().tokenize(list(questions))):
        lemmas = _content_lemmas(tokens)
        if lemmas:
            shares.append(100 * sum(lemma in context_lemmas[context] for lemma in lemmas) / len(lemmas))
    return shares


# ---------------------------------------------------------------------------------------------------------------
# BERTScore, from a local model folder only (the Hub is out of reach on the machines this project runs on).
# ---------------------------------------------------------------------------------------------------------------


def bertscore(predictions: Sequence[str], references: Sequence[Sequence[str]], model_dir: str | Path,
              num_layers: int | None = None, batch_size: int = 32) -> dict[str, float]:
    """{precision, recall, f1} means on 0-100, each prediction against its best reference (bert_score).

    `num_layers` defaults to the layer bert_score tuned for a model of the folder's name (a local copy of
    bert-base-multilingual-cased gets 9, as `lang="ko"` would), else to the model's last layer.
    """
    import bert_score
    from bert_score.utils import model2layers
    from transformers import AutoConfig

    _check_references(predictions, references)
    model_dir = Path(model_dir)
    if num_layers is None:
        num_layers = model2layers.get(model_dir.name) or AutoConfig.from_pretrained(model_dir).num_hidden_layers
    precision, recall, f1 = bert_score.score(
        [p.strip() for p in predictions], [[r.strip() for r in refs] for refs in references],
        model_type=str(model_dir), num_layers=num_layers, batch_size=batch_size,
    )
    return {name: 100 * values.mean().item() for name, values in (("precision", precision), ("recall", recall),
                                                                   ("f1", f1))}


# ---------------------------------------------------------------------------------------------------------------
# Top level.
# ---------------------------------------------------------------------------------------------------------------


def _check_references(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError("nothing to score: no predictions")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise ValueError(f"input {i}: references must be a non-empty list of gold questions, got {refs!r}")


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _degenerate(questions: Sequence[str], contexts: Sequence[str]) -> dict:
    reasons = Counter(reason for q, c in zip(questions, contexts) if (reason := rejection_reason(q, c)))
    return {"degenerate_rate": 100 * sum(reasons.values()) / len(questions), "degenerate_reasons": dict(reasons)}


def score_predictions(records: Sequence[dict], bertscore_model: str | Path | None = None) -> dict:
    """Score one prediction per input: {"num_predictions", "qgbench", "korean", "quality", "bertscore"}.

    A record is {"prediction": str, "references": [gold questions of that input], "context": str (optional)}.
    "quality" holds degenerate_rate and its reasons (the context-copy check needs contexts), corpus
    distinct1/distinct2 over morphemes, and grounding (mean over predictions) when every record has a context.
    "bertscore" is None unless `bertscore_model` names a local model folder. To reproduce QG-Bench's published
    protocol, build the records with `group_by_sentence`.
    """
    predictions = [r["prediction"] for r in records]
    references = [r["references"] for r in records]
    contexts = [r.get("context") for r in records]
    has_contexts = all(c is not None for c in contexts)
    _check_references(predictions, references)
    meteor = _start_meteor()  # first: the jar loads its tables while the other scores are computed
    korean = korean_scores(predictions, references)
    quality = {
        **_degenerate(predictions, contexts if has_contexts else [""] * len(predictions)),
        "distinct1": distinct_n(predictions, 1),
        "distinct2": distinct_n(predictions, 2),
    }
    if has_contexts:
        quality["grounding"] = _mean(grounding(predictions, contexts))
    qgbench = _qgbench_scores(predictions, references, meteor)
    if bertscore_model is None:
        logger.info("BERTScore skipped: pass a local model folder to compute it.")
    return {
        "num_predictions": len(predictions),
        "qgbench": qgbench,
        "korean": korean,
        "quality": quality,
        "bertscore": None if bertscore_model is None else bertscore(predictions, references, bertscore_model),
    }


def score_recommendations(groups: Sequence[dict]) -> dict:
    """Score N generated questions per paragraph against all of that paragraph's gold questions.

    A group is {"context": str, "generated": [questions], "references": [gold questions]}. Returns:
    - best_match: for chrf and bleu_morpheme (sentence level), "precision" = mean over generated questions of the
      best score against any gold question, "recall" = mean over gold questions of the best score of any
      generated question (generated question always the hypothesis);
    - coverage: share of gold questions whose best chrF reaches COVERAGE_CHRF;
    - distinct1/distinct2 (morphemes, within each paragraph, mean over paragraphs), self_bleu (each generated
      question against the others of its paragraph, mean over questions of paragraphs with 2+), near_duplicate_rate
      (generated questions that `qg.quality.is_near_duplicate` an earlier one of the same paragraph), grounding,
      degenerate_rate and its reasons.
    """
    if not groups:
        raise ValueError("nothing to score: no groups")
    for i, group in enumerate(groups):
        if not group["generated"] or not group["references"]:
            raise ValueError(f"group {i}: needs at least one generated and one gold question")
    chrf_precision, chrf_recall, bleu_precision, bleu_recall = [], [], [], []
    distinct1, distinct2, self_bleus, near_duplicates = [], [], [], 0
    for group in groups:
        generated, references = group["generated"], group["references"]
        precision, recall = best_match(generated, references, sentence_chrf)
        chrf_precision += precision
        chrf_recall += recall
        precision, recall = best_match(generated, references, lambda g, r: sentence_bleu_morpheme(g, [r]))
        bleu_precision += precision
        bleu_recall += recall
        distinct1.append(distinct_n(generated, 1))
        distinct2.append(distinct_n(generated, 2))
        self_bleus += self_bleu(generated)
        near_duplicates += sum(is_near_duplicate(q, generated[:i]) for i, q in enumerate(generated))
    questions = [q for g in groups for q in g["generated"]]
    contexts = [g["context"] for g in groups for _ in g["generated"]]
    return {
        "num_groups": len(groups),
        "num_generated": len(questions),
        "num_references": len(chrf_recall),
        "best_match": {
            "chrf": {"precision": _mean(chrf_precision), "recall": _mean(chrf_recall)},
            "bleu_morpheme": {"precision": _mean(bleu_precision), "recall": _mean(bleu_recall)},
        },
        "coverage": 100 * sum(score >= COVERAGE_CHRF for score in chrf_recall) / len(chrf_recall),
        "distinct1": _mean([d for d in distinct1 if d is not None]),
        "distinct2": _mean([d for d in distinct2 if d is not None]),
        "self_bleu": _mean(self_bleus),
        "near_duplicate_rate": 100 * near_duplicates / len(questions),
        "grounding": _mean(grounding(questions, contexts)),
        **_degenerate(questions, contexts),
    }
