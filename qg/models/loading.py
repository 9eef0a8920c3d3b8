"""Base models and tokenizers: EXAONE (converted once to Llama format into the cache), native models, the tiny model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from qg.cli import UserError
from qg.io import cache_dir, remove_stale_temps
from qg.models.exaone import convert_exaone_checkpoint, resolve_source
from qg.models.tiny import TINY_MODEL, tiny_model_dir


def _is_exaone(folder: Path) -> bool:
    config = folder / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "exaone"


def _hub_config(repo_id: str, revision: str | None) -> dict | None:
    """The Hub repo's config.json, or None when it cannot be had (then transformers reports the problem)."""
    from huggingface_hub import hf_hub_download

    try:
        return json.loads(Path(hf_hub_download(repo_id, "config.json", revision=revision)).read_text())
    except Exception:  # noqa: BLE001 - any failure here is reported by the real load that follows
        return None


def resolve_base(name_or_path: str, revision: str | None = None) -> str:
    """A name transformers can load natively: EXAONE checkpoints are converted into the cache the first time."""
    if name_or_path == TINY_MODEL:
        return str(tiny_model_dir())
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} has no config.json: not a model folder")
        if not _is_exaone(path):
            return str(path)
        stamp = "".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(path.glob("*")))
        key = hashlib.sha256(f"{path.resolve()}|{stamp}".encode()).hexdigest()[:12]
        converted = cache_dir() / "converted" / f"{path.name}-{key}"
    else:
        config = _hub_config(name_or_path, revision)
        if config is None or config.get("model_type") != "exaone":
            return name_or_path
        converted = cache_dir() / "converted" / f"{name_or_path.replace('/', '--')}--{revision or 'main'}"
    if not converted.exists():
        # A conversion killed midway (out of memory, kill -9) leaves gigabytes; when the source has changed
        # since, its key has too and no later conversion of the same name would clean them up.
        remove_stale_temps(converted.parent)
        convert_exaone_checkpoint(resolve_source(name_or_path, revision), converted, overwrite=True)
    return str(converted)


def _revision(name_or_path: str, resolved: str, revision: str | None) -> dict:
    """`revision` for from_pretrained when it loads from the Hub itself (a converted copy is already that revision)."""
    return {"revision": revision} if resolved == name_or_path and not Path(resolved).is_dir() else {}


def load_tokenizer(name_or_path: str, revision: str | None = None):
    resolved = resolve_base(name_or_path, revision)
    return AutoTokenizer.from_pretrained(resolved, **_revision(name_or_path, resolved, revision))


def load_base(name_or_path: str, *, revision: str | None = None, dtype: torch.dtype = torch.float32,
              attn_implementation: str = "sdpa", **model_kwargs):
    """(model, tokenizer) for an EXAONE id or folder, the tiny offline model, or any native causal LM."""
    resolved = resolve_base(name_or_path, revision)
    model_kwargs.update(_revision(name_or_path, resolved, revision))
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, **_revision(name_or_path, resolved, revision))
        model = AutoModelForCausalLM.from_pretrained(
            resolved, dtype=dtype, attn_implementation=attn_implementation, **model_kwargs)
    except OSError as err:
        raise UserError(f"cannot load model {name_or_path!r}: {str(err).splitlines()[0]}") from None
    return model, tokenizer
