"""Memory planner: will a training recipe fit on a GPU? An estimate of the peak, before renting one.

    qg-memory --config configs/exaone-3.5-2.4b-lora.yaml
    qg-memory --config configs/gemma-3-1b-full.yaml --gpu-memory 24GB
    qg-memory --config configs/gemma-3-1b-lora.yaml --batch_tokens 4096 --gradient_checkpointing true --json

Prints each component in GiB, the total, the GPU size and a verdict; exits 0 whether it fits or not.

The model's shape comes from a table of public config.json values for the models our recipes name (no download),
from `config.json` in a local folder, or from the Hugging Face cache. The planner models the training step of
train.py: one packed row of `batch_tokens` tokens (padding-free packing, so activations scale with tokens, not
batch x max length), the LM head and loss at the labelled positions only (qg.train.loss), AdamW.

Assumptions (each a choice train.py makes, or the usual Hugging Face default):
- Full fine-tuning keeps fp32 master weights (model loaded in fp32, autocast for bf16, as in the original
  experiment's HF Trainer run): weights 4 B + gradients 4 B + AdamW 8 B = 16 B per parameter. Under mixed
  precision autocast also keeps a bf16/fp16 copy of every matmul weight (saved for the backward pass): 2 B per
  parameter more.
- LoRA loads the base in the compute dtype (bf16 under mixed precision, fp32 with `mixed_precision: no`), frozen;
  the adapters are fp32 (peft's default), with fp32 gradients and AdamW states: 16 B per adapter parameter.
- QLoRA: the decoder's linear weights in 4-bit NF4, 0.5 B per weight plus one fp32 absmax per 64-weight block
  (no double quantisation: the larger of the two); embeddings, lm_head and norms in the compute dtype.
- AdamW keeps two fp32 states (exp_avg, exp_avg_sq) per trainable parameter.
- `mixed_precision: auto` means bf16 (the planner is about a GPU).
- The components are added up, as if gradients and activations were alive together. With gradient accumulation
  they are (the gradients persist across micro-batches); with one micro-batch per step and
  `zero_grad(set_to_none=True)` the true peak is lower by up to the smaller of the two, so the total is an upper
  bound there. AdamW's foreach temporaries (one fp32 buffer per trainable parameter, during `step()`) are not
  added: they live while the activations are already freed.
- A constant 1 GiB for the CUDA context, cuBLAS workspaces and the caching allocator's fragmentation (and, for
  QLoRA, the one weight at a time that bitsandbytes dequantises).
- GPU sizes as written: 24GB is 24 x 10^9 bytes (22.35 GiB), 24GiB is 24 x 2^30; a "24 GB" card is somewhere
  in between, so 24GB is the cautious reading.
- Dense decoder-only Llama/EXAONE or Gemma-3 layers, no biases, no logit soft-capping.

Activations: bytes that autograd saves for the backward pass, per token and per decoder layer, with
c = bytes of the compute dtype (2 under mixed precision, 4 in fp32), h hidden, a / g query / key-value heads,
d head_dim, i intermediate, T = batch_tokens:
- every RMSNorm keeps an fp32 copy of its input (4 B per element), and in full fine-tuning also its fp32
  normalised output for the weight's gradient (4 B more); Llama/EXAONE have 2 per layer, Gemma-3 4 plus a
  query/key norm over (a + g) d elements;
- full fine-tuning: each trainable linear keeps its input; under autocast q/k/v and gate/up each cast the fp32
  norm output separately (3 + 2 copies of c h), in fp32 they share one (1 + 1 copies of 4 h);
- LoRA / QLoRA: frozen linears keep nothing of the input (their weight gradient is not needed), but every
  adapter's lora_A keeps its own input: peft casts it to fp32 for the adapter and autocast back to c bytes, so
  one copy per adapted module (plus a 1-byte dropout mask when lora_dropout > 0); in fp32 without dropout
  modules that read the same tensor share it; plus lora_A's r outputs for lora_B;
- attention, sdpa: q, k, v and the output (c a d each: with a packing mask transformers repeats the key/value
  heads), the fp32 log-sum-exp (4 a), and the T x T additive mask torch builds from the boolean one on every
  call (c T per token); flash_attention_2 / flex_attention keep k and v at g heads and need no mask; eager keeps
  the fp32 softmax (4 a T) and its c-byte copy, quadratic in T because the packed row is one sequence;
- MLP: gate output, activation output, up output (c i each) and, in full fine-tuning, their product (c i).
Gradient checkpointing keeps only each layer's input (the residual stream, fp32 in full fine-tuning, c otherwise)
plus one layer's activations while it is recomputed. Outside the layers: the final norm, lm_head's input (full
fine-tuning) and the rotary cos/sin.

Logits and loss, at the K positions whose next token is labelled (qg.train.loss), V the vocabulary, chunks of
C = LOSS_CHUNK_LOGITS // V positions: K V c + max(2 K V c, (K - C) V c + 12 C V) bytes. The model's c-byte logits
live through the whole backward pass; after it, the chunks' c-byte gradients add up to K V c and are concatenated
into the logits' gradient (K V c more); before that, the last chunk's recomputed fp32 log-probabilities and the
fp32 gradient into and out of log_softmax (12 C V) sit beside the other chunks' gradients. K: the largest share of
labelled tokens in a `batch_tokens` micro-batch of the recipe's dataset (the first PLANNER_SAMPLE_ROWS rows, when
the dataset folder and the model's tokenizer are on this machine), else the default share for the batching.

tests/test_memory.py holds these formulas to what PyTorch does on CPU: weights + gradients + AdamW states against
the storages one real step allocates, activations against the tensors autograd saves (Llama and Gemma-3, full and
LoRA, fp32 and bf16 autocast, sdpa and eager), the logits and loss term against the peak the profiler records
for train.py's chunked loss. Not checked there: CUDA's bool dropout mask, gradient checkpointing, flash/flex
attention.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from transformers import AutoConfig, AutoTokenizer

from qg.cli import UserError, command
from qg.config import parse_config
from qg.io import is_hub_id
from qg.models.tiny import TINY_MODEL, TINY_SHAPE, TINY_VOCAB
from qg.train.config import TrainConfig
from qg.train.loss import LOSS_CHUNK_LOGITS

GIB = 2**30
CUDA_OVERHEAD_BYTES = 1 * GIB
ADAMW_STATE_BYTES = 8  # exp_avg + exp_avg_sq, fp32
FP32_BYTES = 4
NF4_BYTES_PER_WEIGHT = 0.5 + 4 / 64  # 4-bit code + one fp32 absmax per 64-weight block
DROPOUT_MASK_BYTES = 1  # CUDA's fused dropout keeps a bool mask
LOSS_CHUNK_TRANSIENT_BYTES_PER_LOGIT = 12  # one chunk's fp32 log-probabilities, gradient into and out of log_softmax
# Share of a micro-batch's positions whose next token is labelled (question + end of turn), when the dataset cannot
# be read: the largest 8,192-token micro-batch share on KorQuAD 1.0 dev with EXAONE-3.5's tokenizer (mean 5.1%
# and 24.3%, largest 6.3% and 28.5%), rounded up, since the peak is set by the fullest micro-batch.
DEFAULT_LOSS_SHARE = {False: 0.065, True: 0.29}  # keyed by shared_context
PLANNER_SAMPLE_ROWS = 2000  # enough micro-batches for a stable largest share, tokenized in seconds
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FLASH_LIKE_ATTENTION = ("flash_attention_2", "flex_attention")


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on: a dense decoder-only Llama/EXAONE (2 norms per layer) or Gemma-3 layer stack."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    norms_per_layer: int = 2
    qk_norm: bool = False  # Gemma-3 normalises each query and key head

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear in one decoder layer."""
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_linear_params(self) -> int:
        return sum(n_in * n_out for n_in, n_out in self.linear_shapes().values())

    def layer_norm_params(self) -> int:
        qk = 2 * self.head_dim if self.qk_norm else 0
        return self.norms_per_layer * self.hidden_size + qk

    def embedding_params(self) -> int:
        """Input embeddings, plus lm_head when it is not tied to them."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def num_params(self) -> int:
        layers = self.num_layers * (self.layer_linear_params() + self.layer_norm_params())
        final_norm = self.hidden_size
        return layers + self.embedding_params() + final_norm


# Public config.json values of the models our recipes name, so that planning needs no download.
EXAONE_3_5_2_4B = ModelShape(hidden_size=2560, num_layers=30, num_heads=32, num_kv_heads=8, head_dim=80,
                             intermediate_size=7168, vocab_size=102400, tie_word_embeddings=True)
GEMMA_3_1B = ModelShape(hidden_size=1152, num_layers=26, num_heads=4, num_kv_heads=1, head_dim=256,
                        intermediate_size=6912, vocab_size=262144, tie_word_embeddings=True,
                        norms_per_layer=4, qk_norm=True)
TINY_RANDOM_EXAONE = ModelShape(
    hidden_size=TINY_SHAPE["hidden_size"], num_layers=TINY_SHAPE["num_layers"],
    num_heads=TINY_SHAPE["num_attention_heads"], num_kv_heads=TINY_SHAPE["num_key_value_heads"],
    head_dim=TINY_SHAPE["hidden_size"] // TINY_SHAPE["num_attention_heads"],
    intermediate_size=TINY_SHAPE["intermediate_size"], vocab_size=TINY_VOCAB, tie_word_embeddings=True)
KNOWN_SHAPES = {
    "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct": EXAONE_3_5_2_4B,
    "google/gemma-3-1b-it": GEMMA_3_1B,
    "google/gemma-3-1b-pt": GEMMA_3_1B,
    TINY_MODEL: TINY_RANDOM_EXAONE,
}


def shape_from_config_file(path: Path) -> ModelShape:
    """Read a model's shape from its config.json: EXAONE-3.5's own key names, or anything AutoConfig knows."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read the model config {path}: {err}") from None
    try:
        if raw.get("model_type") == "exaone":
            # Read as plain JSON: EXAONE's Hub code is never run (see DESIGN.md). A missing tie flag means True.
            heads = raw["num_attention_heads"]
            return ModelShape(hidden_size=raw["hidden_size"], num_layers=raw["num_layers"], num_heads=heads,
                              num_kv_heads=raw.get("num_key_value_heads", heads),
                              head_dim=raw["hidden_size"] // heads, intermediate_size=raw["intermediate_size"],
                              vocab_size=raw["vocab_size"], tie_word_embeddings=raw.get("tie_word_embeddings", True))
        # AutoConfig fills the class defaults a saved config leaves out (tie_word_embeddings, head_dim...).
        config = AutoConfig.from_pretrained(path.parent).get_text_config()
        heads = config.num_attention_heads
        gemma3 = config.model_type == "gemma3_text"
        return ModelShape(hidden_size=config.hidden_size, num_layers=config.num_hidden_layers, num_heads=heads,
                          num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                          head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
                          intermediate_size=config.intermediate_size, vocab_size=config.vocab_size,
                          tie_word_embeddings=config.tie_word_embeddings,
                          norms_per_layer=4 if gemma3 else 2, qk_norm=gemma3)
    except (KeyError, AttributeError, TypeError, ValueError) as err:
        raise UserError(f"{path} does not describe a decoder-only transformer the planner knows: {err}") from None


