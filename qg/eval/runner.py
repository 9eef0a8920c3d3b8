"""Evaluate a question generator: automatic metrics (QG-Bench-comparable and Korean-aware) plus qualitative samples.

    qg-evaluate --model outputs/demo/adapter --dataset outputs/demo/dataset --split test \
        --output-dir outputs/demo/eval --compare-base                      # agnostic: 5 questions per paragraph
    qg-evaluate --model ORG/exaone-3.5-2.4b-korquad-qg-lora --dataset ORG/korquad-qg \
        --mode answer-aware --output-dir outputs/eval-qgbench               # QG-Bench's setting
    qg-evaluate --predictions preds.jsonl --output-dir outputs/scored   # score existing predictions

Writes OUT/metrics.json (every score, 0-100) and OUT/after_outputs.json (per paragraph: input, expected_output,
model_output, and base_output with --compare-base). An interrupted run resumes from OUT/predictions.jsonl.

Evaluation runs: generate for a dataset split, score with `qg.metrics`, write metrics.json and after_outputs.json.

Two modes, as the model is used:
- agnostic (the product): N questions per paragraph, scored against all gold questions of the paragraph
  (`score_recommendations`);
- answer-aware (QG-Bench's setting): one greedy question per (paragraph, answer), scored with QG-Bench's protocol
  (`group_by_sentence` + `score_predictions`), so our BLEU-4 / ROUGE-L / METEOR sit next to its Korean table.

Generations are appended to `predictions.jsonl` paragraph by paragraph, so an interrupted run resumes where it
stopped; the run settings are kept in `run.json` and a resume with other settings is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from qg.cli import UserError, command
from qg.data.build import load_qg_dataset
from qg.eval.metrics import QGBENCH_KO_MT5_BASE, group_by_sentence, score_predictions, score_recommendations
from qg.io import adapter_sha256, atomic_write_json

_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+")


@dataclass
class EvalSettings:
    model: str
    base: str | None
    dataset: str
    split: str
    mode: str
    num_questions: int
    max_samples: int | None
    compare_base: bool
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    batch_size: int


def answer_sentence(context: str, answer_start: int) -> str:
    """The sentence of `context` that holds the character at `answer_start` (QG-Bench groups answers by it)."""
    start = 0
    for match in _SENTENCE_END.finditer(context):
        if match.start() > answer_start:
            return context[start:match.start()]
        start = match.end()
    return context[start:]


def dataset_revision(name_or_path: str) -> str | None:
    """A fingerprint of the data scored: the Hub commit for a Hub id, a hash of the parquet files for a folder."""
    path = Path(name_or_path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(path.glob("data/**/*.parquet")):
            digest.update(file.read_bytes())
        return f"sha256:{digest.hexdigest()[:16]}"
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name_or_path).sha
    except Exception:  # noqa: BLE001 - the revision is informative; the scores stand without it
        return None


def _paragraphs(settings: EvalSettings) -> list[dict]:
    """Paragraph records to generate for: id, context, gold questions, and (answer-aware) one entry per answer."""
    rows = load_qg_dataset(settings.dataset, "default")
    if settings.split not in rows:
        raise UserError(f"dataset {settings.dataset} has no split {settings.split!r}: it has {', '.join(rows)}")
    rows = rows[settings.split]
    if settings.max_samples:
        rows = rows.select(range(min(settings.max_samples, len(rows))))
    paragraphs = []
    for row in rows:
        record = {"id": row["id"], "context": row["context"], "questions": row["questions"]}
        if settings.mode == "answer-aware":
            record["answers"] = [a["text"] for a in row["answers"]]
            record["sentences"] = [answer_sentence(row["context"], a["answer_start"]) for a in row["answers"]]
        paragraphs.append(record)
    return paragraphs


def _generate(generator, paragraphs: list[dict], settings: EvalSettings) -> list[list[str]]:
    """Questions per paragraph: N sampled (agnostic), or one greedy question per answer (answer-aware)."""
    if settings.mode == "agnostic":
        results = generator.generate([p["context"] for p in paragraphs], num_questions=settings.num_questions,
                                     temperature=settings.temperature, top_p=settings.top_p,
                                     max_new_tokens=settings.max_new_tokens, seed=settings.seed,
                                     batch_size=settings.batch_size)
        return [r.questions for r in results]
    contexts = [p["context"] for p in paragraphs for _ in p["answers"]]
    answers = [a for p in paragraphs for a in p["answers"]]
    results = generator.generate(contexts, num_questions=1, answers=answers, temperature=0.0,
                                 max_new_tokens=settings.max_new_tokens, seed=settings.seed,
                                 batch_size=settings.batch_size, max_rounds=1)
    flat = [r.questions[0] if r.questions else "" for r in results]
    out, i = [], 0
    for p in paragraphs:
        out.append(flat[i:i + len(p["answers"])])
        i += len(p["answers"])
    return out


def _load_done(path: Path) -> dict[str, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by the interruption: that paragraph is generated again
            done[record["id"]] = record
    return done


def generate_predictions(settings: EvalSettings, output_dir: Path, load_generator) -> list[dict]:
    """Generate (or resume) every paragraph's questions; returns the records of `predictions.jsonl`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    run_file = output_dir / "run.json"
    if run_file.is_file() and json.loads(run_file.read_text()) != asdict(settings):
        raise UserError(f"{output_dir} holds an evaluation with other settings; choose another --output-dir")
    atomic_write_json(run_file, asdict(settings))
    paragraphs = _paragraphs(settings)
    predictions_file = output_dir / "predictions.jsonl"
    done = _load_done(predictions_file)
    todo = [p for p in paragraphs if p["id"] not in done]
    if done:
        # Rewrite without a possibly cut last line before appending.
        predictions_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done.values()),
                                    encoding="utf-8")
    if todo:
        generators = {"model": load_generator(settings.model, settings.base)}
        if settings.compare_base:
            generators["base"] = load_generator(generators["model"].base_name, None)
        with open(predictions_file, "a", encoding="utf-8") as out, tqdm(total=len(paragraphs), initial=len(done),
                                                                         desc="generating", unit="paragraph") as bar:
            for start in range(0, len(todo), settings.batch_size):
                chunk = todo[start:start + settings.batch_size]
                outputs = {name: _generate(g, chunk, settings) for name, g in generators.items()}
                for i, paragraph in enumerate(chunk):
                    record = {**paragraph, "model_output": outputs["model"][i]}
                    if "base" in outputs:
                        record["base_output"] = outputs["base"][i]
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    done[paragraph["id"]] = record
                out.flush()
                bar.update(len(chunk))
    return [done[p["id"]] for p in paragraphs]


