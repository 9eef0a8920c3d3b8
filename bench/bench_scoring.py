"""Scoring speed of qg.metrics on the 5,774 real KorQuAD 1.0 dev questions (target: under 30 s).

    python bench/bench_scoring.py        # reads ../shared/data/korquad/KorQuAD_v1.0_dev.json, or $QG_SHARED_DIR

Each prediction is its gold question with one word dropped (fixed seed), scored against that gold question with
the paragraph as context. Every run starts cold (Kiwi, MeCab and the METEOR jar loaded again), as a fresh
evaluate_qg.py run would.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import time
from pathlib import Path

from qg.eval import metrics

REPO = Path(__file__).resolve().parents[1]
DEV_JSON = Path(os.environ.get("QG_SHARED_DIR", REPO.parent / "shared")) / "data/korquad/KorQuAD_v1.0_dev.json"
TARGET_SECONDS = 30.0


def load_paragraphs(path: Path) -> list[tuple[str, list[str]]]:
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    return [(p["context"], [qa["question"] for qa in p["qas"]]) for a in articles for p in a["paragraphs"] if p["qas"]]


def drop_one_word(question: str, rng: random.Random) -> str:
    words = question.split()
    if len(words) < 2:
        return question
    del words[rng.randrange(len(words))]
    return " ".join(words)


def reset_caches() -> None:
    """Forget the loaded analysers so that each measurement pays their start-up, like a new process."""
    for cached in (metrics._meteor_jar, metrics._kiwi, metrics._corpus_bleu_morpheme, metrics._sentence_bleu_morpheme,
                   metrics._chrf):
        cached.cache_clear()


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the METEOR jar)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(function, *args):
    """(result, wall seconds, CPU seconds); CPU time is what to compare when other jobs share the machine."""
    reset_caches()
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    result = function(*args)
    wall = time.perf_counter() - start_wall
    reset_caches()  # stops the METEOR jar, so that its CPU time is counted
    return result, wall, cpu_seconds() - start_cpu


def main() -> None:
    if not DEV_JSON.exists():
        sys.exit(f"{DEV_JSON} is absent: set QG_SHARED_DIR to the folder holding the shared material")
    rng = random.Random(0)
    paragraphs = load_paragraphs(DEV_JSON)
    records = [
        {"prediction": drop_one_word(q, rng), "references": [q], "context": context}
        for context, questions in paragraphs for q in questions
    ]
    predictions = [r["prediction"] for r in records]
    references = [r["references"] for r in records]
    contexts = [r["context"] for r in records]

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    scores, total, total_cpu = timed(metrics.score_predictions, records)
    print(f"score_predictions: {len(records)} predictions in {total:.1f} s = {len(records) / total:.0f} predictions/s, "
          f"{total_cpu:.1f} CPU s (target < {TARGET_SECONDS:.0f} s: {'met' if total < TARGET_SECONDS else 'MISSED'})")
    print(json.dumps(scores, ensure_ascii=False, indent=1))

    parts = {
        "qgbench (BLEU, ROUGE-L, METEOR jar)": (metrics.qgbench_scores, predictions, references),
        "korean (morpheme BLEU, chrF)": (metrics.korean_scores, predictions, references),
        "degenerate rate (qg.quality)": (metrics._degenerate, predictions, contexts),
        "distinct-1/2": (lambda p: (metrics.distinct_n(p, 1), metrics.distinct_n(p, 2)), predictions),
        "grounding (Kiwi)": (metrics.grounding, predictions, contexts),
    }
    sequential = 0.0
    print("\nper metric, each cold, one after the other:")
    for name, (function, *args) in parts.items():
        _, seconds, cpu = timed(function, *args)
        sequential += seconds
        print(f"  {name:40s} {seconds:6.2f} s  {cpu:6.2f} CPU s")
    print(f"baseline (metrics one after the other) vs ours (score_predictions, METEOR jar loading meanwhile): "
          f"{sequential:.1f} s vs {total:.1f} s = {sequential / total:.2f}x")

    groups = [
        {"context": context, "generated": [drop_one_word(q, rng) for q in questions], "references": questions}
        for context, questions in paragraphs
    ]
    recommendation_scores, seconds, cpu = timed(metrics.score_recommendations, groups)
    generated = sum(len(g["generated"]) for g in groups)
    print(f"\nscore_recommendations: {len(groups)} paragraphs, {generated} generated questions in {seconds:.1f} s "
          f"= {generated / seconds:.0f} questions/s, {cpu:.1f} CPU s")
    print(json.dumps(recommendation_scores, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
