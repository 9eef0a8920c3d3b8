"""What every command line shares: user mistakes end in one clear line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


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
