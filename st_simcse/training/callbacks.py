"""The Trainer callbacks of a recipe's run, on both training paths (``model.fit`` and the Trainer): the run's seed,
progress (a bar on a terminal, whole lines elsewhere), the set-up time, a checkpoint and a stop at the step a signal
comes in, the training time at each checkpoint, and the random state that evaluating and checkpointing must leave
untouched. Used by :mod:`st_simcse.training.paths`."""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
from transformers import ProgressCallback, TrainerCallback, set_seed

from st_simcse.losses.state import LossStateCallback
from st_simcse.training.checkpoints import model_fit_uses_atomic_checkpoints
from st_simcse.training.run import TrainingRun
from st_simcse.training.signals import request_stop, stop_requested, training_ended, training_started

if TYPE_CHECKING:
    from st_simcse.training.selection import DevTracker

logger = logging.getLogger(__name__)


class SeedCallback(TrainerCallback):
    """Re-seeds every RNG when training starts. The Trainer behind ``model.fit`` seeds itself with its default seed
    (42) when it is built, which would make the dropout masks ignore the run's seed; on resume the Trainer restores
    the checkpoint's RNG states instead, so nothing is re-seeded then."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            set_seed(self.seed)


class RandomStateKept(TrainerCallback):
    """Evaluating and checkpointing leave the random state of training as it was, so that how often a run is
    evaluated does not change what it trains: the same seed and steps give the same weights whatever --eval-steps.
    (The Trainer's evaluation iterates an empty evaluation DataLoader, which draws a seed from torch's global
    generator, and so shifts every later dropout mask.) The states are taken when a step's evaluation or save is
    due and put back when each is done, before the checkpoint records them."""

    def __init__(self) -> None:
        self.saved: tuple | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_evaluate or control.should_save:
            self.saved = random_states()

    def on_epoch_end(self, args, state, control, **kwargs):
        # model.fit evaluates again when its epoch ends (sentence-transformers' EvaluatorCallback, in this event).
        self.saved = random_states()

    def on_evaluate(self, args, state, control, **kwargs):
        if self.saved is not None:
            restore_random_states(self.saved)

    def on_save(self, args, state, control, **kwargs):
        if self.saved is not None:
            restore_random_states(self.saved)


def random_states() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def restore_random_states(states: tuple) -> None:
    python, numpy, cpu, cuda = states
    random.setstate(python)
    np.random.set_state(numpy)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class ProgressBarLoggingMetrics(ProgressCallback):
    """transformers' training progress bar, except that the metrics dict of every log event (each evaluation's,
    the final ``train_runtime``) goes to the log file instead of being printed under the bar: the recipe prints
    one line per evaluation itself."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            logger.info("step %d: %s", state.global_step, logs)


