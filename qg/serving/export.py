"""`qg-export`: the adapter in the formats serving engines load.

    qg-export outputs/adapter --merged outputs/merged              # one plain model, for engines without LoRA
    transformers serve --host 127.0.0.1 --port 8000 outputs/merged    # or: vllm serve outputs/merged
    qg-export outputs/adapter --ctranslate2 outputs/ct2            # int8 CTranslate2 folder: the CPU engine
    qg-export outputs/adapter --merged outputs/merged --ctranslate2 outputs/ct2 --quantization float32

OUT holds the merged weights (in the base checkpoint's dtype), the tokenizer with its chat template, and a generation
config whose EOS includes the end-of-turn token, so that any engine stops where `QuestionGenerator` does. The LoRA
weights are merged in float32 (peft `merge_and_unload`) before the cast. The CTranslate2 folder
(`qg.serving.ctranslate2`) is what the Space and `qg-serve` load on CPU hardware. Each OUT appears whole or not at
all, and --overwrite replaces only a folder qg-export wrote.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoConfig

from qg.cli import UserError, command
from qg.generate import adapter_config
from qg.io import atomic_dir, check_output_dir, is_hub_id
from qg.models.loading import load_base, resolve_base
from qg.prompt import end_of_turn_id

OWNER = "qg-export"  # the marker that lets --overwrite replace what this command wrote, and nothing else


def check_export_dir(out: Path, overwrite: bool) -> None:
    """Refuse an existing `out` without --overwrite, and with it anything qg-export did not write."""
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists: choose another folder or pass --overwrite")
    check_output_dir(out, OWNER)


def export_merged(adapter: str, out: str | Path, revision: str | None = None, overwrite: bool = False) -> Path:
    """Merge the peft adapter `adapter` (folder or Hub id, at `revision`) into its base and save it to `out`."""
    out = Path(out)
    check_export_dir(out, overwrite)
    if not Path(adapter).is_dir() and not is_hub_id(adapter):
        raise UserError(f"{adapter}: no such adapter folder (nor a Hub id ORG/NAME)")
    config = adapter_config(adapter, revision)
    if config is None:
        raise UserError(f"{adapter} is not a peft adapter (no adapter_config.json): give the folder qg-train wrote")
    from peft import PeftModel

    base, base_revision = config.base_model_name_or_path, config.revision
    model, tokenizer = load_base(base, revision=base_revision, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter, revision=revision).merge_and_unload()
    stored = AutoConfig.from_pretrained(resolve_base(base, base_revision)).dtype
    merged = merged.to(stored or torch.float32)
    generation = merged.generation_config
    eos = generation.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if end_of_turn_id(tokenizer) not in eos:
        generation.eos_token_id = [*eos, end_of_turn_id(tokenizer)]
    with atomic_dir(out, owner=OWNER) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


@command
def main(argv: list[str] | None = None) -> None:
    from qg.serving.ctranslate2 import QUANTIZATIONS, export

    parser = argparse.ArgumentParser(prog="qg-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="ADAPTER", help="The LoRA adapter: the folder qg-train wrote, or a Hub id. "
                                                          "With --ctranslate2 alone, a model folder or "
                                                          "'tiny-random-exaone' too.")
    parser.add_argument("--merged", metavar="OUT", help="Folder for the merged transformers model.")
    parser.add_argument("--ctranslate2", metavar="OUT", help="Folder for the CTranslate2 model (the CPU engine).")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default="int8",
                        help="CTranslate2 weights: int8 (default; for serving on CPU) or float32 (the transformers "
                             "model's logits).")
    parser.add_argument("--revision", help="Hub revision of ADAPTER (branch, tag or commit); default: main.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an OUT that an earlier qg-export wrote.")
    args = parser.parse_args(argv)
    if args.merged is None and args.ctranslate2 is None:
        raise UserError("nothing to export: give --merged OUT, --ctranslate2 OUT, or both")
    if args.ctranslate2 is not None:
        check_export_dir(Path(args.ctranslate2), args.overwrite)
    if args.merged is not None:
        out = export_merged(args.source, args.merged, args.revision, args.overwrite)
        print(f"merged {args.source} into its base -> {out}")
    if args.ctranslate2 is not None:
        source = args.merged or args.source  # a merged folder just written need not be merged again
        out = export(source, args.ctranslate2, args.quantization, revision=None if args.merged else args.revision)
        print(f"exported {args.source} -> {out} (CTranslate2, {args.quantization})")


if __name__ == "__main__":
    main()
