"""Uploading a staged folder to the Hugging Face Hub: one commit per repository, failures as one line.

    from huggingface_hub import HfApi
    from qg.hub.upload import hub_errors, push_folder
    with hub_errors("publishing ORG/NAME failed", "run again to retry"):
        push_folder(HfApi(token=token), "outputs/publish/model", "ORG/NAME", "model", private=False,
                    commit_message="Publish the model")

publish.py uploads every repository through `push_folder`, and so does `build_dataset.py --push-to-hub`: what a
staging folder holds is what the repository receives, byte for byte.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import HFValidationError

from qg.cli import UserError, one_line

# What the Hub client raises for a network failure, an HTTP error status (HfHubHTTPError is both an OSError and an
# httpx2.HTTPError) and a malformed repo id.
HUB_ERRORS = (OSError, httpx2.HTTPError, HFValidationError)


@contextlib.contextmanager
def hub_errors(failed: str, hint: str) -> Iterator[None]:
    """A Hub failure as one `UserError` line, `failed (reason); hint`; the reason, which can quote a response body,
    goes through `qg.cli.one_line`, so no token is in it."""
    try:
        yield
    except HUB_ERRORS as err:
        raise UserError(f"{failed} ({one_line(err)}); {hint}") from None


def push_folder(api: HfApi, folder: str | Path, repo_id: str, repo_type: str, *, private: bool,
                commit_message: str, space_sdk: str | None = None,
                space_variables: dict[str, str] | None = None) -> None:
    """Create `repo_id` if needed and make its files exactly those of `folder`, in one commit: remote files that
    are not in `folder` are deleted (upload_folder keeps .gitattributes).

    A Space's variables are set before its files arrive, so that the build those files start already sees them.
    """
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk)
    for key, value in (space_variables or {}).items():
        api.add_space_variable(repo_id, key, value)
    api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=folder, commit_message=commit_message,
                      delete_patterns="*")
