"""Stopping a run the way real runs are stopped: Ctrl-C (SIGINT) at a terminal, SIGTERM from a scheduler, ``docker
stop``, Kubernetes or a preempted cloud machine, usually with a grace period of about 30 seconds before SIGKILL.

While training runs, the first signal lets the step in progress finish; the Trainer then writes a checkpoint at that
step and stops, and the recipe names the resume command (exit code 130 for SIGINT, 143 for SIGTERM, as a shell
reports a process ended by the signal). Outside training (loading, the untrained model's evaluation, the final
report), or on a second signal, the run stops at once. Under torchrun every process stops at the same step.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# How a shell reports a process ended by the signal: 128 + the signal's number.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class Interrupted(KeyboardInterrupt):
    """Raised by the handler where the run stops at once; ``signal_number`` says which signal."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


class _Requests:
    """The signal received while training (None: none) and whether a training loop is running now."""

    signal_number: int | None = None
    training: bool = False


_requests = _Requests()


def stop_requested() -> int | None:
    """The signal that asked training to stop (it stopped at a checkpoint), or None."""
    return _requests.signal_number


def training_ended() -> None:
    """Signals stop the run at once from now on (training returned, or failed before its end event)."""
    _requests.training = False


def _handle(signal_number: int, frame: object) -> None:
    if _requests.training and _requests.signal_number is None:
        _requests.signal_number = signal_number
        print(
            f"\n{SIGNAL_NAMES[signal_number]}: finishing this step and writing a checkpoint (again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        return
    raise Interrupted(signal_number)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as the module docstring says inside the block; the previous handlers afterwards."""
    previous = {number: signal.signal(number, _handle) for number in EXIT_CODES}
    _requests.signal_number, _requests.training = None, False
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def training_started() -> None:
    """A training loop runs from now on: the first signal stops it at the next step's checkpoint."""
    _requests.training = True


def request_stop(signal_number: int) -> None:
    """Record a stop that another process received (under torchrun every process stops at the same step)."""
    _requests.signal_number = _requests.signal_number or signal_number
