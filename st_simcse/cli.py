"""The command-line layer of the recipes: each recipe lists its knobs (name, the paper's value, what it does) at its
top; this module turns that list into ``--options`` (a resume reads the run's own options back), checks every value
before a model is loaded, sends the libraries' logging to a file in the output folder, and turns user errors into
one line and exit code 2, a stop (Ctrl-C, SIGTERM) into a checkpoint and one line naming the resume command (exit code
130 or 143), and a failure mid-run into one line naming the last complete checkpoint (exit code 1)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from st_simcse.console import run_cli
from st_simcse.models import (
    ATTENTION_IMPLEMENTATIONS,
    COMPILE_MODES,
    POOLING_MODES,
    StartModel,
    describe_start_model,
)
from st_simcse.runs import (
    AMP_MODES,
    SCHEDULERS,
    TRAINING_PATHS,
    RunFailed,
    RunInterrupted,
    StartedRunError,
    TrainingRun,
    saved_arguments,
)
from st_simcse.sources import check_model_source, hub_offline_mode, hub_reachable, looks_like_local_path
from st_simcse.stopping import EXIT_CODES, stop_on_signals

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Knob:
    """One setting of a recipe: its name (``--name-with-dashes`` on the command line), the paper's value (the
    default), and what it does. A boolean knob gets ``--name`` / ``--no-name``."""

    name: str
    paper: Any
    help: str
    choices: Sequence[Any] | None = None
    type: Callable[[str], Any] | None = None
    nargs: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# What the knobs both recipes share do; the recipes keep the values (the paper's), one line each at their top.
COMMON_KNOBS: dict[str, dict[str, Any]] = {
    "model": {
        "help": "hub name or local path of the start model: a transformers checkpoint (gets the paper's set-up) or a "
        "sentence-transformers model (trained as it is: its pooling, Dense and Normalize modules are kept)"
    },
    "train_split": {"help": "the split of a hub dataset or save_to_disk DatasetDict given as --train-file"},
    "text_column": {
        "help": "the column of --train-file that holds the sentences (csv, tsv, jsonl, json, parquet, datasets); "
        "unset: its only string column",
        "type": str,
    },
    "senteval_dir": {
        "help": "SentEval data/downstream folder for STS-B dev and the paper's 7 STS test tasks (unset: the public "
        "hub copies; offline without either, the 7-task table is skipped, saying so)"
    },
    "dev_file": {
        "help": "your own scored pairs for model selection (columns sentence1, sentence2, score, any score range; "
        "csv, tsv, jsonl, json, parquet or a datasets folder); unset: STS-B dev",
        "type": str,
    },
    "test_file": {"help": "your own scored pairs for the final report, in --dev-file's format", "type": str},
    "sts_test": {
        "help": "end with the paper's 7-task STS table of the kept model (minutes on a CPU for a 6-layer model); "
        "--no-sts-test leaves only your --test-file in the final report"
    },
    "pooling": {
        "help": "pooling of the encoder's tokens; a sentence-transformers start model keeps its own (another mode "
        "is refused)",
        "choices": POOLING_MODES,
    },
    "temperature": {"help": "softmax temperature tau of the contrastive loss"},
    "dropout": {"help": "dropout of every encoder layer (hidden and attention)"},
    "max_seq_length": {"help": "training truncation in tokens; evaluation always encodes whole sentences"},
    "batch_size": {"help": "training batch size per device; the rest of the batch are the negatives"},
    "lr": {"help": "peak learning rate"},
    "scheduler": {"help": "learning-rate schedule (WarmupLinear without warmup: linear decay)", "choices": SCHEDULERS},
    "warmup_steps": {"help": "warmup steps of the schedule"},
    "weight_decay": {"help": "AdamW weight decay"},
    "max_grad_norm": {"help": "gradient clipping norm"},
    "amp": {
        "help": "mixed precision: auto is bf16 autocast on a GPU that has it (no gradient scaler), else fp16 (the "
        "paper's --fp16), none on a CPU",
        "choices": AMP_MODES,
    },
    "attention": {
        "help": "attention implementation; auto lets transformers pick (SDPA); flash_attention_2 (needs flash-attn "
        "and a GPU) runs unpadded batches",
        "choices": ATTENTION_IMPLEMENTATIONS,
    },
    "compile": {"help": "torch.compile the encoder in place (the saved model stays plain built-in modules)"},
    "compile_mode": {
        "help": "torch.compile's mode with --compile; reduce-overhead and max-autotune replay CUDA graphs on a GPU",
        "choices": COMPILE_MODES,
    },
    "epochs": {"help": "training epochs"},
    "max_steps": {"help": "stop after this many steps, overriding --epochs", "type": int},
    "eval_steps": {"help": "evaluate STS-B dev, checkpoint and keep the best model every N steps"},
    "eval_batch_size": {"help": "batch size for encoding during evaluation"},
    "seed": {"help": "seed of every random draw: initialisation, data order, dropout masks"},
    "seeds": {
        "help": "run once per seed into OUTPUT_DIR/seed-N, report each 7-task table and mean +- std (seeds.json), "
        "keep the best dev seed's model; overrides --seed",
        "type": int,
        "nargs": "+",
    },
    "training_path": {
        "help": "fit: model.fit; trainer: the SentenceTransformerTrainer model.fit runs underneath, reading the "
        "corpus memory-mapped instead of copying it into memory (the same training); auto: fit up to 1M sentences "
        "on one device, else trainer",
        "choices": TRAINING_PATHS,
    },
    "streaming": {"help": "stream --train-file batch by batch (corpora beyond memory or disk; needs --max-steps)"},
    "output_dir": {"help": "where the model, metrics, plots, checkpoints and log go"},
    "keep_checkpoints": {
        "help": "keep checkpoints/ when the run finishes (an unfinished run always keeps them, for --resume)"
    },
}


def knob(name: str, paper: Any, help: str | None = None, **details: Any) -> Knob:
    """A recipe's knob with the paper's value; a shared knob's description comes from ``COMMON_KNOBS``."""
    details = {**COMMON_KNOBS.get(name, {}), **details}
    text = help or details.pop("help", None)
    details.pop("help", None)  # a recipe's own text replaces the shared one
    if text is None:
        raise ValueError(f"Knob {name!r} needs a help text: say what it does.")
    return Knob(name, paper, text, **details)


