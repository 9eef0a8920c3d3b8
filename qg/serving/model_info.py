"""What a served or batch-generated question came from: adapter, base, revision, prompt version.

`qg-serve` answers it at GET /v1/model; `qg-generate` puts it in the fingerprint that decides whether an interrupted
run may be resumed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from qg.io import is_hub_id
from qg.prompt import SYSTEM_PROMPT, USER_TEMPLATES

# Derived from the prompt texts rather than bumped by hand, so it cannot go stale when they change.
PROMPT_VERSION = "sha256:" + hashlib.sha256(
    json.dumps([SYSTEM_PROMPT, USER_TEMPLATES], ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:12]


def revision(name_or_path: str) -> str | None:
    """A local folder's file fingerprint (names, sizes, modification times), a Hub repo's commit in the local cache,
    or None (the tiny model, or a repo out of reach)."""
    path = Path(name_or_path)
    if path.is_dir():
        stamp = "".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}|" for f in sorted(path.iterdir())
                        if f.is_file())
        return "files:" + hashlib.sha256(stamp.encode()).hexdigest()[:12]
    if not is_hub_id(name_or_path):
        return None
    from huggingface_hub import snapshot_download

    try:
        # The cache keeps each download under snapshots/<commit>: the folder's name is the revision that was loaded.
        return Path(snapshot_download(name_or_path, allow_patterns=["*config.json"])).name
    except OSError:  # offline and not cached, or unreachable (huggingface_hub's errors are OSErrors)
        return None


def describe_model(model: str, base_name: str) -> dict:
    """adapter (None for a merged or plain model), base, revision (of the adapter, else the model), prompt version."""
    adapter = None if base_name == model else model
    return {"adapter": adapter, "base": base_name, "revision": revision(model), "prompt_version": PROMPT_VERSION}
