"""The saved model's card tells the truth about its run. It stays sentence-transformers' own card, written from the
model's ``model_card_data``: this module hands the kept model the card data the training filled (the loss and its
parameters, the hyperparameters, the dev curve by step, the best step), names the training corpus and its size after
the data checks, and replaces the dev evaluators' last values by the kept model's results: its dev score, the 7 STS
test tasks and their average, and the user's test pairs, each with its dataset name (the card's ``model-index``). A
sentence is added to the card's text when the saved weights are the untrained start model's, and, for ``--seeds``,
the spread over the seeds. Used by :mod:`st_simcse.training.loop` and :mod:`st_simcse.training.seeds`."""

from __future__ import annotations

import os
import re
from typing import Any

from sentence_transformers import SentenceTransformer

from st_simcse.training.run import TrainingRun

README = "README.md"


def describe_run(
    kept: SentenceTransformer, trained: SentenceTransformer, run: TrainingRun, best: dict[str, Any], dev: Any
) -> None:
    """Give ``kept`` (the model the run keeps, loaded from disk, already evaluated on the test yardsticks, which
    stored their results in its card data) the card data of ``trained`` (the model the Trainer trained), completed
    with what the run knows. ``best``: the kept model's dev history entry; ``dev``: the dev evaluator (a suite)."""
    card = trained.model_card_data
    # The dev evaluators' entries hold the last evaluation, of the last trained step: the kept model's dev score
    # (its suite's average) replaces them, and the final report's results, run on the kept model, join it.
    card.eval_results_dict = {}
    if best and dev.primary_metric in best:
        card.eval_results_dict[dev] = {dev.primary_metric: best[dev.primary_metric]}
    card.eval_results_dict.update(kept.model_card_data.eval_results_dict)
    if best:
        card.set_best_model_step(best["steps"])
    corpus = run.training_data.get("source") or run.arguments.get("train_file")
    size = run.training_data.get("examples")
    if corpus:
        name = os.path.basename(os.path.normpath(str(corpus))) if os.path.exists(str(corpus)) else str(corpus)
        for dataset in card.train_datasets or [{}]:
            dataset["name"] = name
            if size is not None:
                dataset["size"] = size
            if not os.path.exists(str(corpus)) and "/" in str(corpus):
                dataset["id"] = str(corpus)
        if not card.train_datasets:
            card.train_datasets = [{"name": name, **({"size": size} if size is not None else {})}]
        start = os.path.basename(os.path.normpath(str(run.arguments.get("model", ""))))
        card.model_name = f"SimCSE on {name}, from {start}"
    card.register_model(kept)
    kept.model_card_data = card


def note(folder: str, key: str, text: str) -> None:
    """Put ``text`` in the card ``folder/README.md`` as a paragraph after its first one (the model's description),
    replacing an earlier note of the same ``key``."""
    path = os.path.join(folder, README)
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        card = handle.read()
    block = f"<!-- st_simcse:{key} -->\n{text}\n<!-- /st_simcse:{key} -->"
    pattern = re.compile(rf"<!-- st_simcse:{re.escape(key)} -->.*?<!-- /st_simcse:{re.escape(key)} -->", re.DOTALL)
    if pattern.search(card):
        card = pattern.sub(lambda _: block, card)
    else:
        lines = card.split("\n")
        at = next((i for i, line in enumerate(lines) if line.startswith("This is a [sentence-transformers]")), None)
        if at is None:  # not sentence-transformers' card: after the front matter's end, or at the top
            at = next((i for i, line in enumerate(lines) if i > 0 and line == "---"), -1)
        lines[at + 1 : at + 1] = ["", block]
        card = "\n".join(lines)
    # A new file swapped in, not a write in place: the card may be a hard link to a seed's (training/seeds.py).
    with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
        handle.write(card)
    os.replace(f"{path}.tmp", path)


def untrained_note(metrics: dict[str, Any]) -> str | None:
    """The sentence for a run whose saved weights are the untrained start model's; None otherwise."""
    if metrics.get("best_step") != 0:
        return None
    trained = metrics.get("best_trained_dev")
    best = f" (the best checkpoint scored {trained:.2f}, at step {metrics['best_trained_step']})" if trained else ""
    return (
        f"**The saved weights are the untrained start model's.** No checkpoint of this SimCSE run beat it on "
        f"{metrics['dev_set']} ({metrics['untrained_dev']:.2f}{best}), so the run kept the model it started from."
    )


def seeds_note(summary: dict[str, Any]) -> str:
    """The sentence of the best seed's card: its place among the seeds, and the spread of their scores."""
    mean, std, seeds = summary["mean"], summary["std"], summary["seeds"]
    column = "avg" if "Avg." in mean else ("test_file" if "test_file" in mean else "best_dev")
    label = {"avg": "7-task STS test average", "test_file": "test pairs Spearman", "best_dev": "best dev Spearman"}
    key = "Avg." if column == "avg" else column
    return (
        f"This is the best of {len(seeds)} seeds ({', '.join(map(str, seeds))}) on dev: seed {summary['best_seed']}. "
        f"Over the seeds, {label[column]}: {mean[key]:.2f} ± {std[key]:.2f} (mean ± standard deviation)."
    )
