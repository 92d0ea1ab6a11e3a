"""What both recipes share: train with ``model.fit`` while selecting the best checkpoint on STS-B dev, survive
interruption (``resume``), then evaluate the best model on the paper's 7 STS tasks and write every output."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import ProgressCallback, TrainerCallback, set_seed

from st_simcse.evaluation import check_senteval_dir, sts_evaluator
from st_simcse.loss_state import LOSS_STATE_FILE
from st_simcse.models import whole_sentences
from st_simcse.plots import plot_alignment_uniformity, plot_dev_curve

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
BEST_MODEL = "best_model"
HISTORY_FILE = "dev_history.json"
METRICS_FILE = "metrics.json"
ARGUMENTS_FILE = "arguments.json"
# Options that may differ between a run and its resumption: they do not change what is trained.
RESUMABLE_CHANGES = ("resume", "eval_batch_size")
DEV_CURVE_PNG = "dev_curve.png"
ALIGN_UNIFORM_PNG = "align_uniform.png"


class StartedRunError(ValueError):
    """The output folder holds a started, unfinished run, and this run does not resume it."""


# model.fit's names for the learning-rate schedules.
SCHEDULERS = ("WarmupLinear", "WarmupConstant", "ConstantLR", "WarmupCosine", "WarmupCosineWithHardRestarts")
AMP_MODES = ("auto", "bf16", "fp16", "none")


@dataclass
class TrainingRun:
    """Where a recipe writes and how it trains (every value comes from the recipe's knobs); everything here is
    recorded in ``metrics.json``. ``amp``: "auto" is bf16 autocast on a GPU that supports it (no gradient
    scaler), fp16 autocast with model.fit's scaler on other GPUs, and none on a CPU."""

    output_dir: str
    senteval_dir: str | None
    batch_size: int
    learning_rate: float
    epochs: int
    max_steps: int | None
    scheduler: str
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    amp: str
    eval_steps: int
    eval_batch_size: int
    seed: int
    resume: bool
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        """The mixed precision this run uses on this machine: "bf16", "fp16" or "none"."""
        if self.amp != "auto":
            return self.amp
        if not torch.cuda.is_available():
            return "none"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.output_dir, CHECKPOINTS)

    @property
    def finished(self) -> bool:
        return os.path.isfile(os.path.join(self.output_dir, METRICS_FILE))

    def check_before_loading(self, loss_owns_state: bool = False) -> None:
        """Everything that can fail without a model, so it fails before any time is spent loading or training and
        before anything is written. ``loss_owns_state``: the loss has parameters of its own (the MLP head), which
        a resumed checkpoint must carry."""
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be at least 2 (the other examples are the negatives), got {self.batch_size}."
            )
        if self.eval_steps < 1:
            raise ValueError(f"eval_steps must be positive, got {self.eval_steps}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}.")
        if not (self.learning_rate > 0):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}.")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}.")
        if self.senteval_dir is not None:
            check_senteval_dir(self.senteval_dir, "dev", ["STS-B"])
            check_senteval_dir(self.senteval_dir, "test")
        if self.finished:
            if not self.resume:
                raise ValueError(
                    f"{self.output_dir} already holds a finished run ({METRICS_FILE}); nothing there is overwritten. "
                    "Choose another output folder, or delete this one to train again."
                )
            return  # resuming a finished run is a no-op: the caller reports it and writes nothing
        step = latest_checkpoint_step(self.checkpoint_dir)
        if step is not None and not self.resume:
            raise StartedRunError(
                f"{self.output_dir} already holds a started run (checkpoint-{step}). Resume it to continue, or "
                "choose another output folder; nothing there is overwritten."
            )
        if self.resume and step is not None:
            self._check_resumable(step, loss_owns_state)

    def _check_resumable(self, step: int, loss_owns_state: bool) -> None:
        checkpoint = os.path.join(self.checkpoint_dir, f"checkpoint-{step}")
        required = ["trainer_state.json", "modules.json"] + ([LOSS_STATE_FILE] if loss_owns_state else [])
        missing = [name for name in required if not os.path.isfile(os.path.join(checkpoint, name))]
        if missing:
            raise ValueError(
                f"Cannot resume: {checkpoint} is incomplete (no {', '.join(missing)}; the run was probably killed "
                "while saving it). Delete that folder to resume from the checkpoint before it, if one is left, or "
                "start afresh in another output folder."
            )
        saved_path = os.path.join(self.output_dir, ARGUMENTS_FILE)
        if os.path.isfile(saved_path):
            with open(saved_path, encoding="utf-8") as handle:
                saved = json.load(handle)
            changed = {
                name: (saved.get(name), value)
                for name, value in self.arguments.items()
                # An option the run did not record (an older st_simcse) is not a change.
                if name not in RESUMABLE_CHANGES and name in saved and saved[name] != value
            }
            if changed:
                listed = ", ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in changed.items())
                raise ValueError(
                    f"Cannot resume: this command changes options of the run in {self.output_dir} ({listed}). "
                    "Resume with the options it was started with, or start a new run in another output folder."
                )


