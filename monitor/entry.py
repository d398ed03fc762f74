"""The `depmon` console script: ignore SIGHUP for `run` before anything heavy is imported.

`import monitor.commands.cli` takes about a second on a small machine (pydantic, anyio, structlog, ...),
and SIGHUP's default action is to terminate: a reload requested during that second killed the
daemon (exit 129). This module imports nothing but the standard library, so the window between
the interpreter's start and the daemon's own signal receiver is closed within a few tens of
milliseconds.
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    """Entry point of the `depmon` console script."""
    if "run" in sys.argv[1:2] and hasattr(signal, "SIGHUP"):
        # The config being loaded is the newest anyway; the daemon installs its receiver later.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from monitor.commands.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
