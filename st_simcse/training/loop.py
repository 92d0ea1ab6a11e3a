"""What both recipes share once their checks have passed: train on the run's corpus while selecting the best model on
a dev set, survive interruption (``resume``), judge the best model on the test yardsticks, stream the run to its
trackers, and write every output: the model and its card, the metrics, the plots; then publish it where asked. Used
by the recipes."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import time
from dataclasses import asdict
from typing import Any

from sentence_transformers import SentenceTransformer
from torch import nn
from torch.utils.data import Dataset

from st_simcse.models.build import model_pooling
from st_simcse.training import model_card
from st_simcse.training.callbacks import CheckpointClock, FirstStepTimer, StoppedAtCheckpoint
from st_simcse.training.lock import is_main_process
from st_simcse.training.paths import fit, fit_with_trainer
from st_simcse.training.reporting import hub_repository
from st_simcse.training.run import ARGUMENTS_FILE, METRICS_FILE, RunFailed, RunInterrupted, TrainingRun, write_json
from st_simcse.training.selection import DevTracker, evaluate_on_test
from st_simcse.training.signals import stop_requested, training_ended
from st_simcse.training.trackers import Trackers, evaluation_logs, test_logs

logger = logging.getLogger(__name__)

# How errors say that a disk is full, where they are not an OSError with its errno (safetensors' and torch's writers).
FULL_DISK_WORDS = ("No space left on device", "os error 28", "StorageFull", "Disk quota exceeded", "os error 122")


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
    :mod:`st_simcse.training.signals`) raises :class:`st_simcse.training.run.RunInterrupted` and any failure after
    the start :class:`st_simcse.training.run.RunFailed`, each naming the last complete checkpoint a resume continues
    from.
    """
    # Under torchrun every rank trains, but only the first one writes files and evaluates the best model.
    main_process = is_main_process()
    run.claim()
    trackers: Trackers | None = None
    try:
        os.makedirs(run.checkpoint_dir, exist_ok=True)
        tracker = DevTracker(run, model, main_process)
        if run.resume and tracker.resumed_from is None:
            print(f"No checkpoint to resume in {run.checkpoint_dir}: starting the run from its beginning.")
        if tracker.resumed_from is None and main_process:
            write_json(os.path.join(run.output_dir, ARGUMENTS_FILE), run.arguments)
            tracker.evaluate_untrained()
        fresh = tracker.resumed_from is None and tracker.evaluator.history
        trackers = Trackers(run, evaluation_logs(tracker.evaluator.history[0]) if fresh else None)
        tracker.log_evaluation = lambda entry, step: trackers.log(evaluation_logs(entry), step)
        path = run.training_path_for(None if getattr(dataset, "streaming", False) else len(dataset))
        metrics, best_model = _train_and_report(model, loss, dataset, run, tracker, path, main_process, trackers)
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
        if trackers is not None:
            trackers.end()  # every integration's run ends, also when this one failed or was stopped
    if main_process and not run.keep_checkpoints:
        shutil.rmtree(run.checkpoint_dir, ignore_errors=True)  # the run is finished: nothing to resume any more
    run.release()
    if best_model is not None and run.arguments.get("push_to_hub"):
        publish(best_model, run.output_dir, run.arguments)
    return metrics


def publish(model: SentenceTransformer, output_dir: str, arguments: dict[str, Any]) -> None:
    """``--push-to-hub``: the kept model in ``output_dir`` and its card, to ``--hub-model-id``."""
    from st_simcse.training.publish import push

    repository = hub_repository(arguments.get("hub_model_id"), output_dir)
    print(f"\nPushing the model to the hub: {repository}")
    print(f"Pushed: {push(model, output_dir, repository, bool(arguments.get('hub_private')))}")


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
    out_of_space = out_of_space or any(words in text for words in FULL_DISK_WORDS)
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
    trackers: Trackers,
) -> tuple[dict[str, Any], SentenceTransformer | None]:
    timer = FirstStepTimer()
    tracker.start_training()
    train = fit if path == "fit" else fit_with_trainer
    try:
        train(model, loss, dataset, run, tracker, timer, CheckpointClock(tracker), *trackers.callbacks())
    except StoppedAtCheckpoint:
        pass  # a signal's stop, its checkpoint written: raised as RunInterrupted below
    training_ended()
    stopped_by = stop_requested()
    if stopped_by is not None:  # the Trainer stopped after the step the signal came in, at a checkpoint
        raise RunInterrupted(run.output_dir, run.last_complete_checkpoint(), stopped_by)
    train_seconds = tracker.seconds_before_resume + time.perf_counter() - tracker.started
    if not main_process:
        return {}, None
    best_model = tracker.best_model()
    started = time.perf_counter()
    report = evaluate_on_test(best_model, run)
    trackers.end(test_logs(report))
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
    # The model and its card (sentence-transformers' own, from its card data: model_card.describe_run).
    model_card.describe_run(best_model, model, run, tracker.best_entry(), tracker.evaluator)
    tracker.save_best_model(best_model)
    note = model_card.untrained_note(metrics)
    if note:
        model_card.note(run.output_dir, "untrained", note)
    tracker.plot()
    write_json(os.path.join(run.output_dir, METRICS_FILE), metrics)
    return metrics, best_model
