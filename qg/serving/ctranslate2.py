"""The CPU engine: a merged Llama-format model converted to CTranslate2 (int8 weights), sampled with `generate_batch`.

    qg-export outputs/exaone-lora --ctranslate2 exports/exaone-ct2             # adapter (merged here) -> int8
    qg-export merged/exaone --ctranslate2 exports/exaone-ct2-f32 --quantization float32

    from qg.serving.ctranslate2 import CTranslate2Engine
    engine = CTranslate2Engine("exports/exaone-ct2")                         # the folder's own tokenizer

On a 2-core CPU, transformers in fp32 took 60-285 s per request for the 2.4B model (bench/bench_space_cpu.py);
CTranslate2's int8 matrix products and its `num_hypotheses`, which samples several continuations from one prefill,
bring that to 25-45 s. float32 export gives the transformers model's logits (tests/test_ctranslate2.py).

Sampling is not reproducible by seed: CTranslate2 draws from a random generator per worker thread, seeded from
`ctranslate2.set_random_seed` once when the thread first samples, so `Decoding.seed` has no effect here (the
questions still pass the same checks, de-duplication and resampling: `QuestionGenerator(CTranslate2Engine(...))`).
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qg.cli import UserError, one_line
from qg.generate import CTRANSLATE2_MODEL_FILE, Decoding, text_before_end_of_turn
from qg.io import atomic_dir, is_hub_id
from qg.models.exaone import TOKENIZER_FILES
from qg.prompt import EncodedPrompt, end_of_turn_id

# Our name -> CTranslate2's. int8, for serving on CPU: int8 weights, float32 for the rest (plain "int8" would keep a
# bf16 model's rest in bf16, which CPUs without bf16 units convert at every load, with a warning). float32: the
# transformers model's logits.
QUANTIZATIONS = {"int8": "int8_float32", "float32": "float32"}
MODEL_FILE = CTRANSLATE2_MODEL_FILE


def convert(merged_model_dir: str | Path, out_dir: str | Path, quantization: str = "int8") -> Path:
    """Write the CTranslate2 model of a merged (or plain) Llama-format model folder to `out_dir`, with its tokenizer.

    The folder appears complete or not at all (an existing `out_dir` is replaced only on success).
    """
    import ctranslate2.converters
    from transformers import AutoConfig

    src = Path(merged_model_dir)
    if not (src / "config.json").is_file():
        raise UserError(f"{src} has no config.json: give a merged model folder, or an adapter to "
                        "qg-export --ctranslate2")
    if quantization not in QUANTIZATIONS:
        raise UserError(f"unknown quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
    rope = AutoConfig.from_pretrained(src).rope_parameters or {}

    class Converter(ctranslate2.converters.TransformersConverter):
        def _load(self):
            spec = super()._load()
            # ctranslate2 4.8's Llama loader keeps llama3 RoPE's low/high frequency factors but drops its `factor`
            # and `original_max_position_embeddings` (the spec stores a factor only for linear scaling), so every
            # position but the first would be rotated differently from transformers. The spec refuses new
            # attributes, hence vars(); the C++ side reads both names for llama3 scaling.
            if rope.get("rope_type") == "llama3":
                for layer in spec.decoder.layer:
                    attributes = vars(layer.self_attention)
                    attributes["rotary_scaling_factor"] = np.float32(rope["factor"])
                    attributes["original_max_position_embeddings"] = np.int32(rope["original_max_position_embeddings"])
            return spec

    tokenizer_files = [name for name in TOKENIZER_FILES if (src / name).is_file()]
    converter = Converter(str(src), copy_files=tokenizer_files)
    with atomic_dir(out_dir, owner="qg-export") as tmp:  # qg.serving.export.OWNER: --overwrite replaces it
        converter.convert(str(tmp), quantization=QUANTIZATIONS[quantization], force=True)
    return Path(out_dir)


def export(src: str, out_dir: str | Path, quantization: str = "int8", revision: str | None = None) -> Path:
    """Convert a peft adapter (folder or Hub id; merged into its base first by `qg.serving.export.export_merged`) or
    a model (folder, EXAONE checkpoint, or 'tiny-random-exaone') to a CTranslate2 folder."""
    from qg.generate import adapter_config
    from qg.models.loading import resolve_base
    from qg.serving.export import export_merged

    if adapter_config(src, revision) is None:
        return convert(resolve_base(src), out_dir, quantization)
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    # The merged model is written once for the converter to read, next to the output (the same disk, and big).
    with tempfile.TemporaryDirectory(prefix=f".{Path(out_dir).name}.merged-", dir=Path(out_dir).parent) as tmp:
        return convert(export_merged(src, Path(tmp) / "merged", revision), out_dir, quantization)


def check_model_folder(model_dir: str | Path) -> Path:
    """`model_dir` as a Path, after checking it holds a CTranslate2 model; refuses anything else in one line."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist: give a folder written by qg-export --ctranslate2")
    if not (folder / MODEL_FILE).is_file():
        raise UserError(f"{folder} has no {MODEL_FILE}: not a CTranslate2 model folder (write one with "
                        "qg-export --ctranslate2)")
    return folder


