"""Convert an EXAONE-3.5 checkpoint into `LlamaForCausalLM` format, exactly, without running remote code.

    qg-convert LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct converted/exaone-3.5-2.4b   # from the Hub
    qg-convert path/to/exaone-checkpoint converted/exaone --overwrite              # from a folder

EXAONE-3.5 is a Llama-architecture decoder under other names (see DESIGN.md), and transformers 5 has no native
EXAONE-3.5 while the Hub's remote code breaks on it. Renaming tensors and config keys gives the same model.
Tensors are streamed one at a time from source to destination so the real 2.4B model is never held twice: the
peak stays under the checkpoint's size (bench/bench_convert.py, which also measures `load_file` + `save_file`,
the whole-model way that `from_pretrained(key_mapping=...)` + `save_pretrained` takes too, above it), and the
2.4B conversion has to run on the small machines this project is for.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm
from transformers import GenerationConfig, LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from qg.cli import UserError, command, one_line
from qg.io import atomic_dir, atomic_write_json, check_output_dir, is_hub_id

DEFAULT_REPO = "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct"
# Names the marker of a converted folder (see `qg.io.check_output_dir`): --overwrite replaces only a folder it wrote.
CONVERTER = "qg-convert"
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
]
# Only these files are ever downloaded: weights, configs and tokenizer; never the remote modelling code.
DOWNLOAD_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                     *TOKENIZER_FILES]
KNOWN_ROPE_TYPES = {"default", *ROPE_INIT_FUNCTIONS}
# The config.json keys without a default: without any of them the model's shape is unknown.
REQUIRED_SIZES = ["vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_attention_heads",
                  "max_position_embeddings"]
OPTIONAL_SIZES = ["num_key_value_heads", "head_dim"]
DAMAGED = "the checkpoint is damaged or incomplete: download it again"
MAX_SHARD_BYTES = 2 * 1024**3

_LAYER_RENAMES = {
    "ln_1.weight": "input_layernorm.weight",
    "ln_2.weight": "post_attention_layernorm.weight",
    "attn.attention.q_proj.weight": "self_attn.q_proj.weight",
    "attn.attention.k_proj.weight": "self_attn.k_proj.weight",
    "attn.attention.v_proj.weight": "self_attn.v_proj.weight",
    "attn.attention.out_proj.weight": "self_attn.o_proj.weight",
    "mlp.c_fc_0.weight": "mlp.gate_proj.weight",
    "mlp.c_fc_1.weight": "mlp.up_proj.weight",
    "mlp.c_proj.weight": "mlp.down_proj.weight",
}
_LAYER_KEY = re.compile(r"transformer\.h\.(\d+)\.(.+)")


def llama_key(exaone_key: str) -> str | None:
    """The Llama-format name of an EXAONE tensor, or None for a name EXAONE-3.5 does not have."""
    if exaone_key == "transformer.wte.weight":
        return "model.embed_tokens.weight"
    if exaone_key == "transformer.ln_f.weight":
        return "model.norm.weight"
    if exaone_key == "lm_head.weight":
        return "lm_head.weight"
    match = _LAYER_KEY.fullmatch(exaone_key)
    if match and match.group(2) in _LAYER_RENAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_RENAMES[match.group(2)]}"
    return None


def llama_config(exaone: dict) -> LlamaConfig:
    """The `LlamaConfig` of an EXAONE-3.5 `config.json` (a dict); refuses what it cannot convert exactly."""
    if exaone.get("model_type") != "exaone":
        raise UserError(f"not an EXAONE checkpoint: config.json has model_type {exaone.get('model_type')!r}, "
                        "expected 'exaone' (other models load natively, without conversion)")
    missing = [key for key in [*REQUIRED_SIZES, "layer_norm_epsilon"] if key not in exaone]
    if missing:
        raise UserError(f"config.json lacks {', '.join(missing)}: not a complete EXAONE-3.5 config; {DAMAGED}")
    for key in [*REQUIRED_SIZES, *(key for key in OPTIONAL_SIZES if key in exaone)]:
        if not isinstance(exaone[key], int) or isinstance(exaone[key], bool) or exaone[key] < 1:
            raise UserError(f"config.json: {key} is {exaone[key]!r}, not a positive integer; {DAMAGED}")
    rope_scaling = exaone.get("rope_scaling")
    if rope_scaling is not None and not isinstance(rope_scaling, dict):
        raise UserError(f"config.json: rope_scaling is {rope_scaling!r}, neither null nor an object; {DAMAGED}")
    if rope_scaling is not None:
        rope_type = rope_scaling.get("rope_type", rope_scaling.get("type"))
        if rope_type not in KNOWN_ROPE_TYPES:
            raise UserError(f"unknown rope type {rope_type!r} in config.json; known: {', '.join(sorted(KNOWN_ROPE_TYPES))}")
    hidden, heads = exaone["hidden_size"], exaone["num_attention_heads"]
    try:
        return LlamaConfig(
            vocab_size=exaone["vocab_size"],
            hidden_size=hidden,
            intermediate_size=exaone["intermediate_size"],
            num_hidden_layers=exaone["num_layers"],
            num_attention_heads=heads,
            num_key_value_heads=exaone.get("num_key_value_heads", heads),
            head_dim=exaone.get("head_dim", hidden // heads),
            hidden_act=exaone.get("activation_function", "silu"),
            max_position_embeddings=exaone["max_position_embeddings"],
            rms_norm_eps=exaone["layer_norm_epsilon"],
            rope_theta=exaone.get("rope_theta", 10000.0),
            rope_scaling=rope_scaling,
            # save_pretrained leaves out default values, so an absent key is PretrainedConfig's default: True.
            tie_word_embeddings=exaone.get("tie_word_embeddings", True),
            attention_bias=False,
            mlp_bias=False,
            attention_dropout=exaone.get("attention_dropout", 0.0),
            initializer_range=exaone.get("initializer_range", 0.02),
            bos_token_id=exaone.get("bos_token_id"),
            eos_token_id=exaone.get("eos_token_id"),
            pad_token_id=exaone.get("pad_token_id"),
            architectures=["LlamaForCausalLM"],
            dtype=exaone.get("dtype", exaone.get("torch_dtype", "float32")),
        )
    except (KeyError, TypeError, ValueError, StrictDataclassError) as err:  # transformers' checks of the values
        raise UserError(f"config.json: {one_line(err)}; {DAMAGED}") from None


def expected_exaone_keys(config: LlamaConfig) -> set[str]:
    keys = {"transformer.wte.weight", "transformer.ln_f.weight"}
    for layer in range(config.num_hidden_layers):
        keys |= {f"transformer.h.{layer}.{name}" for name in _LAYER_RENAMES}
    if not config.tie_word_embeddings:
        keys.add("lm_head.weight")
    return keys


def read_json_object(file: Path) -> dict:
    """The JSON object in a checkpoint's `file`; anything else is a `UserError` naming it."""
    try:
        value = json.loads(file.read_bytes())
    except ValueError as err:  # not JSON, or not UTF-8
        raise UserError(f"{file}: not valid JSON ({one_line(err)}); {DAMAGED}") from None
    if not isinstance(value, dict):
        raise UserError(f"{file}: not a JSON object; {DAMAGED}")
    return value