def build_parser(description: str, knobs: Sequence[Knob]) -> argparse.ArgumentParser:
    """The recipe's parser: every knob, then the run controls (--output-dir is a knob; --resume, --quick)."""
    # Not transformers' HfArgumentParser: it fills every default at parse time, so it cannot tell an option the user
    # gave from the paper's value, which --quick, the presets, a sentence-transformers start model and --resume need.
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for knob in knobs:
        shown = "unset" if knob.paper is None else knob.paper
        if isinstance(knob.paper, bool):
            parser.add_argument(
                knob.flag, action=argparse.BooleanOptionalAction, default=None, help=f"{knob.help} (paper: {shown})"
            )
            continue
        value_type = knob.type or (type(knob.paper) if knob.paper is not None else str)
        parser.add_argument(
            knob.flag,
            type=value_type,
            choices=knob.choices,
            nargs=knob.nargs,
            default=None,
            help=f"{knob.help} (paper: {shown})",
        )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --output-dir from its last checkpoint (a finished run is left as is)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the offline testbed: splade-tiny, ../shared's training file and SentEval folder, and the testbed "
        "settings listed at the top of the recipe (explicit options still win)",
    )
    return parser


def parse_recipe_arguments(
    parser: argparse.ArgumentParser,
    knobs: Sequence[Knob],
    quick: dict[str, Any],
    argv: list[str] | None,
    presets: dict[str, dict[Any, dict[str, Any]]] | None = None,
    sentence_transformer_defaults: dict[str, Any] | None = None,
    quick_model_settings: dict[str, Any] | None = None,
) -> argparse.Namespace:
    """Parse; every knob the user did not give takes, in this order of precedence: the run's own value when it
    resumes (its ``arguments.json``), a ``presets`` value (a knob's value bringing others, e.g. ``--loss esimcse``
    brings word repetition), a ``sentence_transformer_defaults`` value where the start model is a
    sentence-transformers model (which is trained as it is: its own pooling, no extra modules; a callable there is
    called with the options once every other knob is set, and gives the value), the ``--quick`` value (with
    ``--quick``; ``quick_model_settings`` only for the testbed's own model), else the paper's."""
    args = parser.parse_args(argv)
    paper = {knob.name: knob.paper for knob in knobs}
    given = {knob.name for knob in knobs if getattr(args, knob.name) is not None}
    quick = {**quick, **(quick_model_settings or {})} if args.quick else {}

    def default(name: str) -> Any:
        return quick.get(name, paper[name])

    if args.resume:
        saved = saved_arguments(args.output_dir or default("output_dir"))
        for name in paper.keys() - given:
            if name in saved:
                setattr(args, name, saved[name])
        args.quick = saved.get("quick", args.quick)
    if args.model is None:
        args.model = default("model")
    if quick_model_settings and args.model != quick.get("model", args.model):
        quick = {name: value for name, value in quick.items() if name not in quick_model_settings}
    for name, choices in (presets or {}).items():
        chosen = getattr(args, name)
        for preset_name, value in choices.get(default(name) if chosen is None else chosen, {}).items():
            if getattr(args, preset_name) is None:
                setattr(args, preset_name, value)
    start = describe_start_model(args.model) if model_is_describable(args.model) else StartModel(False)
    if start.sentence_transformer and "pooling" in paper:
        if args.pooling not in (None, start.pooling):
            raise ValueError(
                f"--model {args.model} is a sentence-transformers model that pools with {start.pooling!r}, which is "
                f"kept; --pooling {args.pooling} would not apply. Drop --pooling, or start from its encoder's "
                "checkpoint to choose the pooling."
            )
        args.pooling = start.pooling
    st_defaults = (sentence_transformer_defaults or {}) if start.sentence_transformer else {}
    for name, value in st_defaults.items():
        if getattr(args, name) is None and not callable(value):
            setattr(args, name, value)
    unset = {knob.name for knob in knobs if getattr(args, knob.name) is None}
    for knob in knobs:
        if knob.name in unset:
            setattr(args, knob.name, default(knob.name))
    # A default that depends on the other options (e.g. only for one --loss), decided once they are all set.
    for name, value in st_defaults.items():
        if callable(value) and name in unset:
            setattr(args, name, value(args))
    return args


