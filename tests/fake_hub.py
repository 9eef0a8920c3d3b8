"""A stand-in for the Hugging Face Hub at huggingface_hub's own boundary: `HfApi`'s methods that publishing calls.

    hub = FakeHub(monkeypatch)   # every HfApi instance now talks to `hub`
    ...                          # run the real command
    hub.calls                    # ("create_repo", repo_id, repo_type, private, space_sdk), ...
    hub.repos["model", "ORG/NAME"]   # {path: bytes}: what upload_folder would have sent, read from disk

upload_folder is recorded as the library would send it: every file under `folder_path` minus the library's default
ignore patterns (.git/, .cache/huggingface/) and the call's own patterns. Any HfApi method not faked here reaches
the real client, which the offline suite refuses.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects


class FakeHub:
    def __init__(self, monkeypatch, user: str = "owner") -> None:
        self.calls: list[tuple] = []
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.variables: dict[str, dict[str, str]] = {}
        hub = self

        def whoami(api, *args, **kwargs):
            hub.calls.append(("whoami",))
            return {"name": user, "type": "user"}

        def create_repo(api, repo_id, *, repo_type=None, private=None, exist_ok=False, space_sdk=None, **kwargs):
            hub.calls.append(("create_repo", repo_id, repo_type or "model", private, space_sdk))
            hub.repos.setdefault((repo_type or "model", repo_id), {})

        def add_space_variable(api, repo_id, key, value, **kwargs):
            hub.calls.append(("add_space_variable", repo_id, key, value))
            hub.variables.setdefault(repo_id, {})[key] = value

        def upload_folder(api, *, repo_id, folder_path, repo_type=None, allow_patterns=None, ignore_patterns=None,
                          delete_patterns=None, **kwargs):
            repo_type = repo_type or "model"
            hub.calls.append(("upload_folder", repo_id, repo_type, delete_patterns))
            folder = Path(folder_path)
            paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            ignore = [*DEFAULT_IGNORE_PATTERNS, *_as_list(ignore_patterns)]
            sent = {path: (folder / path).read_bytes()
                    for path in filter_repo_objects(paths, allow_patterns=allow_patterns, ignore_patterns=ignore)}
            files = {} if delete_patterns == "*" else dict(hub.repos.get((repo_type, repo_id), {}))
            hub.repos[repo_type, repo_id] = files | sent

        for name, method in [("whoami", whoami), ("create_repo", create_repo),
                             ("add_space_variable", add_space_variable), ("upload_folder", upload_folder)]:
            monkeypatch.setattr(HfApi, name, method)


def _as_list(patterns: str | list[str] | None) -> list[str]:
    if patterns is None:
        return []
    return [patterns] if isinstance(patterns, str) else list(patterns)
