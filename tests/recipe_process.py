"""Recipe runs for the tests, each in a process of its own, forked from a server that imported the heavy libraries
once (torch, transformers, sentence-transformers, datasets): a recipe's imports cost about 6 s of CPU, and the suite
runs dozens of recipes. A run is still a process of its own, with its own argv, working directory, environment,
stdout and stderr (files, as a pipe: no terminal), exit code and signals; only the imports are shared, read-only.

Used by ``run_recipe`` (tests/conftest.py) and the docs' recipe commands (tests/test_docs.py). Tests that start a
recipe and signal it while it runs use plain subprocesses."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

# Imported once in the fork server; each run forks from it.
PRELOAD = ["torch", "transformers", "datasets", "sentence_transformers", "st_simcse.training.loop", "st_simcse.losses"]
_context = None


def context():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _run(script: str, arguments: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str) -> None:
    """In the forked process: ``python SCRIPT ARGUMENTS`` (``python -m MODULE ARGUMENTS`` for ``-m MODULE``)."""
    out, err = os.open(stdout, os.O_WRONLY | os.O_CREAT), os.open(stderr, os.O_WRONLY | os.O_CREAT)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdin = open(os.devnull)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    module = script.removeprefix("-m ") if script.startswith("-m ") else None
    sys.argv = [script if module is None else module, *arguments]
    sys.path.insert(0, os.path.dirname(script) if module is None else cwd)  # as python puts them on sys.path
    code = 0
    try:
        import runpy

        if module is None:
            runpy.run_path(script, run_name="__main__")
        else:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 1)
        if not isinstance(exited.code, int) and exited.code is not None:
            print(exited.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        # What an interpreter does when a script ends: its exit functions (W&B finishes its run there), then flush.
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def run(script: str | Path, *arguments: str, cwd: str | Path, env: dict[str, str] | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess:  # fmt: skip
    """``python SCRIPT ARGUMENTS`` in ``cwd`` with ``env`` (default: this process's), as a CompletedProcess; a
    ``script`` of ``"-m MODULE"`` runs the module, as ``python -m MODULE ARGUMENTS`` does."""
    with tempfile.TemporaryDirectory(prefix="recipe-run-") as folder:
        stdout, stderr = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        environment = dict(os.environ if env is None else env)
        process = context().Process(
            target=_run, args=(str(script), list(arguments), str(cwd), environment, stdout, stderr)
        )
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([str(script), *arguments], timeout)
        read = [Path(path).read_text(encoding="utf-8", errors="replace") for path in (stdout, stderr)]
    command = [sys.executable, *str(script).split(" ", 1), *arguments]
    return subprocess.CompletedProcess(command, process.exitcode, *read)
