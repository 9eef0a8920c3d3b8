"""The generator options qg-serve and qg-generate share: a model loaded here (transformers, or the CTranslate2 CPU
engine for a `qg-export --ctranslate2` folder), or an OpenAI-compatible server (--engine-url)."""

from __future__ import annotations

import argparse
import os

from qg.generate import QuestionGenerator

ENGINE_KEY_VARIABLE = "QG_ENGINE_API_KEY"  # the serving engine's key, from the environment: never a flag in `ps`


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


def load_generator(args: argparse.Namespace, max_context_tokens: int, device: str = "auto") -> QuestionGenerator:
    if args.engine_url is None:
        return QuestionGenerator.from_pretrained(args.model, base=args.base, device=device,
                                                 max_context_tokens=max_context_tokens)
    return QuestionGenerator.from_engine_url(args.engine_url, args.engine_model or args.model, args.model,
                                             timeout=args.engine_timeout,
                                             api_key=os.environ.get(ENGINE_KEY_VARIABLE) or None,
                                             max_context_tokens=max_context_tokens)
