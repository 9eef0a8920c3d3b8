"""`QuestionGenerator`: N distinct questions per paragraph, over any `Engine` that samples continuations of prompts.

    from qg.generate import QuestionGenerator

    generator = QuestionGenerator.from_pretrained("outputs/smoke")  # a LoRA adapter folder or Hub id, or a model
    [result] = generator.generate(["훈민정음은 1443년 세종이 창제한 문자이다. ..."], num_questions=5)
    result.questions, result.rejected, result.truncated

The generator builds every prompt with `qg.prompt.encode_prompt`, asks its engine for candidates, and keeps what
`qg.quality` accepts: candidates that end without the end-of-turn token, fail `qg.quality.rejection_reason` or
near-duplicate an accepted question are rejected and counted by reason; paragraphs still short of N questions are
sampled again from the same prepared prompts, for at most `max_rounds` rounds. Engines: `TransformersEngine` (a
local model, below) and `qg.serving.openai.OpenAIEngine` (any OpenAI-compatible server).

`model.generate(num_return_sequences=N)` copies every prompt N times before its first forward pass, so a 500-token
paragraph is prefilled N times to sample N questions of ~20 tokens. `TransformersEngine` runs a left-padded batch of
prompts through the model once, all but its last token, into a `DynamicCache` (`PrefilledPrompts`). Each sampling
round copies that cache's rows once per wanted question and passes the copy to `model.generate` with the full prompt
ids: transformers 5.23 (`GenerationMixin._prefill`) then feeds the model only the prompt tokens the cache lacks, the
last one, before decoding as usual. So greedy decoding gives the tokens of plain `model.generate`
(tests/test_generate.py), and bench/bench_generate.py measures the speed-up.
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import LogitsProcessorList

from qg.cli import UserError
from qg.models.loading import load_base
from qg.models.tiny import TINY_MODEL
from qg.prompt import EncodedPrompt, encode_prompt, end_of_turn_id
from qg.quality import is_near_duplicate, rejection_reason
from qg.sampling import NucleusSampling

CTRANSLATE2_MODEL_FILE = "model.bin"  # what marks a CTranslate2 folder: no transformers checkpoint has it
NO_EOS = "no_eos"  # the generation reached max_new_tokens before EOS: a cut-off question, or a loop
DUPLICATE = "duplicate"  # the same question as an accepted one, or a near-duplicate of it (qg.quality)


@dataclass(frozen=True)
class Decoding:
    """How questions are generated; `DEFAULTS` is every caller's default (evaluation, cards, the Space, serving)."""

    num_questions: int = 5
    temperature: float = 0.8  # 0: greedy, which is deterministic, so one question per paragraph
    top_p: float = 0.95
    max_new_tokens: int = 64
    max_rounds: int = 3
    max_context_tokens: int = 1024  # the paragraph's token budget: longer ones are cut at a sentence end
    seed: int | None = 0  # None: unseeded


DEFAULTS = Decoding()


class PreparedPrompts(Protocol):
    def sample(self, counts: Sequence[int], decoding: Decoding) -> list[list[str | None]]:
        """counts[i] candidate questions for prompt i: each the decoded text before the end-of-turn token, or None
        when generation stopped at max_new_tokens without it. `decoding.seed` (when set) makes the draws
        reproducible; `QuestionGenerator` gives every round its own (`derived_seed`)."""


class Engine(Protocol):
    tokenizer: Any  # the HF tokenizer prompts are built with (qg.prompt.encode_prompt)

    def prepare(self, prompts: Sequence[EncodedPrompt]) -> PreparedPrompts: ...

    def describe(self) -> dict:
        """{"engine": "transformers", "model": ..., "base": ..., "revision": ...}"""


class EngineError(RuntimeError):
    """The engine could not answer (server down, timeout, 5xx): callers map it to 503 or one error line."""


@dataclass
class GeneratedQuestions:
    questions: list[str]  # distinct, accepted, in generation order, at most num_questions
    rejected: Counter  # reason code -> count: qg.quality's codes, NO_EOS, DUPLICATE
    truncated: bool  # the paragraph was cut to the token budget


