"""The command-line layer of the recipes: each recipe lists its knobs (name, the paper's value, what it does) at its
top; this module turns that list into ``--options``, checks every value before a model is loaded, sends the
libraries' logging to a file in the output folder, and turns user errors into one line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from st_simcse.evaluation import print_table
from st_simcse.models import ATTENTION_IMPLEMENTATIONS, COMPILE_MODES, POOLING_MODES
from st_simcse.training import (
    ALIGN_UNIFORM_PNG,
    AMP_MODES,
    ARGUMENTS_FILE,
    CHECKPOINTS,
    DEV_CURVE_PNG,
    METRICS_FILE,
    SCHEDULERS,
    StartedRunError,
    TrainingRun,
)

logger = logging.getLogger(__name__)

LOG_FILE = "run.log"


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
    "model": {"help": "hub name or local path of the encoder"},
    "senteval_dir": {
        "help": "SentEval data/downstream folder for STS-B dev and the 7 STS test tasks (unset: the public hub copies)"
    },
    "pooling": {"help": "pooling of the encoder's tokens", "choices": POOLING_MODES},
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
    "output_dir": {"help": "where the model, metrics, plots, checkpoints and log go"},
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
) -> argparse.Namespace:
    """Parse; every knob the user did not give takes the ``--quick`` value (with ``--quick``), else the paper's.
    ``presets`` maps a knob and its value to the defaults that choice brings (e.g. ``--loss esimcse`` brings word
    repetition); options the user gives still win."""
    args = parser.parse_args(argv)
    paper = {knob.name: knob.paper for knob in knobs}

    def default(name: str) -> Any:
        return quick.get(name, paper[name]) if args.quick else paper[name]

    for name, choices in (presets or {}).items():
        chosen = getattr(args, name)
        for preset_name, value in choices.get(default(name) if chosen is None else chosen, {}).items():
            if getattr(args, preset_name) is None:
                setattr(args, preset_name, value)
    for knob in knobs:
        if getattr(args, knob.name) is None:
            setattr(args, knob.name, default(knob.name))
    return args


def check_arguments(args: argparse.Namespace) -> None:
    """Values that would only fail after the model is loaded (or waste a hub timeout), checked up front."""

    def require(condition: bool, message: str) -> None:
        if not condition:
            raise ValueError(message)

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
    if looks_like_local_path(args.model):
        require(
            os.path.isdir(args.model),
            f"--model {args.model}: no such folder. Pass an existing model folder, "
            "or a hub name such as bert-base-uncased.",
        )


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
    if options.get("shared_dropout_mask"):
        require(
            args.loss == "simcse" and args.augmentation == "none",
            "--shared-dropout-mask (the paper's 'fixed 0.1' ablation) needs --loss simcse and --augmentation none: "
            "one dropout mask is shared by two copies of the same sentence.",
        )


def looks_like_local_path(name: str) -> bool:
    """A hub name is ``name`` or ``org/name``; anything else (absolute, ``./``, ``../``, ``~``, deeper) is a path."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or os.path.exists(name)


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
        arguments=vars(args).copy(),
    )
    try:
        run.check_before_loading(loss_owns_state)
    except StartedRunError as error:
        raise ValueError(f"{error} To resume it, pass --resume.") from None
    return run


def report_finished(run: TrainingRun) -> dict:
    """For ``--resume`` on a run that already finished: say so, change nothing, return its saved metrics."""
    path = os.path.join(run.output_dir, METRICS_FILE)
    print(f"{run.output_dir} holds a finished run: nothing to resume, nothing changed. Its results: {path}")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def log_to_file(output_dir: str) -> str:
    """Every library's log lines go to ``output_dir/run.log``; the console keeps the progress bar, the recipe's
    own lines and real errors. Returns the log file's path."""
    import transformers

    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOG_FILE)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    console = logging.StreamHandler()
    console.setLevel(logging.ERROR)
    root.addHandler(console)
    # transformers logs through its own handler (the load report among it): route it to the file like the rest.
    transformers.logging.disable_default_handler()
    transformers.logging.enable_propagation()
    transformers.logging.set_verbosity_info()
    transformers.logging.disable_progress_bar()  # the weight-loading bars; the training bar stays
    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true but no accelerator.*")
    logging.captureWarnings(True)
    return path


def run_main(main: Callable[[list[str]], Any]) -> None:
    """Run a recipe's ``main``: a user error (a missing file, a bad value) prints one line and exits with 2."""
    try:
        main(sys.argv[1:])
    except (ValueError, FileNotFoundError) as error:
        logger.info("The run stopped on a user error", exc_info=True)  # the traceback, in run.log only
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def launched_on_several_devices() -> bool:
    """True under torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def report_results(metrics: dict, run: TrainingRun, log_path: str) -> None:
    """The captioned 7-task table and where every output of the run is."""
    print(
        f"\nSTS test, Spearman x 100 (SentEval protocol), of the best STS-B dev checkpoint "
        f"(step {metrics['best_step']}, dev {metrics['best_dev_stsb']:.2f}):"
    )
    print_table(metrics["test"])
    out = run.output_dir
    print("\nWrote:")
    for what, path in (
        ("model (SentenceTransformer(path) loads it)", out),
        ("metrics, dev history, arguments", os.path.join(out, METRICS_FILE)),
        ("dev curve", os.path.join(out, DEV_CURVE_PNG)),
        ("alignment/uniformity plot", os.path.join(out, ALIGN_UNIFORM_PNG)),
        ("checkpoints (for --resume)", os.path.join(out, CHECKPOINTS)),
        ("options of the run", os.path.join(out, ARGUMENTS_FILE)),
        ("full log", log_path),
    ):
        print(f"  {what:<44} {path}")
