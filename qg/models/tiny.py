"""The tiny random model: EXAONE-3.5's architecture at a size that trains in seconds, built offline in code.

`build_tiny_exaone` writes a checkpoint in the original EXAONE format (with a BPE tokenizer trained on the bundled
sample, or the real EXAONE tokenizer), which then goes through the same converter as the real model; `tiny_model_dir`
is the converted copy in the cache that 'tiny-random-exaone' resolves to. For tests, the demo and offline runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from qg.data.korquad import SAMPLE_DIR
from qg.io import atomic_dir, atomic_write_json, cache_dir
from qg.models.exaone import convert_exaone_checkpoint, expected_exaone_keys, llama_config, llama_key

TINY_MODEL = "tiny-random-exaone"
SAMPLE_FILES = [SAMPLE_DIR / "train.json", SAMPLE_DIR / "dev.json"]
# EXAONE-3.5's own chat template: role tags are plain text, only [|endofturn|] is a special token.
EXAONE_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '[|system|][|endofturn|]\\n' }}{% endif %}{{ '[|' + message['role'] + '|]' + message['content'] }}"
    "{% if message['role'] == 'user' %}{{ '\\n' }}{% else %}{{ '[|endofturn|]\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"
)
# EXAONE-3.5-2.4B's architecture (GQA, llama3 RoPE scaling, tied embeddings) at a size that trains in seconds.
TINY_SHAPE = dict(hidden_size=64, num_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=176, max_position_embeddings=2048)


TINY_VOCAB = 2048


def train_tiny_tokenizer(texts: list[str], vocab_size: int = TINY_VOCAB) -> PreTrainedTokenizerFast:
    """A byte-level BPE with EXAONE's special tokens and chat template, trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "[|endofturn|]"]
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="[BOS]", eos_token="[|endofturn|]", pad_token="[PAD]",
        unk_token="[UNK]", chat_template=EXAONE_CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
    )


def _sample_texts() -> list[str]:
    from qg.prompt import SYSTEM_PROMPT, USER_TEMPLATES

    texts = [SYSTEM_PROMPT, *USER_TEMPLATES.values()]
    for file in SAMPLE_FILES:
        for article in json.loads(file.read_text(encoding="utf-8"))["data"]:
            for paragraph in article["paragraphs"]:
                texts.append(paragraph["context"])
                texts.extend(qa["question"] for qa in paragraph["qas"])
    return texts


