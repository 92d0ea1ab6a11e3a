"""How real runs end, with real processes and real signals: two runs in one folder, SIGTERM from a scheduler, Ctrl-C,
a full or read-only disk mid-run; and what a library user's Trainer run needs to be repeatable (the heads drawn from
the training arguments' seed)."""

from __future__ import annotations

import errno
import inspect
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, run_recipe, sentences
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from st_simcse import CachedSimCSELoss, DuplicateInputDataset, ESimCSELoss, SimCSELoss, build_model
from st_simcse.training.lock import LOCK_FILE, RunLockedError, acquire_run_lock, lock_holder
from st_simcse.training.run import STAGING

RECIPE = str(REPO / "recipes" / "unsup_wiki.py")
sys.path.insert(0, str(REPO / "recipes"))


def weights(folder) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in SentenceTransformer(str(folder)).state_dict().items()}


def checkpoint_folders(output_dir) -> list[str]:
    """The checkpoints, complete or staged, in a run's checkpoints/ (model.fit also keeps an eval/ folder there)."""
    return sorted(name for name in os.listdir(output_dir / "checkpoints") if name != "eval")


def one_line(stderr: str, start: str) -> str:
    """The stderr line that starts with ``start`` (there must be exactly one), checked to stand on its own line."""
    lines = [line for line in stderr.replace("\r", "\n").split("\n") if line.startswith(start)]
    assert len(lines) == 1, stderr[-3000:]
    assert f"\n{lines[0]}" in stderr, "the line is glued to what came before it (a progress bar?)"
    return lines[0]


SLOW_LAUNCHER = """
import os, runpy, sys, time

from st_simcse.training import callbacks

# One second per training step (the arithmetic unchanged), so that the run is still going while the test acts.
original = callbacks.ProgressLines.on_step_end


def slow(self, *args, **kwargs):
    time.sleep(1.0)
    return original(self, *args, **kwargs)


callbacks.ProgressLines.on_step_end = slow
sys.argv = [{recipe!r}, *sys.argv[1:]]
sys.path.insert(0, os.path.dirname({recipe!r}))  # as running the recipe by its path does
runpy.run_path({recipe!r}, run_name="__main__")
"""


def start_recipe(arguments: list[str], launcher=None) -> subprocess.Popen:
    """The recipe (or ``launcher``, which runs it) as a background process, its output a pipe (as under a scheduler:
    no terminal)."""
    return subprocess.Popen(
        [sys.executable, str(launcher or RECIPE), *arguments],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # signals come from this test only, not from the terminal that runs pytest
    )


def wait_for_step(process: subprocess.Popen, step: int, seconds: float = 300) -> list[str]:
    """Read the recipe's progress lines (``step N/M``) until it reports ``step``; return the stderr read so far."""
    read, deadline = [], time.time() + seconds
    while time.time() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        read.append(line)
        if line.startswith("step ") and int(line.split()[1].split("/")[0]) >= step:
            return read
    process.kill()
    raise AssertionError(f"the run never reached step {step}: {''.join(read)[-3000:]}")


def finish(process: subprocess.Popen, read: list[str]) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(read) + stderr)


def test_lock_names_the_live_process_and_dies_with_it(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from st_simcse.training.lock import acquire_run_lock as a; a({str(folder)!r}); input()",
        ],
        stdin=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while lock_holder(str(folder)) is None and time.time() < deadline:
        time.sleep(0.05)
    assert f"process {holder.pid} " in (lock_holder(str(folder)) or "")
    with pytest.raises(RunLockedError, match=f"is in use by a run that is still going: process {holder.pid} "):
        acquire_run_lock(str(folder))
    holder.kill()  # SIGKILL: no clean-up ran, the lock file stays behind
    holder.wait()
    assert (folder / LOCK_FILE).is_file() and lock_holder(str(folder)) is None  # the OS released the lock
    acquire_run_lock(str(folder))  # a dead run's lock file is no obstacle


