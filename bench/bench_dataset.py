"""Wall time of `hub_dataset/build_dataset.py`, the real command, on the real KorQuAD 1.0 dev set.

    python bench/bench_dataset.py

The train set is not in ../shared, so the train file is the dev set's articles copied under new titles and with
marked paragraphs (nothing overlaps the dev set, so nothing is dropped as a leak). Two builds:
1. dev-sized train file + dev set: questions per second, and the full KorQuAD 1.0 (66,181 questions) scaled from it;
2. a train file as large as the official one (60,407 questions) + dev set: the full size, measured.
Target: the whole KorQuAD 1.0 builds in under 15 seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import cycle
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QG_SHARED_DIR", REPO.parent / "shared"))
DEV_JSON = SHARED / "data/korquad/KorQuAD_v1.0_dev.json"
OFFICIAL_TRAIN_QUESTIONS = 60_407
OFFICIAL_DEV_QUESTIONS = 5_774
TARGET_S = 15.0


def copied_train_set(dev: dict, questions: int) -> dict:
    """Dev articles cycled under new titles, each paragraph prefixed (answers shifted) until `questions` are in."""
    articles, total = [], 0
    for copy, article in enumerate(cycle(dev["data"])):
        if total >= questions:
            break
        marker = f"[copy {copy}] "
        paragraphs = [{
            "context": marker + p["context"],
            "qas": [{**qa, "id": f"{qa['id']}-copy{copy}",
                     "answers": [{**a, "answer_start": a["answer_start"] + len(marker)} for a in qa["answers"]]}
                    for qa in p["qas"]],
        } for p in article["paragraphs"]]
        articles.append({"title": f"{article['title']} (copy {copy})", "paragraphs": paragraphs})
        total += sum(len(p["qas"]) for p in paragraphs)
    return {"version": "bench", "data": articles}


def timed_build(train_json: Path, output_dir: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "hub_dataset/build_dataset.py"), "--train-json", str(train_json),
                    "--dev-json", str(DEV_JSON), "--output-dir", str(output_dir)], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    if not DEV_JSON.exists():
        sys.exit(f"skipped: {DEV_JSON} is absent (set QG_SHARED_DIR to the folder holding the shared material)")
    dev = json.loads(DEV_JSON.read_text(encoding="utf-8"))
    dev_questions = sum(len(p["qas"]) for a in dev["data"] for p in a["paragraphs"])
    full = OFFICIAL_TRAIN_QUESTIONS + OFFICIAL_DEV_QUESTIONS
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = []
        for name, train_questions in [("dev-sized", dev_questions), ("full-sized", OFFICIAL_TRAIN_QUESTIONS)]:
            train = copied_train_set(dev, train_questions)
            train_json = tmp / f"{name}-train.json"
            train_json.write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
            questions = dev_questions + sum(len(p["qas"]) for a in train["data"] for p in a["paragraphs"])
            timed_build(train_json, tmp / "warm-up")  # first run pays the cold file cache and imports
            seconds = min(timed_build(train_json, tmp / name) for _ in range(3))
            results.append((name, questions, seconds))
    print(f"build_dataset.py, best of 3 runs, {os.cpu_count()} CPUs (whole command: start-up, parse, write)")
    for name, questions, seconds in results:
        print(f"  {name:>10} train + real dev: {questions:>6,} questions in {seconds:5.2f} s "
              f"= {questions / seconds:,.0f} questions/s")
    name, questions, seconds = results[0]
    print(f"  full KorQuAD 1.0 ({full:,} questions) scaled linearly from the dev-sized build: "
          f"{seconds * full / questions:.1f} s (start-up scaled too: an overestimate)")
    measured = results[1][2]
    print(f"  full-sized build measured: {measured:.2f} s, target < {TARGET_S:.0f} s: "
          f"{'met' if measured < TARGET_S else 'MISSED'}")


if __name__ == "__main__":
    main()
