"""The console contract of every command (``st-simcse-evaluate``, the recipes): a user error (a missing file, a bad
value, a folder that cannot be written) ends the program with one ``error:`` line and exit code 2, Ctrl-C with one
line and exit code 130 (SIGTERM: 143), the traceback going to the log only; and progress, when the output goes to a
file or a pipe, comes as whole lines instead of a bar redrawn with carriage returns. Used by the evaluation command
and the recipes' machinery; it imports no heavy library."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)


def run_cli(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> Any:
    if not sys.stderr.isatty():
        progress_as_whole_lines()
    try:
        return main(sys.argv[1:] if argv is None else argv)
    except (ValueError, OSError) as error:
        logger.info("Stopped on an error", exc_info=True)  # the traceback, in the log file where there is one
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as stopped:
        print("\ninterrupted.", file=sys.stderr)
        sys.exit(128 + getattr(stopped, "signal_number", 2))  # 130 for SIGINT, 143 for SIGTERM


def one_line(text: str) -> str:
    """``text`` on one line: a library's message can carry line breaks (pandas' "Error tokenizing data.\\n")."""
    return " ".join(text.split())


def column_names(text: str | None, option: str, counts: Sequence[int], example: str, roles: str) -> list[str] | None:
    """``--columns a,b[,c]``: the column names, checked (how many, none empty, none twice); None for None.
    ``roles`` says what each column is, for the message."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if len(names) not in counts or not all(names):
        raise ValueError(f"{option} {text}: name {roles}, separated by commas, e.g. {option} {example}.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"{option} {text} names the column {', '.join(repeated)} twice; each role needs its own column, e.g. "
            f"{option} {example}."
        )
    return names


class WholeLines:
    """A file for one tqdm bar that writes its state as whole lines: the first after ``FIRST_AFTER`` seconds, then at
    most one every ``EVERY`` seconds, and the last when the bar ends (if it printed any). A bar that ends sooner
    prints nothing: a log gets a line for what takes long, not a fragment per redraw."""

    FIRST_AFTER = 10.0
    EVERY = 30.0
    encoding = "utf-8"

    def __init__(self, stream: Any) -> None:
        self.stream, self.started, self.last_line, self.state = stream, time.monotonic(), None, ""

    def write(self, text: str) -> int:
        state = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).replace("\r", "").strip()
        if state:
            self.state = state
            now = time.monotonic()
            due = self.last_line is None and now - self.started >= self.FIRST_AFTER
            if due or (self.last_line is not None and now - self.last_line >= self.EVERY):
                self._emit(now)
        elif "\n" in text and self.last_line is not None and self.state:  # the bar closed: its final state
            self._emit(time.monotonic())
            self.state = ""
        return len(text)

    def _emit(self, now: float) -> None:
        self.stream.write(self.state + "\n")
        self.stream.flush()
        self.last_line = now

    def flush(self) -> None:
        self.stream.flush()


def progress_as_whole_lines() -> None:
    """Every tqdm bar of this process that would draw on stderr writes whole lines instead (:class:`WholeLines`): the
    libraries' bars too (sentence-transformers' encoding, the miner, datasets), for output that goes to a file or a
    pipe, where carriage-return redraws become thousands of fragments. Idempotent."""
    from tqdm import std

    if getattr(std.tqdm.__init__, "_whole_lines", False):
        return
    original = std.tqdm.__init__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("file") in (None, sys.stderr) and len(args) < 5:
            kwargs["file"] = WholeLines(sys.stderr)
            kwargs.setdefault(
                "bar_format", "{desc}: {percentage:3.0f}% ({n_fmt}/{total_fmt}), {elapsed} elapsed, {remaining} left"
            )
            kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), 1.0)
        original(self, *args, **kwargs)

    __init__._whole_lines = True  # type: ignore[attr-defined]
    std.tqdm.__init__ = __init__