def model_shape(model: str) -> ModelShape:
    """The shape of the recipe's `model`: a known Hub id, a local folder, or a Hub id in the local HF cache."""
    if model in KNOWN_SHAPES:
        return KNOWN_SHAPES[model]
    if Path(model).is_dir():
        return shape_from_config_file(Path(model) / "config.json")
    try:
        cached = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repo id, so it was meant as a folder
        cached = None
    if isinstance(cached, str):
        return shape_from_config_file(Path(cached))
    raise UserError(f"no shape known for model {model!r}: it is not a local folder, not in the Hugging Face cache, "
                    f"nor one of {', '.join(KNOWN_SHAPES)}; pass a local folder holding its config.json")


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak GPU memory of one training step, in bytes per component (see the module docstring for the formulas)."""

    model: str
    shape: ModelShape
    finetuning: str
    compute_dtype: str
    batch_tokens: int
    gradient_checkpointing: bool
    attn_implementation: str
    num_params: int
    trainable_params: int
    weights: int  # the model's own weights as stored (fp32 master, bf16 base or NF4 base)
    weight_casts: int  # autocast's low-precision weight copies saved for the backward pass
    adapter_weights: int
    loss_positions: int  # K: positions of the largest micro-batch whose next token is labelled
    loss_positions_source: str
    gradients: int
    optimizer_states: int
    activations: int
    logits: int
    cuda_overhead: int
    gpu_memory: int | None

    def components(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in
                ("weights", "weight_casts", "adapter_weights", "gradients", "optimizer_states", "activations",
                 "logits", "cuda_overhead")}

    @property
    def total(self) -> int:
        return sum(self.components().values())

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_memory is None else self.total <= self.gpu_memory


def _lora_params(shape: ModelShape, config: TrainConfig) -> int:
    linears = shape.linear_shapes()
    return shape.num_layers * sum(config.lora_r * sum(linears[name]) for name in _lora_targets(config))


def _lora_targets(config: TrainConfig) -> set[str]:
    if config.lora_target_modules == ["all-linear"]:
        return set(LINEAR_MODULES)
    unknown = sorted(set(config.lora_target_modules) - set(LINEAR_MODULES))
    if unknown:
        raise UserError(f"lora_target_modules: the planner knows the decoder's linears {', '.join(LINEAR_MODULES)} "
                        f"(or 'all-linear'), not {', '.join(unknown)}")
    return set(config.lora_target_modules)


def _attention_bytes_per_token(shape: ModelShape, config: TrainConfig, c: int) -> int:
    """Saved by one layer's attention kernel, per token (q/k/v projections and o_proj are counted elsewhere)."""
    a, g, d, tokens = shape.num_heads, shape.num_kv_heads, shape.head_dim, config.batch_tokens
    if config.attn_implementation in FLASH_LIKE_ATTENTION:
        return c * d * (2 * a + 2 * g) + FP32_BYTES * a
    if config.attn_implementation == "sdpa":
        return c * d * 4 * a + FP32_BYTES * a + c * tokens
    # eager: repeated k/v, the fp32 softmax over the whole packed row and its cast, a contiguous output copy
    probabilities = FP32_BYTES * a * tokens + (c * a * tokens if c != FP32_BYTES else 0)
    return c * d * 4 * a + probabilities


