"""Supervised SimCSE's training data: the user's labelled (anchor, positive) pairs or (anchor, positive,
hard_negative) triplets, from any source :mod:`st_simcse.data.readers` reads, with the paper's,
sentence-transformers' or the user's own column names. Used by the supervised recipe, by
:func:`st_simcse.mine_hard_negatives` and by users' own training code."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pyarrow.compute as pc
from datasets import Dataset as HFDataset
from sentence_transformers.sentence_transformer.readers import InputExample
from torch.utils.data import Dataset

from st_simcse.data.corpus import resolve_training_file
from st_simcse.data.formats import has_header_line
from st_simcse.data.readers import SIMCSE_HUB_FILES, read_dataset


class _TextTupleDataset(Dataset):
    """A torch Dataset of ``InputExample(texts=[...])`` over equally long text columns, held as a ``datasets.Dataset``
    (memory-mapped where it was read from disk): what ``model.fit`` reads through a ``DataLoader`` (a whole batch
    in one read), and, through :meth:`to_hf_dataset`, what the Trainer reads."""

    column_names: tuple[str, ...] = ()

    def __init__(self, rows: Sequence[tuple[str, ...]] | HFDataset) -> None:
        if isinstance(rows, HFDataset):
            if tuple(rows.column_names) != self.column_names:
                raise ValueError(
                    f"{type(self).__name__} needs the columns {list(self.column_names)} in this order, got "
                    f"{rows.column_names}; st_simcse.load_labelled reads any file into them."
                )
            self.table = rows
            return
        rows = [tuple(row) for row in rows]
        for index, row in enumerate(rows):
            if len(row) != len(self.column_names) or not all(isinstance(text, str) and text.strip() for text in row):
                raise ValueError(
                    f"Row {index} of {type(self).__name__} is {row!r}: every row needs {len(self.column_names)} "
                    f"non-empty texts ({', '.join(self.column_names)})."
                )
        columns = list(zip(*rows)) if rows else [() for _ in self.column_names]
        self.table = HFDataset.from_dict({name: list(column) for name, column in zip(self.column_names, columns)})

    @property
    def rows(self) -> list[tuple[str, ...]]:
        """Every row as a tuple of texts (reads the whole table into memory)."""
        columns = self.table.with_format(None)[:]
        return list(zip(*(columns[name] for name in self.column_names)))

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> InputExample:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[InputExample]:
        batch = self.table[indices]
        return [InputExample(texts=list(texts)) for texts in zip(*(batch[name] for name in self.column_names))]

    def to_hf_dataset(self) -> HFDataset:
        """The same examples as a ``datasets.Dataset``, one column per text, in the loss's column order."""
        return self.table


class PairDataset(_TextTupleDataset):
    """Supervised positive pairs ``(anchor, positive)`` without hard negatives (a question and its answer, a title
    and its abstract, the paper's NLI csv with only ``sent0,sent1``); the other positives of the batch are the
    negatives. :func:`st_simcse.mine_hard_negatives` turns them into triplets."""

    column_names = ("anchor", "positive")

    @classmethod
    def from_corpus(cls, source: str | os.PathLike, **options: Any) -> PairDataset:
        """The (anchor, positive) pairs of ``source`` (see :func:`load_labelled` for the forms and ``options``); a
        hard-negative column, where there is one, is left out."""
        dataset = load_labelled(source, **options)
        if isinstance(dataset, PairDataset):
            return dataset
        return cls(dataset.table.select_columns(list(cls.column_names)))


class TripletDataset(_TextTupleDataset):
    """Supervised SimCSE data: ``(anchor, positive, hard_negative)`` triplets, e.g. the paper's NLI set of
    (premise, entailment hypothesis, contradiction hypothesis).

    Args:
        triplets: ``(anchor, positive, hard_negative)`` text triplets.
    """

    column_names = ("anchor", "positive", "negative")

    @classmethod
    def from_nli_csv(cls, path: str | os.PathLike) -> TripletDataset | PairDataset:
        """The paper's supervised csv (``sent0,sent1,hard_neg``: premise, entailment, contradiction; or only
        ``sent0,sent1``, positive pairs, which the reference code also trains on): :func:`load_labelled`, which
        reads any other format and column names too."""
        return load_labelled(path)

    @classmethod
    def from_corpus(cls, source: str | os.PathLike, **options: Any) -> TripletDataset:
        """The triplets of ``source`` (see :func:`load_labelled` for the forms and ``options``); a source without a
        hard-negative column raises a ``ValueError``."""
        dataset = load_labelled(source, **options)
        if not isinstance(dataset, TripletDataset):
            raise ValueError(
                f"{os.fspath(source)} holds (anchor, positive) pairs, no hard-negative column: read it with "
                "load_labelled or PairDataset.from_corpus, or mine negatives with st_simcse.mine_hard_negatives."
            )
        return dataset