def model_is_describable(name: str) -> bool:
    """Whether ``name``'s files can be read without a wait: a local folder, or a hub name with the hub in reach (or
    the local cache asked for); anything else is refused by :func:`check_arguments` with the reason."""
    if looks_like_local_path(name):
        return os.path.isdir(os.path.expanduser(name))
    return hub_offline_mode() or hub_reachable()


def check_arguments(args: argparse.Namespace) -> None:
    """Values that would only fail after the model is loaded (or waste a hub timeout), checked up front."""

    def require(condition: bool, message: str) -> None:
        if not condition:
            raise ValueError(message)

    for name, value in vars(args).items():  # inf and nan pass every comparison below that they should fail
        require(
            not isinstance(value, float) or math.isfinite(value),
            f"--{name.replace('_', '-')} must be a finite number, got {value}.",
        )
    require(
        args.batch_size >= 2,
        f"--batch-size must be at least 2 (the rest of the batch are the negatives), got {args.batch_size}.",
    )
    require(
        math.isfinite(args.temperature) and args.temperature > 0,
        f"--temperature must be a positive number (the paper's is 0.05), got {args.temperature}.",
    )
    require(0.0 <= args.dropout < 1.0, f"--dropout must be in [0, 1) (the paper's is 0.1), got {args.dropout}.")
    require(args.lr > 0, f"--lr must be positive, got {args.lr}.")
    require(args.epochs >= 1, f"--epochs must be at least 1, got {args.epochs}.")
    require(args.max_steps is None or args.max_steps >= 1, f"--max-steps must be positive, got {args.max_steps}.")
    require(args.max_seq_length >= 2, f"--max-seq-length must be at least 2, got {args.max_seq_length}.")
    require(args.eval_steps >= 1, f"--eval-steps must be positive, got {args.eval_steps}.")
    require(args.eval_batch_size >= 1, f"--eval-batch-size must be positive, got {args.eval_batch_size}.")
    require(args.warmup_steps >= 0, f"--warmup-steps must be 0 or more, got {args.warmup_steps}.")
    require(args.weight_decay >= 0, f"--weight-decay must be 0 or more, got {args.weight_decay}.")
    require(args.max_grad_norm > 0, f"--max-grad-norm must be positive, got {args.max_grad_norm}.")
    if args.attention == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        require(
            is_flash_attn_2_available(),
            "--attention flash_attention_2 needs the flash-attn package and a CUDA GPU, and this machine lacks one "
            "of them; use --attention auto (SDPA).",
        )
    require(
        args.compile or args.compile_mode == "default",
        f"--compile-mode {args.compile_mode} compiles nothing without --compile; add --compile.",
    )
    check_method_arguments(args)
    check_model_source(args.model)