def score_records(records: list[dict], mode: str, output: str, bertscore_model: str | None = None) -> dict:
    """Scores of the `output` key ("model_output" or "base_output") of generated paragraph records."""
    if mode == "agnostic":
        groups = [{"context": r["context"], "generated": r[output], "references": r["questions"]}
                  for r in records if r[output]]
        return {"recommendation": score_recommendations(groups) if groups else None,
                "paragraphs_without_questions": len(records) - len(groups)}
    predictions = [q for r in records for q in r[output]]
    golds = [q for r in records for q in r["questions"]]
    sentences = [s for r in records for s in r["sentences"]]
    contexts = {s.strip().lower(): r["context"] for r in records for s in r["sentences"]}
    grouped = group_by_sentence(predictions, golds, sentences)
    for record, sentence in zip(grouped, dict.fromkeys(s.strip().lower() for s in sentences)):
        record["context"] = contexts[sentence]
    return score_predictions(grouped, bertscore_model=bertscore_model)


def after_outputs(records: list[dict]) -> list[dict]:
    """One record per paragraph for reading: the input, the gold questions, and what the model(s) wrote."""
    out = []
    for r in records:
        item = {"id": r["id"], "input": r["context"], "expected_output": r["questions"], "model_output": r["model_output"]}
        if "answers" in r:
            item["answers"] = r["answers"]
        if "base_output" in r:
            item["base_output"] = r["base_output"]
        out.append(item)
    return out


def write_results(output_dir: Path, metrics: dict, records: list[dict]) -> None:
    atomic_write_json(output_dir / "after_outputs.json", after_outputs(records))
    atomic_write_json(output_dir / "metrics.json", metrics)


def evaluate(settings: EvalSettings, output_dir: Path, bertscore_model: str | None = None) -> dict:
    """Generate, score and write `metrics.json` + `after_outputs.json` for a model on a dataset split."""
    from qg.generate import QuestionGenerator

    generator_info = {}

    def load_generator(model: str, base: str | None):
        generator = QuestionGenerator.from_pretrained(model, base=base)
        generator_info.setdefault("base_model", generator.base_name)
        return generator

    records = generate_predictions(settings, output_dir, load_generator)
    metrics = {
        "model": settings.model,
        "adapter_sha256": adapter_sha256(settings.model),
        "base_model": generator_info.get("base_model", settings.base),
        "dataset": settings.dataset,
        "dataset_revision": dataset_revision(settings.dataset),
        "split": settings.split,
        "mode": settings.mode,
        "tokenization": {"qgbench": "whitespace, lmqg hypothesis normalisation", "bleu_morpheme": "ko-mecab",
                         "distinct": "mecab-ko morphemes", "grounding": "kiwipiepy content lemmas"},
        "decoding": ({"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p,
                      "num_questions": settings.num_questions} if settings.mode == "agnostic" else
                     {"do_sample": False, "num_questions": 1}) | {"max_new_tokens": settings.max_new_tokens},
        "seed": settings.seed,
        "counts": {"paragraphs": len(records), "gold_questions": sum(len(r["questions"]) for r in records),
                   "generated_questions": sum(len(r["model_output"]) for r in records)},
        **score_records(records, settings.mode, "model_output", bertscore_model),
        "qgbench_reference": {"model": "lmqg/mt5-base-koquad", **QGBENCH_KO_MT5_BASE},
    }
    if settings.compare_base:
        metrics["base"] = score_records(records, settings.mode, "base_output", bertscore_model)
    write_results(output_dir, metrics, records)
    return metrics


