"""What every command line shares: user mistakes end in one clear line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace collapsed, at most `limit` characters), or its type's name."""
    return " ".join(str(err).split())[:limit] or type(err).__name__


class UserError(Exception):
    """A mistake the user can fix (bad path, malformed file, missing token); printed as one line, exit code 2."""


def run(main: Callable[[], object]) -> None:
    """Call `main`; turn a `UserError` into `error: <message>` on stderr and exit code 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was left behind", file=sys.stderr)
        sys.exit(130)


def command(main: Callable[..., object]) -> Callable[..., None]:
    """A command line's `main(argv=None)`, run through `run`: what console scripts and thin scripts call."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> None:
        run(lambda: main(argv))

    return wrapper
