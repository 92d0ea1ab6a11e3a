"""The recipes' options: each recipe lists its knobs (name, the paper's value, what it does) at its top; this module
turns that list into ``--options``, and decides every value a run takes, in this order: the command line, a
``--config`` file (json or yaml, the form of a run's ``arguments.json``), the run's own options when it resumes,
presets (a value that brings others), a sentence-transformers start model's defaults, ``--quick``'s testbed values,
the paper's. A recipe's own option is a knob in that recipe, checked there; the run records every option in
``arguments.json`` and compares them on resume (:mod:`st_simcse.training.run`). No heavy library is imported here:
the recipes parse and check before anything loads."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from st_simcse.data.formats import names
from st_simcse.models.settings import (
    ATTENTION_IMPLEMENTATIONS,
    COMPILE_MODES,
    POOLING_MODES,
    StartModel,
    describe_start_model,
    model_is_describable,
)
from st_simcse.training.reporting import INTEGRATIONS
from st_simcse.training.run import AMP_MODES, ARGUMENTS_FILE, SCHEDULERS, TRAINING_PATHS, saved_arguments

# Keys of a run's arguments.json that are not knobs: how it was started, not what it trains.
RUN_CONTROLS = ("resume", "quick", "config")


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
        "help": f"the column of --train-file that holds the sentences ({names(tabular_only=True)}, datasets); "
        "unset: its only string column",
        "type": str,
    },
    "senteval_dir": {
        "help": "SentEval data/downstream folder for STS-B dev and the paper's 7 STS test tasks (unset: the public "
        "hub copies; offline without either, the 7-task table is skipped, saying so)"
    },
    "dev_file": {
        "help": "your own scored pairs for model selection (columns sentence1, sentence2, score, or those "
        f"--dev-columns names; any score range; {names(tabular_only=True)} or a datasets folder); unset: STS-B dev",
        "type": str,
    },
    "test_file": {"help": "your own scored pairs for the final report, in --dev-file's format", "type": str},
    "dev_columns": {
        "help": "the two sentence columns and the score column of --dev-file, e.g. query,passage,label; unset: "
        "sentence1,sentence2,score",
        "type": str,
    },
    "test_columns": {"help": "the same for --test-file", "type": str},
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
        "keep the best dev seed's model at OUTPUT_DIR; overrides --seed",
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
    "report_to": {
        "help": "stream the run (training loss, learning rate, seconds per step, each dev evaluation, the final "
        "test table) to these trackers, through transformers' own integrations: none, all (every one installed), "
        f"or a comma-separated list of {', '.join(INTEGRATIONS)}",
        "type": str,
    },
    "run_name": {
        "help": "the run's name in the trackers of --report-to (unset: the output folder's name)",
        "type": str,
    },
    "logging_steps": {"help": "with --report-to: log the training loss and learning rate every N steps"},
    "push_to_hub": {
        "help": "after the run, push the kept model and its card to the Hugging Face hub as --hub-model-id "
        "(sentence-transformers' push_to_hub); checked before training: the id, a token, the hub in reach"
    },
    "hub_model_id": {"help": "the hub repository of --push-to-hub, owner/name", "type": str},
    "hub_private": {"help": "with --push-to-hub: create the repository as private"},
}


def knob(name: str, paper: Any, help: str | None = None, **details: Any) -> Knob:
    """A recipe's knob with the paper's value; a shared knob's description comes from ``COMMON_KNOBS``."""
    details = {**COMMON_KNOBS.get(name, {}), **details}
    text = help or details.pop("help", None)
    details.pop("help", None)  # a recipe's own text replaces the shared one
    if text is None:
        raise ValueError(f"Knob {name!r} needs a help text: say what it does.")
    return Knob(name, paper, text, **details)


# The run controls both recipes end their knobs with: trackers and the hub (no paper value: off by default).
TRACKING_KNOBS = [
    knob("report_to", "none"),
    knob("run_name", None),
    knob("logging_steps", 10),
    knob("push_to_hub", False),
    knob("hub_model_id", None),
    knob("hub_private", False),
]


def build_parser(description: str, knobs: Sequence[Knob], exit_on_error: bool = True) -> argparse.ArgumentParser:
    """The recipe's parser: every knob, then the run controls (--output-dir is a knob; --resume, --quick,
    --config)."""
    # Not transformers' HfArgumentParser: it fills every default at parse time, so it cannot tell an option the user
    # gave from the paper's value, which --quick, the presets, a sentence-transformers start model and --resume need.
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter, exit_on_error=exit_on_error
    )
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
    parser.add_argument(
        "--config",
        default=None,
        help="read options from a json or yaml file of option: value (a run's arguments.json reruns it: add "
        "--output-dir NEW); options given on the command line win",
    )
    return parser