def build_tiny_exaone(dst: str | Path, tokenizer_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Write a tiny random checkpoint in the original EXAONE format (config, weights, tokenizer) to `dst`.

    It goes through the same converter as the real model, so offline runs exercise the real code path.
    Tokenizer: the real EXAONE one from `tokenizer_dir`, or a small BPE trained on the bundled sample.
    """
    if tokenizer_dir is not None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer = train_tiny_tokenizer(_sample_texts())
    exaone_config = {
        "architectures": ["ExaoneForCausalLM"], "model_type": "exaone", "activation_function": "silu",
        "vocab_size": len(tokenizer), "layer_norm_epsilon": 1e-5, "rope_theta": 1e6,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 256},
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id, "dtype": "float32", **TINY_SHAPE,
    }
    with torch.device("meta"):  # only the tensor names and shapes are needed
        shapes = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=TINY_SHAPE["hidden_size"],
            intermediate_size=TINY_SHAPE["intermediate_size"], num_hidden_layers=TINY_SHAPE["num_layers"],
            num_attention_heads=TINY_SHAPE["num_attention_heads"],
            num_key_value_heads=TINY_SHAPE["num_key_value_heads"], tie_word_embeddings=True,
        ))
    to_exaone = {llama_key(k): k for k in expected_exaone_keys(shapes.config)}
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, tensor in shapes.state_dict().items():
        if name not in to_exaone:
            continue
        if tensor.dim() == 1:
            weights[to_exaone[name]] = torch.ones(tensor.shape)
        else:
            # Embeddings 15x the usual 0.02 init: the frozen tied output layer must be able to express confident predictions
            # (at the usual 0.02 a LoRA-trained tiny model cannot get its loss far below ln(vocab)).
            std = 0.3 if name == "model.embed_tokens.weight" else 0.1
            weights[to_exaone[name]] = torch.randn(tensor.shape, generator=generator) * std
    with atomic_dir(dst) as out:
        save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
        atomic_write_json(out / "config.json", exaone_config)
        tokenizer.save_pretrained(out)
    return Path(dst)


# EXAONE-3.5-2.4B-Instruct's config.json (the values in DESIGN.md), for random-weight checkpoints of the real shape.
EXAONE_3_5_2_4B_CONFIG = {
    "architectures": ["ExaoneForCausalLM"], "model_type": "exaone", "activation_function": "silu",
    "hidden_size": 2560, "num_layers": 30, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 80,
    "intermediate_size": 7168, "vocab_size": 102400, "max_position_embeddings": 32768, "layer_norm_epsilon": 1e-5,
    "rope_theta": 1e6, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "tie_word_embeddings": True, "attention_dropout": 0.0, "embed_dropout": 0.0, "initializer_range": 0.02,
    "bos_token_id": 1, "eos_token_id": 361, "pad_token_id": 0, "use_cache": True, "torch_dtype": "bfloat16",
}


def write_random_exaone(dst: str | Path, exaone_config: dict, tokenizer_dir: str | Path, *,
                        dtype: torch.dtype = torch.bfloat16, seed: int = 0, shard_bytes: int = 2**31) -> Path:
    """A random-weight checkpoint in the original EXAONE format with `exaone_config` and a real tokenizer.

    Each tensor is drawn directly in `dtype` (N(0, initializer_range), norms 1) and written shard by shard, so no
    fp32 copy exists and at most one shard is in memory: EXAONE-2.4B's 4.8 GB of bf16 on a 24 GiB machine.
    """
    with torch.device("meta"):  # only the tensor names and shapes are needed
        shapes = LlamaForCausalLM(llama_config(exaone_config)).state_dict()
    to_exaone = {llama_key(k): k for k in expected_exaone_keys(llama_config(exaone_config))}
    tensors = [(to_exaone[name], tensor.shape) for name, tensor in shapes.items() if name in to_exaone]
    shards: list[list[tuple[str, torch.Size]]] = [[]]
    size = 0
    for key, shape in tensors:
        nbytes = shape.numel() * dtype.itemsize
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((key, shape))
        size += nbytes
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    generator = torch.Generator().manual_seed(seed)
    std = exaone_config.get("initializer_range", 0.02)
    with atomic_dir(dst) as out:
        for name, shard in zip(names, shards):
            save_file({key: torch.ones(shape, dtype=dtype) if len(shape) == 1 else
                       torch.empty(shape, dtype=dtype).normal_(0, std, generator=generator) for key, shape in shard},
                      out / name, metadata={"format": "pt"})
        total = sum(shape.numel() for _, shape in tensors) * dtype.itemsize
        atomic_write_json(out / "model.safetensors.index.json", {
            "metadata": {"total_size": total},
            "weight_map": {key: name for name, shard in zip(names, shards) for key, _ in shard}})
        atomic_write_json(out / "config.json", exaone_config)
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return Path(dst)


def tiny_model_dir() -> Path:
    """The converted tiny model in the cache, keyed by the sample it was trained on; built on first use."""
    key = hashlib.sha256(b"".join(f.read_bytes() for f in SAMPLE_FILES) + json.dumps(TINY_SHAPE).encode())
    converted = cache_dir() / f"{TINY_MODEL}-{key.hexdigest()[:12]}"
    if not converted.exists():
        original = build_tiny_exaone(converted.with_name(converted.name + "-exaone"))
        convert_exaone_checkpoint(original, converted, overwrite=True)
    return converted
