"""The console contract of the command-line entry points: a user error (a missing file, a bad value, a folder that
cannot be written) ends the program with one ``error:`` line and exit code 2, Ctrl-C with one line and exit code
130 (SIGTERM: 143); the traceback goes to the log only."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def run_cli(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> Any:
    try:
        return main(sys.argv[1:] if argv is None else argv)
    except (ValueError, OSError) as error:
        logger.info("Stopped on an error", exc_info=True)  # the traceback, in the log file where there is one
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as stopped:
        print("\ninterrupted.", file=sys.stderr)
        sys.exit(128 + getattr(stopped, "signal_number", 2))  # 130 for SIGINT, 143 for SIGTERM
