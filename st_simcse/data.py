from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow.compute as pc
from datasets import Dataset as HFDataset
from datasets import Features, IterableDataset, Value
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
from sentence_transformers.sentence_transformer.readers import InputExample
from torch.utils.data import Dataset

from st_simcse.augmentation import Augmentation
from st_simcse.corpus import (
    SIMCSE_HUB_FILES,
    TEXT_COLUMN,
    Corpus,
    corpus_from_dataset,
    load_corpus,
    resolve_training_file,
)
from st_simcse.sources import read_dataset, source_builder

__all__ = [
    "DuplicateInputDataset",
    "PairDataset",
    "SimCSEDataCollator",
    "TripletDataset",
    "load_labelled",
    "read_sentences",
    "resolve_training_file",
]

logger = logging.getLogger(__name__)

NLI_COLUMNS = ("sent0", "sent1", "hard_neg")


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


class DuplicateInputDataset(Dataset):
    """Unsupervised SimCSE data: every sentence becomes the pair ``(sentence, sentence)``.

    Fed to :class:`st_simcse.SimCSELoss`, the two copies are encoded with independent dropout masks, and that
    noise alone makes the positive pair (paper section 3). The sentences are held as a ``datasets.Dataset`` (for a
    corpus read from disk, memory-mapped Arrow), so a corpus of any size costs little memory; a ``DataLoader``
    reads whole batches of it at once.

    Args:
        sentences: The training sentences: a list (empty or whitespace-only entries are an error), or a
            ``datasets.Dataset`` / ``IterableDataset`` with one string column ``text`` such as
            :func:`st_simcse.load_corpus` returns.
        duplicate_in_loss: Give each example as the single column ``(sentence,)`` instead, and let
            :class:`st_simcse.SimCSELoss` make the second copy after tokenization: the same training (the same
            tokens, two dropout masks), but every sentence is tokenized once, also under ``model.fit``, whose
            collator tokenizes every column. Only for SimCSELoss / CachedSimCSELoss.
        augmentation: A discrete augmentation applied to the positive copy only (see
            :mod:`st_simcse.augmentation`: ``Crop``, ``WordDeletion``, ``DeleteOneWord``, ``WordRepetition``).
            None (the default, the paper's choice): both copies are the same sentence and dropout alone makes the
            positive pair.
        seed: Seeds the augmentation: example ``i`` always gets the same positive for the same seed, whatever the
            order in which the examples are read.

    Example:
        ::

            from torch.utils.data import DataLoader
            from st_simcse import DuplicateInputDataset, SimCSELoss

            dataset = DuplicateInputDataset.from_corpus("my_corpus.jsonl.gz", text_column="body")
            model.fit([(DataLoader(dataset, shuffle=True, batch_size=64), SimCSELoss(model, mlp_head=True))])
            # or, with the Trainer: train_dataset=dataset.to_hf_dataset()
    """

    def __init__(
        self,
        sentences: Iterable[str] | HFDataset | IterableDataset,
        duplicate_in_loss: bool = False,
        augmentation: Augmentation | None = None,
        seed: int = 0,
    ) -> None:
        if augmentation is not None and duplicate_in_loss:
            raise ValueError(
                "duplicate_in_loss=True makes the positive a copy of the anchor's tokens, so it cannot carry an "
                "augmentation: use duplicate_in_loss=False with an augmentation."
            )
        if not isinstance(sentences, (HFDataset, IterableDataset)):
            sentences = HFDataset.from_dict({TEXT_COLUMN: _checked_sentences(sentences)})
        elif TEXT_COLUMN not in (sentences.column_names or [TEXT_COLUMN]):
            raise ValueError(
                f"DuplicateInputDataset needs a dataset with a {TEXT_COLUMN!r} column, got {sentences.column_names}: "
                "read it with st_simcse.load_corpus, or use DuplicateInputDataset.from_hf_dataset(dataset, column)."
            )
        else:  # only the sentences: other columns would reach the Trainer's collator as further inputs
            sentences = sentences.select_columns([TEXT_COLUMN])
        if isinstance(sentences, HFDataset) and len(sentences) < 2:
            raise ValueError(
                f"DuplicateInputDataset got {len(sentences)} sentence(s): contrastive training needs at least 2, "
                "and in practice at least one full batch, since the other sentences of a batch are the negatives."
            )
        self.texts = sentences
        self.column_names = ("anchor",) if duplicate_in_loss else ("anchor", "positive")
        self.augmentation = augmentation
        self.seed = seed
        self.skipped_blank_lines = 0
        self.corpus: Corpus | None = None  # where the sentences came from, when read by from_corpus

    def describe(self) -> str:
        """``N training sentences (B blank lines skipped)``: what a run prints before it trains."""
        return self.corpus.describe() if self.corpus else f"{len(self)} training sentences"

    @property
    def streaming(self) -> bool:
        return isinstance(self.texts, IterableDataset)

    @property
    def sentences(self) -> list[str]:
        """All sentences as a list (for a large corpus this reads it into memory; index the dataset instead)."""
        return list(self._map_style().with_format(None)[TEXT_COLUMN])

    def __len__(self) -> int:
        return len(self._map_style())

    def __getitem__(self, index: int) -> InputExample:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[InputExample]:
        # A DataLoader fetches a whole batch through this: one Arrow read instead of one per example.
        texts = self._map_style()[indices][TEXT_COLUMN]
        if len(self.column_names) == 1:
            return [InputExample(texts=[text]) for text in texts]
        return [InputExample(texts=[text, self._positive(text, index)]) for text, index in zip(texts, indices)]

    def _map_style(self) -> HFDataset:
        if self.streaming:
            raise TypeError(
                "This DuplicateInputDataset streams its corpus, so it has no length and no random access: train on "
                "dataset.to_hf_dataset() with SentenceTransformerTrainer and max_steps."
            )
        return self.texts

    def _positive(self, sentence: str, index: int) -> str:
        if self.augmentation is None:
            return sentence
        # Each example draws from its own generator, so its positive does not depend on the reading order.
        return self.augmentation(sentence, random.Random(f"{self.seed}/{index}"))

    def to_hf_dataset(self) -> HFDataset | IterableDataset:
        """The examples as a ``datasets`` dataset for the Trainer, one column per text (``anchor``, or ``anchor,
        positive``). The single column is the corpus itself, renamed (not copied); for a stream, an
        ``IterableDataset`` with its features set."""
        if len(self.column_names) == 1:
            return self.texts.rename_column(TEXT_COLUMN, "anchor")

        def pairs(batch: dict[str, list[str]], indices: list[int]) -> dict[str, list[str]]:
            texts = batch[TEXT_COLUMN]
            return {"anchor": texts, "positive": [self._positive(t, i) for t, i in zip(texts, indices)]}

        features = Features({"anchor": Value("string"), "positive": Value("string")})
        return self.texts.map(pairs, batched=True, with_indices=True, remove_columns=[TEXT_COLUMN], features=features)

    @classmethod
    def from_corpus(
        cls,
        source: str | os.PathLike | Corpus,
        text_column: str | None = None,
        split: str = "train",
        streaming: bool = False,
        **options: Any,
    ) -> DuplicateInputDataset:
        """The sentences of any corpus :func:`st_simcse.load_corpus` reads: a text file (one sentence per line,
        also compressed), csv / tsv / jsonl / json / parquet (``text_column`` picks the column), a ``save_to_disk``
        folder or a hub dataset (``split``). Blank values are skipped and counted in ``skipped_blank_lines``.
        ``options`` are the constructor's (``duplicate_in_loss``, ``augmentation``, ``seed``). ``source`` may also be
        a :class:`st_simcse.corpus.Corpus` that :func:`st_simcse.load_corpus` already read."""
        if isinstance(source, Corpus):
            corpus = source
        else:
            corpus = load_corpus(source, text_column=text_column, split=split, streaming=streaming)
        dataset = cls(corpus.dataset, **options)
        dataset.skipped_blank_lines, dataset.corpus = corpus.skipped, corpus
        return dataset

    @classmethod
    def from_text_file(cls, path: str | os.PathLike, **options: Any) -> DuplicateInputDataset:
        """One sentence per line (UTF-8; ``.gz``, ``.bz2``, ``.xz``, ``.zst`` also read). Blank lines are skipped and
        counted in ``skipped_blank_lines``; a line that is not valid UTF-8 raises a ``ValueError`` naming the line.
        The same as :meth:`from_corpus`, which reads the other formats too."""
        return cls.from_corpus(path, **options)

    @classmethod
    def from_hf_dataset(cls, dataset: HFDataset, column: str = "text", **options: Any) -> DuplicateInputDataset:
        """The sentences of one column of a ``datasets.Dataset`` (blank or missing values skipped and counted);
        ``options`` are the constructor's."""
        corpus = corpus_from_dataset(dataset, column, source="the dataset")
        result = cls(corpus.dataset, **options)
        result.skipped_blank_lines, result.corpus = corpus.skipped, corpus
        return result