def _layer_activation_bytes_per_token(shape: ModelShape, config: TrainConfig, c: int, autocast: bool) -> int:
    """Bytes one decoder layer saves for the backward pass, per token."""
    h, i = shape.hidden_size, shape.intermediate_size
    full = config.finetuning == "full"
    norm_bytes = FP32_BYTES * (2 if full else 1)  # fp32 input copy (+ normalised output for the weight's gradient)
    norm_elements = shape.norms_per_layer * h + ((shape.num_heads + shape.num_kv_heads) * shape.head_dim
                                                 if shape.qk_norm else 0)
    total = norm_bytes * norm_elements + _attention_bytes_per_token(shape, config, c)
    total += 3 * c * i  # gate output (for the activation), activation output and up output (for their product)
    if full:
        # Under autocast each of q/k/v and gate/up casts the fp32 norm output itself; in fp32 they share it.
        # o_proj's input is the attention output and down_proj's the product: already counted.
        input_copies = 5 if autocast else 2
        total += input_copies * c * h + c * i  # + the product, kept by down_proj
    else:
        total += _lora_input_bytes_per_token(shape, config, c, autocast)
    return total


def _lora_input_bytes_per_token(shape: ModelShape, config: TrainConfig, c: int, autocast: bool) -> int:
    """What the adapters keep: each lora_A's input (and dropout mask) and its r outputs for lora_B."""
    targets = _lora_targets(config)
    linears = shape.linear_shapes()
    dropout = config.lora_dropout > 0
    if autocast or dropout:
        # Each adapter gets its own tensor: peft's cast to fp32 then autocast's cast back, or its own dropout.
        per_element = c + (DROPOUT_MASK_BYTES if dropout else 0)
        inputs = sum(per_element * linears[name][0] for name in targets)
    else:
        # fp32, no dropout: lora_A keeps the very tensor the frozen linear read; o_proj's is the attention output,
        # already kept by the attention kernel.
        shared_inputs = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in",
                         "gate_proj": "mlp_in", "up_proj": "mlp_in", "down_proj": "mlp_product"}
        sizes = {"attn_in": shape.hidden_size, "mlp_in": shape.hidden_size, "mlp_product": shape.intermediate_size}
        inputs = c * sum(sizes[key] for key in {shared_inputs[name] for name in targets if name in shared_inputs})
    return inputs + len(targets) * c * config.lora_r