def parse_recipe_arguments(
    description: str,
    knobs: Sequence[Knob],
    argv: list[str] | None,
    quick: dict[str, Any] | None = None,
    presets: dict[str, dict[Any, dict[str, Any]]] | None = None,
    sentence_transformer_defaults: dict[str, Any] | None = None,
    quick_model_settings: dict[str, Any] | None = None,
    older_runs: dict[str, Any] | None = None,
) -> argparse.Namespace:
    """Parse; every knob the user did not give takes, in this order of precedence: a ``--config`` file's value, the
    run's own value when it resumes (its ``arguments.json``; a resume needs a run there), a ``presets`` value (a
    knob's value bringing others, e.g. ``--loss esimcse`` brings word repetition), a
    ``sentence_transformer_defaults`` value where the start model is a sentence-transformers model (which is
    trained as it is: its own pooling, no extra modules; a callable there is called with the options once every
    other knob is set, and gives the value), the ``quick`` value (with ``--quick``; ``quick_model_settings`` only
    for the testbed's own model), else the paper's. ``older_runs``: for a resume of a run whose arguments.json lacks a
    knob (an older version wrote it), the value that does what that version did."""
    args = build_parser(description, knobs).parse_args(argv)
    paper = {knob.name: knob.paper for knob in knobs}
    if args.config:
        from_config = read_config(args.config, description, knobs)
        for name, value in from_config.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        args.quick = args.quick or bool(from_config.get("quick"))
    given = {knob.name for knob in knobs if getattr(args, knob.name) is not None}
    quick = {**(quick or {}), **(quick_model_settings or {})} if args.quick else {}

    def default(name: str) -> Any:
        return quick.get(name, paper[name])

    if args.resume:
        output_dir = args.output_dir or default("output_dir")
        saved = saved_arguments(output_dir)
        if not saved:
            raise ValueError(
                f"--resume: {output_dir} holds no run to resume (no {ARGUMENTS_FILE}). Check --output-dir, or drop "
                "--resume to start a new run."
            )
        for name in paper.keys() - given:
            if name in saved:
                setattr(args, name, saved[name])
            elif name in (older_runs or {}):
                setattr(args, name, older_runs[name])
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


def read_config(path: str, description: str, knobs: Sequence[Knob]) -> dict[str, Any]:
    """The knobs set by the json or yaml file ``path`` (``option: value``, option names with ``_`` or ``-``), each
    value checked as the command line checks it. Unknown options are one error naming them; the run controls of an
    ``arguments.json`` (``resume``, ``config``) are left out, ``quick`` is kept."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config {path}: no such file.")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    yaml_file = path.lower().endswith((".yaml", ".yml"))
    import yaml

    try:
        values = yaml.safe_load(text) if yaml_file else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:  # json's and yaml's errors name the line
        reason = " ".join(str(error).split())
        raise ValueError(f"--config {path}: not valid {'yaml' if yaml_file else 'json'} ({reason}).") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected option: value pairs, got a {type(values).__name__}.")
    values = {str(name).replace("-", "_"): value for name, value in values.items()}
    by_name = {knob.name: knob for knob in knobs}
    unknown = sorted(name for name in values if name not in by_name and name not in RUN_CONTROLS)
    if unknown:
        raise ValueError(
            f"--config {path}: unknown option(s) {', '.join(unknown)}; this recipe's options are listed by --help."
        )
    argv: list[str] = []
    for name, value in values.items():
        if name not in by_name or value is None:
            continue
        knob = by_name[name]
        switch, many = isinstance(knob.paper, bool), knob.nargs is not None
        if switch != isinstance(value, bool) or many != isinstance(value, list) or isinstance(value, dict):
            wanted = "true or false" if switch else "a list" if many else "one value"
            raise ValueError(f"--config {path}: {name} takes {wanted}, got {value!r}.")
        if switch:
            argv.append(knob.flag if value else f"--no-{knob.flag[2:]}")
        else:
            argv += [knob.flag, *map(str, value if many else [value])]
    try:
        parsed, left = build_parser(description, knobs, exit_on_error=False).parse_known_args(argv)
    except (argparse.ArgumentError, TypeError) as error:
        raise ValueError(f"--config {path}: {error}") from None
    if left:
        raise ValueError(f"--config {path}: could not read {' '.join(left)}.")
    settings = {name: getattr(parsed, name) for name in by_name if getattr(parsed, name) is not None}
    if values.get("quick"):
        settings["quick"] = True
    return settings
