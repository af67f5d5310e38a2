"""What every job's entry point shares: one-line errors for bad arguments."""
from __future__ import annotations

import logging
import sys


class UsageError(ValueError):
    """Bad options or inputs, reported as one line before any work starts."""


def main(run, argv=None, prog="job") -> int:
    """Call run(argv); turn UsageError into `prog: error: ...` and exit code 2."""
    logging.getLogger().setLevel(logging.WARNING)
    try:
        run(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0
