"""The generator options qg-serve and qg-generate share: a model loaded here (transformers, or the CTranslate2 CPU
engine for a `qg-export --ctranslate2` folder), or an OpenAI-compatible server (--engine-url)."""

from __future__ import annotations

import argparse
import inspect
import os

from qg.cli import positive_int
from qg.generate import QuestionGenerator

ENGINE_KEY_VARIABLE = "QG_ENGINE_API_KEY"  # the serving engine's key, from the environment: never a flag in `ps`


def _defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


# The library's own defaults, so the command lines cannot drift from them.
GENERATE_DEFAULTS = _defaults(QuestionGenerator.generate)
LOAD_DEFAULTS = _defaults(QuestionGenerator.from_pretrained)


def add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="LoRA adapter (folder or Hub id), merged model or base, or a CTranslate2 folder "
                             "(qg-export --ctranslate2: the CPU engine). With --engine-url: the adapter or merged "
                             "model the server serves, whose tokenizer builds the prompts here")
    parser.add_argument("--base", help="the adapter's base model (default: the one in adapter_config.json)")
    parser.add_argument("--engine-url",
                        help="generate with an OpenAI-compatible server (vLLM, transformers serve) at this URL, e.g. "
                             f"http://127.0.0.1:8000/v1, instead of loading the model here (key: ${ENGINE_KEY_VARIABLE})")
    parser.add_argument("--engine-model",
                        help="the name the server serves the model under (vLLM: the --lora-modules name; default: "
                             "--model)")
    parser.add_argument("--engine-timeout", type=float, default=120.0,
                        help="seconds a server request may take before it counts as failed (default 120)")
    g = GENERATE_DEFAULTS
    parser.add_argument("--max-new-tokens", type=positive_int, default=g["max_new_tokens"],
                        help=f"tokens per question at most, which bounds a paragraph's latency "
                             f"(default {g['max_new_tokens']})")
    parser.add_argument("--max-rounds", type=positive_int, default=g["max_rounds"],
                        help=f"sampling rounds for paragraphs short of questions (default {g['max_rounds']})")
    parser.add_argument("--max-context-tokens", type=positive_int, default=LOAD_DEFAULTS["max_context_tokens"],
                        help="paragraphs are cut at a sentence end to this many tokens "
                             f"(default {LOAD_DEFAULTS['max_context_tokens']})")


def load_generator(args: argparse.Namespace, device: str = "auto") -> QuestionGenerator:
    if args.engine_url is None:
        return QuestionGenerator.from_pretrained(args.model, base=args.base, device=device,
                                                 max_context_tokens=args.max_context_tokens)
    return QuestionGenerator.from_engine_url(args.engine_url, args.engine_model or args.model, args.model,
                                             timeout=args.engine_timeout,
                                             api_key=os.environ.get(ENGINE_KEY_VARIABLE) or None,
                                             max_context_tokens=args.max_context_tokens)
