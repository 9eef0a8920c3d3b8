"""Evaluate a question generator: automatic metrics (QG-Bench-comparable and Korean-aware) plus qualitative samples.

    python evaluate_qg.py --model outputs/demo/adapter --dataset outputs/demo/dataset --split test \
        --output-dir outputs/demo/eval --compare-base                      # agnostic: 5 questions per paragraph
    python evaluate_qg.py --model ORG/exaone-3.5-2.4b-korquad-qg-lora --dataset ORG/korquad-qg \
        --mode answer-aware --output-dir outputs/eval-qgbench               # QG-Bench's setting
    python evaluate_qg.py --predictions preds.jsonl --output-dir outputs/scored   # score existing predictions

Writes OUT/metrics.json (every score, 0-100) and OUT/after_outputs.json (per paragraph: input, expected_output,
model_output, and base_output with --compare-base). An interrupted run resumes from OUT/predictions.jsonl.
"""

import argparse
from pathlib import Path

from qg.cli import UserError, run


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


def main() -> None:
    args = parse_args()
    from qg.evaluation import EvalSettings, evaluate, score_prediction_file

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
    run(main)