def check_method_arguments(args: argparse.Namespace) -> None:
    """The options of the paper's variants (MLM, augmentations, ESimCSE, the dropout ablation), where the recipe has
    them."""
    options = vars(args)

    def require(condition: bool, message: str) -> None:
        if not condition:
            raise ValueError(message)

    if "mlm_weight" in options:
        require(args.mlm_weight >= 0, f"--mlm-weight must be 0 (off) or more, got {args.mlm_weight}.")
        require(0 < args.mlm_probability < 1, f"--mlm-probability must be in (0, 1), got {args.mlm_probability}.")
        require(
            args.mlm_weight == 0 or args.loss == "simcse",
            f"--mlm-weight {args.mlm_weight} needs --loss simcse (got --loss {args.loss}).",
        )
    if "momentum" in options:
        require(0 <= args.momentum < 1, f"--momentum must be in [0, 1) (ESimCSE's is 0.995), got {args.momentum}.")
        require(args.queue_size >= 0, f"--queue-size must be 0 or more, got {args.queue_size}.")
    if "augmentation" in options:
        from st_simcse.augmentation import make_augmentation

        try:
            make_augmentation(args.augmentation, args.augmentation_rate)
        except ValueError as error:
            raise ValueError(f"--augmentation {args.augmentation} --augmentation-rate: {error}") from None
    if "distillation_weight" in options:
        threshold = args.false_negative_threshold
        require(
            args.distillation_weight >= 0,
            f"--distillation-weight must be 0 (off) or more, got {args.distillation_weight}.",
        )
        require(
            args.distillation_temperature > 0,
            f"--distillation-temperature must be positive, got {args.distillation_temperature}.",
        )
        require(
            threshold is None or -1 < threshold <= 1,
            f"--false-negative-threshold must be a cosine in (-1, 1], got {threshold}.",
        )
        require(
            (args.distillation_weight == 0 and threshold is None)
            or (args.loss == "simcse" and args.mlm_weight == 0 and not args.shared_dropout_mask),
            "--distillation-weight and --false-negative-threshold (GuidedSimCSELoss) need --loss simcse, without "
            "--mlm-weight and --shared-dropout-mask.",
        )
    if options.get("shared_dropout_mask"):
        require(
            args.loss == "simcse" and args.augmentation == "none",
            "--shared-dropout-mask (the paper's 'fixed 0.1' ablation) needs --loss simcse and --augmentation none: "
            "one dropout mask is shared by two copies of the same sentence.",
        )


