"""One folder, one run: a run holds its output folder with an OS lock on ``run.lock`` for as long as its process
lives (the operating system releases it when the process ends, however it ends, so a killed run never leaves a stale
lock); another run, or a resume, on a folder whose run is alive is refused, naming its process. Used by
:mod:`st_simcse.training.run` and :mod:`st_simcse.training.seeds`."""

from __future__ import annotations

import os
import sys
import time

# Held (an OS lock, released when the process dies) by the run that uses the output folder.
LOCK_FILE = "run.lock"


class RunLockedError(ValueError):
    """The output folder is in use by a run that is still alive."""


def is_main_process() -> bool:
    """The first process under torchrun (the only one that writes files), or the only one."""
    return int(os.environ.get("RANK", "0")) == 0


# The lock files this process holds, by folder: open for the life of the process, so the OS releases the lock when
# the process dies however it dies, and a killed run never leaves a stale lock.
_held_locks: dict[str, int] = {}


def _try_lock(descriptor: int, exclusive: bool) -> bool:
    if sys.platform == "win32":  # pragma: no cover - no Windows CI
        import msvcrt

        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1) if not exclusive else None
        return True
    import fcntl

    try:
        fcntl.flock(descriptor, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    if not exclusive:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
    return True


def lock_holder(output_dir: str) -> str | None:
    """Who holds ``output_dir``'s lock ("process 1234 (python recipes/unsup_wiki.py ...), since 07:12:03"), or None
    where no live process does (no lock file, or a dead run's)."""
    path = os.path.join(output_dir, LOCK_FILE)
    if os.path.abspath(output_dir) in _held_locks or not os.path.isfile(path):
        return None
    descriptor = os.open(path, os.O_RDWR if sys.platform == "win32" else os.O_RDONLY)
    try:
        if _try_lock(descriptor, exclusive=False):
            return None
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip() or "another process"
    finally:
        os.close(descriptor)


def locked_message(output_dir: str, holder: str) -> str:
    return (
        f"{output_dir} is in use by a run that is still going: {holder}. Two runs in one folder would overwrite each "
        "other's model, metrics and checkpoints. Wait for it to end (or stop it: it writes a checkpoint and names "
        "its resume command), or choose another --output-dir."
    )


def refuse_if_locked(output_dir: str) -> None:
    holder = lock_holder(output_dir)
    if holder is not None:
        raise RunLockedError(locked_message(output_dir, holder))


def acquire_run_lock(output_dir: str) -> None:
    """Hold ``output_dir``'s lock until this process ends (or :func:`release_run_lock`); raise
    :class:`RunLockedError` naming the holder where a live process holds it."""
    key = os.path.abspath(output_dir)
    if key in _held_locks:
        return
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_FILE)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if not _try_lock(descriptor, exclusive=True):
        os.close(descriptor)
        raise RunLockedError(locked_message(output_dir, lock_holder(output_dir) or "another process"))
    command = " ".join(os.path.basename(part) if index == 0 else part for index, part in enumerate(sys.argv))
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"process {os.getpid()} (python {command}), since {time.strftime('%H:%M:%S')}\n".encode())
    _held_locks[key] = descriptor


def release_run_lock(output_dir: str) -> None:
    descriptor = _held_locks.pop(os.path.abspath(output_dir), None)
    if descriptor is None:
        return
    # Removed while still held, so no other process can take the lock of a file that is about to vanish unnoticed.
    try:
        os.remove(os.path.join(output_dir, LOCK_FILE))
    except OSError:
        pass
    os.close(descriptor)
