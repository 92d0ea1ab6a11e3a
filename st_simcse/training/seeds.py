"""Several seeds of one recipe in one command (``--seeds 42 43 44``): each seed is a complete run in
``output_dir/seed-N``; the test tables of all seeds, their mean and standard deviation go to
``output_dir/seeds.json``; the model of the seed with the best dev score (model selection never looks at test) is
also in ``output_dir`` itself (hard links: no second copy), where ``SentenceTransformer(output_dir)`` loads it, its
card naming the spread; the other seeds keep only their metrics, plots and logs. Used by the recipes."""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
from collections.abc import Callable
from typing import Any

from st_simcse.training.lock import acquire_run_lock, is_main_process, release_run_lock
from st_simcse.training.run import ARGUMENTS_FILE, METRICS_FILE, SEEDS_FILE, RunFailed, RunInterrupted, write_json

# No library runs this for us: transformers' hyperparameter_search samples settings (Optuna, Ray), it does not repeat
# one run over seeds with mean +- std and the best dev seed kept.

# What a pruned seed keeps: everything a person reads, nothing that is a model.
KEPT_AFTER_PRUNING = (
    "metrics.json",
    "arguments.json",
    "run.log",
    "dev_history.json",
    "dev_curve.png",
    "align_uniform.png",
    "mining.json",
    "runs",  # TensorBoard's event files (--report-to tensorboard)
)
# Neither kept nor the model: removed with the rest.
NOT_THE_MODEL = ("checkpoints", "mined_triplets.parquet", "run.lock")


def seed_arguments(args: argparse.Namespace) -> list[argparse.Namespace]:
    """One copy of the options per seed, each writing to its own ``seed-N`` folder."""
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds lists a seed twice: {args.seeds}. Give each seed once.")
    runs = []
    for seed in args.seeds:
        run = copy.copy(args)
        run.seed, run.seeds, run.output_dir = seed, None, os.path.join(args.output_dir, f"seed-{seed}")
        if "push_to_hub" in vars(run):
            run.push_to_hub = False  # the best seed's model is pushed once all seeds are done
        if "run_name" in vars(run):  # each seed its own run in the trackers, named after the command's
            run.run_name = f"{args.run_name or os.path.basename(os.path.normpath(args.output_dir))}-seed-{seed}"
        runs.append(run)
    return runs