def text_before_end_of_turn(tokenizer, token_ids: Sequence[int]) -> str | None:
    """A generated question: the text before the first end-of-turn token, or None when there is none."""
    end = end_of_turn_id(tokenizer)
    token_ids = list(token_ids)
    return tokenizer.decode(token_ids[:token_ids.index(end)]) if end in token_ids else None


def derived_seed(seed: int | None, index: int) -> int | None:
    """The `index`-th of a family of seeds for draws that must differ (sampling rounds, parallel requests) and replay
    with `seed`: index 0 is `seed` itself."""
    if seed is None or index == 0:
        return seed
    return random.Random(f"{seed}:{index}").getrandbits(31)


def select_questions(candidates: Iterable[str | None], context: str, num_questions: int,
                     accepted: Sequence[str] = ()) -> tuple[list[str], Counter]:
    """Accept candidates in order until there are `num_questions`; count the rejected ones by reason.

    A candidate is the decoded text before EOS, or None for a generation that reached max_new_tokens without EOS.
    `accepted` holds the questions already accepted for `context` (earlier rounds): the result extends it, and new
    candidates must not duplicate it. Candidates after the `num_questions`-th accepted one are left unexamined.
    """
    accepted = list(accepted)
    rejected = Counter()
    for candidate in candidates:
        if len(accepted) >= num_questions:
            break
        if candidate is None:
            rejected[NO_EOS] += 1
            continue
        question = candidate.strip()
        reason = rejection_reason(question, context) or (DUPLICATE if is_near_duplicate(question, accepted) else None)
        if reason is None:
            accepted.append(question)
        else:
            rejected[reason] += 1
    return accepted, rejected


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of `prompts` padded on the left, as decoder-only generation needs."""
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.tensor([[pad_token_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return input_ids, attention_mask


class PrefilledPrompts:
    """A left-padded batch of prompts run through the model once; `generate` continues any of them from that cache."""

    def __init__(self, model, prompts: Sequence[Sequence[int]], pad_token_id: int):
        self.model = model
        self.input_ids, self.attention_mask = left_pad(prompts, pad_token_id, model.device)
        self.width = self.input_ids.shape[1]
        # The positions `generate` gives a left-padded row: counted over real tokens only, as the prompt alone has.
        position_ids = (self.attention_mask.cumsum(-1) - 1).masked_fill(self.attention_mask == 0, 0)
        # All but the last token: with a cache as long as the prompt, `generate` would slice `input_ids[:, -0:]`,
        # the whole prompt, and prefill it again; one token short, it runs just that token for the first logits.
        self.cache = model(input_ids=self.input_ids[:, :-1], attention_mask=self.attention_mask[:, :-1],
                           position_ids=position_ids[:, :-1], use_cache=True, logits_to_keep=1).past_key_values

    def generate(self, samples_per_prompt: Sequence[int], **generate_kwargs):
        """`model.generate` on prompt i repeated `samples_per_prompt[i]` times, rows in prompt order; returns what
        `model.generate` returns (sequences include the padded prompt, `self.width` tokens)."""
        rows = torch.repeat_interleave(torch.arange(len(samples_per_prompt), device=self.input_ids.device),
                                       torch.tensor(samples_per_prompt, device=self.input_ids.device))
        # A copy per call: `generate` appends the sampled tokens to the cache it is given, and later rounds need
        # the prompt cache as it was. A deep copy keeps every layer's type and state (sliding-window layers too).
        cache = copy.deepcopy(self.cache)
        cache.batch_select_indices(rows)
        return self.model.generate(input_ids=self.input_ids[rows], attention_mask=self.attention_mask[rows],
                                   past_key_values=cache, **generate_kwargs)


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Random draws from `torch.manual_seed(seed)`, the caller's random state restored afterwards (None: unseeded)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class TransformersEngine:
    """A local transformers model (a `PeftModel` too): each prepared batch is prefilled once (`PrefilledPrompts`)."""

    def __init__(self, model, tokenizer, name: str | None = None, base: str | None = None,
                 revision: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or model.name_or_path
        self.base = base or self.name  # the base model's name (the model's own, when it is not an adapter)
        self.revision = revision
        # Llama-family tokenizers may lack a pad token; padded positions are masked out, so any id does.
        self.pad_token_id = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id

    def prepare(self, prompts: Sequence[EncodedPrompt]) -> TransformersPrompts:
        with torch.inference_mode():
            return TransformersPrompts(self, PrefilledPrompts(self.model, [p.input_ids for p in prompts],
                                                              self.pad_token_id))

    def describe(self) -> dict:
        return {"engine": "transformers", "model": self.name, "base": self.base, "revision": self.revision}


class TransformersPrompts:
    def __init__(self, engine: TransformersEngine, prefilled: PrefilledPrompts):
        self.engine = engine
        self.prefilled = prefilled

    def sample(self, counts: Sequence[int], decoding: Decoding) -> list[list[str | None]]:
        tokenizer = self.engine.tokenizer
        # Sampling is shaped by temperature and top-p only, whatever a checkpoint's generation_config says:
        # NucleusSampling draws the token and generate's greedy step takes it.
        sampling = [] if decoding.temperature == 0 else [NucleusSampling(decoding.temperature, decoding.top_p)]
        with torch.inference_mode(), seeded(decoding.seed, self.engine.model.device):
            sequences = self.prefilled.generate(counts, max_new_tokens=decoding.max_new_tokens,
                                                eos_token_id=end_of_turn_id(tokenizer),
                                                pad_token_id=self.engine.pad_token_id, do_sample=False,
                                                logits_processor=LogitsProcessorList(sampling))
        rows = iter(sequences[:, self.prefilled.width:].tolist())
        return [[text_before_end_of_turn(tokenizer, next(rows)) for _ in range(count)] for count in counts]


def adapter_config(name_or_path: str, revision: str | None = None):
    """The peft config of an adapter folder or Hub repo, or None when it is not an adapter."""
    from peft import PeftConfig
    from peft.utils import CONFIG_NAME

    path = Path(name_or_path)
    # A folder without the file is a model folder: no Hub look-up under its name.
    if name_or_path == TINY_MODEL or (path.is_dir() and not (path / CONFIG_NAME).is_file()):
        return None
    try:
        return PeftConfig.from_pretrained(name_or_path, revision=revision)
    except ValueError:  # not an adapter repo, or out of reach: loading it as a model reports the problem
        return None


class QuestionGenerator:
    """Generates distinct, quality-checked questions about paragraphs with an `Engine`."""

    def __init__(self, engine: Engine, max_context_tokens: int = DEFAULTS.max_context_tokens):
        self.engine = engine
        self.max_context_tokens = max_context_tokens

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def model(self):
        """The local model (`TransformersEngine` only)."""
        return self.engine.model

    @property
    def base_name(self) -> str:
        """The base model's name (or the model's own, when it is not an adapter)."""
        return self.engine.describe()["base"]

    @classmethod
    def from_pretrained(cls, model: str, base: str | None = None, device: str = "auto", merge: bool = False,
                        max_context_tokens: int = DEFAULTS.max_context_tokens,
                        revision: str | None = None) -> QuestionGenerator:
        """Load a peft adapter (folder or Hub id, at `revision`) on its base, or a merged or plain model, or a
        CTranslate2 folder (`qg-export --ctranslate2`), which the CPU engine runs (`qg.serving.ctranslate2`).

        The adapter's base is `base`, else the one its peft config names, at the revision it records; bases and
        plain models load through `qg.models.loading.load_base`, so EXAONE checkpoints are converted and
        'tiny-random-exaone' works. `merge` folds the LoRA weights into the base for faster inference. Device
        "auto": CUDA in bf16 when available, else CPU in fp32.
        """
        target = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        # bf16 where the GPU has it; fp16 on older ones (T4), fp32 on CPU.
        dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if target.type == "cuda" \
            else torch.float32
        if (Path(model) / CTRANSLATE2_MODEL_FILE).is_file():
            from qg.serving.ctranslate2 import CTranslate2Engine

            return cls(CTranslate2Engine(model, device=target.type), max_context_tokens)
        adapter = adapter_config(model, revision)
        if adapter is None:
            if base is not None:
                raise UserError(f"{model} is not a peft adapter (no adapter_config.json), so base {base} has no use")
            loaded, tokenizer = load_base(model, revision=revision, dtype=dtype)
            return cls(TransformersEngine(loaded.to(target), tokenizer, model, revision=revision), max_context_tokens)
        from peft import PeftModel

        base_revision = adapter.revision if base is None else None
        base = base or adapter.base_model_name_or_path
        loaded, tokenizer = load_base(base, revision=base_revision, dtype=dtype)
        loaded = PeftModel.from_pretrained(loaded.to(target), model, revision=revision)
        if merge:
            loaded = loaded.merge_and_unload()
        return cls(TransformersEngine(loaded, tokenizer, model, base, revision), max_context_tokens)

    @classmethod
    def from_engine_url(cls, url: str, model: str, tokenizer_from: str, revision: str | None = None,
                        timeout: float = 120.0, api_key: str | None = None,
                        max_context_tokens: int = DEFAULTS.max_context_tokens) -> QuestionGenerator:
        """Generate through an OpenAI-compatible server at `url` serving `model` (the name it is served under).

        Prompts are built with the tokenizer of `tokenizer_from`, the adapter (or merged model) being served, at
        `revision`: the same prompts as `from_pretrained(tokenizer_from)` builds. See `qg.serving.openai`.
        """
        from qg.serving.openai import OpenAIEngine, prompt_tokenizer

        tokenizer, base = prompt_tokenizer(tokenizer_from, revision)
        return cls(OpenAIEngine(url, model, tokenizer, timeout, api_key, base, revision), max_context_tokens)

    def generate(self, contexts: list[str], num_questions: int = DEFAULTS.num_questions,
                 answers: list[str] | None = None, temperature: float = DEFAULTS.temperature,
                 top_p: float = DEFAULTS.top_p, max_new_tokens: int = DEFAULTS.max_new_tokens,
                 seed: int | None = DEFAULTS.seed, max_rounds: int = DEFAULTS.max_rounds,
                 batch_size: int = 8) -> list[GeneratedQuestions]:
        """Up to `num_questions` distinct accepted questions per paragraph, in the order of `contexts`.

        `answers` (one per context) asks for questions whose answer is given. `temperature` 0 decodes greedily:
        that is deterministic, so it yields one question per paragraph. Sampling is seeded by `seed` (for a local
        model through `torch.manual_seed`, the caller's random state left as it was): the same contexts, settings
        and `batch_size` give the same questions (on GPU up to kernel nondeterminism). `batch_size` paragraphs are
        prepared together (one prefill); each of the `max_rounds` rounds samples as many questions as a paragraph
        still lacks.
        """
        if answers is not None and len(answers) != len(contexts):
            raise ValueError(f"{len(answers)} answers for {len(contexts)} contexts: give one answer per context")
        if num_questions < 1 or max_rounds < 1 or batch_size < 1:
            raise ValueError("num_questions, max_rounds and batch_size must be at least 1")
        greedy = temperature == 0
        decoding = Decoding(1 if greedy else num_questions, temperature, top_p, max_new_tokens,
                            1 if greedy else max_rounds, self.max_context_tokens, seed)
        answers = [None] * len(contexts) if answers is None else answers
        results = []
        for start in range(0, len(contexts), batch_size):
            batch = slice(start, start + batch_size)
            results += self._generate_batch(contexts[batch], answers[batch], decoding)
        return results

    def _generate_batch(self, contexts: list[str], answers: list[str | None],
                        decoding: Decoding) -> list[GeneratedQuestions]:
        prompts = [encode_prompt(self.tokenizer, c, a, decoding.max_context_tokens) for c, a in zip(contexts, answers)]
        prepared = self.engine.prepare(prompts)
        results = [GeneratedQuestions([], Counter(), p.truncated) for p in prompts]
        for round_index in range(decoding.max_rounds):
            wanted = [decoding.num_questions - len(r.questions) for r in results]
            if not any(wanted):
                break
            sampled = prepared.sample(wanted, replace(decoding, seed=derived_seed(decoding.seed, round_index)))
            for context, result, candidates in zip(contexts, results, sampled):
                result.questions, rejected = select_questions(candidates, context, decoding.num_questions,
                                                              result.questions)
                result.rejected.update(rejected)
        return results
