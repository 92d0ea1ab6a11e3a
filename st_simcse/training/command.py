"""How a recipe's command ends: under the console contract (:func:`st_simcse.console.run_cli`: one ``error:`` line
and exit code 2 for a user error found before anything ran), a run stopped by Ctrl-C or SIGTERM ends with one line
naming the resume command (exit code 130 or 143), and a run that failed after it started with one ``error:`` line
naming the last complete checkpoint and the resume command (exit code 1). Used by the recipes; no heavy library is
imported here."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

from st_simcse.console import run_cli
from st_simcse.training.run import PushFailed, RunFailed, RunInterrupted
from st_simcse.training.signals import EXIT_CODES, stop_on_signals


def resume_command(output_dir: str) -> str:
    """The command that resumes the run in ``output_dir``: the run's options come from its arguments.json."""
    recipe = shlex.quote(sys.argv[0])
    return f"python {recipe} --output-dir {shlex.quote(output_dir)} --resume"


def close_progress_bars() -> None:
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def run_main(main: Callable[[list[str]], Any]) -> None:
    """Run a recipe's ``main`` under the console contract (:func:`st_simcse.console.run_cli`: one ``error:`` line and
    exit code 2 for a user error found before anything ran). A run stopped by Ctrl-C or SIGTERM (checkpointed at the
    step it was in, :mod:`st_simcse.training.signals`) ends with one line naming the resume command and exit code 130
    or 143; a run that failed after it started (a full disk, a bug) with one ``error:`` line naming the last
    complete checkpoint and the resume command, and exit code 1; a push to the hub that failed after the run with one
    ``error:`` line saying how to push by hand, and exit code 1."""

    def main_resumable(argv: list[str]) -> Any:
        with stop_on_signals():
            try:
                return main(argv)
            except RunInterrupted as stopped:
                close_progress_bars()  # else the training bar is drawn again below the message when the process exits
                print(f"\n{interrupted_line(stopped)}", file=sys.stderr)
                sys.exit(EXIT_CODES.get(stopped.signal_number, 130))
            except RunFailed as failed:
                close_progress_bars()
                print(f"\n{failed_line(failed)}", file=sys.stderr)
                sys.exit(1)
            except PushFailed as failed:
                print(f"\n{failed.line()}", file=sys.stderr)
                sys.exit(1)

    run_cli(main_resumable)


def interrupted_line(stopped: RunInterrupted) -> str:
    if stopped.checkpoint is None:
        return (
            f"interrupted before the first checkpoint of {stopped.output_dir}: nothing to resume; run the same "
            "command again to start afresh."
        )
    resume = resume_command(stopped.output_dir)
    return f"interrupted; the last checkpoint is {stopped.checkpoint}. Resume with: {resume}"


def failed_line(failed: RunFailed) -> str:
    if failed.checkpoint is None:
        return (
            f"error: the run failed: {failed.reason}. It had no checkpoint yet: once that is fixed, run the same "
            "command again (details in run.log)."
        )
    return (
        f"error: the run failed: {failed.reason}. The last complete checkpoint is {failed.checkpoint}; once that is "
        f"fixed, resume with: {resume_command(failed.output_dir)} (details in run.log)"
    )


def launched_on_several_devices() -> bool:
    """True under torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