def load_labelled(
    source: str | os.PathLike,
    columns: Sequence[str] | None = None,
    split: str = "train",
    subset: str | None = None,
) -> PairDataset | TripletDataset:
    """Supervised training data from any tabular source of :mod:`st_simcse.data.formats` (a file of any tabular
    format, compressed or not, a ``save_to_disk`` folder, a hub dataset with ``split`` and ``subset``): a
    :class:`TripletDataset` where it has a hard-negative column, else a :class:`PairDataset`.

    Columns: sentence-transformers' names (``anchor, positive[, negative]``) and the paper's (``sent0, sent1[,
    hard_neg]``) are recognised; ``columns`` names any others, ``[anchor, positive]`` or ``[anchor, positive,
    negative]``. A missing column, a column that is not text, or an empty cell raises a ``ValueError`` naming the
    source, the row and the fix."""
    source = os.fspath(source)
    if source in SIMCSE_HUB_FILES and not os.path.exists(source):
        source = resolve_training_file(source)
    if columns is not None and len(columns) not in (2, 3):
        raise ValueError(
            f"columns names the anchor, positive and optionally hard-negative columns (2 or 3 names), got {columns}."
        )
    table = read_dataset(source, split, subset=subset)
    chosen = _labelled_columns(table, columns, source)
    names = TripletDataset.column_names[: len(chosen)]
    # Through temporary names, so that any mapping works (even one that swaps "anchor" and "positive").
    table = table.select_columns(list(chosen)).rename_columns({c: f"__{n}" for c, n in zip(chosen, names)})
    table = table.rename_columns({f"__{name}": name for name in names})
    _refuse_empty_cells(table, dict(zip(names, chosen)), source)
    return TripletDataset(table) if len(chosen) == 3 else PairDataset(table)


# The column names recognised without being told: sentence-transformers' and the paper's nli_for_simcse.csv.
LABELLED_COLUMNS = (("anchor", "positive", "negative"), ("sent0", "sent1", "hard_neg"))


def _labelled_columns(table: HFDataset, columns: Sequence[str] | None, source: str) -> tuple[str, ...]:
    present = list(table.column_names)
    if columns is not None:
        missing = [name for name in columns if name not in present]
        if missing:
            raise ValueError(f"{source} has no column(s) {missing}; its columns are {present}.")
        chosen = tuple(columns)
    else:
        known = next((names for names in LABELLED_COLUMNS if all(name in present for name in names[:2])), None)
        if known is None:
            single = len(present) == 1 and any(mark in present[0] for mark in (";", "\t", "|"))
            hint = " (one column: is the file separated by something else than its suffix says?)" if single else ""
            raise ValueError(
                f"{source} has the columns {present}{hint}, none of them sentence-transformers' (anchor, positive"
                "[, negative]) or the paper's (sent0, sent1[, hard_neg]). Name the anchor, the positive and "
                "(optionally) the hard-negative column with --columns ANCHOR,POSITIVE[,NEGATIVE] (columns=[...] in "
                "code)."
            )
        chosen = known if known[2] in present else known[:2]
    for name in chosen:
        kind = getattr(table.features[name], "dtype", type(table.features[name]).__name__)
        if kind not in ("string", "large_string", "null"):  # null: every cell empty, reported as such below
            raise ValueError(f"{source}: column {name!r} holds {kind}, not text; its columns are {present}.")
    return chosen


def _refuse_empty_cells(table: HFDataset, columns: dict[str, str], source: str) -> None:
    """Rows with a missing or blank cell, counted and named by the first one (and its line, for a file with a header
    line); for an empty hard negative, the hint that the rows train as pairs without it."""
    if len(table) == 0:
        raise ValueError(f"{source}: no rows (a header alone?); it needs at least one example.")
    empty = {name: 0 for name in columns}
    first: dict[str, int] = {}
    offset = 0
    for batch in table.with_format("arrow").iter(batch_size=100_000):
        for name in columns:
            texts = batch.column(name).combine_chunks().cast("string")
            blank = pc.invert(pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0), False))
            empty[name] += pc.sum(blank).as_py() or 0
            index = pc.index(blank, True).as_py()
            if index != -1 and name not in first:
                first[name] = offset + index + 1
        offset += batch.num_rows
    for name, original in columns.items():
        if not empty[name]:
            continue
        row = first[name]
        line = f" (line {row + 1})" if has_header_line(source) else ""
        where = f"{source}, row {row}{line}: column {original!r} is empty ({empty[name]} of {len(table)} rows are)"
        if name == "negative":
            anchor, positive = columns["anchor"], columns["positive"]
            raise ValueError(
                f"{where}; every triplet needs a hard negative. To train on the (anchor, positive) pairs "
                f"alone, pass --columns {anchor},{positive} (columns=[{anchor!r}, {positive!r}] in code); or fill or "
                "drop those rows."
            )
        raise ValueError(f"{where}; every example needs all of {list(columns.values())}. Drop or fill such rows.")