def checked_training_run(args: argparse.Namespace, loss_owns_state: bool = False) -> TrainingRun:
    """The run the parsed options describe, checked (values, paths, output folder, and for a resume the checkpoint
    it continues from) before any model is loaded. ``loss_owns_state``: the loss has parameters of its own (the
    MLP head), which the resumed checkpoint must carry."""
    check_arguments(args)
    run = TrainingRun(
        output_dir=args.output_dir,
        senteval_dir=args.senteval_dir,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        scheduler=args.scheduler,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        amp=args.amp,
        eval_steps=args.eval_steps,
        eval_batch_size=args.eval_batch_size,
        seed=args.seed,
        resume=args.resume,
        dev_file=args.dev_file,
        test_file=args.test_file,
        training_path=args.training_path,
        streaming=getattr(args, "streaming", False),
        sts_test=args.sts_test,
        keep_checkpoints=args.keep_checkpoints,
        serving_max_seq_length=describe_start_model(args.model).max_seq_length
        if model_is_describable(args.model)
        else None,
        arguments=vars(args).copy(),
    )
    try:
        run.check_before_loading(loss_owns_state)
    except StartedRunError as error:
        raise ValueError(f"{error} To resume it, pass --resume.") from None
    return run


def check_corpus_size(size: int | None, args: argparse.Namespace) -> None:
    """A corpus smaller than one batch trains nothing: model.fit sizes its schedule as ``size // batch_size`` steps,
    0, so its learning rate is 0 throughout. Refused before the model loads."""
    batch = args.batch_size * int(os.environ.get("WORLD_SIZE", "1"))
    if size is not None and size < batch:
        raise ValueError(
            f"The corpus {args.train_file} has {size} training example(s), fewer than one batch (--batch-size "
            f"{args.batch_size}{' per device' if batch != args.batch_size else ''}), so there is nothing to train on. "
            f"Give a corpus of at least {batch} examples, or a --batch-size of at most {size}."
        )


def resume_command(output_dir: str) -> str:
    """The command that resumes the run in ``output_dir``: the run's options come from its arguments.json."""
    recipe = shlex.quote(sys.argv[0])
    return f"python {recipe} --output-dir {shlex.quote(output_dir)} --resume"


def close_progress_bars() -> None:
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def run_main(main: Callable[[list[str]], Any]) -> None:
    """Run a recipe's ``main`` under the console contract (:func:`st_simcse.console.run_cli`: one ``error:`` line and
    exit code 2 for a user error found before anything ran). A run stopped by Ctrl-C or SIGTERM (checkpointed at the
    step it was in, :mod:`st_simcse.stopping`) ends with one line naming the resume command and exit code 130 or
    143; a run that failed after it started (a full disk, a bug) with one ``error:`` line naming the last complete
    checkpoint and the resume command, and exit code 1."""

    def main_resumable(argv: list[str]) -> Any:
        with stop_on_signals():
            try:
                return main(argv)
            except RunInterrupted as stopped:
                close_progress_bars()  # else the training bar is drawn again below the message when the process exits
                print(f"\n{interrupted_line(stopped)}", file=sys.stderr)
                sys.exit(EXIT_CODES.get(stopped.signal_number, 130))
            except RunFailed as failed:
                close_progress_bars()
                print(f"\n{failed_line(failed)}", file=sys.stderr)
                sys.exit(1)

    run_cli(main_resumable)


def interrupted_line(stopped: RunInterrupted) -> str:
    if stopped.checkpoint is None:
        return (
            f"interrupted before the first checkpoint of {stopped.output_dir}: nothing to resume; run the same "
            "command again to start afresh."
        )
    resume = resume_command(stopped.output_dir)
    return f"interrupted; the last checkpoint is {stopped.checkpoint}. Resume with: {resume}"


def failed_line(failed: RunFailed) -> str:
    if failed.checkpoint is None:
        return (
            f"error: the run failed: {failed.reason}. It had no checkpoint yet: once that is fixed, run the same "
            "command again (details in run.log)."
        )
    return (
        f"error: the run failed: {failed.reason}. The last complete checkpoint is {failed.checkpoint}; once that is "
        f"fixed, resume with: {resume_command(failed.output_dir)} (details in run.log)"
    )


def launched_on_several_devices() -> bool:
    """True under torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