def read_prediction_records(path: Path) -> list[dict]:
    """`{"prediction": str, "references": [str, ...], "context"?: str}` per line; a bad line is a `UserError`."""
    if not path.is_file():
        raise UserError(f"predictions file {path} not found")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not JSON ({err.msg})") from None
        if not (isinstance(record, dict) and isinstance(record.get("prediction"), str)
                and isinstance(record.get("references"), list) and record["references"]
                and all(isinstance(r, str) for r in record["references"])):
            raise UserError(f'{path}:{number}: expected {{"prediction": str, "references": [str, ...]}}')
        records.append(record)
    if not records:
        raise UserError(f"{path} holds no predictions")
    return records


def score_prediction_file(path: Path, output_dir: Path, bertscore_model: str | None = None) -> dict:
    records = read_prediction_records(path)
    metrics = {"predictions": str(path), "mode": "predictions", "counts": {"predictions": len(records)},
               **score_predictions(records, bertscore_model=bertscore_model),
               "qgbench_reference": {"model": "lmqg/mt5-base-koquad", **QGBENCH_KO_MT5_BASE}}
    paragraphs = [{"id": str(i), "context": r.get("context", ""), "questions": r["references"],
                   "model_output": [r["prediction"]]} for i, r in enumerate(records)]
    write_results(output_dir, metrics, paragraphs)
    return metrics


# ----------------------------------------------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="LoRA adapter folder or Hub id (base from its adapter_config.json), or a "
                                        "plain model (folder, Hub id, or tiny-random-exaone).")
    source.add_argument("--predictions", type=Path, metavar="FILE.jsonl",
                        help='Score existing predictions instead: one {"prediction": str, "references": [str, ...],'
                             ' "context": str (optional)} per line. No model is loaded.')
    parser.add_argument("--base", help="Base model for the adapter, overriding its adapter_config.json.")
    parser.add_argument("--dataset", help="Dataset built by hub_dataset/build_dataset.py (folder or Hub id).")
    parser.add_argument("--split", default="test", help="Split to evaluate (default: test, the official dev set).")
    parser.add_argument("--output-dir", type=Path, required=True, help="Where metrics.json and after_outputs.json go.")
    parser.add_argument("--mode", choices=["agnostic", "answer-aware"], default="agnostic",
                        help="agnostic: N sampled questions per paragraph vs all its gold questions (the product). "
                             "answer-aware: one greedy question per answer, QG-Bench's protocol.")
    parser.add_argument("--num-questions", type=int, default=5, help="Questions per paragraph (agnostic; default 5).")
    parser.add_argument("--max-samples", type=int, help="Evaluate only the first N paragraphs of the split.")
    parser.add_argument("--compare-base", action="store_true",
                        help="Also generate with the base model alone and score it (before/after).")
    parser.add_argument("--temperature", type=float, default=0.8, help="Sampling temperature (agnostic; default 0.8).")
    parser.add_argument("--top-p", type=float, default=0.95, help="Nucleus sampling top-p (agnostic; default 0.95).")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="Longest question in tokens (default 64).")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed (default 0).")
    parser.add_argument("--batch-size", type=int, default=8, help="Paragraphs generated together (default 8).")
    parser.add_argument("--bertscore-model", help="Local model folder for BERTScore (skipped without it).")
    args = parser.parse_args(argv)
    if args.model and not args.dataset:
        raise UserError("--model needs --dataset (a folder built by hub_dataset/build_dataset.py, or a Hub id)")
    for name in ("num_questions", "max_samples", "max_new_tokens", "batch_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    return args


@command
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.predictions:
        metrics = score_prediction_file(args.predictions, args.output_dir, args.bertscore_model)
    else:
        settings = EvalSettings(
            model=args.model, base=args.base, dataset=args.dataset, split=args.split, mode=args.mode,
            num_questions=args.num_questions, max_samples=args.max_samples, compare_base=args.compare_base,
            temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed,
            batch_size=args.batch_size)
        metrics = evaluate(settings, args.output_dir, args.bertscore_model)
    headline = metrics.get("qgbench") or (metrics.get("recommendation") or {}).get("best_match")
    print(f"scores: {headline}")
    print(f"wrote {args.output_dir / 'metrics.json'} and {args.output_dir / 'after_outputs.json'}")


if __name__ == "__main__":
    main()
