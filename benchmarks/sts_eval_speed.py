"""The 7-task STS evaluation: ours (each unique sentence encoded once, length-sorted batches, one pass for all
tasks) against the same protocol built from plain per-task EmbeddingSimilarityEvaluators, and against a naive
per-pair encoding, side by side in one run. All three must give the same table.

    python benchmarks/sts_eval_speed.py [--model ../shared/models/splade-tiny] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from st_simcse import build_model, load_sts_tasks, sts_evaluator
from st_simcse.models.build import whole_sentences

SHARED = Path(__file__).resolve().parents[2] / "shared"


def ours(model, senteval_dir, batch_size):
    evaluator = sts_evaluator(senteval_dir, "test", batch_size=batch_size)
    return evaluator.table(evaluator(model))


def per_task_evaluators(model, tasks, batch_size):
    """sentence-transformers' evaluator per task: sentences1 and sentences2 encoded separately, no de-duplication."""
    row = {}
    with whole_sentences(model):
        for task in tasks:
            evaluator = EmbeddingSimilarityEvaluator(
                task.sentences1, task.sentences2, task.scores, batch_size=batch_size, main_similarity="cosine"
            )
            row[task.name] = round(100 * evaluator(model)[evaluator.primary_metric], 2)
    return row


def per_pair(model, tasks, batch_size):
    """Encode every pair on its own, as a naive loop over the gold file would."""
    row = {}
    with whole_sentences(model):
        for task in tasks:
            cosines = []
            for first, second in zip(task.sentences1, task.sentences2):
                a, b = model.encode([first, second], normalize_embeddings=True)
                cosines.append(float(np.dot(a, b)))
            row[task.name] = round(100 * spearmanr(task.scores, cosines).statistic, 2)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHARED / "models" / "splade-tiny"))
    parser.add_argument("--senteval-dir", default=str(SHARED / "data" / "senteval"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    model = build_model(args.model, pooling="cls", max_seq_length=32)
    tasks = load_sts_tasks(args.senteval_dir, "test")
    pairs = sum(len(task) for task in tasks)
    unique = len({s for task in tasks for s in (*task.sentences1, *task.sentences2)})
    print(f"{len(tasks)} tasks, {pairs} pairs, {2 * pairs} sentences, {unique} unique")
    variants = {
        "ours (unique, one pass)": lambda: ours(model, args.senteval_dir, args.batch_size),
        "per-task ST evaluators": lambda: per_task_evaluators(model, tasks, args.batch_size),
        "naive per-pair": lambda: per_pair(model, tasks, args.batch_size),
    }
    times = {name: [] for name in variants}
    tables = {}
    for _ in range(args.repeats):
        for name, run in variants.items():  # interleaved
            started = time.perf_counter()
            tables[name] = run()
            times[name].append(time.perf_counter() - started)
    baseline = statistics.median(times["ours (unique, one pass)"])
    for name in variants:
        seconds = statistics.median(times[name])
        average = round(statistics.mean(tables[name][task.name] for task in tasks), 2)
        print(f"{name:<26} {seconds:>8.2f} s  x{seconds / baseline:>6.1f} of ours   7-task avg {average:.2f}")
    reference = tables["ours (unique, one pass)"]
    for name, table in tables.items():
        # Padding differs between the batchings, so scores may move in the last printed digit.
        worst = max(abs(table[task.name] - reference[task.name]) for task in tasks)
        print(f"  {name}: largest difference from ours {worst:.2f} points")


if __name__ == "__main__":
    main(sys.argv[1:])
