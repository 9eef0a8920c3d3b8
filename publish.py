"""Publish a trained adapter to the Hugging Face Hub: adapter + card, its Llama-format base, Space, dataset.

    # offline: write exactly what would be uploaded, one folder per repository, and DIR/manifest.json
    python publish.py --adapter outputs/demo/adapter --eval-dir outputs/demo/eval \\
        --model-repo ORG/tiny-random-exaone-korquad-qg-lora --space-repo ORG/korean-qg-demo \\
        --dataset-repo ORG/korquad-qg-sample --dataset-dir outputs/demo/dataset \\
        --offline --staging-dir outputs/demo/publish

    # the published adapter (token: `hf auth login` or HF_TOKEN); base -> ORG/EXAONE-3.5-2.4B-Instruct-llama
    python publish.py --adapter outputs/exaone-3.5-2.4b-qg-lora --eval-dir outputs/eval \\
        --model-repo ORG/exaone-3.5-2.4b-korquad-qg-lora --space-repo ORG/korean-qg \\
        --dataset-repo ORG/korquad-qg --dataset-dir outputs/korquad-qg

Online, the same folders are staged (in a temporary folder, or --staging-dir) and uploaded as they are, in the
order base, dataset, model, Space; each repository's files become the staged ones. The model card is rendered from
the run and evaluation folders (model_card/template.md) and refused when its metadata does not read back.
"""

import argparse
from pathlib import Path

from qg.cli import run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, required=True, metavar="RUN_DIR",
                        help="Run folder written by train.py (its --output_dir): the final adapter at its top, "
                             "train_config.yaml, train_log.jsonl, loss_curve.png. checkpoints/, best/ and tracker "
                             "logs are not published.")
    parser.add_argument("--eval-dir", type=Path, required=True, metavar="EVAL_DIR",
                        help="Folder written by evaluate_qg.py --model for this adapter: metrics.json and "
                             "after_outputs.json, the card's scores and samples (published next to it).")
    parser.add_argument("--model-repo", required=True, metavar="ORG/NAME",
                        help="Model repository of the adapter and its card.")
    parser.add_argument("--space-repo", required=True, metavar="ORG/NAME",
                        help="Space repository (Streamlit SDK) for space/app.py and the qg package.")
    parser.add_argument("--base-repo", metavar="ORG/NAME",
                        help="Model repository for the Llama-format base the adapter was trained on; the uploaded "
                             "adapter_config.json points there, so PeftModel.from_pretrained works for anyone. "
                             "Default: ORG/<base name>-llama with the --model-repo's ORG (e.g. "
                             "ORG/EXAONE-3.5-2.4B-Instruct-llama). Not allowed when the base is a Hub model that "
                             "transformers loads natively (it is referenced as it is).")
    parser.add_argument("--dataset-repo", metavar="ORG/NAME",
                        help="Dataset repository the card and the Space name as training and evaluation data. "
                             "Needed when the evaluation read a local dataset folder.")
    parser.add_argument("--dataset-dir", type=Path, metavar="DIR",
                        help="Also push this dataset folder (hub_dataset/build_dataset.py output) to "
                             "--dataset-repo. It must be the folder the evaluation read.")
    parser.add_argument("--private", action="store_true", help="Create the repositories as private.")
    parser.add_argument("--offline", action="store_true",
                        help="Touch no network: only write the staging folder (needs --staging-dir).")
    parser.add_argument("--staging-dir", type=Path, metavar="DIR",
                        help="Where to stage: DIR/model, DIR/base, DIR/space, DIR/dataset (exactly the files each "
                             "repository receives) and DIR/manifest.json (repo id, type, path/size/sha256 per "
                             "file). Replaced if it holds a previous staging. Online it is kept after the upload; "
                             "without it a temporary folder is used.")
    args = parser.parse_args(argv)
    if args.offline and args.staging_dir is None:
        parser.error("--offline needs --staging-dir")
    if args.dataset_dir is not None and args.dataset_repo is None:
        parser.error("--dataset-dir needs --dataset-repo")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from qg.publish import Repos, publish

    repos = Repos(model=args.model_repo, space=args.space_repo, base=args.base_repo, dataset=args.dataset_repo)
    manifest = publish(args.adapter, args.eval_dir, repos, dataset_dir=args.dataset_dir,
                       staging_dir=args.staging_dir, offline=args.offline, private=args.private)
    for name, repo in manifest["repos"].items():
        size = sum(f["size"] for f in repo["files"])
        url_prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo["repo_type"]]
        done = "staged" if args.offline else "published"
        where = f" in {args.staging_dir / name}" if args.staging_dir else ""
        print(f"{done} {name:<7} https://huggingface.co/{url_prefix}{repo['repo_id']}  "
              f"({len(repo['files'])} files, {size / 1e6:.1f} MB){where}")
    if args.staging_dir:
        print(f"manifest: {args.staging_dir / 'manifest.json'}")


if __name__ == "__main__":
    run(main)
