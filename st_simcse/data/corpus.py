"""A user's training sentences, in whatever form they come (:mod:`st_simcse.data.formats`: plain text, one sentence
per line, a table of any format, compressed or not, a ``Dataset.save_to_disk`` folder or a hub dataset), read through
``datasets`` (memory-mapped Arrow, cached). Used by :class:`st_simcse.DuplicateInputDataset` and the unsupervised
recipe. Every source becomes one string column, ``text``: blank and missing values are skipped and counted, the rest
are stripped of surrounding whitespace, as the plain-text reader always did. A bad source raises a ``ValueError`` or
``FileNotFoundError`` whose message says what is wrong and what to pass instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, IterableDataset, Value

from st_simcse.data.formats import is_plain_text
from st_simcse.data.readers import (
    PROGRESS_BYTES,
    SIMCSE_HUB_FILES,
    SIMCSE_HUB_REPO,
    mixed_types_message,
    progress_bars,
    read_dataset,
)
from st_simcse.hub import check_hub_name

TEXT_COLUMN = "text"


@dataclass
class Corpus:
    """Training sentences read from ``source``: ``dataset`` has the one string column ``text``, none of its rows
    blank. ``skipped`` counts the blank or missing values dropped (None for a stream, which is not read ahead);
    ``kind`` says what they were ("blank line" for plain text, else "empty value")."""

    dataset: Dataset | IterableDataset
    source: str
    skipped: int | None
    kind: str = "blank line"

    @property
    def streaming(self) -> bool:
        return isinstance(self.dataset, IterableDataset)

    def describe(self) -> str:
        """``N training sentences (B blank lines skipped)``, or what a stream can say before it is read."""
        if self.streaming:
            return f"streaming training sentences from {self.source} (blank values skipped as they come)"
        return (
            f"{len(self.dataset)} training sentences ({self.skipped} {self.kind}{'s' * (self.skipped != 1)} skipped)"
        )


def load_corpus(
    source: str | os.PathLike, text_column: str | None = None, split: str = "train", streaming: bool = False
) -> Corpus:
    """Read the sentences of ``source`` (see the module docstring for the forms it may take).

    Args:
        source: A file, a ``save_to_disk`` folder, a hub dataset name, or one of the paper's file names
            (``wiki1m_for_simcse.txt``), which is downloaded from the hub.
        text_column: The column that holds the sentences, for tabular and hub sources. None picks the only string
            column; with several, the error lists them.
        split: The split of a hub dataset or a saved ``DatasetDict``.
        streaming: Read lazily, batch by batch, as an ``IterableDataset`` with its features set (what
            ``SentenceTransformerTrainer`` asks of a stream); for corpora beyond memory or disk.
    """
    source = os.fspath(source)
    if source in SIMCSE_HUB_FILES and not os.path.exists(source):
        source = resolve_training_file(source)
    kind = "blank line" if is_plain_text(source) else "empty value"
    with progress_bars(not os.path.isfile(source) or os.path.getsize(source) > PROGRESS_BYTES):
        dataset = read_dataset(source, split, streaming)
        return corpus_from_dataset(dataset, text_column, source, kind)


def corpus_from_dataset(
    dataset: Dataset | IterableDataset,
    text_column: str | None = None,
    source: str = "the dataset",
    kind: str = "empty value",
) -> Corpus:
    """The sentences of one column of a ``datasets`` dataset (``text_column``, or its only string column), blank
    and missing values skipped and counted, the rest stripped; ``source`` names it in errors."""
    column = _text_column(dataset, text_column, source)
    if isinstance(dataset, IterableDataset):
        return Corpus(_clean_stream(dataset, column), source, None, kind)
    cleaned, skipped = _clean(dataset, column)
    if len(cleaned) == 0:
        raise ValueError(f"{source} holds no sentences ({skipped} {kind}s): it needs at least one non-empty text.")
    return Corpus(cleaned, source, skipped, kind)


def resolve_training_file(name_or_path: str | os.PathLike) -> str:
    """A local path as it is; one of the paper's file names (``SIMCSE_HUB_FILES``) downloaded from the hub.
    Raises ``FileNotFoundError`` saying what to pass when neither works."""
    path = os.fspath(name_or_path)
    if os.path.exists(path):
        return path
    if path not in SIMCSE_HUB_FILES:
        raise FileNotFoundError(f"Training file not found: {path!r}. Pass an existing file.")
    from huggingface_hub import hf_hub_download

    check_hub_name(path, "Training file")
    try:
        return hf_hub_download(SIMCSE_HUB_REPO, path, repo_type="dataset")
    except Exception as error:
        raise FileNotFoundError(
            f"{path!r} is not a local file and could not be downloaded from the hub dataset {SIMCSE_HUB_REPO} "
            f"({type(error).__name__}). Pass the path of a local copy instead."
        ) from error


def _text_column(dataset: Dataset | IterableDataset, chosen: str | None, source: str) -> str:
    if dataset.features is not None:
        columns = {name: _kind(feature) for name, feature in dataset.features.items()}
    else:  # a stream of csv or json rows declares no features: its first row tells
        first = next(iter(dataset), None)
        if first is None:
            raise ValueError(f"{source} holds no rows: it needs at least one non-empty text.")
        columns = {name: "string" if isinstance(value, str) else type(value).__name__ for name, value in first.items()}
    strings = [name for name, kind in columns.items() if kind == "string"]
    for name, kind in columns.items():
        if kind == "Json" and (name == chosen or (chosen is None and not strings)):
            # datasets reads a JSON field whose type changes from line to line as a Json column: say where.
            raise ValueError(mixed_types_message(source, name))
    if chosen is None:
        if len(strings) == 1:
            return strings[0]
        which = "no string column" if not strings else f"{len(strings)} string columns"
        raise ValueError(
            f"{source} has {which} (columns: {_listed(columns)}). Pass the one that holds the sentences with "
            "--text-column NAME (text_column=... in code)."
        )
    if chosen not in columns:
        raise ValueError(f"{source} has no column {chosen!r}; its columns are {_listed(columns)}.")
    if chosen not in strings:
        raise ValueError(
            f"{source}: column {chosen!r} holds {columns[chosen]}, not text; its columns are {_listed(columns)}."
        )
    return chosen


def _kind(feature: Any) -> str:
    kind = getattr(feature, "dtype", type(feature).__name__)
    return "string" if kind == "large_string" and isinstance(feature, Value) else kind


def _listed(columns: dict[str, str]) -> str:
    return ", ".join(f"{name} ({kind})" for name, kind in columns.items())


def _clean_batch(texts: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The stripped texts and which of them to keep (not missing, not blank)."""
    stripped = pc.utf8_trim_whitespace(texts)
    return stripped, pc.fill_null(pc.greater(pc.utf8_length(stripped), 0), False)