@contextlib.contextmanager
def _open_safetensors(file: Path) -> Iterator:
    try:
        with safe_open(file, framework="pt") as f:
            yield f
    except SafetensorError as err:  # a truncated or overwritten file: the header does not describe the bytes
        raise UserError(f"{file}: not a readable safetensors file ({one_line(err)}); {DAMAGED}") from None


def _source_tensors(src: Path) -> dict[str, Path]:
    """Map each tensor name to the file that holds it: `model.safetensors`, or the shards its index lists."""
    index = src / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(file, str) for file in weight_map.values()):
            raise UserError(f"{index}: no weight_map from tensor names to files; {DAMAGED}")
        absent = sorted({file for file in weight_map.values() if not (src / file).is_file()})
        if absent:
            more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
            raise UserError(f"{index} names {absent[0]}{more}, which is not in {src}; {DAMAGED}")
        return {key: src / file for key, file in weight_map.items()}
    single = src / "model.safetensors"
    if not single.is_file():
        raise UserError(f"no model.safetensors (or model.safetensors.index.json) in {src}")
    with _open_safetensors(single) as f:
        return dict.fromkeys(f.keys(), single)


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def _write_safetensors(path: Path, tensors: list[tuple[str, str, Path]]) -> None:
    """Write `(new_name, old_name, source_file)` tensors into one safetensors file, one tensor in memory at a time.

    `safetensors.torch.save_file` needs every tensor of the file in memory at once; the format (a JSON header
    of dtypes, shapes and byte offsets, then the raw bytes) lets us write the header first and stream the rest.
    Each source is re-opened per tensor so its memory map, and the pages it touched, are released right away.
    """
    header, offset = {}, 0
    for new, old, file in tensors:
        dtype, shape, nbytes = _tensor_info(file, old)
        header[new] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as out:
        out.write(len(header_bytes).to_bytes(8, "little"))
        out.write(header_bytes)
        for new, old, file in tensors:
            with _open_safetensors(file) as f:
                tensor = f.get_tensor(old).contiguous()
            out.write(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
            del tensor


def _safetensors_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise UserError(f"unsupported tensor dtype {name} in the checkpoint")
    return _DTYPES[name]


def _tensor_info(file: Path, key: str) -> tuple[str, list[int], int]:
    """dtype name, shape and byte size of a stored tensor, read from the header without loading it."""
    with _open_safetensors(file) as f:
        stored = f.get_slice(key)
        dtype, shape = stored.get_dtype(), stored.get_shape()
    return dtype, shape, torch.Size(shape).numel() * _safetensors_dtype(dtype).itemsize


def resolve_source(src: str, revision: str | None = None) -> Path:
    """A local folder as is; a Hub repo id downloaded (weights, configs, tokenizer only) into the HF cache."""
    path = Path(src)
    if path.is_dir():
        return path
    if not is_hub_id(src):
        raise UserError(f"{src} is neither a checkpoint folder nor a Hub repo id (ORG/NAME)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(src, revision=revision, allow_patterns=DOWNLOAD_PATTERNS))
    except LocalEntryNotFoundError:
        raise UserError(f"cannot reach the Hugging Face Hub to download {src}, and it is not in the local cache; "
                        "download it on a connected machine, or pass a local checkpoint folder") from None
    except HfHubHTTPError as err:
        raise UserError(f"the Hub refused {src}: {str(err).splitlines()[0]} (gated model? run `hf auth login`)") from None


def convert_exaone_checkpoint(src: str | Path, dst: str | Path, *, revision: str | None = None,
                              overwrite: bool = False, max_shard_bytes: int = MAX_SHARD_BYTES) -> Path:
    """Convert an EXAONE-3.5 checkpoint (folder or Hub id) into a Llama-format folder at `dst`, atomically."""
    dst = Path(dst)
    check_output_dir(dst, CONVERTER)
    if dst.is_dir() and not overwrite:
        raise UserError(f"{dst} already exists; pass --overwrite to replace it")
    src = resolve_source(str(src), revision)
    config_file = src / "config.json"
    if not config_file.is_file():
        raise UserError(f"no config.json in {src}")
    config = llama_config(read_json_object(config_file))

    located = _source_tensors(src)
    expected = expected_exaone_keys(config)
    unknown = sorted(set(located) - expected)
    missing = sorted(expected - set(located))
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown weight keys: {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
        if missing:
            problems.append(f"missing weight keys: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        raise UserError(f"{src} is not a complete EXAONE-3.5 checkpoint: {'; '.join(problems)}")

    shards: list[list[tuple[str, str, Path]]] = [[]]
    shard_bytes, total_bytes = 0, 0
    for old in sorted(located, key=lambda k: (llama_key(k).startswith("lm_head"), llama_key(k))):
        nbytes = _tensor_info(located[old], old)[2]
        if shards[-1] and shard_bytes + nbytes > max_shard_bytes:
            shards.append([])
            shard_bytes = 0
        shards[-1].append((llama_key(old), old, located[old]))
        shard_bytes += nbytes
        total_bytes += nbytes

    try:
        with atomic_dir(dst, owner=CONVERTER) as out:
            names = (["model.safetensors"] if len(shards) == 1 else
                     [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
            for name, shard in tqdm(list(zip(names, shards)), desc="converting", unit="shard",
                                    disable=len(shards) == 1):
                _write_safetensors(out / name, shard)
            if len(shards) > 1:
                weight_map = {new: name for name, shard in zip(names, shards) for new, _, _ in shard}
                atomic_write_json(out / "model.safetensors.index.json",
                                  {"metadata": {"total_size": total_bytes}, "weight_map": weight_map})
            config.save_pretrained(out)
            _write_generation_config(src, config, out)
            _copy_tokenizer(src, config, out)
    except OSError as err:
        if err.errno not in {errno.ENOSPC, errno.EDQUOT}:
            raise
        raise UserError(f"no space left to write {dst} (the weights alone take {total_bytes / 1e9:.2f} GB); free "
                        "space there or choose another output folder") from None
    return dst


def _write_generation_config(src: Path, config: LlamaConfig, out: Path) -> None:
    if (src / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(src)
    else:
        generation = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                      pad_token_id=config.pad_token_id)
    generation.save_pretrained(out)


def _copy_tokenizer(src: Path, config: LlamaConfig, out: Path) -> None:
    """Copy the tokenizer, with `model_max_length` set from the model (EXAONE's files leave it unset)."""
    files = [src / name for name in TOKENIZER_FILES if (src / name).is_file()]
    if not files:
        return
    for file in files:
        shutil.copy2(file, out / file.name)
    tokenizer_config = out / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text()) if tokenizer_config.is_file() else {}
    settings["model_max_length"] = config.max_position_embeddings
    atomic_write_json(tokenizer_config, settings)


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", nargs="?", default=DEFAULT_REPO,
                        help=f"EXAONE-3.5 checkpoint: a local folder or a Hub repo id (default: {DEFAULT_REPO}).")
    parser.add_argument("dst", help="Output folder for the Llama-format checkpoint.")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) to pin; default: main.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace DST if it is a previous conversion holding only what the converter wrote.")
    args = parser.parse_args(argv)
    dst = convert_exaone_checkpoint(args.src, args.dst, revision=args.revision, overwrite=args.overwrite)
    print(f"converted {args.src} -> {dst} (LlamaForCausalLM)")


if __name__ == "__main__":
    main()
