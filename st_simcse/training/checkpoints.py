"""Checkpoints that are either complete or absent. The Trainer writes a checkpoint's files one by one into
``checkpoint-N`` and then deletes the older checkpoints; a run killed (or out of disk) in between leaves a
``checkpoint-N`` without its trainer state or optimizer, which ``model.fit``'s resume picks up as the newest. Here a
checkpoint is written into a staging folder, ``checkpoints/.partial/checkpoint-N``, renamed to
``checkpoints/checkpoint-N`` once every file (the loss's own state too) is on disk, and only then are older ones
rotated out: whatever happens mid-write, the previous checkpoint is still the one a resume continues from. Used by
both training paths (:mod:`st_simcse.training.paths`); it overrides two private methods of the Trainer
(``_save_checkpoint``, ``_get_output_dir``: CONTRIBUTING.md lists them and why).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sentence_transformers import SentenceTransformerTrainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from st_simcse.losses.state import LossStateCallback
from st_simcse.training.lock import is_main_process
from st_simcse.training.run import STAGING


class AtomicCheckpointTrainer(SentenceTransformerTrainer):
    """``SentenceTransformerTrainer`` whose checkpoints appear whole: written under ``.partial/`` beside them and
    renamed when complete (see the module docstring). Everything else is the parent's."""

    _staging_root: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for callback in self._loss_state_callbacks:
            callback.staged = True  # the loss state goes into the staged folder below, not from the step events

    def add_callback(self, callback: Any) -> None:
        super().add_callback(callback)
        for added in self._loss_state_callbacks:
            added.staged = True

    @property
    def _loss_state_callbacks(self) -> list[LossStateCallback]:
        return [callback for callback in self.callback_handler.callbacks if isinstance(callback, LossStateCallback)]

    def _get_output_dir(self, trial: Any) -> str:
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = os.path.join(run_dir, STAGING)
        staged = os.path.join(staging, name)
        if self.args.world_size == 1 and not is_main_process():
            # A torchrun process of a Trainer that sees one process (torchrun on CPUs without accelerate's set-up):
            # every process would write the same checkpoint; only the first one does.
            return
        if self.args.should_save:
            shutil.rmtree(staged, ignore_errors=True)  # a dead run's leftover
        for callback in self._loss_state_callbacks:
            # First, so that the trainer state written below records this loss state's token.
            callback.save_into(self.args, self.state, self.model, self.optimizer, staged)
        self._staging_root = staging
        try:
            super()._save_checkpoint(model, trial)  # into staging/checkpoint-N, rotating nothing else
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every process's files (its RNG state) are in before the rename
        if not self.args.should_save:
            return
        final = os.path.join(run_dir, name)
        if os.path.isdir(final):  # this step saved again (an epoch's end after the step's own save)
            shutil.rmtree(final)
        os.replace(staged, final)
        shutil.rmtree(staging, ignore_errors=True)
        self._rotate(run_dir)

    def _rotate(self, run_dir: str) -> None:
        """The parent's deletion of older checkpoints, now that the new one is complete."""
        try:
            from transformers.trainer_utils import rotate_checkpoints
        except ImportError:  # transformers 5.0 and 5.1: a method of the Trainer
            self._rotate_checkpoints(use_mtime=False, output_dir=run_dir)
            return
        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
            use_mtime=False,
        )


@contextmanager
def model_fit_uses_atomic_checkpoints() -> Iterator[None]:
    """Inside the block, ``model.fit`` builds an :class:`AtomicCheckpointTrainer`: it imports
    ``SentenceTransformerTrainer`` from its module when called, and that name is this subclass for the block's
    duration (model.fit takes no trainer class)."""
    from sentence_transformers.sentence_transformer import trainer as trainer_module

    original = trainer_module.SentenceTransformerTrainer
    trainer_module.SentenceTransformerTrainer = AtomicCheckpointTrainer
    try:
        yield
    finally:
        trainer_module.SentenceTransformerTrainer = original