def _activation_bytes(shape: ModelShape, config: TrainConfig, c: int, autocast: bool, loss_positions: int) -> int:
    full = config.finetuning == "full"
    residual_bytes = FP32_BYTES if full else c  # fp32 master weights make the residual stream fp32
    layer = _layer_activation_bytes_per_token(shape, config, c, autocast)
    if config.gradient_checkpointing:
        per_token = shape.num_layers * residual_bytes * shape.hidden_size + layer  # + the layer being recomputed
    else:
        per_token = shape.num_layers * layer
    final_norm = FP32_BYTES * (2 if full else 1) * shape.hidden_size
    lm_head_input = c * shape.hidden_size * loss_positions if full else 0  # the selected positions only
    rotary = 2 * residual_bytes * shape.head_dim  # cos and sin, shared by every layer
    return config.batch_tokens * (per_token + final_norm + rotary) + lm_head_input


def loss_bytes(positions: int, vocab_size: int, c: int, chunk_logits: int = LOSS_CHUNK_LOGITS) -> int:
    """Peak bytes of the logits and the chunked loss over `positions` positions (see the module docstring)."""
    chunk = min(positions, max(1, chunk_logits // vocab_size))
    logits = positions * vocab_size * c
    last_chunk = (positions - chunk) * vocab_size * c + LOSS_CHUNK_TRANSIENT_BYTES_PER_LOGIT * chunk * vocab_size
    return logits + max(2 * logits, last_chunk)


def planned_loss_positions(config: TrainConfig) -> tuple[int, str]:
    """K for `config` and where it comes from: measured on the dataset when it can be read here, else the default."""
    share = _measured_loss_share(config)
    if share is not None:
        source = f"measured on {config.dataset}"
    else:
        share = DEFAULT_LOSS_SHARE[config.shared_context]
        source = f"default for {'shared context' if config.shared_context else 'packing'}"
    return math.ceil(share * config.batch_tokens), source


def _measured_loss_share(config: TrainConfig) -> float | None:
    """The largest labelled share of a micro-batch, as train.py batches the first rows; None if unreadable here."""
    if is_hub_id(config.dataset) or not (Path(config.dataset) / "README.md").is_file():
        return None  # planning downloads nothing
    from qg.data.build import load_qg_dataset
    from qg.models.loading import load_tokenizer
    from qg.train.packing import build_groups, pack_groups

    try:
        if config.model == TINY_MODEL:
            tokenizer = load_tokenizer(TINY_MODEL)
        else:  # a folder or a Hub id already in the cache; EXAONE's tokenizer files load without conversion
            tokenizer = AutoTokenizer.from_pretrained(config.model, local_files_only=True)
        rows = load_qg_dataset(config.dataset, "pairs")["train"]
    except (OSError, ValueError, KeyError):
        return None
    rows = rows.select(range(min(PLANNER_SAMPLE_ROWS, len(rows))))
    groups, _ = build_groups(rows, tokenizer, shared_context=config.shared_context,
                             answer_aware=config.mode == "answer-aware", max_context_tokens=config.max_context_tokens,
                             max_question_tokens=config.max_question_tokens, max_group_tokens=config.batch_tokens)
    shares = [sum(len(branch) - 1 for group in batch for branch in group.branches)
              / sum(group.num_tokens for group in batch) for batch in pack_groups(groups, config.batch_tokens, seed=0)]
    return max(shares, default=None)


def _compute_dtype(config: TrainConfig) -> str:
    return {"auto": "bf16", "bf16": "bf16", "fp16": "fp16", "no": "fp32"}[config.mixed_precision]


def estimate_memory(config: TrainConfig, gpu_memory_bytes: int | None = None) -> MemoryEstimate:
    """Estimate the peak GPU memory of one training step of `config`; `fits` compares it with `gpu_memory_bytes`."""
    if config.batch_tokens <= 0:
        raise UserError(f"batch_tokens must be positive, got {config.batch_tokens}")
    shape = model_shape(config.model)
    dtype = _compute_dtype(config)
    autocast = dtype != "fp32"
    c = 2 if autocast else FP32_BYTES
    num_params = shape.num_params()
    matmul_params = shape.num_layers * shape.layer_linear_params() + shape.vocab_size * shape.hidden_size
    if config.finetuning == "full":
        trainable = num_params
        weights = FP32_BYTES * num_params
        weight_casts = c * matmul_params if autocast else 0
        adapter_weights = 0
    else:
        trainable = _lora_params(shape, config)
        if config.finetuning == "qlora":
            quantised = shape.num_layers * shape.layer_linear_params()
            weights = round(NF4_BYTES_PER_WEIGHT * quantised) + c * (num_params - quantised)
        else:
            weights = c * num_params
        weight_casts = 0
        adapter_weights = FP32_BYTES * trainable
    positions, positions_source = planned_loss_positions(config)
    return MemoryEstimate(
        model=config.model, shape=shape, finetuning=config.finetuning, compute_dtype=dtype,
        batch_tokens=config.batch_tokens, gradient_checkpointing=config.gradient_checkpointing,
        attn_implementation=config.attn_implementation,
        num_params=num_params, trainable_params=trainable,
        weights=weights, weight_casts=weight_casts, adapter_weights=adapter_weights,
        loss_positions=positions, loss_positions_source=positions_source,
        gradients=FP32_BYTES * trainable, optimizer_states=ADAMW_STATE_BYTES * trainable,
        activations=_activation_bytes(shape, config, c, autocast, positions),
        logits=loss_bytes(positions, shape.vocab_size, c),
        cuda_overhead=CUDA_OVERHEAD_BYTES, gpu_memory=gpu_memory_bytes,
    )


_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """'24GB' -> 24 * 10**9 bytes, '24GiB' -> 24 * 2**30 bytes (decimal and binary units as written)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise UserError(f"cannot read the size {text!r}: write a number and a unit, e.g. 24GB (10^9 bytes) or "
                        f"24GiB (2^30 bytes)")
    size = round(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if size <= 0:
        raise UserError(f"the GPU size {text!r} must be more than 0 bytes, e.g. 24GB")
    return size


def _labels(estimate: MemoryEstimate) -> dict[str, str]:
    weights = {"full": "fp32 master", "lora": f"{estimate.compute_dtype}, frozen",
               "qlora": f"NF4 + {estimate.compute_dtype}, frozen"}[estimate.finetuning]
    return {
        "weights": f"weights ({weights})",
        "weight_casts": f"autocast copies ({estimate.compute_dtype})",
        "adapter_weights": "LoRA adapters (fp32)",
        "gradients": "gradients (fp32)",
        "optimizer_states": "AdamW states (fp32)",
        "activations": "activations",
        "logits": f"logits, loss ({estimate.shape.vocab_size:,} vocab)",
        "cuda_overhead": "CUDA context, allocator",
    }


def format_table(estimate: MemoryEstimate, gpu_label: str) -> str:
    checkpointing = "gradient checkpointing" if estimate.gradient_checkpointing else "no gradient checkpointing"
    lines = [
        (f"{estimate.model}: {estimate.finetuning}, {estimate.compute_dtype}, {estimate.batch_tokens} tokens per "
         f"micro-batch, {estimate.attn_implementation}, {checkpointing}"),
        f"parameters {estimate.num_params / 1e6:,.1f}M, trainable {estimate.trainable_params / 1e6:,.1f}M",
        (f"loss at {estimate.loss_positions:,} of {estimate.batch_tokens:,} positions "
         f"({estimate.loss_positions / estimate.batch_tokens:.1%}, {estimate.loss_positions_source})"),
        "",
        f"{'component':<34}{'GiB':>8}",
    ]
    labels = _labels(estimate)
    lines += [f"{labels[name]:<34}{size / GIB:>8.2f}" for name, size in estimate.components().items() if size]
    lines.append(f"{'total':<34}{estimate.total / GIB:>8.2f}")
    if estimate.gpu_memory is not None:
        lines.append(f"{f'GPU ({gpu_label})':<34}{estimate.gpu_memory / GIB:>8.2f}")
        margin = abs(estimate.gpu_memory - estimate.total) / GIB
        verdict = f"fits ({margin:.2f} GiB to spare)" if estimate.fits else f"does not fit ({margin:.2f} GiB over)"
        lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def estimate_to_json(estimate: MemoryEstimate) -> dict:
    return {**dataclasses.asdict(estimate), "total": estimate.total, "fits": estimate.fits}


_PLANNER_HELP = (
    "Estimate the peak GPU memory of a training recipe and say whether it fits. Planner flags: "
    "--gpu-memory SIZE, the GPU to compare with (default 24GB; GB means 10^9 bytes, GiB 2^30 bytes); "
    "--json, print JSON instead of a table. The recipe keys below are train.py's; the planner reads model, "
    "finetuning, lora_r, lora_dropout, lora_target_modules, mixed_precision, batch_tokens, gradient_checkpointing, "
    "attn_implementation, and dataset, shared_context, mode, max_context_tokens and max_question_tokens for the "
    "share of positions that carry loss."
)


@command
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    planner = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    planner.add_argument("--gpu-memory", default="24GB")
    planner.add_argument("--json", action="store_true")
    flags, recipe_argv = planner.parse_known_args(argv)
    gpu_memory = parse_size(flags.gpu_memory)
    config, _ = parse_config(TrainConfig, recipe_argv, description=_PLANNER_HELP)
    estimate = estimate_memory(config, gpu_memory)
    if flags.json:
        print(json.dumps(estimate_to_json(estimate), indent=2))
        return
    print(format_table(estimate, flags.gpu_memory))
    if estimate.fits is False and not config.gradient_checkpointing:
        checkpointed = estimate_memory(dataclasses.replace(config, gradient_checkpointing=True), estimate.gpu_memory)
        print(f"with --gradient_checkpointing true: {checkpointed.total / GIB:.2f} GiB"
              f" ({'fits' if checkpointed.fits else 'still over'})")


if __name__ == "__main__":
    main()
