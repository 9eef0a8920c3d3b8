"""Evaluate a question generator: automatic metrics (QG-Bench-comparable and Korean-aware) plus qualitative samples.

    qg-evaluate --model outputs/demo/adapter --dataset outputs/demo/dataset --split test \
        --output-dir outputs/demo/eval --compare-base                      # agnostic: 5 questions per paragraph
    qg-evaluate --model ORG/exaone-3.5-2.4b-korquad-qg-lora --dataset ORG/korquad-qg \
        --mode answer-aware --output-dir outputs/eval-qgbench               # QG-Bench's setting
    qg-evaluate --config configs/eval-qgbench.yaml --model ORG/exaone-3.5-2.4b-korquad-qg-lora \
        --dataset ORG/korquad-qg --output-dir outputs/eval-qgbench          # the same, from a recipe
    qg-evaluate --predictions preds.jsonl --output-dir outputs/scored   # score existing predictions

Writes OUT/metrics.json (every score, 0-100) and OUT/after_outputs.json (per paragraph: input, expected_output,
model_output, and base_output with --compare-base). An interrupted run resumes from OUT/predictions.jsonl.

Evaluation runs: generate for a dataset split, score with `qg.metrics`, write metrics.json and after_outputs.json.

Two modes, as the model is used:
- agnostic (the product): N questions per paragraph, scored against all gold questions of the paragraph
  (`score_recommendations`);
- answer-aware (QG-Bench's setting): one greedy question per (paragraph, answer), scored with QG-Bench's protocol
  (`group_by_sentence` + `score_predictions`), so our BLEU-4 / ROUGE-L / METEOR sit next to its Korean table.

Generations are appended to `predictions.jsonl` batch by batch, so an interrupted run resumes where it stopped,
with the very questions an uninterrupted run writes (batches are fixed slices of the split, each with its own
seed); the run settings are kept in `run.json` and a resume with other settings is refused. Settings are an
`EvalConfig` (qg/eval/config.py): a YAML recipe (`--config`) and flags, checked before anything is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from qg.cli import UserError, command
from qg.config import parse_config
from qg.data.build import load_qg_dataset
from qg.eval.config import OUTPUT_ONLY_FIELDS, EvalConfig
from qg.eval.metrics import QGBENCH_KO_MT5_BASE, group_by_sentence, score_predictions, score_recommendations
from qg.io import adapter_sha256, atomic_write_json, atomic_write_text, folder_lock, is_hub_id
from qg.models.tiny import TINY_MODEL
from qg.text import sentence_spans


def answer_sentence(context: str, answer_start: int) -> str:
    """The sentence of `context` that holds the character at `answer_start` (QG-Bench groups answers by it)."""
    return next((context[start:end] for start, end in sentence_spans(context) if end > answer_start), "")


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


# ------------------------------------------------------------------------------------------------ checks first


def check_config(config: EvalConfig) -> None:
    """Refuse every mistake in `config` that can be seen without loading a model or the data: one line each."""
    if (config.model is None) == (config.predictions is None):
        raise UserError("give --model (with --dataset) to generate and score, or --predictions to score a file")
    if config.output_dir is None:
        raise UserError("--output-dir is required: the folder metrics.json and after_outputs.json go to")
    if config.bertscore_model is not None and not Path(config.bertscore_model).is_dir():
        raise UserError(f"--bertscore-model {config.bertscore_model}: no such folder (BERTScore reads a local model "
                        "folder)")
    if config.predictions is not None:
        return
    if config.dataset is None:
        raise UserError("--model needs --dataset (a folder built by hub_dataset/build_dataset.py, or a Hub id)")
    for flag, name in (("--model", config.model), ("--base", config.base)):
        if name is not None and name != TINY_MODEL and not Path(name).expanduser().exists() and not is_hub_id(name):
            raise UserError(f"{flag} {name}: no such folder, and not a Hub id (OWNER/NAME)")
    if config.base is not None and Path(config.model).is_dir() and not (Path(config.model) / "adapter_config.json"
                                                                         ).is_file():
        raise UserError(f"{config.model} is not a peft adapter (no adapter_config.json), so --base has no use")
    for name in ("num_questions", "max_new_tokens", "batch_size", "max_samples"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not (math.isfinite(config.temperature) and config.temperature >= 0):
        raise UserError(f"--temperature must be a number >= 0 (0 decodes greedily), got {config.temperature}")
    if not (0 < config.top_p <= 1):  # also refuses nan, which compares false with everything
        raise UserError(f"--top-p must be in (0, 1], got {config.top_p}")


def load_paragraphs(config: EvalConfig) -> list[dict]:
    """Paragraph records to generate for: id, context, gold questions, and (answer-aware) one entry per answer."""
    rows = load_qg_dataset(config.dataset, "default")
    if config.split not in rows:
        raise UserError(f"dataset {config.dataset} has no split {config.split!r}: it has {', '.join(rows)}")
    rows = rows[config.split]
    if config.max_samples:
        rows = rows.select(range(min(config.max_samples, len(rows))))
    paragraphs = []
    for row in rows:
        record = {"id": row["id"], "context": row["context"], "questions": row["questions"]}
        if config.mode == "answer-aware":
            record["answers"] = [a["text"] for a in row["answers"]]
            record["sentences"] = [answer_sentence(row["context"], a["answer_start"]) for a in row["answers"]]
        paragraphs.append(record)
    return paragraphs


# ---------------------------------------------------------------------------------------------------- generating


def batch_seed(seed: int, batch_index: int) -> int:
    """The sampling seed of batch `batch_index`: fixed by the batch alone, so a resumed run draws what an
    uninterrupted one does, and independent across batches (numpy's SeedSequence mixes both numbers)."""
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1)[0])


