"""Build the Korean question-generation dataset from KorQuAD 1.0: two configs and a dataset card, optionally pushed.

    # the bundled sample (what `make demo` and the CPU recipes train on)
    python hub_dataset/build_dataset.py --train-json hub_dataset/sample/train.json \\
        --dev-json hub_dataset/sample/dev.json --output-dir outputs/sample-dataset

    # the whole KorQuAD 1.0 from the Hub (KorQuAD/squad_kor_v1), pushed to your namespace
    python hub_dataset/build_dataset.py --output-dir outputs/korquad-qg --push-to-hub ORG/korquad-qg

    # the official files from https://korquad.github.io, 1,000 training questions as in the original experiment
    python hub_dataset/build_dataset.py --train-json KorQuAD_v1.0_train.json --dev-json KorQuAD_v1.0_dev.json \\
        --output-dir outputs/korquad-qg-1k --max-train-samples 1000

The output folder loads with `qg.data.load_qg_dataset(DIR)` (config `pairs`, one row per question, as training
reads it) and, as on the Hub, with `datasets.load_dataset(DIR)` (config `default`, one row per paragraph) or
`datasets.load_dataset(DIR, "pairs")`. datasets caches a local folder by its README alone: after rebuilding into
the same folder, `datasets.load_dataset(DIR)` can return the previous build's rows; `load_qg_dataset` cannot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qg.cli import run
from qg.data import (
    KORQUAD_HUB_ID,
    build_qg_dataset,
    hub_token,
    load_korquad_from_hub,
    misaligned_warning,
    push_qg_dataset,
    read_korquad_json,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--train-json", type=Path, metavar="PATH",
                        help="KorQuAD 1.0 train file (SQuAD v1.1 JSON). With --dev-json; without both, the "
                             f"builder loads {KORQUAD_HUB_ID} from the Hub.")
    parser.add_argument("--dev-json", type=Path, metavar="PATH",
                        help="KorQuAD 1.0 dev file (SQuAD v1.1 JSON): becomes the test split.")
    parser.add_argument("--output-dir", type=Path, required=True, metavar="DIR",
                        help="Folder to write (README.md + data/). Built next to it and renamed at the end; a "
                             "previous build there is replaced, any other existing folder is refused.")
    parser.add_argument("--validation-fraction", type=_fraction, default=0.05, metavar="F",
                        help="Fraction of the train set's articles (titles) that become the validation split, "
                             "rounded up: at least one article, and train must keep at least one (default 0.05).")
    parser.add_argument("--max-train-samples", type=_positive_int, metavar="N",
                        help="Keep at most N train questions, as whole paragraphs: paragraphs are visited in an "
                             "order shuffled with --seed and each is taken when the total stays at most N, so "
                             "every paragraph left out would overshoot N (on KorQuAD the total is N exactly; the "
                             "original experiment used 140, then 1000). Validation and test are never limited. "
                             "Default: all.")
    parser.add_argument("--seed", type=int, default=0,
                        help="Seed for drawing the validation articles and the --max-train-samples paragraphs.")
    parser.add_argument("--strict", action="store_true",
                        help="Fail when an answer_start does not point at its answer text, instead of moving it "
                             "to the nearest occurrence of the text in the paragraph (or dropping the question "
                             "when there is none).")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME",
                        help="After building, push both configs and the card to this Hub dataset repo (needs a "
                             "token: `hf auth login` or HF_TOKEN). Without it nothing touches the network.")
    parser.add_argument("--private", action="store_true", help="Create the --push-to-hub repo as private.")
    args = parser.parse_args(argv)
    if (args.train_json is None) != (args.dev_json is None):
        parser.error("--train-json and --dev-json go together (neither: load KorQuAD from the Hub)")
    if args.private and not args.push_to_hub:
        parser.error("--private only applies with --push-to-hub")
    return args


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    token = hub_token() if args.push_to_hub else None  # before any work: a missing token fails at once
    if args.train_json is not None:
        train, dev = read_korquad_json(args.train_json), read_korquad_json(args.dev_json)
    else:
        train, dev = load_korquad_from_hub()
    build = build_qg_dataset(train, dev, args.output_dir, validation_fraction=args.validation_fraction,
                             max_train_samples=args.max_train_samples, seed=args.seed, strict=args.strict,
                             hub_repo_id=args.push_to_hub)
    for report in build.reports.values():
        if warning := misaligned_warning(report):
            print(f"warning: {warning}", file=sys.stderr)
    sizes = ", ".join(f"{split} {len(paragraphs):,} paragraphs / {sum(len(p.questions) for p in paragraphs):,} "
                      f"questions" for split, paragraphs in build.splits.items())
    print(f"wrote {args.output_dir}: {sizes}")
    if args.push_to_hub:
        push_qg_dataset(args.output_dir, args.push_to_hub, private=args.private, token=token)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")


if __name__ == "__main__":
    run(main)