def _clean(dataset: Dataset, column: str) -> tuple[Dataset, int]:
    """``dataset`` reduced to ``column`` as ``text``, blank rows dropped and the rest stripped; a corpus that needs
    neither (the usual case) is not copied: the column is renamed in place, still memory-mapped."""
    dataset = dataset.select_columns([column])
    if column != TEXT_COLUMN:
        dataset = dataset.rename_column(column, TEXT_COLUMN)
    skipped, changed = 0, False
    for batch in _column_batches(dataset):
        stripped, keep = _clean_batch(batch)
        kept = pc.sum(keep).as_py() or 0
        skipped += len(batch) - kept
        changed = changed or kept < len(batch) or not pc.all(pc.equal(stripped, batch)).as_py()
    if not changed:
        return dataset, 0
    cleaned = dataset.with_format("arrow").map(_clean_table, batched=True, batch_size=10_000, desc="Cleaning corpus")
    return cleaned.with_format(None), skipped


def _column_batches(dataset: Dataset) -> Iterator[pa.Array]:
    # Slices of the memory-mapped table: nothing is copied into memory.
    for table in dataset.with_format("arrow").iter(batch_size=100_000):
        yield table.column(TEXT_COLUMN).combine_chunks()


def _clean_table(table: pa.Table) -> pa.Table:
    stripped, keep = _clean_batch(table.column(TEXT_COLUMN).combine_chunks())
    return pa.table({TEXT_COLUMN: stripped.filter(keep)})


def _clean_stream(dataset: IterableDataset, column: str) -> IterableDataset:
    def clean(batch: dict[str, list]) -> dict[str, list]:
        texts = [text.strip() for text in batch[column] if isinstance(text, str)]
        return {TEXT_COLUMN: [text for text in texts if text]}

    # Only the sentences: the other columns would reach the collator as further inputs.
    return dataset.select_columns([column]).map(
        clean, batched=True, remove_columns=[column], features=Features({TEXT_COLUMN: Value("string")})
    )