def _generate(generator, paragraphs: list[dict], config: EvalConfig, seed: int) -> tuple[list[list[str]], list[bool]]:
    """Questions per paragraph, N sampled (agnostic) or one greedy question per answer (answer-aware), and whether
    each paragraph was cut to the token budget."""
    if config.mode == "agnostic":
        results = generator.generate([p["context"] for p in paragraphs], num_questions=config.num_questions,
                                     temperature=config.temperature, top_p=config.top_p,
                                     max_new_tokens=config.max_new_tokens, seed=seed, batch_size=config.batch_size)
        return [r.questions for r in results], [r.truncated for r in results]
    contexts = [p["context"] for p in paragraphs for _ in p["answers"]]
    answers = [a for p in paragraphs for a in p["answers"]]
    results = iter(generator.generate(contexts, num_questions=1, answers=answers, temperature=0.0,
                                      max_new_tokens=config.max_new_tokens, seed=seed, batch_size=config.batch_size,
                                      max_rounds=1))
    questions, truncated = [], []
    for p in paragraphs:
        mine = [next(results) for _ in p["answers"]]
        questions.append([r.questions[0] if r.questions else "" for r in mine])
        truncated.append(any(r.truncated for r in mine))
    return questions, truncated


def read_predictions(path: Path, paragraphs: list[dict], compare_base: bool) -> list[dict]:
    """The whole records of `predictions.jsonl`, paragraph by paragraph from the first: a line cut by an
    interruption (even inside a character), or one for another paragraph, ends them."""
    if not path.is_file():
        return []
    keys = {"id", "model_output", "truncated"} | ({"base_output"} if compare_base else set())
    records = []
    for line, paragraph in zip(path.read_bytes().split(b"\n"), paragraphs):
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            break
        if not (isinstance(record, dict) and keys <= record.keys() and record["id"] == paragraph["id"]):
            break
        records.append(record)
    return records


def run_settings(config: EvalConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in OUTPUT_ONLY_FIELDS}


