"""The whole pipeline on the embedded default, offline on CPU: what `make demo` runs.

    qg-demo                               # everything under outputs/demo/ (replaced on every run)

bundled sample -> dataset -> tiny EXAONE-format model -> conversion -> LoRA training -> evaluation -> model card
-> staged publish (--offline). The same code paths the real EXAONE-3.5-2.4B run takes, at a size a laptop runs
in a few minutes.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from qg.cli import UserError, command
from qg.io import marker_name


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/demo"),
                        help="Folder for every artefact of the demo (default outputs/demo; replaced when an "
                             "earlier demo wrote it, refused otherwise).")
    args = parser.parse_args(argv)
    out: Path = args.output_dir
    # An interrupted demo leaves anything in its folder, so the marker goes in first and alone decides.
    marker = out / marker_name("qg-demo")
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise UserError(f"{out} exists and was not written by qg-demo; choose another --output-dir or remove it "
                        "yourself")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another --output-dir")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    marker.write_text('{"written_by": "qg-demo"}\n', encoding="utf-8")
    artefacts = {}

    print("[1/6] dataset from the bundled sample", flush=True)
    from qg.data.build import build_qg_dataset
    from qg.data.korquad import sample_sources

    artefacts["dataset"] = out / "dataset"
    build_qg_dataset(*sample_sources(), artefacts["dataset"])

    print("[2/6] tiny random model in EXAONE format, converted to Llama format", flush=True)
    from qg.models.loading import resolve_base
    from qg.models.tiny import TINY_MODEL

    artefacts["base model"] = Path(resolve_base(TINY_MODEL))

    print("[3/6] LoRA training (configs/smoke.yaml)", flush=True)
    from qg.config import parse_config
    from qg.train.config import RECIPES_DIR, TrainConfig
    from qg.train.loop import train

    config, _ = parse_config(TrainConfig, ["--config", str(RECIPES_DIR / "smoke.yaml"),
                                           "--dataset", str(artefacts["dataset"]),
                                           "--output_dir", str(out / "adapter")])
    artefacts["adapter"] = train(config)

    print("[4/6] evaluation on the test split, with the base model beside it", flush=True)
    from qg.eval.config import EvalConfig
    from qg.eval.runner import evaluate

    artefacts["evaluation"] = out / "eval"
    # Every decoding setting is EvalConfig's default, which is QuestionGenerator's: the demo samples as the product.
    evaluate(EvalConfig(model=str(artefacts["adapter"]), dataset=str(artefacts["dataset"]),
                        output_dir=str(artefacts["evaluation"]), compare_base=True))

    print("[5/6] model card, [6/6] staged publish (--offline: what would be uploaded)", flush=True)
    from qg.hub.publish import Repos, publish

    artefacts["staging"] = out / "publish"
    publish(artefacts["adapter"], artefacts["evaluation"],
            Repos(model="ORG/tiny-random-exaone-korquad-qg-lora", space="ORG/korean-qg-demo",
                  dataset="ORG/korquad-qg-sample"),
            dataset_dir=artefacts["dataset"], staging_dir=artefacts["staging"], offline=True)
    artefacts["model card"] = artefacts["staging"] / "model" / "README.md"

    print("\nartefacts:")
    for name, path in artefacts.items():
        print(f"  {name:<12} {path}")
    print("\nopen the Space locally on the trained adapter:\n"
          f"  QG_MODEL={artefacts['adapter']} streamlit run space/app.py")


if __name__ == "__main__":
    main()
