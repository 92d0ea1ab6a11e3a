from __future__ import annotations

import csv
import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset as HFDataset
from datasets import Features, IterableDataset, Value
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
from sentence_transformers.sentence_transformer.readers import InputExample
from torch.utils.data import Dataset

from st_simcse.augmentation import Augmentation
from st_simcse.corpus import TEXT_COLUMN, Corpus, corpus_from_dataset, load_corpus, resolve_training_file

__all__ = [
    "DuplicateInputDataset",
    "PairDataset",
    "SimCSEDataCollator",
    "TripletDataset",
    "read_sentences",
    "resolve_training_file",
]

logger = logging.getLogger(__name__)

NLI_COLUMNS = ("sent0", "sent1", "hard_neg")


class _TextTupleDataset(Dataset):
    """A torch Dataset of ``InputExample(texts=[...])`` over equally long text columns: what ``model.fit``
    reads through a ``DataLoader``, and, through :meth:`to_hf_dataset`, what the Trainer reads."""

    column_names: tuple[str, ...] = ()

    def __init__(self, rows: Sequence[tuple[str, ...]]) -> None:
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> InputExample:
        return InputExample(texts=list(self.rows[index]))

    def to_hf_dataset(self) -> HFDataset:
        """The same examples as a ``datasets.Dataset``, one column per text, in the loss's column order."""
        columns = list(zip(*self.rows)) if self.rows else [() for _ in self.column_names]
        return HFDataset.from_dict({name: list(column) for name, column in zip(self.column_names, columns)})


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
    """Supervised positive pairs ``(anchor, positive)`` without hard negatives, e.g. the paper's NLI csv with only
    ``sent0,sent1``; the other positives of the batch are the negatives."""

    column_names = ("anchor", "positive")


class TripletDataset(_TextTupleDataset):
    """Supervised SimCSE data: ``(anchor, positive, hard_negative)`` triplets, e.g. the paper's NLI set of
    (premise, entailment hypothesis, contradiction hypothesis).

    Args:
        triplets: ``(anchor, positive, hard_negative)`` text triplets.
    """

    column_names = ("anchor", "positive", "negative")

    @classmethod
    def from_nli_csv(cls, path: str | os.PathLike) -> TripletDataset | PairDataset:
        """Read the paper's supervised csv format: a header with ``sent0,sent1,hard_neg`` (premise, entailment,
        contradiction) gives triplets; a header with only ``sent0,sent1`` gives a :class:`PairDataset` of
        positive pairs, which the reference code also trains on. Missing columns or empty cells raise a
        ``ValueError`` naming the file and the line."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"NLI training file not found: {path!r}")
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            columns = NLI_COLUMNS if NLI_COLUMNS[2] in header else NLI_COLUMNS[:2]
            missing = [name for name in columns if name not in header]
            if missing:
                raise ValueError(
                    f"{path}: the csv header is {header}, which lacks the column(s) {missing}. SimCSE's supervised "
                    "format needs the header sent0,sent1,hard_neg (premise, entailment, contradiction) or "
                    "sent0,sent1 (positive pairs)."
                )
            rows = []
            for row in reader:
                texts = tuple(row[name] for name in columns)
                empty = [name for name, text in zip(columns, texts) if text is None or not text.strip()]
                if empty:
                    raise ValueError(f"{path}, line {reader.line_num}: empty value in column(s) {empty}.")
                rows.append(texts)
        if not rows:
            raise ValueError(f"{path}: the file has a header but no rows.")
        return cls(rows) if len(columns) == 3 else PairDataset(rows)


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
