"""Model selection and the final report of a recipe's run: the dev set (STS-B dev, or the user's scored pairs)
evaluated during training with the untrained model as the first candidate, the best model kept on disk, and the test
yardsticks it is judged on at the end (the user's test pairs, the paper's 7 STS tasks where their data is). Used by
:mod:`st_simcse.training.loop`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm

from st_simcse.evaluation.evaluators import (
    AlignmentUniformityEvaluator,
    STSSuiteEvaluator,
    pairs_evaluator,
    sts_evaluator,
)
from st_simcse.evaluation.pairs import load_scored_pairs
from st_simcse.evaluation.plots import plot_alignment_uniformity, plot_dev_curve
from st_simcse.models.build import encoder_max_length
from st_simcse.training.run import (
    ALIGN_UNIFORM_PNG,
    BEST_MODEL,
    DEV_CURVE_PNG,
    HISTORY_FILE,
    TrainingRun,
    latest_checkpoint_step,
    write_json,
)

logger = logging.getLogger(__name__)

# Pairs scored in the top fifth of their range are the positives of the alignment measure (4 of STS-B's 0-5).
POSITIVE_SHARE_OF_RANGE = 0.8


def dev_evaluator(run: TrainingRun) -> STSSuiteEvaluator:
    """The run's dev set with alignment/uniformity on its pairs: the user's ``dev_file``, or STS-B dev."""
    if run.dev_file is None:
        return sts_evaluator(
            run.senteval_dir, "dev", tasks=["STS-B"], batch_size=run.eval_batch_size, alignment_uniformity_task="STS-B"
        )
    data = load_scored_pairs(run.dev_file, "dev", what="--dev-file", columns=run.dev_columns)
    suite = pairs_evaluator(data, batch_size=run.eval_batch_size)
    low, high = min(data.scores), max(data.scores)
    alignment = AlignmentUniformityEvaluator(data, threshold=low + POSITIVE_SHARE_OF_RANGE * (high - low))
    return STSSuiteEvaluator([*suite.evaluators, alignment], name=suite.name)


def dev_set_name(run: TrainingRun) -> str:
    return f"dev ({os.path.basename(run.dev_file)})" if run.dev_file else "STS-B dev"


class DevTracker:
    """The dev evaluation during training: its history (restored and truncated on resume), the best step (the
    untrained model, step 0, is the first candidate), the best model kept on disk, the training time so far, and the
    dev plots."""

    # Not model.fit's save_best_model nor the Trainer's load_best_model_at_end: neither takes the untrained model as
    # a candidate, and model.fit's forgets its best score on resume (it would save a worse model over the best).

    def __init__(self, run: TrainingRun, model: SentenceTransformer, main_process: bool) -> None:
        self.run, self.model, self.main_process = run, model, main_process
        self.evaluator = dev_evaluator(run)
        self.metric = self.evaluator.primary_metric
        self.name = dev_set_name(run)
        self.alignment = self.evaluator.evaluators[-1]
        self.history_path = os.path.join(run.output_dir, HISTORY_FILE)
        self.best_dir = os.path.join(run.output_dir, BEST_MODEL)
        self.best: dict[str, Any] = {"score": float("-inf"), "step": None}
        # Training seconds by evaluated step, so that a resumed run's time counts the part before the interruption.
        self.train_seconds: dict[int, float] = {}
        self.seconds_before_resume = 0.0
        self.started = time.perf_counter()  # reset by start_training()
        # Called with each evaluation that the Trainer itself does not log (model.fit's at the end of an epoch).
        self.log_evaluation: Callable[[dict[str, Any], int], None] | None = None
        if main_process:
            recover_atomic_save(self.best_dir)
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
            held = saved.get("best_step")  # the step whose model best_dir holds
            if held is not None and held <= step:
                self.best = {"score": saved["best_score"], "step": held}
            else:
                self._best_from_checkpoint(step)
            self.train_seconds = {int(s): t for s, t in saved.get("train_seconds", {}).items() if int(s) <= step}
            self.seconds_before_resume = self.train_seconds.get(step, 0.0)
        print(f"Resuming from {self.run.checkpoint_dir}/checkpoint-{step}")

    def _best_from_checkpoint(self, step: int) -> None:
        """best_dir holds a model of the part of the run the interruption lost (evaluated, never checkpointed): the
        resumed checkpoint's model, evaluated at its step, becomes the best so far."""
        entry = next((e for e in self.evaluator.history if e["steps"] == step), None)
        if entry is None:
            return
        earlier = max(self.evaluator.history, key=lambda e: e[self.metric])
        if earlier["steps"] != step:
            print(
                f"The best model so far (step {earlier['steps']}) was overwritten by an evaluation the interruption "
                f"lost; model selection continues from the resumed checkpoint (step {step})."
            )
        checkpoint = os.path.join(self.run.checkpoint_dir, f"checkpoint-{step}")
        save_atomically(SentenceTransformer(checkpoint, device=str(self.model.device)), self.best_dir)
        self.best = {"score": entry[self.metric], "step": step}

    def evaluate_untrained(self) -> None:
        """The untrained model starts the dev curve and the alignment/uniformity trajectory, and is the best model
        until a checkpoint beats it."""
        score = self.evaluator(self.model, epoch=0, steps=0)[self.metric]
        self._record(score, 0, seconds=0.0)
        print(f"step 0 (untrained): {self.name} Spearman {100 * score:.2f}")

    def start_training(self) -> None:
        self.started = time.perf_counter()

    def on_evaluation(self, score: float, epoch: int, steps: int) -> None:
        """model.fit's callback after each evaluation: record it, keep the model if it is the best so far."""
        if not self.main_process:
            return
        # model.fit also evaluates at the end of each epoch, which can repeat the last step's evaluation of the
        # same weights: drop the repeat.
        history = self.evaluator.history
        if len(history) > 1 and history[-1]["steps"] == history[-2]["steps"]:
            del history[-1], self.alignment.history[-1]
            return
        self._record(score, steps, self.seconds_before_resume + time.perf_counter() - self.started)
        if self.log_evaluation is not None and steps % self.run.eval_steps != 0:
            self.log_evaluation(history[-1], steps)
        # Above the progress bar, not on its line.
        tqdm.write(f"step {steps}: {self.name} Spearman {100 * score:.2f} (best {100 * self.best['score']:.2f})")

    def note_checkpoint(self, steps: int) -> None:
        """A checkpoint was written at ``steps``: its training time so far, for a run resumed from it."""
        self.train_seconds[steps] = round(self.seconds_before_resume + time.perf_counter() - self.started, 1)
        self._write()

    def _record(self, score: float, steps: int, seconds: float) -> None:
        if score > self.best["score"]:
            self.best.update(score=score, step=steps)
            save_atomically(self.model, self.best_dir)
        self.train_seconds[steps] = round(seconds, 1)
        self._write()

    def _write(self) -> None:
        write_json(
            self.history_path,
            {
                "history": self.evaluator.history,
                "alignment_uniformity": self.alignment.history,
                "best_score": self.best["score"],
                "best_step": self.best["step"],
                "train_seconds": self.train_seconds,
            },
        )

    def best_model(self) -> SentenceTransformer:
        """The best model (the untrained one if no checkpoint beat it), loaded, with the length it serves with."""
        if self.best["step"] is None:
            raise RuntimeError("No dev evaluation ran, so there is no best model; evaluate more often.")
        # A run interrupted after its final report moved the best model to the root: take it from there.
        source = self.best_dir if os.path.isdir(self.best_dir) else self.run.output_dir
        best_model = SentenceTransformer(source, device=str(self.model.device))
        best_model.max_seq_length = self.run.serving_max_seq_length or encoder_max_length(best_model)
        return best_model

    def best_entry(self) -> dict[str, Any]:
        """The dev history entry of the best model."""
        return next((entry for entry in self.evaluator.history if entry["steps"] == self.best["step"]), {})

    def save_best_model(self, best_model: SentenceTransformer) -> None:
        """The best model (with its card) at the output folder's root, where ``SentenceTransformer(output_dir)``
        loads it."""
        best_model.save(self.run.output_dir)
        shutil.rmtree(self.best_dir, ignore_errors=True)

    def summary(self) -> dict[str, Any]:
        history = self.evaluator.history
        untrained = history[0][self.metric] if history and history[0]["steps"] == 0 else None
        trained = [entry for entry in history if entry["steps"] > 0]
        best_trained = max(trained, key=lambda entry: entry[self.metric], default=None)
        return {
            "dev_set": self.name,
            "best_step": self.best["step"],
            "best_dev": round(100 * self.best["score"], 2),
            "untrained_dev": round(100 * untrained, 2) if untrained is not None else None,
            "best_trained_dev": round(100 * best_trained[self.metric], 2) if best_trained else None,
            "best_trained_step": best_trained["steps"] if best_trained else None,
            "dev_history": history,
            "dev_alignment_uniformity": self.alignment.history,
            "resumed_from_step": self.resumed_from,
        }

    def plot(self) -> None:
        history = self.evaluator.history
        steps, scores = [entry["steps"] for entry in history], [entry[self.metric] for entry in history]
        label = f"{self.name} Spearman"
        plot_dev_curve(steps, scores, os.path.join(self.run.output_dir, DEV_CURVE_PNG), label=label)
        plot_alignment_uniformity(self.alignment.history, os.path.join(self.run.output_dir, ALIGN_UNIFORM_PNG))


