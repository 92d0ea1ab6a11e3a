"""Targets of the console scripts that ``pip install st-simcse`` puts on the PATH (``[project.scripts]``)."""

from __future__ import annotations


def evaluate() -> None:
    """``st-simcse-evaluate``: the same as ``python -m st_simcse.evaluate``."""
    from st_simcse.console import run_cli
    from st_simcse.evaluate import main

    # Return nothing: the console-script wrapper passes the return value to sys.exit, and main returns the metrics.
    run_cli(main)
