"""Files and names: atomic writes (a reader never sees a half-written file or folder), the cache, Hub ids."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from qg.cli import UserError


def is_hub_id(name: str) -> bool:
    """True when `name` is a valid Hub repo id of the form OWNER/NAME and no local path of that name exists."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.count("/") != 1 or Path(name).expanduser().exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def cache_dir() -> Path:
    """Where converted models and the tiny model are kept: $QG_CACHE, else ~/.cache/qg."""
    return Path(os.environ.get("QG_CACHE", Path.home() / ".cache" / "qg"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True, owner: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success it replaces `path` in one rename.

    On any exception the temporary folder is removed and an existing `path` is left as it was. With `owner` (the
    command that writes it, e.g. "qg-build-dataset") the folder gets a marker listing what it holds, and an
    existing `path` is replaced only under the rule of `check_output_dir`. The folder gets the permissions a plain
    mkdir would give it: 0777 less the umask.
    """
    path = Path(path)
    if owner is not None:
        check_output_dir(path, owner)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path, "tmp"), dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700, not what a plain mkdir gives
    try:
        yield tmp
        if owner is not None:
            _write_marker(tmp, owner)
            check_output_dir(path, owner)  # again: a conversion takes minutes, and the folder may appear meanwhile
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path, "old"), dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path` to write; on success it replaces `path` in one rename.

    The file gets the permissions a plain `open(path, "w")` would leave: an existing file's, else 0666 less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path, "tmp"), dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, mode)  # mkstemp's 0600
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------- owned folders


def marker_name(owner: str) -> str:
    """The file in a folder `owner` wrote that lists what it wrote there."""
    return f".{owner}.json"


def check_output_dir(path: str | os.PathLike, owner: str) -> None:
    """Refuse, in one `UserError` line, to write `owner`'s output folder at `path` when that could delete a
    user's file or cannot work.

    `path` may be absent, an empty folder, or a folder `owner` wrote (its marker lists every entry it holds) to
    which nothing has been added since; anything else is refused. The nearest existing folder above it must be
    writable. Call it before long work, so a bad --output-dir fails at once.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise UserError(f"{path} exists and is not a folder; choose another output folder")
        entries = _entries(path)
        if entries:
            marker = path / marker_name(owner)
            try:
                written = set(json.loads(marker.read_text(encoding="utf-8"))["entries"])
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(f"{path} exists and was not written by {owner}; choose another output folder "
                                "or remove it yourself") from None
            if foreign := sorted(entries - written - {marker.name}):
                more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
                raise UserError(f"{path} holds {foreign[0]}{more}, which {owner} did not write; move it away or "
                                "choose another output folder")
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        raise UserError(f"cannot create {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create {path}: {parent} is read-only or not writable by you; "
                        "choose another output folder")


def _entries(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def _write_marker(folder: Path, owner: str) -> None:
    atomic_write_json(folder / marker_name(owner), {"written_by": owner, "entries": sorted(_entries(folder))})


# ---------------------------------------------------------------------------------------------------- temporaries

# `.NAME.tmp-PID@HOST-RANDOM`: the writer in the name, so a later run can tell a dead writer's leftover from a
# live one's (another process, or another machine sharing the folder).
_TEMP = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)@(?P<host>[^@/]+)-\w+")


def _temp_prefix(path: Path, kind: str) -> str:
    return f".{path.name}.{kind}-{os.getpid()}@{socket.gethostname()}-"


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None) -> None:
    """Remove the temporaries that atomic writes of `name` (of any name when None) into `folder` left behind when
    their process died (kill -9, out of memory, power loss); a live writer's, or another machine's, are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        match = _TEMP.fullmatch(entry.name)
        if (match is None or (name is not None and match["name"] != name)
                or match["host"] != socket.gethostname() or _alive(int(match["pid"]))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask
