"""What both recipes share: train on the run's corpus while selecting the best model on a dev set, survive
interruption (``resume``), then judge the best model on the test yardsticks and write every output.

Three training paths give the same training: ``model.fit`` (the recipes' default up to the paper's corpus size), the
``SentenceTransformerTrainer`` that model.fit runs underneath, given the corpus's memory-mapped Arrow table instead
of model.fit's in-memory copy (equal weights, tested), and that Trainer on a stream (for corpora beyond memory or
disk)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from typing import Any

import torch
from datasets import DatasetDict
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
from sentence_transformers.base.sampler import DefaultBatchSampler
from sentence_transformers.base.training_args import MultiDatasetBatchSamplers
from sentence_transformers.sentence_transformer.fit_mixin import EvaluatorCallback, OriginalCallback
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import ProgressCallback, TrainerCallback, set_seed

from st_simcse.checkpoints import AtomicCheckpointTrainer, model_fit_uses_atomic_checkpoints
from st_simcse.losses.state import LossStateCallback
from st_simcse.models import model_pooling
from st_simcse.runs import ARGUMENTS_FILE, METRICS_FILE, RunFailed, RunInterrupted, TrainingRun, write_json
from st_simcse.selection import DevTracker, evaluate_on_test
from st_simcse.stopping import StopAtCheckpointOnSignal, stop_requested, training_ended

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


class BFloat16Autocast(nn.Module):
    """Runs a loss (the encoder's forward inside it) under bf16 autocast: mixed precision without a gradient
    scaler, which model.fit (fp16 only) cannot set. SimCSELoss computes its similarities in float32 regardless."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    @property
    def model(self) -> nn.Module:
        return self.loss.model

    def forward(self, sentence_features, labels=None):
        device_type = next(self.loss.parameters()).device.type
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            return self.loss(sentence_features, labels)


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
def fit_callbacks(
    *callbacks: TrainerCallback, progress: type[TrainerCallback] | None = None, seed_heads: bool = True
) -> Iterator[None]:
    """Give the Trainers built inside the block (e.g. by ``model.fit``, which takes no callbacks) these callbacks,
    through transformers' default callbacks, and ``progress`` as their progress bar; ``seed_heads=False``: the loss
    state callback keeps the heads as the loss built them (the run seeded them itself). All undone when the block
    ends."""
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


class FitOrderBatchSampler(DefaultBatchSampler):
    """The batches ``model.fit`` trains our recipes on, without its copy of the corpus. The recipes hand model.fit a
    DataLoader shuffled with the run's seed (``order_seed``); model.fit copies it in that order and its Trainer then
    draws a random permutation of the copy. This sampler composes the two permutations over the original rows, and
    yields batch by batch from tensors instead of torch's RandomSampler list of every index (which alone costs
    about 36 bytes per example)."""

    def __init__(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0, order_seed=0):
        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        self.order = shuffled_loader_order(len(dataset), order_seed)

    def __iter__(self) -> Iterator[list[int]]:
        # The draw of RandomSampler(dataset, generator): the Trainer re-seeds the shared generator every epoch.
        indices = self.order[torch.randperm(len(self.order), generator=self.generator)]
        for batch in indices.split(self.batch_size):
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch.tolist()


def shuffled_loader_order(size: int, seed: int) -> torch.Tensor:
    """The order in which ``DataLoader(dataset, shuffle=True, generator=torch.Generator().manual_seed(seed))`` reads
    a dataset of ``size`` rows: the loader first draws its workers' base seed from the generator, then its
    RandomSampler a permutation (``tests/test_training.py`` checks the two paths train alike)."""
    generator = torch.Generator().manual_seed(seed)
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    return torch.randperm(size, generator=generator)


def train_and_evaluate(
    model: SentenceTransformer, loss: nn.Module, dataset: Dataset, run: TrainingRun
) -> dict[str, Any]:
    """Train ``model`` with ``loss`` on ``dataset``, evaluating the dev set (plus alignment/uniformity) every
    ``run.eval_steps``; keep the best model (the untrained one unless a checkpoint beats it), judge it on the test
    yardsticks with whole sentences, and write to ``run.output_dir``:

    - the best model at the folder's root (``SentenceTransformer(output_dir)`` loads it; max_seq_length restored
      to the length it serves with, since the paper trains on 32 tokens but evaluates whole sentences);
    - ``metrics.json``: the arguments, the dev history, the best step, the test tables, timings;
    - ``dev_curve.png`` and ``align_uniform.png``;
    - ``checkpoints/`` (trainer state, and the loss's own parameters such as the training-only MLP head), from
      which ``run.resume`` continues an interrupted run; removed when the run finishes, unless
      ``run.keep_checkpoints``.

    The run holds ``output_dir`` (:meth:`TrainingRun.claim`) until it finishes. A signal (Ctrl-C, SIGTERM; see
    :mod:`st_simcse.stopping`) raises :class:`st_simcse.runs.RunInterrupted` and any failure after the start
    :class:`st_simcse.runs.RunFailed`, each naming the last complete checkpoint a resume continues from.
    """
    # Under torchrun every rank trains, but only the first one writes files and evaluates the best model.
    main_process = int(os.environ.get("RANK", "0")) == 0
    run.claim()
    try:
        os.makedirs(run.checkpoint_dir, exist_ok=True)
        tracker = DevTracker(run, model, main_process)
        if run.resume and tracker.resumed_from is None:
            print(f"No checkpoint to resume in {run.checkpoint_dir}: starting the run from its beginning.")
        if tracker.resumed_from is None and main_process:
            write_json(os.path.join(run.output_dir, ARGUMENTS_FILE), run.arguments)
            tracker.evaluate_untrained()
        path = run.training_path_for(None if getattr(dataset, "streaming", False) else len(dataset))
        metrics = _train_and_report(model, loss, dataset, run, tracker, path, main_process)
    except KeyboardInterrupt as stopped:
        number = getattr(stopped, "signal_number", signal.SIGINT)
        raise RunInterrupted(run.output_dir, run.last_complete_checkpoint(), number) from None
    except (RunInterrupted, RunFailed):
        raise
    except Exception as error:
        logger.warning("The run failed:", exc_info=True)  # the traceback: in run.log, below the console's level
        reason = failure_reason(error, run.output_dir)
        raise RunFailed(run.output_dir, run.last_complete_checkpoint(), reason) from error
    finally:
        training_ended()
    if main_process and not run.keep_checkpoints:
        shutil.rmtree(run.checkpoint_dir, ignore_errors=True)  # the run is finished: nothing to resume any more
    run.release()
    return metrics


def failure_reason(error: BaseException, folder: str) -> str:
    """One line for what stopped a run mid-way: a full disk, a folder that cannot be written, else the error."""
    chain, cause = [], error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    text = " ".join(str(cause) for cause in chain)
    out_of_space = any(isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT) for cause in chain)
    # torch.save reports a full disk as a RuntimeError ("PytorchStreamWriter failed writing file", "unexpected pos").
    torch_write_failed = "PytorchStreamWriter" in text or "unexpected pos" in text or "file write failed" in text
    if out_of_space or (torch_write_failed and free is not None and free < 256 * 2**20):
        left = f" ({free / 2**20:.0f} MB free)" if free is not None else ""
        return f"the disk that holds {folder} is full{left} (No space left on device)"
    for cause in chain:
        if isinstance(cause, OSError) and cause.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            where = cause.filename or folder
            return f"{where} cannot be written ({cause.strerror})"
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def _train_and_report(
    model: SentenceTransformer,
    loss: nn.Module,
    dataset: Dataset,
    run: TrainingRun,
    tracker: DevTracker,
    path: str,
    main_process: bool,
) -> dict[str, Any]:
    timer = FirstStepTimer()
    tracker.start_training()
    train = fit if path == "fit" else fit_with_trainer
    try:
        train(model, loss, dataset, run, tracker, timer, CheckpointClock(tracker))
    except StoppedAtCheckpoint:
        pass  # a signal's stop, its checkpoint written: raised as RunInterrupted below
    training_ended()
    stopped_by = stop_requested()
    if stopped_by is not None:  # the Trainer stopped after the step the signal came in, at a checkpoint
        raise RunInterrupted(run.output_dir, run.last_complete_checkpoint(), stopped_by)
    train_seconds = tracker.seconds_before_resume + time.perf_counter() - tracker.started
    if not main_process:
        return {}
    best_model = tracker.keep_best_model()
    started = time.perf_counter()
    report = evaluate_on_test(best_model, run)
    metrics = {
        "arguments": run.arguments,
        "run": asdict(run),
        "training_path": path,
        "training_data": run.training_data,
        # What the saved model really is: its modules and pooling (a sentence-transformers start model keeps its own).
        "model_modules": [type(module).__name__ for module in best_model],
        "pooling": model_pooling(best_model),
        "max_seq_length": best_model.max_seq_length,
        **tracker.summary(),
        **report,
        "train_seconds": round(train_seconds, 1),
        "setup_seconds": timer.seconds,
        "test_eval_seconds": round(time.perf_counter() - started, 1),
        "device": str(model.device),
    }
    tracker.plot()
    write_json(os.path.join(run.output_dir, METRICS_FILE), metrics)
    return metrics


def fit(
    model: SentenceTransformer,
    loss: nn.Module,
    dataset: Dataset,
    run: TrainingRun,
    tracker: DevTracker | None,
    *callbacks: TrainerCallback,
) -> None:
    """``model.fit`` with the run's settings, a checkpoint at every evaluation, and the run's seed on every RNG.
    Without a ``tracker`` nothing is evaluated (as the speed benchmark measures the training path alone)."""
    # Seeded shuffling: model.fit reads the DataLoader once, so the order is fixed by the seed and a resumed run
    # sees the same batches. The SeedCallback makes the same seed drive the dropout masks.
    generator = torch.Generator().manual_seed(run.seed)
    loader = DataLoader(dataset, batch_size=run.batch_size, shuffle=True, generator=generator)
    with fit_callbacks(*run_callbacks(run), *callbacks, progress=progress_callback(), seed_heads=False):
        model.fit(
            train_objectives=[(loader, _objective(loss, run))],
            evaluator=EvaluatorUnlessStopped(tracker.evaluator, run) if tracker else None,
            epochs=1 if run.max_steps else run.epochs,
            steps_per_epoch=run.max_steps,
            scheduler=run.scheduler,
            warmup_steps=run.warmup_steps,
            optimizer_params={"lr": run.learning_rate},
            weight_decay=run.weight_decay,
            max_grad_norm=run.max_grad_norm,
            evaluation_steps=run.eval_steps if tracker else 0,
            use_amp=run.precision == "fp16",
            callback=tracker.on_evaluation if tracker else None,
            show_progress_bar=True,
            checkpoint_path=run.checkpoint_dir,
            checkpoint_save_steps=run.eval_steps,
            checkpoint_save_total_limit=1,
            resume_from_checkpoint=run.resume,
        )


def fit_with_trainer(
    model: SentenceTransformer,
    loss: nn.Module,
    dataset: Dataset,
    run: TrainingRun,
    tracker: DevTracker | None,
    *callbacks: TrainerCallback,
) -> None:
    """What :func:`fit` runs, built here so the Trainer reads the corpus's Arrow table (memory-mapped, shared by
    every process under torchrun) instead of model.fit's in-memory copy of it: the same arguments, optimizer groups,
    schedule, evaluation callbacks, batches (:class:`FitOrderBatchSampler`) and resume. A stream (an
    ``IterableDataset``) trains for ``run.max_steps`` on a shuffle buffer instead."""
    train_dataset = dataset.to_hf_dataset()
    objective = _objective(loss, run)
    streaming = getattr(dataset, "streaming", False)
    if streaming:
        train_dataset = train_dataset.shuffle(seed=run.seed, buffer_size=10_000)
        losses: nn.Module | dict[str, nn.Module] = objective
        steps = run.max_steps
    else:
        # model.fit's layout: a one-dataset dict, round robin, the loss by the dataset's name.
        train_dataset, losses = DatasetDict({"_dataset_1": train_dataset}), {"_dataset_1": objective}
        # model.fit sizes its schedule as len(dataset) // batch_size batches (a last partial batch left out); each of
        # several processes runs 1/world_size of them.
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        steps = run.max_steps or len(dataset) // (run.batch_size * world_size) * run.epochs
    args = SentenceTransformerTrainingArguments(
        output_dir=run.checkpoint_dir,
        batch_sampler=partial(FitOrderBatchSampler, order_seed=run.seed),
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.ROUND_ROBIN,
        per_device_train_batch_size=run.batch_size,
        per_device_eval_batch_size=run.batch_size,
        num_train_epochs=1 if run.max_steps else run.epochs,
        max_steps=run.max_steps or -1,
        eval_strategy="steps" if tracker else "no",
        eval_steps=run.eval_steps,
        max_grad_norm=run.max_grad_norm,
        fp16=run.precision == "fp16",
        disable_tqdm=False,
        save_strategy="steps",
        save_steps=run.eval_steps,
        save_total_limit=1,
    )
    optimizer, schedule = _fit_optimizer(model, losses, run, steps)
    fit_evaluation, evaluator = [], None
    if tracker:
        evaluator = EvaluatorUnlessStopped(tracker.evaluator, run)
        fit_evaluation = [EvaluatorCallback(evaluator), OriginalCallback(tracker.on_evaluation, evaluator)]
    with fit_callbacks(*run_callbacks(run), *callbacks, progress=progress_callback(), seed_heads=False):
        trainer = AtomicCheckpointTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            loss=losses,
            evaluator=evaluator,
            optimizers=(optimizer, schedule),
            callbacks=fit_evaluation,
        )
        for callback in fit_evaluation[:1]:
            callback.trainer = trainer  # model.fit's evaluation callback logs through the trainer
        checkpoint = run.last_complete_checkpoint() if run.resume else None
        trainer.train(resume_from_checkpoint=checkpoint)


def run_callbacks(run: TrainingRun) -> list[TrainerCallback]:
    """What every recipe run adds to the Trainer: its seed on every RNG when training starts (the recipes seeded the
    loss's heads themselves, before building it), and a checkpoint and a stop at the step a signal comes in."""
    return [SeedCallback(run.seed), StopAtCheckpointOnSignal()]


def _fit_optimizer(model: SentenceTransformer, losses: nn.Module | dict, run: TrainingRun, steps: int) -> tuple:
    """model.fit's AdamW (its two parameter groups: no weight decay on biases and LayerNorm) and schedule."""
    named = losses if isinstance(losses, dict) else {"_dataset_1": losses}
    parameters = list(nn.ModuleDict({"model": model, **named}).named_parameters())
    no_decay = ("bias", "LayerNorm.bias", "LayerNorm.weight")
    decayed = [not any(part in name for part in no_decay) for name, _ in parameters]
    groups = [
        {"params": [p for (_, p), d in zip(parameters, decayed) if d], "weight_decay": run.weight_decay},
        {"params": [p for (_, p), d in zip(parameters, decayed) if not d], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=run.learning_rate)
    schedule = model._get_scheduler(optimizer, scheduler=run.scheduler, warmup_steps=run.warmup_steps, t_total=steps)
    return optimizer, schedule


def _objective(loss: nn.Module, run: TrainingRun) -> nn.Module:
    # model.fit's use_amp is fp16 with a gradient scaler; bf16 needs no scaler, so the loss runs under autocast.
    return BFloat16Autocast(loss) if run.precision == "bf16" else loss