def run_seeds(
    train_once: Callable[[argparse.Namespace], dict],
    check: Callable[[argparse.Namespace], Any],
    args: argparse.Namespace,
) -> dict:
    """Check every seed's run first (so a bad option or a taken folder fails before any training), then train them
    one after the other and summarise."""
    runs = seed_arguments(args)
    if os.path.isfile(os.path.join(args.output_dir, METRICS_FILE)):
        raise ValueError(
            f"{args.output_dir} already holds a finished run ({METRICS_FILE}), not a --seeds run; nothing there is "
            "overwritten. Choose another output folder."
        )
    for run in runs:
        check(run)
    if is_main_process():
        acquire_run_lock(args.output_dir)  # one command per folder; each seed's folder is locked as it trains
        # The whole command's options, so that `--output-dir DIR --resume` resumes every seed.
        write_json(os.path.join(args.output_dir, ARGUMENTS_FILE), vars(args))
    results = {}
    for run in runs:
        print(f"\n=== seed {run.seed} ({len(results) + 1} of {len(runs)}): {run.output_dir}")
        try:
            results[run.seed] = train_once(run)
        except RunInterrupted as stopped:  # the resume command is the whole command's
            raise RunInterrupted(args.output_dir, stopped.checkpoint, stopped.signal_number) from None
        except RunFailed as failed:
            raise RunFailed(args.output_dir, failed.checkpoint, failed.reason) from failed
    if not is_main_process():  # under torchrun every process trains; the first one reports
        return {}
    summary = summarise(results)
    summary["best_model"] = args.output_dir
    best_folder = os.path.join(args.output_dir, f"seed-{summary['best_seed']}")
    link_model(best_folder, args.output_dir)
    for run in runs:
        if run.seed != summary["best_seed"]:
            prune_model(run.output_dir)
    from st_simcse.training import model_card

    model_card.note(args.output_dir, "seeds", model_card.seeds_note(summary))
    with open(os.path.join(args.output_dir, SEEDS_FILE), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    release_run_lock(args.output_dir)
    print_seed_table(summary)
    print(f"\nBest seed on dev: {summary['best_seed']}; its model: {summary['best_model']} (from {best_folder})")
    print(f"All seeds, mean and std: {os.path.join(args.output_dir, SEEDS_FILE)}")
    if getattr(args, "push_to_hub", False):
        from sentence_transformers import SentenceTransformer

        from st_simcse.training.loop import publish

        publish(SentenceTransformer(args.output_dir), args.output_dir, vars(args))
    return summary


def summarise(results: dict[int, dict]) -> dict:
    """Per-seed tables, mean and sample standard deviation (0 for one seed) of every column, and the best seed."""
    seeds = list(results)
    rows = [_row(result) for result in results.values()]
    # The columns every seed has (a seed whose 7-task table was skipped, e.g. the hub out of reach, has fewer).
    columns = [column for column in rows[0] if all(column in row for row in rows)]

    def values(column: str) -> list[float]:
        return [row[column] for row in rows]

    return {
        "seeds": seeds,
        "runs": {str(seed): {"best_dev": r["best_dev"], "test": _test_row(r)} for seed, r in results.items()},
        "mean": {column: round(statistics.mean(values(column)), 2) for column in columns},
        "std": {column: round(statistics.stdev(values(column)), 2) if len(seeds) > 1 else 0.0 for column in columns},
        "best_seed": max(seeds, key=lambda seed: results[seed]["best_dev"]),
    }


def _test_row(run: dict) -> dict[str, float]:
    """A run's test scores: the 7-task table (where it ran) and the user's test pairs (where given)."""
    row = dict(run["test"] or {})
    if run.get("test_file"):
        row["test_file"] = run["test_file"]["spearman"]
    return row


def _row(run: dict) -> dict[str, float]:
    """A run's test scores and its best dev score, as one row (the dev score last)."""
    return {**_test_row(run), "best_dev": run["best_dev"]}


def prune_model(output_dir: str) -> None:
    """Delete a finished seed's model and checkpoints, keeping its metrics, plots and logs."""
    for name in os.listdir(output_dir):
        if name in KEPT_AFTER_PRUNING:
            continue
        path = os.path.join(output_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def link_model(seed_folder: str, output_dir: str) -> None:
    """The model files of a finished seed (everything but what a pruned seed keeps and its checkpoints) also in
    ``output_dir``, as hard links (no second copy of the weights; a copy where the file system has no links),
    replacing a model there. A file written in place into either folder changes both; st_simcse replaces files
    instead (the card's notes)."""
    for root, _, files in os.walk(seed_folder):
        relative = os.path.relpath(root, seed_folder)
        top = relative.split(os.sep)[0]
        if top in KEPT_AFTER_PRUNING or top in NOT_THE_MODEL:
            continue
        os.makedirs(os.path.join(output_dir, relative), exist_ok=True)
        for name in files:
            if relative == "." and (name in KEPT_AFTER_PRUNING or name in NOT_THE_MODEL):
                continue
            source, target = os.path.join(root, name), os.path.normpath(os.path.join(output_dir, relative, name))
            if os.path.lexists(target):
                os.remove(target)
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)


def print_seed_table(summary: dict) -> None:
    columns = list(summary["mean"])
    tested = any(column != "best_dev" for column in columns)
    if tested:
        print("\nTest Spearman x 100, per seed (dev = best dev score):")
    else:
        print("\nDev Spearman x 100, per seed (best dev score; no test set: --no-sts-test and no --test-file):")
    print(f"{'seed':>6} " + " ".join(f"{('dev' if c == 'best_dev' else c):>7}" for c in columns))
    for seed, run in summary["runs"].items():
        row = _row(run)
        print(f"{seed:>6} " + " ".join(f"{row[c]:>7.2f}" for c in columns))
    for label in ("mean", "std"):
        print(f"{label:>6} " + " ".join(f"{summary[label][c]:>7.2f}" for c in columns))
