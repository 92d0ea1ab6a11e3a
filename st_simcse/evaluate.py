"""``python -m st_simcse.evaluate``: the ``st-simcse-evaluate`` command, kept at this path because the docs and users'
scripts run it so. Its code is :mod:`st_simcse.evaluation.command`."""

from __future__ import annotations

from st_simcse.evaluation.command import console_main, main

__all__ = ["console_main", "main"]

if __name__ == "__main__":
    console_main()