def latest_checkpoint_step(checkpoint_dir: str) -> int | None:
    if not os.path.isdir(checkpoint_dir):
        return None
    steps = [int(m.group(1)) for name in os.listdir(checkpoint_dir) if (m := re.fullmatch(r"checkpoint-(\d+)", name))]
    return max(steps, default=None)


def _write_json(path: str, payload: Any) -> None:
    # Write-then-rename, so an interruption never leaves a half-written file behind.
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(temporary, path)


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


@contextmanager
def fit_callbacks(*callbacks: TrainerCallback, progress: type[TrainerCallback] | None = None) -> Iterator[None]:
    """Give the Trainers built inside the block (e.g. by ``model.fit``, which takes no callbacks) these callbacks,
    through transformers' default callbacks, and ``progress`` as their progress bar; both are undone when the block
    ends."""
    from transformers import trainer as hf_trainer

    default_progress = hf_trainer.DEFAULT_PROGRESS_CALLBACK
    hf_trainer.DEFAULT_CALLBACKS.extend(callbacks)
    hf_trainer.DEFAULT_PROGRESS_CALLBACK = progress or default_progress
    try:
        yield
    finally:
        hf_trainer.DEFAULT_PROGRESS_CALLBACK = default_progress
        for callback in callbacks:
            hf_trainer.DEFAULT_CALLBACKS.remove(callback)


def train_and_evaluate(
    model: SentenceTransformer, loss: nn.Module, dataset: Dataset, run: TrainingRun
) -> dict[str, Any]:
    """Train ``model`` with ``loss`` on ``dataset`` through ``model.fit``, evaluating STS-B dev (plus
    alignment/uniformity) every ``run.eval_steps``; keep the best dev checkpoint, evaluate it on the 7 STS test
    tasks with whole sentences, and write to ``run.output_dir``:

    - the best model at the folder's root (``SentenceTransformer(output_dir)`` loads it; max_seq_length restored
      to the encoder's limit, since the paper trains on 32 tokens but evaluates whole sentences);
    - ``metrics.json``: the arguments, the dev history, the best step, the test table, timings;
    - ``dev_curve.png`` and ``align_uniform.png``;
    - ``checkpoints/`` (trainer state, and the loss's own parameters such as the training-only MLP head), from
      which ``run.resume`` continues an interrupted run.
    """
    # Under torchrun every rank trains, but only the first one writes files and evaluates the best model.
    main_process = int(os.environ.get("RANK", "0")) == 0
    os.makedirs(run.checkpoint_dir, exist_ok=True)
    tracker = DevTracker(run, model, main_process)
    if run.resume and tracker.resumed_from is None:
        print(f"No checkpoint to resume in {run.checkpoint_dir}: starting the run from its beginning.")
    if tracker.resumed_from is None and main_process:
        _write_json(os.path.join(run.output_dir, ARGUMENTS_FILE), run.arguments)
        tracker.evaluate_untrained()
    started = time.perf_counter()
    fit(model, loss, dataset, run, tracker)
    train_seconds = time.perf_counter() - started
    if not main_process:
        return {}
    best_model = tracker.keep_best_model()
    started = time.perf_counter()
    table, test_alignment = evaluate_on_sts_test(best_model, run)
    metrics = {
        "arguments": run.arguments,
        "run": asdict(run),
        **tracker.summary(),
        "test": table,
        "test_alignment": test_alignment[1],
        "test_uniformity": test_alignment[2],
        "train_seconds": round(train_seconds, 1),
        "test_eval_seconds": round(time.perf_counter() - started, 1),
        "device": str(model.device),
    }
    tracker.plot()
    _write_json(os.path.join(run.output_dir, METRICS_FILE), metrics)
    return metrics