def recover_atomic_save(folder: str) -> None:
    """Put back the model that :func:`save_atomically` had moved aside when its process died before the swap."""
    if not os.path.isdir(folder) and os.path.isdir(f"{folder}.old"):
        os.replace(f"{folder}.old", folder)
    shutil.rmtree(f"{folder}.partial", ignore_errors=True)


def save_atomically(model: SentenceTransformer, folder: str) -> None:
    """Save ``model`` to ``folder`` whole or not at all: written beside it, then swapped in, so an interruption or
    a full disk mid-save leaves the previous model in place."""
    staged, old = f"{folder}.partial", f"{folder}.old"
    shutil.rmtree(staged, ignore_errors=True)
    model.save(staged)
    if os.path.isdir(folder):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(staged, folder)
    shutil.rmtree(old, ignore_errors=True)


def evaluate_on_test(model: SentenceTransformer, run: TrainingRun) -> dict[str, Any]:
    """The final report of ``model``: the user's test pairs (``test_file``) and, where their data is, the paper's
    7-task table with alignment/uniformity on STS-B test. A missing table is None, with the reason."""
    report: dict[str, Any] = {"test": None, "test_file": None, "test_alignment": None, "test_uniformity": None}
    if run.test_file is not None:
        # Named by its file: the model card's results name their dataset.
        name = os.path.basename(os.path.normpath(run.test_file))
        data = load_scored_pairs(run.test_file, name, what="--test-file", columns=run.test_columns)
        evaluator = pairs_evaluator(data, batch_size=run.eval_batch_size)
        results = evaluator(model)
        report["test_file"] = {"file": run.test_file, "pairs": len(data), "spearman": evaluator.table(results)["Avg."]}
    if not run.sts_test:
        report["sts_skipped"] = "No 7-task STS table: --no-sts-test."
        return report
    if not run.sts_tables:
        report["sts_skipped"] = "No 7-task STS table: the hub is out of reach; pass --senteval-dir DIR to add it."
        return report
    try:
        evaluator = sts_evaluator(
            run.senteval_dir, "test", batch_size=run.eval_batch_size, alignment_uniformity_task="STS-B"
        )
    except (OSError, ValueError) as error:  # the local hub cache can lack them (HF_HUB_OFFLINE=1)
        logger.info("The STS sets could not be loaded from the hub", exc_info=error)
        report["sts_skipped"] = "No 7-task STS table: the hub's STS sets could not be loaded; pass --senteval-dir DIR."
        return report
    results = evaluator(model)
    _, alignment, uniformity = evaluator.evaluators[-1].history[-1]
    report.update(test=evaluator.table(results), test_alignment=alignment, test_uniformity=uniformity)
    return report
