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
from transformers import TrainerCallback, set_seed

from st_simcse.evaluation import check_senteval_dir, print_table, sts_evaluator
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


@dataclass
class TrainingRun:
    """Where a recipe writes and how it trains; everything here is recorded in ``metrics.json``."""

    output_dir: str
    senteval_dir: str | None
    batch_size: int
    learning_rate: float
    epochs: int = 1
    max_steps: int | None = None
    eval_steps: int = 125
    seed: int = 42
    eval_batch_size: int = 128
    resume: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)

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
            raise ValueError(
                f"{self.output_dir} already holds a started run (checkpoint-{step}). Resume it to continue (the "
                "recipes' --resume), or choose another output folder; nothing there is overwritten."
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
                if name not in RESUMABLE_CHANGES and saved.get(name) != value
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


@contextmanager
def fit_callbacks(*callbacks: TrainerCallback) -> Iterator[None]:
    """Give the Trainers built inside the block (e.g. by ``model.fit``, which takes no callbacks) these callbacks,
    through transformers' default callbacks; they are removed again when the block ends."""
    from transformers import trainer as hf_trainer

    hf_trainer.DEFAULT_CALLBACKS.extend(callbacks)
    try:
        yield
    finally:
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
    os.makedirs(run.checkpoint_dir, exist_ok=True)
    dev_evaluator = sts_evaluator(
        run.senteval_dir, "dev", tasks=["STS-B"], batch_size=run.eval_batch_size, alignment_uniformity_task="STS-B"
    )
    alignment_evaluator = dev_evaluator.evaluators[-1]
    history_path = os.path.join(run.output_dir, HISTORY_FILE)
    best_dir = os.path.join(run.output_dir, BEST_MODEL)

    # Under torchrun every rank trains, but only the first one writes files and evaluates the best model.
    main_process = int(os.environ.get("RANK", "0")) == 0
    resumed_from = latest_checkpoint_step(run.checkpoint_dir) if run.resume else None
    best = {"score": float("-inf"), "step": None}
    if resumed_from is not None:
        # The loss's own parameters (the MLP head) come back through st_simcse's LossStateCallback.
        if os.path.isfile(history_path):
            with open(history_path, encoding="utf-8") as handle:
                saved = json.load(handle)
            # Evaluations after the checkpoint belong to the lost part of the run and will be redone.
            dev_evaluator.history = [entry for entry in saved["history"] if entry["steps"] <= resumed_from]
            alignment_evaluator.history = [tuple(p) for p in saved["alignment_uniformity"] if p[0] <= resumed_from]
            if saved.get("best_step") is not None and saved["best_step"] <= resumed_from:
                best = {"score": saved["best_score"], "step": saved["best_step"]}
        logger.info(f"Resuming from {run.checkpoint_dir}/checkpoint-{resumed_from}")
    elif run.resume:
        logger.warning(f"Resume: no checkpoint in {run.checkpoint_dir}, starting from scratch.")
    if resumed_from is None and main_process:
        _write_json(os.path.join(run.output_dir, ARGUMENTS_FILE), run.arguments)

    def on_evaluation(score: float, epoch: int, steps: int) -> None:
        if not main_process:
            return
        # model.fit also evaluates at the end of each epoch, which can repeat the last step's evaluation.
        for history in (dev_evaluator.history, alignment_evaluator.history):
            if len(history) > 1 and _step_of(history[-1]) == _step_of(history[-2]):
                del history[-2]
        if score > best["score"]:
            best.update(score=score, step=steps)
            model.save(best_dir)
        _write_json(
            history_path,
            {
                "history": dev_evaluator.history,
                "alignment_uniformity": alignment_evaluator.history,
                "best_score": best["score"],
                "best_step": best["step"],
            },
        )
        logger.info(f"step {steps}: STS-B dev Spearman {100 * score:.2f} (best {100 * best['score']:.2f})")

    if resumed_from is None and main_process:
        # The untrained model's point starts the dev curve and the alignment/uniformity trajectory.
        dev_evaluator(model, epoch=0, steps=0)
        untrained = dev_evaluator.history[-1]["sts_dev_avg"]
        logger.info(f"step 0 (untrained): STS-B dev Spearman {100 * untrained:.2f}")

    # Seeded shuffling: model.fit reads the DataLoader once, so the order is fixed by the seed and a resumed run
    # sees the same batches. The SeedCallback makes the same seed drive the dropout masks.
    generator = torch.Generator().manual_seed(run.seed)
    loader = DataLoader(dataset, batch_size=run.batch_size, shuffle=True, generator=generator)
    steps_per_epoch = run.max_steps
    epochs = 1 if run.max_steps else run.epochs
    started = time.perf_counter()
    with fit_callbacks(SeedCallback(run.seed)):
        model.fit(
            train_objectives=[(loader, loss)],
            evaluator=dev_evaluator,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            scheduler="WarmupLinear",
            warmup_steps=0,
            optimizer_params={"lr": run.learning_rate},
            weight_decay=0.0,
            evaluation_steps=run.eval_steps,
            use_amp=torch.cuda.is_available(),
            callback=on_evaluation,
            show_progress_bar=True,
            checkpoint_path=run.checkpoint_dir,
            checkpoint_save_steps=run.eval_steps,
            checkpoint_save_total_limit=1,
            resume_from_checkpoint=run.resume,
        )
    train_seconds = time.perf_counter() - started
    if not main_process:
        return {}

    if best["step"] is None:
        raise RuntimeError("No evaluation ran during training, so there is no best checkpoint; lower --eval-steps.")
    best_model = SentenceTransformer(best_dir, device=str(model.device))
    with whole_sentences(best_model):
        best_model.save(run.output_dir)
    started = time.perf_counter()
    test_evaluator = sts_evaluator(
        run.senteval_dir,
        "test",
        batch_size=run.eval_batch_size,
        alignment_uniformity_task="STS-B",
        show_progress_bar=True,
    )
    test_results = test_evaluator(best_model)
    eval_seconds = time.perf_counter() - started
    table = test_evaluator.table(test_results)
    test_alignment = test_evaluator.evaluators[-1].history[-1]

    history = dev_evaluator.history
    plot_dev_curve(
        [entry["steps"] for entry in history],
        [entry["sts_dev_avg"] for entry in history],
        os.path.join(run.output_dir, DEV_CURVE_PNG),
    )
    plot_alignment_uniformity(alignment_evaluator.history, os.path.join(run.output_dir, ALIGN_UNIFORM_PNG))
    metrics = {
        "arguments": run.arguments,
        "run": asdict(run),
        "best_step": best["step"],
        "best_dev_stsb": round(100 * best["score"], 2),
        "untrained_dev_stsb": round(100 * history[0]["sts_dev_avg"], 2) if history[0]["steps"] == 0 else None,
        "test": table,
        "test_alignment": test_alignment[1],
        "test_uniformity": test_alignment[2],
        "dev_history": history,
        "dev_alignment_uniformity": alignment_evaluator.history,
        "resumed_from_step": resumed_from,
        "train_seconds": round(train_seconds, 1),
        "test_eval_seconds": round(eval_seconds, 1),
        "device": str(model.device),
    }
    _write_json(os.path.join(run.output_dir, METRICS_FILE), metrics)
    shutil.rmtree(best_dir, ignore_errors=True)
    print_table(table)
    return metrics


def _step_of(entry: dict | tuple) -> int:
    return entry["steps"] if isinstance(entry, dict) else entry[0]

