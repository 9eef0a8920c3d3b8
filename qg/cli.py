"""What every command line shares: user mistakes end in one clear line and exit code 2, and no secret is printed."""

from __future__ import annotations

import argparse
import errno
import functools
import os
import re
import sys
from collections.abc import Callable

# Hugging Face user and org tokens, and any bearer credential an HTTP error might echo back.
_SECRET = re.compile(r"\bhf_[A-Za-z0-9]{20,}|(?<=Bearer )[^\s'\",;]+", re.IGNORECASE)
# OS errors a user fixes by choosing another path or freeing space: their strerror says what happened.
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
                errno.ENOENT, errno.EEXIST, errno.ENAMETOOLONG, errno.EXDEV}


def scrub(text: str) -> str:
    """`text` with Hugging Face tokens (the saved one, $HF_TOKEN, anything shaped like one) replaced by <token>."""
    for secret in {os.environ.get("HF_TOKEN"), _saved_token()} - {None, ""}:
        text = text.replace(secret, "<token>")
    return _SECRET.sub("<token>", text)


def _saved_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace collapsed, secrets scrubbed, at most `limit` characters), or
    its type's name. Every message that can carry an HTTP response body goes through here."""
    return scrub(" ".join(str(err).split()))[:limit] or type(err).__name__


class UserError(Exception):
    """A mistake the user can fix (bad path, malformed file, missing token); printed as one line, exit code 2."""


def os_error_line(err: OSError) -> str:
    """'cannot write X: No space left on device' from an OSError's errno, path and strerror."""
    where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
    return f"{where}: {err.strerror or one_line(err)}" if where else (err.strerror or one_line(err))


def run(main: Callable[[], object]) -> None:
    """Call `main`; turn a `UserError`, or an OS error the user can fix (disk full, read-only, not a directory),
    into `error: <message>` on stderr and exit code 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {scrub(str(err))}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.errno not in _USER_ERRNOS:
            raise
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was left behind", file=sys.stderr)
        sys.exit(130)


def argument_type(convert: Callable[[str], object], accept: Callable[[object], bool], requirement: str):
    """An argparse type: `convert(text)` where `accept` takes it, else the one-line error "TEXT is not REQUIREMENT"."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"{text} is not {requirement}")
        return value

    return parse


positive_int = argument_type(int, lambda value: value >= 1, "a positive number")
non_negative_float = argument_type(float, lambda value: value >= 0, "a number >= 0")  # NaN fails the comparison
probability_mass = argument_type(float, lambda value: 0 < value <= 1, "in (0, 1]")  # top-p


def command(main: Callable[..., object]) -> Callable[..., None]:
    """A command line's `main(argv=None)`, run through `run`: what console scripts and thin scripts call."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> None:
        run(lambda: main(argv))

    return wrapper