class ProgressLines(TrainerCallback):
    """Training progress as a whole line now and then (every twentieth of the run, and at least every 5 minutes),
    for output that goes to a file or a pipe: a progress bar redrawn with carriage returns would fill a scheduler's
    log with thousands of fragments. The metrics dicts go to the log file, as with the bar."""

    EVERY_SECONDS = 300

    def __init__(self) -> None:
        self.started = self.last_line = 0.0
        self.first_step: int | None = None  # a resumed run's pace counts its own steps only

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step is None:
            self.first_step, self.started = state.global_step, time.perf_counter()
            self.last_line = self.started

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not state.max_steps or self.first_step is None:
            return
        now, every = time.perf_counter(), max(1, state.max_steps // 20)
        due = state.global_step % every == 0 or state.global_step == state.max_steps
        if not due and now - self.last_line < self.EVERY_SECONDS:
            return
        self.last_line = now
        pace = (now - self.started) / max(state.global_step - self.first_step, 1)
        print(
            f"step {state.global_step}/{state.max_steps} ({100 * state.global_step / state.max_steps:.0f}%), "
            f"{pace:.2f} s/step, about {pace * (state.max_steps - state.global_step) / 60:.1f} min left",
            file=sys.stderr,
            flush=True,
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            logger.info("step %d: %s", state.global_step, logs)


def progress_callback() -> type[TrainerCallback]:
    """A progress bar on a terminal, whole lines now and then elsewhere (a file, a pipe, a scheduler's log)."""
    return ProgressBarLoggingMetrics if sys.stderr.isatty() else ProgressLines


@contextmanager
def model_fit_callbacks(
    *callbacks: TrainerCallback, progress: type[TrainerCallback] | None = None, seed_heads: bool = True
) -> Iterator[None]:
    """Give the Trainer that ``model.fit`` builds inside the block (it takes no callbacks and no trainer class) these
    callbacks, through transformers' default callbacks, ``progress`` as its progress bar, and the class
    :class:`st_simcse.training.checkpoints.AtomicCheckpointTrainer`; ``seed_heads=False``: the loss state callback
    keeps the heads as the loss built them (the run seeded them itself). All undone when the block ends. These are
    module globals of transformers and sentence-transformers, changed for the length of model.fit only (see
    CONTRIBUTING.md, private hooks); the Trainer path passes the same callbacks and class directly."""
    from transformers import trainer as hf_trainer

    default_progress = hf_trainer.DEFAULT_PROGRESS_CALLBACK
    defaults = list(hf_trainer.DEFAULT_CALLBACKS)
    if LossStateCallback in hf_trainer.DEFAULT_CALLBACKS and not seed_heads:
        index = hf_trainer.DEFAULT_CALLBACKS.index(LossStateCallback)
        hf_trainer.DEFAULT_CALLBACKS[index] = LossStateCallback(seed_heads=False)
    hf_trainer.DEFAULT_CALLBACKS.extend(callbacks)
    hf_trainer.DEFAULT_PROGRESS_CALLBACK = progress or default_progress
    try:
        with model_fit_uses_atomic_checkpoints():
            yield
    finally:
        hf_trainer.DEFAULT_PROGRESS_CALLBACK = default_progress
        hf_trainer.DEFAULT_CALLBACKS[:] = defaults


class FirstStepTimer(TrainerCallback):
    """Records the set-up time: from the start of the process to the first training step."""

    def __init__(self) -> None:
        self.seconds: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.seconds is None:
            import psutil

            self.seconds = round(time.time() - psutil.Process().create_time(), 1)


class StoppedAtCheckpoint(Exception):
    """Training ended on a signal, at the checkpoint its stop wrote (see :class:`EvaluatorUnlessStopped`)."""


class EvaluatorUnlessStopped(BaseEvaluator):
    """The run's dev evaluator, except after a signal's stop: model.fit evaluates once more when its epoch ends,
    which a stop ends early, after the stop's checkpoint is written. That evaluation would cost the grace period a
    scheduler gives before SIGKILL and add a step an uninterrupted run never evaluates; the run ends there instead.
    An evaluation due at the stop's own step runs as usual (before its checkpoint is written)."""

    def __init__(self, evaluator: BaseEvaluator, run: TrainingRun) -> None:
        super().__init__()
        self.evaluator, self.run = evaluator, run
        self.primary_metric = evaluator.primary_metric
        self.greater_is_better = evaluator.greater_is_better

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        checkpoint = os.path.join(self.run.checkpoint_dir, f"checkpoint-{steps}")
        if stop_requested() is not None and self.run.last_complete_checkpoint() == checkpoint:
            raise StoppedAtCheckpoint(checkpoint)
        return self.evaluator(model, output_path, epoch, steps)

    @property
    def description(self) -> str:
        return self.evaluator.description


class CheckpointClock(TrainerCallback):
    """Records the training time at every checkpoint (a signal's checkpoint falls between evaluations), so that a
    run resumed from it counts the time before the interruption."""

    def __init__(self, tracker: DevTracker) -> None:
        self.tracker = tracker

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.tracker.note_checkpoint(state.global_step)


class StopAtCheckpointOnSignal(TrainerCallback):
    """Ends training after the step in which a signal arrived, with a checkpoint at that step (see the module
    docstring). Without :func:`stop_on_signals` around the run it does nothing."""

    def on_train_begin(self, args, state, control, **kwargs):
        training_started()

    def on_step_end(self, args, state, control, **kwargs):
        requested = stop_requested() is not None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            requested = _any_process(requested)  # else the processes would stop at different steps and hang
        if requested:
            control.should_save = True
            control.should_training_stop = True
            request_stop(signal.SIGTERM)  # another process got it
        return control

    def on_train_end(self, args, state, control, **kwargs):
        training_ended()


def _any_process(flag: bool) -> bool:
    import torch

    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
