"""A training run of a recipe: its settings, the files it writes in its output folder, and everything about the folder
checked before any model loads (the yardsticks, a started or finished run, a resume), so a run that cannot succeed
fails before any time is spent and before anything is written. Used by every module of the recipes' machinery; it
imports no heavy library."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
from dataclasses import dataclass, field
from typing import Any

from st_simcse.evaluation.sts import check_senteval_dir
from st_simcse.hub import SourceError, check_hub_name, check_writable_folder
from st_simcse.training.lock import acquire_run_lock, is_main_process, refuse_if_locked, release_run_lock

CHECKPOINTS = "checkpoints"
# Inside CHECKPOINTS: a checkpoint being written, renamed to checkpoint-N once complete (training/checkpoints.py).
STAGING = ".partial"
BEST_MODEL = "best_model"
HISTORY_FILE = "dev_history.json"
METRICS_FILE = "metrics.json"
SEEDS_FILE = "seeds.json"  # a --seeds command's summary (st_simcse.training.seeds)
ARGUMENTS_FILE = "arguments.json"
DEV_CURVE_PNG = "dev_curve.png"
ALIGN_UNIFORM_PNG = "align_uniform.png"
# Options that may differ between a run and its resumption: they do not change what is trained.
RESUMABLE_CHANGES = (
    "resume",
    "config",
    "eval_batch_size",
    "output_dir",
    "keep_checkpoints",
    "sts_test",
    "report_to",
    "run_name",
    "logging_steps",
    "push_to_hub",
    "hub_model_id",
    "hub_private",
)
# What a checkpoint holds once it is complete (the loss state, loss_state.safetensors, too where the loss owns
# parameters: st_simcse.losses.state.LOSS_STATE_FILE, named here so that this module imports no loss).
CHECKPOINT_FILES = ("trainer_state.json", "modules.json")
LOSS_STATE_FILE = "loss_state.safetensors"
# model.fit's names for the learning-rate schedules.
SCHEDULERS = ("WarmupLinear", "WarmupConstant", "ConstantLR", "WarmupCosine", "WarmupCosineWithHardRestarts")
AMP_MODES = ("auto", "bf16", "fp16", "none")
# How the run trains: model.fit, the Trainer that model.fit runs underneath (the same training, without model.fit's
# in-memory copy of the corpus), or that Trainer on a stream; "auto" picks fit up to the paper's corpus size.
TRAINING_PATHS = ("auto", "fit", "trainer")
FIT_CORPUS_LIMIT = 1_000_000
# The public copy of STS-B that serves as the dev set without a SentEval folder.
HUB_STSB = "mteb/stsbenchmark-sts"


class StartedRunError(ValueError):
    """The output folder holds a started, unfinished run, and this run does not resume it."""


class RunInterrupted(Exception):
    """The run stopped on a signal (Ctrl-C's SIGINT, a scheduler's SIGTERM); ``checkpoint`` is the last complete
    checkpoint a resume continues from (None if the run was stopped before its first one)."""

    def __init__(self, output_dir: str, checkpoint: str | None, signal_number: int = signal.SIGINT) -> None:
        super().__init__(output_dir, checkpoint, signal_number)
        self.output_dir, self.checkpoint, self.signal_number = output_dir, checkpoint, signal_number


class RunFailed(Exception):
    """The run failed after it started (a full disk, a folder that became read-only, a bug); ``reason`` is one line,
    ``checkpoint`` the last complete checkpoint a resume continues from once the cause is fixed (None: none yet)."""

    def __init__(self, output_dir: str, checkpoint: str | None, reason: str) -> None:
        super().__init__(output_dir, checkpoint, reason)
        self.output_dir, self.checkpoint, self.reason = output_dir, checkpoint, reason


class PushFailed(Exception):
    """The run finished, and its push to the hub failed; ``reason`` is one line."""

    def __init__(self, output_dir: str, repo_id: str, reason: str) -> None:
        super().__init__(output_dir, repo_id, reason)
        self.output_dir, self.repo_id, self.reason = output_dir, repo_id, reason

    def line(self) -> str:
        folder = shlex.quote(self.output_dir)
        command = (
            'python -c "from sentence_transformers import SentenceTransformer; '
            f"SentenceTransformer('{self.output_dir}').push_to_hub('{self.repo_id}', exist_ok=True, "
            f"local_model_path='{self.output_dir}')\""
        )
        return (
            f"error: the push to the hub failed: {self.reason}. The model is kept in {folder}; once that is fixed, "
            f"push it by hand with: {command}"
        )


@dataclass
class TrainingRun:
    """Where a recipe writes and how it trains (every value comes from the recipe's knobs); everything here is
    recorded in ``metrics.json``. ``amp``: "auto" is bf16 autocast on a GPU that supports it (no gradient
    scaler), fp16 autocast with model.fit's scaler on other GPUs, and none on a CPU. ``dev_file`` / ``test_file``:
    the user's scored pairs for model selection and the final report (None: STS-B dev, the paper's 7 tasks).
    ``serving_max_seq_length``: the length the saved model encodes with (None: the encoder's own limit).
    ``sts_test``: end with the paper's 7-task STS table of the kept model (False: only the user's ``test_file``).
    ``keep_checkpoints``: keep ``checkpoints/`` when the run finishes (by default only an unfinished run keeps them,
    for its resume)."""

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
    dev_file: str | None = None
    test_file: str | None = None
    training_path: str = "auto"
    streaming: bool = False
    sts_test: bool = True
    keep_checkpoints: bool = False
    dev_columns: list[str] | None = None
    test_columns: list[str] | None = None
    # A stream's exact repeats, which cannot be dropped before training, are dropped from each batch as it comes.
    drop_repeats_in_batches: bool = False
    serving_max_seq_length: int | None = None
    loss_owns_state: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    # What the run trained on, where the recipe knows more than its options say (e.g. the hard negatives it mined).
    training_data: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        """The mixed precision this run uses on this machine: "bf16", "fp16" or "none"."""
        if self.amp != "auto":
            return self.amp
        import torch

        if not torch.cuda.is_available():
            return "none"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.output_dir, CHECKPOINTS)

    @property
    def finished(self) -> bool:
        return self.finished_file is not None

    @property
    def finished_file(self) -> str | None:
        """What says the folder holds a finished run: its metrics.json, or a --seeds command's seeds.json."""
        return next(
            (name for name in (METRICS_FILE, SEEDS_FILE) if os.path.isfile(os.path.join(self.output_dir, name))), None
        )

    @property
    def sts_tables(self) -> bool:
        """Whether the paper's STS sets can be had: a SentEval folder, or the hub's copies (reachable, or the user's
        local hub cache under ``HF_HUB_OFFLINE=1``)."""
        if self.senteval_dir is not None:
            return True
        try:
            check_hub_name(HUB_STSB, "STS-B")
        except SourceError:
            return False
        return True

    def training_path_for(self, corpus_size: int | None) -> str:
        """ "fit", "trainer" or "streaming" for a corpus of ``corpus_size`` examples (None: a stream)."""
        if self.streaming or corpus_size is None:
            return "streaming"
        if self.training_path != "auto":
            return self.training_path
        several_devices = int(os.environ.get("WORLD_SIZE", "1")) > 1  # fit would copy the corpus into every process
        return "trainer" if corpus_size > FIT_CORPUS_LIMIT or several_devices else "fit"

    def check_before_loading(self, loss_owns_state: bool = False) -> None:
        """Everything that can fail without a model, so it fails before any time is spent loading or training and
        before anything is written. ``loss_owns_state``: the loss has parameters of its own (the MLP head), which
        a resumed checkpoint must carry."""
        self.loss_owns_state = loss_owns_state
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be at least 2 (the other examples are the negatives), got {self.batch_size}."
            )
        if self.eval_steps < 1:
            raise ValueError(f"eval_steps must be positive, got {self.eval_steps}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}.")
        if self.streaming and self.max_steps is None:
            raise ValueError("A streamed corpus has no length, so its run needs --max-steps N (the steps to train).")
        if self.streaming and self.training_path == "fit":
            raise ValueError(
                "--streaming trains with the Trainer (model.fit would read the whole stream into memory): drop "
                "--training-path fit, or drop --streaming."
            )
        if not (self.learning_rate > 0):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}.")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}.")
        if self.training_path not in TRAINING_PATHS:
            raise ValueError(f"training_path must be one of {TRAINING_PATHS}, got {self.training_path!r}.")
        check_writable_folder(self.output_dir)
        if is_main_process():
            refuse_if_locked(self.output_dir)  # before any advice about the folder's checkpoints: they may be live
        self._check_yardsticks()
        if self.finished:
            if not self.resume:
                raise ValueError(
                    f"{self.output_dir} already holds a finished run ({self.finished_file}); nothing there is "
                    "overwritten. "
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
            self._check_resumable()

    def _check_yardsticks(self) -> None:
        """The dev set that selects the model and the test sets of the final report exist and can be read."""
        from st_simcse.evaluation.pairs import load_scored_pairs

        for option, path, columns in (
            ("--dev-file", self.dev_file, self.dev_columns),
            ("--test-file", self.test_file, self.test_columns),
        ):
            if path is not None:
                load_scored_pairs(path, option.strip("-").replace("-file", ""), what=option, columns=columns)
        if self.senteval_dir is not None:
            if self.dev_file is None:
                check_senteval_dir(self.senteval_dir, "dev", ["STS-B"])
            if self.sts_test:
                check_senteval_dir(self.senteval_dir, "test")
        elif self.dev_file is None and not self.sts_tables:
            raise ValueError(
                "No dev set for model selection: without --dev-file or --senteval-dir the run selects on the hub's "
                f"copy of STS-B ({HUB_STSB}), and the hub cannot be reached from this machine. Pass --dev-file "
                "PAIRS (your own scored pairs) or --senteval-dir DIR."
            )

    def _check_resumable(self) -> None:
        # An incomplete checkpoint (one an older st_simcse wrote in place when its run died) is set aside by claim();
        # the run resumes from the newest complete one, or from its beginning where none is left.
        saved = saved_arguments(self.output_dir)
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

    def claim(self) -> None:
        """Take the output folder for this run (an OS lock held until the process ends; another live run there is
        refused, naming its process) and clear what a dead run left half-written: a checkpoint being staged, and
        checkpoints that an older st_simcse wrote in place and never completed. Call it after every check, right
        before the run's first write."""
        if not is_main_process():
            return
        acquire_run_lock(self.output_dir)
        shutil.rmtree(os.path.join(self.checkpoint_dir, STAGING), ignore_errors=True)
        complete = self.last_complete_checkpoint()
        for step in checkpoint_steps(self.checkpoint_dir):
            folder = os.path.join(self.checkpoint_dir, f"checkpoint-{step}")
            if complete is None or step > int(complete.rsplit("-", 1)[1]):
                shutil.rmtree(folder)
                where = f"from {complete}" if complete else "from its beginning"
                print(f"{folder} was incomplete (its run died while writing it) and is removed; resuming {where}.")

    def release(self) -> None:
        """Give the output folder up (a finished run): the lock file goes, the lock with it."""
        if is_main_process():
            release_run_lock(self.output_dir)

    def last_complete_checkpoint(self) -> str | None:
        """The newest checkpoint that a resume can continue from (a checkpoint being written is not one)."""
        steps = sorted(checkpoint_steps(self.checkpoint_dir), reverse=True)
        for step in steps:
            folder = os.path.join(self.checkpoint_dir, f"checkpoint-{step}")
            if all(os.path.isfile(os.path.join(folder, name)) for name in self._checkpoint_files()):
                return folder
        return None

    def _checkpoint_files(self) -> list[str]:
        """What a checkpoint holds once it is complete (the loss state too, where the loss owns parameters)."""
        return [*CHECKPOINT_FILES, *([LOSS_STATE_FILE] if self.loss_owns_state else [])]


def checkpoint_steps(checkpoint_dir: str) -> list[int]:
    if not os.path.isdir(checkpoint_dir):
        return []
    return [int(m.group(1)) for name in os.listdir(checkpoint_dir) if (m := re.fullmatch(r"checkpoint-(\d+)", name))]


def latest_checkpoint_step(checkpoint_dir: str) -> int | None:
    return max(checkpoint_steps(checkpoint_dir), default=None)


def saved_arguments(output_dir: str) -> dict[str, Any]:
    """The options a run in ``output_dir`` started with (its ``arguments.json``), or {} where there is none."""
    path = os.path.join(output_dir, ARGUMENTS_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not readable JSON ({error}); it records the run's options.") from None


def write_json(path: str, payload: Any) -> None:
    # Write-then-rename, so an interruption never leaves a half-written file behind.
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(temporary, path)
