"""Streaming a recipe's run to the trackers of ``--report-to`` through transformers' own integration callbacks
(``TensorBoardCallback``, ``WandbCallback``, ``MLflowCallback``, ...: no logger of ours): the training loss and
learning rate every ``--logging-steps``, the seconds per step, every dev evaluation (the score, alignment and
uniformity; the untrained model's at step 0), and at the end the final test table. Both training paths get the same
callbacks (``model.fit`` builds its Trainer itself, so the run's settings reach it in ``on_init_end``). Used by
:mod:`st_simcse.training.loop`."""

from __future__ import annotations

import copy
import os
import time
from typing import Any

from transformers import TrainerCallback

from st_simcse.training.reporting import trackers
from st_simcse.training.run import TrainingRun

# The folder under the output folder where TensorBoard's event files go, as Hugging Face's scripts name it.
TENSORBOARD_DIR = "runs"


class UntilTheRunEnds(TrainerCallback):
    """One integration callback, every event forwarded to it except the end of training, which waits for
    :meth:`end`: the run's final test table comes after training, and an integration closes its run (its writer, its
    MLflow run) when training ends. It also keeps the last ``args`` and ``state`` the Trainer gave it, to log with."""

    def __init__(self, integration: TrainerCallback) -> None:
        self.integration = integration
        self.args: Any = None
        self.state: Any = None
        self.control: Any = None
        self.ended = False

    def on_train_end(self, args, state, control, **kwargs):
        self.args, self.state, self.control = args, state, control

    def log(self, logs: dict[str, float], step: int | None = None) -> None:
        if self.args is None or self.ended:
            return
        state = self.state
        if step is not None and step != state.global_step:
            state = copy.copy(state)
            state.global_step = step
        self.integration.on_log(self.args, state, self.control, logs=dict(logs))

    def end(self) -> None:
        if self.args is not None and not self.ended:
            self.ended = True
            self.integration.on_train_end(self.args, self.state, self.control)


def _forwarded(event: str):
    def forward(self: UntilTheRunEnds, args, state, control, **kwargs):
        self.args, self.state, self.control = args, state, control
        return getattr(self.integration, event)(args, state, control, **kwargs)

    forward.__name__ = event
    return forward


for _event in (name for name in dir(TrainerCallback) if name.startswith("on_") and name != "on_train_end"):
    setattr(UntilTheRunEnds, _event, _forwarded(_event))


class RunSettings(TrainerCallback):
    """The run's reporting settings on the Trainer's arguments, at the end of the Trainer's construction: model.fit
    builds its Trainer itself and takes no arguments for them. The integrations read ``run_name``; the Trainer logs
    every ``logging_steps``."""

    def __init__(self, run_name: str, logging_steps: int, report_to: list[str]) -> None:
        self.run_name, self.logging_steps, self.report_to = run_name, logging_steps, report_to

    def on_init_end(self, args, state, control, **kwargs):
        args.run_name = self.run_name
        args.logging_steps = self.logging_steps
        args.report_to = list(self.report_to)


class SecondsPerStep(TrainerCallback):
    """Adds ``seconds_per_step`` (the mean time of the training steps since the last log, evaluations and
    checkpoints left out) to each training log, before the integrations see it."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.seconds, self.steps = 0.0, 0

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.started is not None:
            self.seconds += time.perf_counter() - self.started
            self.steps += 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or not self.steps:
            return
        logs["seconds_per_step"] = round(self.seconds / self.steps, 4)
        self.seconds, self.steps = 0.0, 0


class Trackers:
    """The run's integrations, wrapped (:class:`UntilTheRunEnds`); nothing at all with ``--report-to none``."""

    def __init__(self, run: TrainingRun, initial_logs: dict[str, float] | None = None) -> None:
        names = trackers(run.arguments.get("report_to"))
        self.names: list[str] = []
        self.wrapped: list[UntilTheRunEnds] = []
        self.initial_logs = initial_logs  # the untrained model's dev evaluation, logged at step 0
        if not names:
            return
        from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

        self.names = get_available_reporting_integrations() if names == "all" else list(names)
        self.run_name = run.arguments.get("run_name") or os.path.basename(os.path.normpath(run.output_dir))
        self.logging_steps = int(run.arguments.get("logging_steps") or 10)
        for name in self.names:
            if name == "tensorboard":
                integration = tensorboard_callback(os.path.join(run.output_dir, TENSORBOARD_DIR, self.run_name))
            else:
                integration = INTEGRATION_TO_CALLBACK[name]()
            self.wrapped.append(UntilTheRunEnds(integration))

    def callbacks(self) -> list[TrainerCallback]:
        if not self.wrapped:
            return []
        # In this order: the settings and the seconds per step before the integrations see a log; the untrained
        # model's evaluation once they have started.
        return [
            RunSettings(self.run_name, self.logging_steps, self.names),
            SecondsPerStep(),
            *self.wrapped,
            StartLog(self),
        ]

    def log(self, logs: dict[str, float], step: int | None = None) -> None:
        for wrapped in self.wrapped:
            wrapped.log(logs, step)

    def end(self, final_logs: dict[str, float] | None = None) -> None:
        """Log the final table (if any) and end every integration's run; safe to call twice."""
        for wrapped in self.wrapped:
            if final_logs:
                wrapped.log(final_logs)
            wrapped.end()


class StartLog(TrainerCallback):
    """Logs the untrained model's dev evaluation at step 0 once the integrations have started (a fresh run)."""

    def __init__(self, owner: Trackers) -> None:
        self.owner = owner

    def on_train_begin(self, args, state, control, **kwargs):
        if self.owner.initial_logs and state.global_step == 0:
            self.owner.log(self.owner.initial_logs, step=0)


def tensorboard_callback(log_dir: str) -> TrainerCallback:
    """transformers' TensorBoardCallback writing to ``log_dir`` (its default is under the Trainer's output folder,
    the run's checkpoints, which a finished run removes)."""
    from transformers.integrations import TensorBoardCallback

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from tensorboardX import SummaryWriter
    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=log_dir))


def evaluation_logs(entry: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """A dev history entry as the Trainer logs an evaluation: ``eval_<metric>`` (its score, alignment and
    uniformity)."""
    return {
        f"{prefix}_{key}": float(value)
        for key, value in entry.items()
        if key not in ("epoch", "steps") and isinstance(value, (int, float))
    }


def test_logs(report: dict[str, Any]) -> dict[str, float]:
    """The final report as ``test_<task>`` values (Spearman x 100), with alignment/uniformity and the user's pairs."""
    logs: dict[str, float] = {}
    for task, value in (report.get("test") or {}).items():
        logs[f"test_{'avg' if task == 'Avg.' else task}"] = float(value)
    for key in ("test_alignment", "test_uniformity"):
        if report.get(key) is not None:
            logs[key] = float(report[key])
    if report.get("test_file"):
        logs["test_file_spearman"] = float(report["test_file"]["spearman"])
    return logs