class DevTracker:
    """The STS-B dev evaluation during training: its history (restored and truncated on resume), the best step,
    the best model kept on disk, and the dev plots."""

    def __init__(self, run: TrainingRun, model: SentenceTransformer, main_process: bool) -> None:
        self.run, self.model, self.main_process = run, model, main_process
        self.evaluator = sts_evaluator(
            run.senteval_dir, "dev", tasks=["STS-B"], batch_size=run.eval_batch_size, alignment_uniformity_task="STS-B"
        )
        self.alignment = self.evaluator.evaluators[-1]
        self.history_path = os.path.join(run.output_dir, HISTORY_FILE)
        self.best_dir = os.path.join(run.output_dir, BEST_MODEL)
        self.best: dict[str, Any] = {"score": float("-inf"), "step": None}
        self.resumed_from = latest_checkpoint_step(run.checkpoint_dir) if run.resume else None
        if self.resumed_from is not None:
            self._restore(self.resumed_from)

    def _restore(self, step: int) -> None:
        # The loss's own parameters (the MLP head) come back through st_simcse's LossStateCallback.
        if os.path.isfile(self.history_path):
            with open(self.history_path, encoding="utf-8") as handle:
                saved = json.load(handle)
            # Evaluations after the checkpoint belong to the lost part of the run and will be redone.
            self.evaluator.history = [entry for entry in saved["history"] if entry["steps"] <= step]
            self.alignment.history = [tuple(p) for p in saved["alignment_uniformity"] if p[0] <= step]
            if saved.get("best_step") is not None and saved["best_step"] <= step:
                self.best = {"score": saved["best_score"], "step": saved["best_step"]}
        print(f"Resuming from {self.run.checkpoint_dir}/checkpoint-{step}")

    def evaluate_untrained(self) -> None:
        """The untrained model's point starts the dev curve and the alignment/uniformity trajectory."""
        self.evaluator(self.model, epoch=0, steps=0)
        untrained = self.evaluator.history[-1]["sts_dev_avg"]
        print(f"step 0 (untrained): STS-B dev Spearman {100 * untrained:.2f}")

    def on_evaluation(self, score: float, epoch: int, steps: int) -> None:
        """model.fit's callback after each evaluation: record it, keep the model if it is the best so far."""
        if not self.main_process:
            return
        # model.fit also evaluates at the end of each epoch, which can repeat the last step's evaluation of the
        # same weights: drop the repeat.
        history = self.evaluator.history
        if len(history) > 1 and _step_of(history[-1]) == _step_of(history[-2]):
            del history[-1], self.alignment.history[-1]
            return
        if score > self.best["score"]:
            self.best.update(score=score, step=steps)
            self.model.save(self.best_dir)
        _write_json(
            self.history_path,
            {
                "history": self.evaluator.history,
                "alignment_uniformity": self.alignment.history,
                "best_score": self.best["score"],
                "best_step": self.best["step"],
            },
        )
        # Above the progress bar, not on its line.
        tqdm.write(f"step {steps}: STS-B dev Spearman {100 * score:.2f} (best {100 * self.best['score']:.2f})")

    def keep_best_model(self) -> SentenceTransformer:
        """Move the best checkpoint's model to the output folder's root, for whole-sentence use."""
        if self.best["step"] is None:
            raise RuntimeError(
                "No evaluation ran during training, so there is no best checkpoint; evaluate more often."
            )
        best_model = SentenceTransformer(self.best_dir, device=str(self.model.device))
        with whole_sentences(best_model):
            best_model.save(self.run.output_dir)
        shutil.rmtree(self.best_dir, ignore_errors=True)
        return best_model

    def summary(self) -> dict[str, Any]:
        history = self.evaluator.history
        return {
            "best_step": self.best["step"],
            "best_dev_stsb": round(100 * self.best["score"], 2),
            "untrained_dev_stsb": round(100 * history[0]["sts_dev_avg"], 2) if history[0]["steps"] == 0 else None,
            "dev_history": history,
            "dev_alignment_uniformity": self.alignment.history,
            "resumed_from_step": self.resumed_from,
        }

    def plot(self) -> None:
        history = self.evaluator.history
        steps, scores = [entry["steps"] for entry in history], [entry["sts_dev_avg"] for entry in history]
        plot_dev_curve(steps, scores, os.path.join(self.run.output_dir, DEV_CURVE_PNG))
        plot_alignment_uniformity(self.alignment.history, os.path.join(self.run.output_dir, ALIGN_UNIFORM_PNG))


def fit(
    model: SentenceTransformer, loss: nn.Module, dataset: Dataset, run: TrainingRun, tracker: DevTracker | None
) -> None:
    """``model.fit`` with the run's settings, a checkpoint at every evaluation, and the run's seed on every RNG.
    Without a ``tracker`` nothing is evaluated (as the speed benchmark measures the training path alone)."""
    # Seeded shuffling: model.fit reads the DataLoader once, so the order is fixed by the seed and a resumed run
    # sees the same batches. The SeedCallback makes the same seed drive the dropout masks.
    generator = torch.Generator().manual_seed(run.seed)
    loader = DataLoader(dataset, batch_size=run.batch_size, shuffle=True, generator=generator)
    # model.fit's use_amp is fp16 with a gradient scaler; bf16 needs no scaler, so the loss runs under autocast.
    objective = BFloat16Autocast(loss) if run.precision == "bf16" else loss
    with fit_callbacks(SeedCallback(run.seed), progress=ProgressBarLoggingMetrics):
        model.fit(
            train_objectives=[(loader, objective)],
            evaluator=tracker.evaluator if tracker else None,
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


def evaluate_on_sts_test(model: SentenceTransformer, run: TrainingRun) -> tuple[dict[str, float], tuple]:
    """The paper's 7-task table of ``model`` and its (step, alignment, uniformity) on STS-B test."""
    evaluator = sts_evaluator(
        run.senteval_dir, "test", batch_size=run.eval_batch_size, alignment_uniformity_task="STS-B"
    )
    results = evaluator(model)
    return evaluator.table(results), evaluator.evaluators[-1].history[-1]


def _step_of(entry: dict | tuple) -> int:
    return entry["steps"] if isinstance(entry, dict) else entry[0]