def generate_predictions(config: EvalConfig, paragraphs: list[dict], load_generator) -> list[dict]:
    """Generate (or resume) every paragraph's questions; returns the records of `predictions.jsonl`.

    Batches are fixed slices of the split (paragraphs [k * batch_size, (k + 1) * batch_size)) sampled from
    `batch_seed(seed, k)`; a resumed run starts again at the batch holding the first missing paragraph, so it
    writes what an uninterrupted run would. run.json is written with the first predictions, after the models
    loaded: a run that failed before leaves nothing that refuses the corrected command.
    """
    output_dir = Path(config.output_dir)
    run_file, predictions_file = output_dir / "run.json", output_dir / "predictions.jsonl"
    done = read_predictions(predictions_file, paragraphs, config.compare_base)
    if done and (not run_file.is_file() or json.loads(run_file.read_text(encoding="utf-8")) != run_settings(config)):
        raise UserError(f"{output_dir} holds an evaluation with other settings; choose another --output-dir")
    if len(done) == len(paragraphs):
        return done
    size = config.batch_size
    done = done[:len(done) // size * size]  # from the start of the batch that holds the first missing paragraph
    generators = {"model": load_generator(config.model, config.base)}
    if config.compare_base:
        generators["base"] = load_generator(generators["model"].base_name, None)
    atomic_write_json(run_file, run_settings(config))
    atomic_write_text(predictions_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done))
    with open(predictions_file, "a", encoding="utf-8") as out, tqdm(total=len(paragraphs), initial=len(done),
                                                                     desc="generating", unit="paragraph") as bar:
        for start in range(len(done), len(paragraphs), size):
            batch = paragraphs[start:start + size]
            seed = batch_seed(config.seed, start // size)
            outputs = {name: _generate(g, batch, config, seed) for name, g in generators.items()}
            questions, truncated = outputs["model"]
            for i, paragraph in enumerate(batch):
                record = {**paragraph, "model_output": questions[i], "truncated": truncated[i]}
                if "base" in outputs:
                    record["base_output"] = outputs["base"][0][i]
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                done.append(record)
            out.flush()
            bar.update(len(batch))
    return done


# ---------------------------------------------------------------------------------------------- what was evaluated


def adapter_base(model: str, base: str | None) -> str | None:
    """The base model an adapter was trained on (`base` when given, else its adapter config), or None when `model`
    is not a peft adapter."""
    from peft import PeftConfig

    if model == TINY_MODEL:
        return None
    try:
        adapter_base_name = PeftConfig.from_pretrained(model).base_model_name_or_path
    except ValueError:  # peft's "Can't find 'adapter_config.json'": a merged or plain model
        return None
    return base or adapter_base_name


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


def evaluate(config: EvalConfig) -> dict:
    """Generate, score and write `metrics.json` + `after_outputs.json` for a model on a dataset split.

    Everything that can be wrong with `config`, the dataset or the split is refused before anything is written; two
    evaluations into one folder at once are refused by `qg.io.folder_lock`.
    """
    check_config(config)
    paragraphs = load_paragraphs(config)
    base = adapter_base(config.model, config.base)
    output_dir = Path(config.output_dir)

    def load_generator(model: str, base: str | None):
        from qg.generate import QuestionGenerator

        return QuestionGenerator.from_pretrained(model, base=base)

    with folder_lock(output_dir):
        records = generate_predictions(config, paragraphs, load_generator)
        metrics = {
            "model": config.model,
            "adapter_sha256": None if base is None else adapter_sha256(config.model),
            "base_model": config.model if base is None else base,
            "dataset": config.dataset,
            "dataset_revision": dataset_revision(config.dataset),
            "split": config.split,
            "mode": config.mode,
            "tokenization": {"qgbench": "whitespace, lmqg hypothesis normalisation", "bleu_morpheme": "ko-mecab",
                             "distinct": "mecab-ko morphemes", "grounding": "kiwipiepy content lemmas"},
            "decoding": ({"do_sample": True, "temperature": config.temperature, "top_p": config.top_p,
                          "num_questions": config.num_questions} if config.mode == "agnostic" else
                         {"do_sample": False, "num_questions": 1}) | {"max_new_tokens": config.max_new_tokens},
            "seed": config.seed,
            "counts": {"paragraphs": len(records), "gold_questions": sum(len(r["questions"]) for r in records),
                       "generated_questions": sum(len(r["model_output"]) for r in records),
                       "truncated_contexts": sum(r["truncated"] for r in records)},
            **score_records(records, config.mode, "model_output", config.bertscore_model),
            "qgbench_reference": {"model": "lmqg/mt5-base-koquad", **QGBENCH_KO_MT5_BASE},
        }
        if config.compare_base:
            metrics["base"] = score_records(records, config.mode, "base_output", config.bertscore_model)
        write_results(output_dir, metrics, records)
    return metrics


def read_prediction_records(path: Path) -> list[dict]:
    """`{"prediction": str, "references": [str, ...], "context"?: str}` per line; a bad line is a `UserError`."""
    if not path.is_file():
        raise UserError(f"predictions file {path} not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); save the predictions as UTF-8") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
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


def score_prediction_file(config: EvalConfig) -> dict:
    """Score `config.predictions` (no model) into `config.output_dir`; the file is checked before anything is
    written."""
    check_config(config)
    path, output_dir = Path(config.predictions), Path(config.output_dir)
    records = read_prediction_records(path)
    with folder_lock(output_dir):
        metrics = {"predictions": str(path), "mode": "predictions", "counts": {"predictions": len(records)},
                   **score_predictions(records, bertscore_model=config.bertscore_model),
                   "qgbench_reference": {"model": "lmqg/mt5-base-koquad", **QGBENCH_KO_MT5_BASE}}
        paragraphs = [{"id": str(i), "context": r.get("context", ""), "questions": r["references"],
                       "model_output": [r["prediction"]]} for i, r in enumerate(records)]
        write_results(output_dir, metrics, paragraphs)
    return metrics


# ----------------------------------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    """`--config RECIPE.yaml` plus flag overrides, as qg-train parses its recipe (`qg.config.parse_config`)."""
    config, _ = parse_config(EvalConfig, argv, description=__doc__)
    check_config(config)
    return config


@command
def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    metrics = score_prediction_file(config) if config.predictions else evaluate(config)
    headline = metrics.get("qgbench") or (metrics.get("recommendation") or {}).get("best_match")
    output_dir = Path(config.output_dir)
    print(f"scores: {headline}")
    print(f"wrote {output_dir / 'metrics.json'} and {output_dir / 'after_outputs.json'}")


if __name__ == "__main__":
    main()