def local_model_folder(name: str) -> Path:
    """A CTranslate2 model folder: `name` itself, or the Hub repo `name` downloaded (a Space's `preload_from_hub`
    has put it in the cache already)."""
    if Path(name).is_dir() or not is_hub_id(name):
        return check_model_folder(name)
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(name)
    except Exception as err:  # noqa: BLE001 - offline, no such repo, no access: one line says which
        raise UserError(f"cannot download the CTranslate2 model {name}: {one_line(err)}") from None
    return check_model_folder(folder)


class CTranslate2Engine:
    """Generates with a CTranslate2 model folder; `prepare` and `describe` as `qg.generate.Engine` asks."""

    def __init__(self, model_dir: str | Path, tokenizer=None, device: str = "cpu", threads: int = 0):
        """`tokenizer`: the folder's own (copied there by `convert`) when None. `threads`: CTranslate2's intra-op
        threads, 0 for its default."""
        # With Intel MKL as the backend (CTranslate2's choice on Intel CPUs), weights packed once at load time: one
        # request of the 2.4B model took 23 s instead of 45 s on a 2-core Xeon (bench/bench_space_cpu.py). Read when
        # the model loads; other backends ignore it; a user's own setting wins.
        os.environ.setdefault("CT2_USE_EXPERIMENTAL_PACKED_GEMM", "1")
        import ctranslate2
        from transformers import AutoTokenizer

        self.model_dir = check_model_folder(model_dir)
        # The folder's config.json is CTranslate2's, without transformers_version: transformers 5 then suspects an
        # old Mistral tokenizer and warns that its regex may be wrong. This tokenizer is the model's own, as saved.
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, fix_mistral_regex=False) \
            if tokenizer is None else tokenizer
        # "default": compute in the type the folder was exported in ("auto" would quantise a float32 export to int8).
        self.generator = ctranslate2.Generator(str(self.model_dir), device=device, compute_type="default",
                                               intra_threads=threads)
        self.end_of_turn = end_of_turn_id(self.tokenizer)

    def prepare(self, prompts: Sequence[EncodedPrompt]) -> CTranslate2Prompts:
        return CTranslate2Prompts(self, [self.tokenizer.convert_ids_to_tokens(p.input_ids) for p in prompts])

    def describe(self) -> dict:
        # A converted model is merged: it is its own base.
        return {"engine": "ctranslate2", "model": str(self.model_dir), "base": str(self.model_dir), "revision": None,
                "device": self.generator.device, "compute_type": self.generator.compute_type}


class CTranslate2Prompts:
    """Prompts as token strings, which is what `Generator.generate_batch` takes."""

    def __init__(self, engine: CTranslate2Engine, tokens: list[list[str]]):
        self.engine = engine
        self.tokens = tokens

    def sample_ids(self, counts: Sequence[int], decoding: Decoding) -> list[list[list[int]]]:
        """`counts[i]` generated token id lists for prompt i, each ending with the end-of-turn id if it has one."""
        greedy = decoding.temperature == 0
        # sampling_topk=0: the whole vocabulary, shaped by temperature and top-p only, as qg.generate samples.
        options = dict(sampling_topk=1) if greedy else dict(
            sampling_topk=0, sampling_topp=decoding.top_p, sampling_temperature=decoding.temperature)
        # One call per (hypotheses, prompt length): num_hypotheses samples all of a prompt's questions from one
        # prefill, and prompts of one length prefill together (a batch of unequal lengths would feed the longer
        # prompts' extra tokens one decoding step at a time).
        groups = defaultdict(list)
        for index, count in enumerate(counts):
            if count:
                groups[1 if greedy else count, len(self.tokens[index])].append(index)
        samples = [[] for _ in counts]
        for (hypotheses, _length), indices in groups.items():
            results = self.engine.generator.generate_batch(
                [self.tokens[i] for i in indices], num_hypotheses=hypotheses, max_length=decoding.max_new_tokens,
                end_token=[self.engine.end_of_turn], return_end_token=True, include_prompt_in_result=False,
                **options)
            for index, result in zip(indices, results):
                # Greedy decoding is deterministic: one run stands for every question asked of it.
                samples[index] = result.sequences_ids * counts[index] if greedy else result.sequences_ids
        return samples

    def sample(self, counts: Sequence[int], decoding: Decoding) -> list[list[str | None]]:
        tokenizer = self.engine.tokenizer
        return [[text_before_end_of_turn(tokenizer, ids) for ids in rows] for rows in self.sample_ids(counts, decoding)]
