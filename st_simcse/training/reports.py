"""What a recipe's run shows and where its logs go: the libraries' log lines to ``run.log`` (the console keeps the
progress and the run's own lines), and at the end the captioned test tables, what model selection found, and the
path of every output. Used by the recipes."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings

from st_simcse.console import progress_as_whole_lines
from st_simcse.evaluation.evaluators import print_table
from st_simcse.training.run import (
    ALIGN_UNIFORM_PNG,
    ARGUMENTS_FILE,
    CHECKPOINTS,
    DEV_CURVE_PNG,
    METRICS_FILE,
    TrainingRun,
)

LOG_FILE = "run.log"


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
    if not sys.stderr.isatty():
        progress_as_whole_lines()  # also for a recipe's main called from Python (a benchmark) with output to a file
    return path


def report_results(metrics: dict, run: TrainingRun, log_path: str) -> None:
    """The captioned test tables, what model selection found, and where every output of the run is."""
    dev = metrics["dev_set"]
    if metrics["best_step"] == 0:
        trained = metrics["best_trained_dev"]
        best = f"; the best checkpoint: {trained:.2f} at step {metrics['best_trained_step']}" if trained else ""
        print(
            f"\nNo checkpoint beat the untrained model on {dev} ({metrics['untrained_dev']:.2f}{best}): the saved "
            "model is the untrained one. Try a lower --lr, fewer steps, or other training data."
        )
    chosen = f"step {metrics['best_step']}, {dev} {metrics['best_dev']:.2f}"
    if metrics["test_file"]:
        test = metrics["test_file"]
        print(f"\n{test['file']}: Spearman x 100 of the best model ({chosen}): {test['spearman']:.2f}")
    if metrics["test"]:
        print(f"\nSTS test, Spearman x 100 (SentEval protocol), of the best model ({chosen}):")
        print_table(metrics["test"])
    else:
        print(f"\n{metrics['sts_skipped']}")
    out = run.output_dir
    print("\nWrote:")
    outputs = [
        ("model (SentenceTransformer(path) loads it)", out),
        ("its model card", os.path.join(out, "README.md")),
        ("metrics, dev history, arguments", os.path.join(out, METRICS_FILE)),
        ("dev curve", os.path.join(out, DEV_CURVE_PNG)),
        ("alignment/uniformity plot", os.path.join(out, ALIGN_UNIFORM_PNG)),
        ("options of the run", os.path.join(out, ARGUMENTS_FILE)),
        ("full log", log_path),
    ]
    if run.keep_checkpoints:
        outputs.insert(4, ("checkpoints (--keep-checkpoints)", os.path.join(out, CHECKPOINTS)))
    for what, path in outputs:
        print(f"  {what:<44} {path}")
