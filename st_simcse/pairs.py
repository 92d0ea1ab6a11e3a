"""The user's own yardstick: sentence pairs with a similarity score, from any source ``datasets`` reads (csv, tsv,
jsonl, json, parquet, a ``save_to_disk`` folder, a hub dataset), judged like an STS task: cosine Spearman over all
pairs, through sentence-transformers' ``EmbeddingSimilarityEvaluator``. Spearman depends only on the order of the
scores, so any score range works (0-5, 0-1, 1-10, integer labels)."""

from __future__ import annotations

import math
import os

from st_simcse.evaluation import STSData, STSSuiteEvaluator, STSTaskEvaluator
from st_simcse.sources import read_dataset

PAIR_COLUMNS = ("sentence1", "sentence2", "score")


def load_scored_pairs(source: str | os.PathLike, name: str, split: str = "train", what: str = "--dev-file") -> STSData:
    """The pairs of ``source`` (columns ``sentence1, sentence2, score``) as an STS task called ``name``. Raises a
    ``ValueError`` (or ``FileNotFoundError``) that names the source, the row and the fix for a missing column, an
    empty sentence, a score that is not a number, or fewer than two distinct scores."""
    source = os.fspath(source)
    dataset = read_dataset(source, split, what=what)
    columns = dataset.column_names
    missing = [column for column in PAIR_COLUMNS if column not in columns]
    if missing:
        raise ValueError(
            f"{what} {source}: no column(s) {missing}; its columns are {columns}. Scored pairs need the columns "
            "sentence1, sentence2, score (rename them, e.g. with a header line)."
        )
    rows = dataset.select_columns(list(PAIR_COLUMNS)).to_dict()
    sentences = {column: [] for column in PAIR_COLUMNS[:2]}
    scores = []
    for row, (first, second, score) in enumerate(zip(*(rows[column] for column in PAIR_COLUMNS)), start=1):
        for column, text in zip(PAIR_COLUMNS[:2], (first, second)):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{what} {source}, row {row}: {column} is {text!r}; every pair needs two sentences.")
            sentences[column].append(text.strip())
        scores.append(_score(score, source, row, what))
    if len(set(scores)) < 2:
        raise ValueError(
            f"{what} {source}: {len(scores)} pair(s) with {len(set(scores))} distinct score(s); a Spearman "
            "correlation needs at least two pairs with different scores."
        )
    return STSData(name, sentences["sentence1"], sentences["sentence2"], scores)


def _score(value: object, source: str, row: int, what: str) -> float:
    try:
        score = float(value)  # numbers, and numbers written as text
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        raise ValueError(f"{what} {source}, row {row}: score {value!r} is not a number.")
    return score


def pairs_evaluator(data: STSData, batch_size: int = 64) -> STSSuiteEvaluator:
    """One :class:`st_simcse.STSTaskEvaluator` (an ``EmbeddingSimilarityEvaluator``: cosine Spearman, whole
    sentences) over ``data``, as a suite whose main score is ``{data.name}_avg``."""
    return STSSuiteEvaluator([STSTaskEvaluator(data, batch_size=batch_size)], name=data.name)


def scored_pairs_evaluator(
    source: str | os.PathLike, name: str = "dev", split: str = "train", batch_size: int = 64
) -> STSSuiteEvaluator:
    """An evaluator of any model on the scored pairs of ``source`` (see :func:`load_scored_pairs`), for
    ``model.fit(evaluator=...)``, the Trainer, or a plain call: ``scored_pairs_evaluator("dev.csv")(model)`` gives
    ``{"dev_spearman_cosine": ..., "dev_avg": ...}``."""
    return pairs_evaluator(load_scored_pairs(source, name, split, what="Pairs file"), batch_size)