@pytest.mark.slow
def test_second_run_and_resume_on_a_live_folder_are_refused_and_sigterm_checkpoints_the_step(
    tmp_path, splade_tiny, senteval_dir, train_40k
):
    out = tmp_path / "run"
    # No evaluation (and so no checkpoint) before step 100: everything up to the signal would be lost without it.
    arguments = ["--quick", "--max-steps", "24", "--eval-steps", "100", "--batch-size", "8", "--seed", "3"]
    arguments += ["--no-sts-test", "--keep-checkpoints", "--output-dir", str(out)]
    straight = run_recipe("unsup_wiki.py", *arguments[:-1], str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]

    launcher = tmp_path / "slow.py"
    launcher.write_text(SLOW_LAUNCHER.format(recipe=RECIPE))
    first = start_recipe(arguments, launcher)
    read = wait_for_step(first, 3)
    # A second run, and a resume, while the first lives: refused, naming its process; nothing of it is touched.
    others = [start_recipe([*arguments, *extra]) for extra in ([], ["--resume"])]
    for other in others:
        stdout, stderr = other.communicate(timeout=300)
        assert other.returncode == 2, stderr[-3000:]
        assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
        assert f"is in use by a run that is still going: process {first.pid} " in stderr
        assert "delete" not in stderr.lower()
    assert first.poll() is None, "the first run ended before the others were refused; the test proves nothing"
    read += wait_for_step(first, 6)  # the refusals take well under a second now: the signal comes after step 6

    first.send_signal(signal.SIGTERM)
    stopped = finish(first, read)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    line = one_line(stopped.stderr, "interrupted; the last checkpoint is ")
    step = int(line.split("checkpoint-")[1].split(".")[0])
    assert 6 <= step < 24, line  # the step it was in, not a step of --eval-steps
    assert checkpoint_folders(out) == [f"checkpoint-{step}"]
    assert line.endswith(f"Resume with: python {RECIPE} --output-dir {out} --resume")
    assert "Traceback" not in stopped.stderr and not (out / "metrics.json").exists()

    resumed = subprocess.run([sys.executable, *shlex.split(line.split("Resume with: ")[1])[1:]], cwd=REPO,
                             capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == step
    # The stop evaluated nothing an uninterrupted run does not (model.fit's end-of-epoch evaluation included).
    assert [entry["steps"] for entry in metrics["dev_history"]] == [0, 24]
    # Nothing was lost: the interrupted and resumed run trained exactly the weights of the uninterrupted one.
    last = ("checkpoints", "checkpoint-24")
    straight_weights, resumed_weights = weights(tmp_path.joinpath("straight", *last)), weights(out.joinpath(*last))
    assert all(torch.equal(straight_weights[name], resumed_weights[name]) for name in straight_weights)
    assert not (out / LOCK_FILE).exists()  # a finished run gives its folder up
    assert "\r" not in resumed.stderr + stopped.stderr  # output to a pipe: whole lines, no progress-bar redraws


LAUNCHER = """
import errno, os, runpy, sys, torch

real_save = torch.save


def save(obj, target, *args, **kwargs):
    # The disk fails while the checkpoint of step {step} is written (its optimizer state, the largest file).
    if "checkpoint-{step}" in str(target):
        raise OSError({errno_value}, {message!r}, str(target))
    return real_save(obj, target, *args, **kwargs)


torch.save = save
sys.argv = [{recipe!r}, *sys.argv[1:]]
sys.path.insert(0, os.path.dirname({recipe!r}))  # as running the recipe by its path does
runpy.run_path({recipe!r}, run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("errno_value", "message", "reason"),
    [
        (errno.ENOSPC, "No space left on device", "is full"),
        (errno.EROFS, "Read-only file system", "cannot be written (Read-only file system)"),
    ],
)
def test_a_write_that_fails_mid_run_keeps_the_last_checkpoint_and_names_the_resume(
    tmp_path, splade_tiny, senteval_dir, train_40k, errno_value, message, reason
):
    out = tmp_path / "run"
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER.format(step=8, errno_value=errno_value, message=message, recipe=RECIPE))
    arguments = ["--quick", "--max-steps", "12", "--eval-steps", "4", "--batch-size", "8", "--no-sts-test"]
    command = [sys.executable, str(launcher), *arguments, "--output-dir", str(out)]
    failed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1, failed.stderr[-3000:]
    line = one_line(failed.stderr, "error: the run failed: ")
    assert reason in line and "Traceback" not in failed.stderr
    assert f"The last complete checkpoint is {out / 'checkpoints' / 'checkpoint-4'};" in line
    assert line.endswith(f"resume with: python {RECIPE} --output-dir {out} --resume (details in run.log)")
    # The half-written checkpoint never took a checkpoint's name: the previous one is what a resume takes.
    assert checkpoint_folders(out) == [STAGING, "checkpoint-4"]
    assert "Traceback" in (out / "run.log").read_text()
    if errno_value != errno.ENOSPC:
        return  # the resume after a failed write: once is enough

    resumed = run_recipe("unsup_wiki.py", "--output-dir", str(out), "--resume")  # no manual step in between
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {out / 'checkpoints'}/checkpoint-4" in resumed.stdout
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 4


def _trainer_run(model_dir: str, output_dir, seed: int, kind: type = SimCSELoss) -> dict[str, torch.Tensor]:
    """A library user's Trainer run: nothing seeded by hand, the loss (and its MLP head) built with whatever the
    process drew before."""
    model = build_model(model_dir, pooling="cls", max_seq_length=32)
    loss = kind(model, mlp_head=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=8, max_steps=3, learning_rate=1e-3, seed=seed,
        save_strategy="no", report_to="none", disable_tqdm=True, dataloader_pin_memory=False,
    )  # fmt: skip
    dataset = DuplicateInputDataset(sentences(40, seed=1)).to_hf_dataset()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss).train()
    head = loss.mlp.state_dict()
    return {**model.state_dict(), **{f"head.{name}": tensor for name, tensor in head.items()}}


@pytest.mark.parametrize("kind", [SimCSELoss, CachedSimCSELoss, ESimCSELoss])
def test_the_trainers_seed_makes_a_run_repeatable_heads_included(tmp_path, tiny_bert_dir, kind):
    first = _trainer_run(tiny_bert_dir, tmp_path / "a", seed=42, kind=kind)
    torch.rand(1000)  # whatever else the process draws in between
    second = _trainer_run(tiny_bert_dir, tmp_path / "b", seed=42, kind=kind)
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"{len(different)} of {len(first)} tensors differ, e.g. {different[:3]}"
    other = _trainer_run(tiny_bert_dir, tmp_path / "c", seed=7, kind=kind)
    assert not torch.equal(first["head.dense.weight"], other["head.dense.weight"])


def test_heads_are_drawn_as_the_paper_initialises_them(tiny_bert_dir):
    """The head drawn again from a seed is the paper's initialisation: normal(0, initializer_range), zero bias."""
    loss = SimCSELoss(build_model(tiny_bert_dir, max_seq_length=32), mlp_head=True)
    loss.initialise_heads(torch.Generator().manual_seed(0))
    expected = torch.empty(loss.mlp.dense.weight.shape).normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loss.mlp.dense.weight, expected) and not loss.mlp.dense.bias.any()


