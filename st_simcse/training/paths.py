"""The three training paths of a recipe's run, which give the same training: ``model.fit`` (the recipes' default up
to the paper's corpus size), the ``SentenceTransformerTrainer`` that model.fit runs underneath, given the corpus's
memory-mapped Arrow table instead of model.fit's in-memory copy (equal weights, tested), and that Trainer on a stream
(for corpora beyond memory or disk). Used by :mod:`st_simcse.training.loop` and the speed benchmark."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

import torch
from datasets import DatasetDict
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import DefaultBatchSampler
from sentence_transformers.base.training_args import MultiDatasetBatchSamplers
from sentence_transformers.sentence_transformer.fit_mixin import EvaluatorCallback, OriginalCallback
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import ProgressCallback, TrainerCallback, get_scheduler

from st_simcse.losses.state import LossStateCallback
from st_simcse.training.callbacks import (
    EvaluatorUnlessStopped,
    RandomStateKept,
    SeedCallback,
    StopAtCheckpointOnSignal,
    model_fit_callbacks,
    progress_callback,
)
from st_simcse.training.checkpoints import AtomicCheckpointTrainer
from st_simcse.training.run import TrainingRun

if TYPE_CHECKING:
    from st_simcse.training.selection import DevTracker

# model.fit's names of the learning-rate schedules -> transformers' own (the same schedules, tested by
# tests/test_training.py's equal-weights check against model.fit).
FIT_SCHEDULERS = {
    "WarmupLinear": "linear",
    "WarmupConstant": "constant_with_warmup",
    "ConstantLR": "constant",
    "WarmupCosine": "cosine",
    "WarmupCosineWithHardRestarts": "cosine_with_restarts",
}


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
    with model_fit_callbacks(*run_callbacks(run), *callbacks, progress=progress_callback(), seed_heads=False):
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
        disable_tqdm=False,  # the progress callback is replaced below
        report_to="none",  # trackers come as callbacks, as on the model.fit path (st_simcse.training.trackers)
        save_strategy="steps",
        save_steps=run.eval_steps,
        save_total_limit=1,
    )
    optimizer, schedule = _fit_optimizer(model, losses, run, steps)
    collator = None
    if streaming and run.drop_repeats_in_batches:
        from st_simcse.data.collator import SimCSEDataCollator

        collator = SimCSEDataCollator(model.preprocess, drop_repeats=True)
    fit_evaluation, evaluator = [], None
    if tracker:
        evaluator = EvaluatorUnlessStopped(tracker.evaluator, run)
        fit_evaluation = [EvaluatorCallback(evaluator), OriginalCallback(tracker.on_evaluation, evaluator)]
    trainer = AtomicCheckpointTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        loss=losses,
        evaluator=evaluator,
        optimizers=(optimizer, schedule),
        data_collator=collator,
        callbacks=[*run_callbacks(run), *callbacks, *fit_evaluation],
    )
    for callback in fit_evaluation[:1]:
        callback.trainer = trainer  # model.fit's evaluation callback logs through the trainer
    # What model_fit_callbacks gives model.fit's Trainer, through the Trainer's own methods here: the progress
    # callback of the run, and the loss state callback that keeps the heads as the loss built them.
    trainer.pop_callback(ProgressCallback)
    trainer.add_callback(progress_callback())
    trainer.pop_callback(LossStateCallback)
    trainer.add_callback(LossStateCallback(seed_heads=False))
    checkpoint = run.last_complete_checkpoint() if run.resume else None
    trainer.train(resume_from_checkpoint=checkpoint)


def run_callbacks(run: TrainingRun) -> list[TrainerCallback]:
    """What every recipe run adds to the Trainer: its seed on every RNG when training starts (the recipes seeded the
    loss's heads themselves, before building it), a checkpoint and a stop at the step a signal comes in, and the
    random state kept across evaluations and checkpoints."""
    return [SeedCallback(run.seed), StopAtCheckpointOnSignal(), RandomStateKept()]


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
    schedule = get_scheduler(
        FIT_SCHEDULERS[run.scheduler], optimizer, num_warmup_steps=run.warmup_steps, num_training_steps=steps
    )
    return optimizer, schedule


def _objective(loss: nn.Module, run: TrainingRun) -> nn.Module:
    # model.fit's use_amp is fp16 with a gradient scaler; bf16 needs no scaler, so the loss runs under autocast.
    return BFloat16Autocast(loss) if run.precision == "bf16" else loss
