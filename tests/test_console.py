"""How commands talk: whole-line progress off a terminal (no carriage-return redraws in a log), one line for a failure
mid-run (a full disk named as such), and the seeds' table captioned by what it holds."""

from __future__ import annotations

import errno
import io
import subprocess
import sys

import pytest
from conftest import REPO

from st_simcse.console import WholeLines, one_line, progress_as_whole_lines


def test_a_bar_off_a_terminal_writes_whole_lines(monkeypatch):
    from tqdm import tqdm

    stream = io.StringIO()
    monkeypatch.setattr(WholeLines, "FIRST_AFTER", 0.0)
    monkeypatch.setattr(WholeLines, "EVERY", 0.0)
    for _ in tqdm(range(50), desc="Batches", file=WholeLines(stream), mininterval=0, miniters=1):
        pass
    text = stream.getvalue()
    assert "\r" not in text and "\x1b[" not in text and text.endswith("\n")
    assert text.splitlines()[-1].startswith("Batches: 100%")


def test_a_short_bar_off_a_terminal_writes_nothing():
    from tqdm import tqdm

    stream = io.StringIO()
    for _ in tqdm(range(5), desc="quick", file=WholeLines(stream)):
        pass
    assert stream.getvalue() == ""  # under FIRST_AFTER seconds: a log gets a line for what takes long only


def test_every_command_turns_the_libraries_bars_into_whole_lines(tiny_model, tmp_path, sts_pairs_file):
    """st-simcse-evaluate with its output to a pipe (a scheduler's log): the encoding bar comes as whole lines."""
    tiny_model.save(str(tmp_path / "saved"))
    code = (
        "import sys\nfrom st_simcse.console import WholeLines\nWholeLines.FIRST_AFTER = WholeLines.EVERY = 0.0\n"
        "from st_simcse.evaluation.command import console_main\nsys.argv = ['st-simcse-evaluate', *sys.argv[1:]]\n"
        "console_main()\n"
    )
    arguments = [str(tmp_path / "saved"), "--test-file", sts_pairs_file, "--senteval-dir", str(REPO.parent / "shared"
                 / "data" / "senteval"), "--split", "dev"]  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\r" not in result.stderr + result.stdout
    assert any(line.startswith("Batches: 100%") for line in result.stderr.splitlines()), result.stderr[-2000:]


def test_progress_as_whole_lines_is_installed_once():
    from tqdm import std

    progress_as_whole_lines()
    patched = std.tqdm.__init__
    progress_as_whole_lines()
    assert std.tqdm.__init__ is patched
    assert (
        one_line("Error tokenizing data.\nC error: Expected 3 fields\n")
        == "Error tokenizing data. C error: Expected 3 fields"
    )


class SafetensorError(Exception):
    """What safetensors raises when the disk fills while it writes (not an OSError)."""


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        ),
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 34112 vs 34000"),
    ],
)
def test_a_full_disk_is_named_as_such(tmp_path, monkeypatch, error):
    import shutil
    from collections import namedtuple

    from st_simcse.training.loop import failure_reason

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10 * 2**30, 10 * 2**30, 5 * 2**20))
    reason = failure_reason(error, str(tmp_path))
    assert reason == f"the disk that holds {tmp_path} is full (5 MB free) (No space left on device)"


def test_the_seed_table_says_what_it_holds(capsys):
    from st_simcse.training.seeds import print_seed_table

    print_seed_table(
        {"mean": {"best_dev": 60.0}, "std": {"best_dev": 1.0}, "runs": {"1": {"best_dev": 59.0, "test": {}}}}
    )
    assert "Dev Spearman x 100, per seed" in capsys.readouterr().out
    print_seed_table({"mean": {"Avg.": 64.0, "best_dev": 60.0}, "std": {"Avg.": 0.1, "best_dev": 1.0},
                      "runs": {"1": {"best_dev": 60.0, "test": {"Avg.": 64.0}}}})  # fmt: skip
    assert "Test Spearman x 100, per seed" in capsys.readouterr().out
