"""`qg-export --merged OUT ADAPTER`: the adapter folded into its base, one plain model for engines without LoRA.

    qg-export --merged outputs/merged outputs/adapter
    transformers serve --host 127.0.0.1 --port 8000 outputs/merged     # or: vllm serve outputs/merged

OUT holds the merged weights (in the base checkpoint's dtype), the tokenizer with its chat template, and a generation
config whose EOS includes the end-of-turn token, so that any engine stops where `QuestionGenerator` does. The LoRA
weights are merged in float32 (peft `merge_and_unload`) before the cast. OUT appears whole or not at all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoConfig

from qg.cli import UserError, command
from qg.generate import adapter_config
from qg.io import atomic_dir, is_hub_id
from qg.models.loading import load_base, resolve_base
from qg.prompt import end_of_turn_id


def export_merged(adapter: str, out: str | Path, revision: str | None = None, overwrite: bool = False) -> Path:
    """Merge the peft adapter `adapter` (folder or Hub id, at `revision`) into its base and save it to `out`."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists: choose another folder or pass --overwrite")
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
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qg-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter", metavar="ADAPTER", help="The LoRA adapter: the folder qg-train wrote, or a Hub id.")
    parser.add_argument("--merged", metavar="OUT", required=True, help="Folder for the merged model.")
    parser.add_argument("--revision", help="Hub revision of ADAPTER (branch, tag or commit); default: main.")
    parser.add_argument("--overwrite", action="store_true", help="Replace OUT if it exists.")
    args = parser.parse_args(argv)
    out = export_merged(args.adapter, args.merged, args.revision, args.overwrite)
    print(f"merged {args.adapter} into its base -> {out}")


if __name__ == "__main__":
    main()
