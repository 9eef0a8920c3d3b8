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


class EchoingHub:
    """A local HTTP server, used as HF_ENDPOINT, that answers like a hostile Hub: the steps named in `failing` get an
    error status whose body and X-Error-Message header quote the request's Authorization header and token.

    Steps: "whoami" (GET /api/whoami-v2, answered 401), "create" (POST /api/repos/create, 500) and "upload"
    (everything else: tree listing, preupload, commit, Space variables; 403). whoami and create, when they do not
    fail, get what the Hub would answer, and publishing goes on to the next step.

        with EchoingHub({"create"}) as hub:
            env["HF_ENDPOINT"] = hub.url
            ...
        hub.authorizations   # the Authorization headers received
    """

    STATUS = {"whoami": 401, "create": 500, "upload": 403}

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.authorizations: list[str] = []

    def __enter__(self) -> EchoingHub:
        import http.server
        import json
        import threading

        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_request(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                authorization = self.headers.get("Authorization", "")
                hub.authorizations.append(authorization)
                path = self.path.split("?")[0]
                step = {"/api/whoami-v2": "whoami", "/api/repos/create": "create"}.get(path, "upload")
                if step in hub.failing:
                    token = authorization.removeprefix("Bearer ")
                    status, body = hub.STATUS[step], {"error": f"refused {authorization!r} (token {token})"}
                    headers = {"X-Error-Message": f"token {token} refused"}
                elif step == "whoami":
                    status, body, headers = 200, {"name": "owner", "type": "user"}, {}
                elif step == "create":
                    status, body, headers = 200, {"url": f"{hub.url}/some/repo"}, {}
                else:  # the upload protocol is not faked: a test fails a step at or before it
                    status, body, headers = 404, {"error": "not faked"}, {}
                payload = json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_request

            def log_message(self, *args) -> None:  # the test reads stderr of the command, not of the server
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: a free one
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