def _checked_sentences(sentences: Iterable[str]) -> list[str]:
    sentences = list(sentences)
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, str) or not sentence.strip():
            raise ValueError(
                f"Sentence {index} is {sentence!r}: every training sentence must be a non-empty string. "
                "Filter out empty or missing values first."
            )
    return sentences


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
    """Supervised training data from any source :func:`st_simcse.load_corpus` reads (csv, tsv, jsonl, json, parquet,
    compressed, a ``save_to_disk`` folder, a hub dataset with ``split`` and ``subset``): a :class:`TripletDataset`
    where it has a hard-negative column, else a :class:`PairDataset`.

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


def _has_header_line(source: str) -> bool:
    return os.path.isfile(source) and source_builder(source) == "csv"


def _refuse_empty_cells(table: HFDataset, columns: dict[str, str], source: str) -> None:
    """The first missing or blank cell, named by its row (and its line, for a file with a header line)."""
    if len(table) == 0:
        raise ValueError(f"{source}: no rows (a header alone?); it needs at least one example.")
    offset = 0
    for batch in table.with_format("arrow").iter(batch_size=100_000):
        for name, original in columns.items():
            texts = batch.column(name).combine_chunks().cast("string")
            empty = pc.invert(pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0), False))
            first = pc.index(empty, True).as_py()
            if first != -1:
                row = offset + first + 1
                line = f" (line {row + 1})" if _has_header_line(source) else ""
                raise ValueError(
                    f"{source}, row {row}{line}: column {original!r} is empty; every example needs all of "
                    f"{list(columns.values())}. Drop or fill such rows first."
                )
        offset += batch.num_rows


@dataclass
class SimCSEDataCollator(SentenceTransformerDataCollator):
    """The sentence-transformers data collator, except that a column whose texts equal an earlier column's in the
    same batch is tokenized once: for unsupervised SimCSE's (s, s) pairs that halves the tokenization, which on
    a GPU is a noticeable share of a step. The duplicate columns share the same tensors, and SimCSELoss still
    embeds them as separate rows with separate dropout masks.

    Pass it to the Trainer: ``SentenceTransformerTrainer(..., data_collator=SimCSEDataCollator(model.preprocess))``.
    """

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        preprocess = self.preprocess_fn
        done: dict[tuple, dict[str, Any]] = {}

        def preprocess_once(inputs: list, **kwargs: Any) -> dict[str, Any]:
            key = (tuple(inputs), tuple(sorted((name, repr(value)) for name, value in kwargs.items())))
            if key not in done:
                done[key] = preprocess(inputs, **kwargs)
            return done[key]

        self.preprocess_fn = preprocess_once
        try:
            return super().__call__(features)
        finally:
            self.preprocess_fn = preprocess


def read_sentences(path: str | os.PathLike) -> tuple[list[str], int]:
    """Read one sentence per line from a UTF-8 text file (or any corpus :func:`st_simcse.load_corpus` reads);
    returns the sentences and the number of blank lines skipped. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for undecodable or empty files."""
    corpus = load_corpus(path)
    return list(corpus.dataset[TEXT_COLUMN]), corpus.skipped