@pytest.mark.parametrize(
    "build",
    [
        lambda model: SimCSELoss(model, mlp_head=True, mlm_weight=0.1),
        lambda model: CachedSimCSELoss(model, mlp_head=True, mini_batch_size=8),
        lambda model: ESimCSELoss(model, queue_size=8),
    ],
)
def test_the_model_cards_loss_config_uses_the_constructors_argument_names(tiny_bert_dir, build):
    loss = build(build_model(tiny_bert_dir, max_seq_length=32))
    arguments = set(inspect.signature(type(loss).__init__).parameters) - {"self", "model"}
    assert set(loss.get_config_dict()) <= arguments, set(loss.get_config_dict()) - arguments
    rebuilt = type(loss)(loss.model, **loss.get_config_dict())  # the card's config builds the same loss
    assert rebuilt.get_config_dict() == loss.get_config_dict()


def test_a_hub_model_with_hf_hub_offline_and_no_cached_copy_is_one_line(tmp_path, monkeypatch, capsys, train_40k):
    import unsup_wiki
    from conftest import fails_before_loading

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arguments = ["--model", "st-simcse-tests/not-a-cached-model", "--train-file", train_40k]
    message = "--model st-simcse-tests/not-a-cached-model: HF_HUB_OFFLINE=1 is set and the local hub cache"
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, message, tmp_path / "o")


def test_conftest_clears_the_callers_offline_switch():
    assert "HF_HUB_OFFLINE" not in os.environ  # so the suite passes with and without it set by the caller
