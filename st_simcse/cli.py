"""The command-line options both recipes share, each documented with the paper's value."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from st_simcse.models import POOLING_MODES
from st_simcse.training import METRICS_FILE, TrainingRun

# The offline testbed (see ../shared/README.md), beside the project checkout.
SHARED = Path(__file__).resolve().parents[2] / "shared"
TESTBED_MODEL = str(SHARED / "models" / "splade-tiny")
TESTBED_SENTEVAL = str(SHARED / "data" / "senteval")


def add_common_arguments(parser: argparse.ArgumentParser, paper: dict[str, Any]) -> None:
    """Options of both recipes; ``paper`` holds the paper's values, which are the defaults."""
    add = parser.add_argument
    add("--model", default=paper["model"], help=f"hub name or local path of the encoder (paper: {paper['model']})")
    add(
        "--train-file", default=paper["train_file"], help=f"training file (paper: {paper['train_file']}, from the hub)"
    )
    add(
        "--senteval-dir",
        default=None,
        help="SentEval data/downstream folder for STS-B dev and the 7 STS test tasks (default: public hub copies)",
    )
    add(
        "--batch-size",
        type=int,
        default=paper["batch_size"],
        help=f"training batch size (paper: {paper['batch_size']})",
    )
    add(
        "--lr",
        type=float,
        default=paper["lr"],
        help=f"peak learning rate, linear decay, no warmup (paper: {paper['lr']})",
    )
    add("--epochs", type=int, default=paper["epochs"], help=f"training epochs (paper: {paper['epochs']})")
    add("--max-steps", type=int, default=None, help="stop after this many steps, overriding --epochs (paper: unset)")
    add(
        "--max-seq-length",
        type=int,
        default=32,
        help="training truncation length in tokens; evaluation always uses whole sentences (paper: 32)",
    )
    add("--temperature", type=float, default=0.05, help="softmax temperature tau (paper: 0.05)")
    add("--pooling", choices=POOLING_MODES, default="cls", help="pooling of the encoder's tokens (paper: cls)")
    add("--no-mlp", action="store_true", help=f"train without the MLP over [CLS] (paper: {paper['mlp']})")
    add("--dropout", type=float, default=0.1, help="dropout of every encoder layer (paper: 0.1, BERT's default)")
    add(
        "--eval-steps",
        type=int,
        default=125,
        help="evaluate STS-B dev and keep the best checkpoint every N steps (paper: 125)",
    )
    add("--eval-batch-size", type=int, default=128, help="batch size for encoding during evaluation")
    add("--output-dir", default=paper["output_dir"], help="where the model, metrics.json, plots and checkpoints go")
    add(
        "--seed",
        type=int,
        default=42,
        help="seed of every random draw: model/head initialisation, data order and dropout masks (paper: 42)",
    )
    add(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --output-dir from its last checkpoint (a finished run is left as is)",
    )
    add(
        "--quick",
        action="store_true",
        help="offline testbed defaults: splade-tiny, the local training file, ../shared/data/senteval and the "
        "testbed learning rate (explicit options still win)",
    )


def parse_recipe_arguments(
    parser: argparse.ArgumentParser, argv: list[str] | None, quick: dict[str, Any]
) -> argparse.Namespace:
    """Parse, then apply the ``--quick`` defaults to every option the user did not give."""
    args = parser.parse_args(argv)
    if args.quick:
        explicit = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(vars(args))))
        for name, value in quick.items():
            if getattr(explicit, name) is None:
                setattr(args, name, value)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return args


def launched_on_several_devices() -> bool:
    """True under torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def checked_training_run(args: argparse.Namespace, loss_owns_state: bool = False) -> TrainingRun:
    """The run the parsed options describe, checked (paths, values, output folder, and for a resume the checkpoint
    it continues from) before any model is loaded. ``loss_owns_state``: the loss has parameters of its own (the
    MLP head), which the resumed checkpoint must carry."""
    run = TrainingRun(
        output_dir=args.output_dir,
        senteval_dir=args.senteval_dir,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        eval_steps=args.eval_steps,
        seed=args.seed,
        eval_batch_size=args.eval_batch_size,
        resume=args.resume,
        arguments=vars(args).copy(),
    )
    run.check_before_loading(loss_owns_state)
    return run


def report_finished(run: TrainingRun) -> dict:
    """For ``--resume`` on a run that already finished: say so, change nothing, return its saved metrics."""
    path = os.path.join(run.output_dir, METRICS_FILE)
    print(f"{run.output_dir} holds a finished run: nothing to resume, nothing changed. Its results: {path}")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
