"""Unsupervised SimCSE's training data: :class:`DuplicateInputDataset` turns every sentence of a corpus
(:mod:`st_simcse.data.corpus`) into the pair ``(sentence, sentence)``, whose two copies pass the encoder with
different dropout masks. Used by the unsupervised recipe and by users' own ``model.fit`` / Trainer code."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from typing import Any

from datasets import Dataset as HFDataset
from datasets import Features, IterableDataset, Value
from sentence_transformers.sentence_transformer.readers import InputExample
from torch.utils.data import Dataset

from st_simcse.data.augmentation import Augmentation
from st_simcse.data.corpus import TEXT_COLUMN, Corpus, corpus_from_dataset, load_corpus


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
            :mod:`st_simcse.data.augmentation`: ``Crop``, ``WordDeletion``, ``DeleteOneWord``, ``WordRepetition``).
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
        a :class:`st_simcse.data.corpus.Corpus` that :func:`st_simcse.load_corpus` already read."""
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


def read_sentences(path: str | os.PathLike) -> tuple[list[str], int]:
    """Read one sentence per line from a UTF-8 text file (or any corpus :func:`st_simcse.load_corpus` reads);
    returns the sentences and the number of blank lines skipped. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for undecodable or empty files."""
    corpus = load_corpus(path)
    return list(corpus.dataset[TEXT_COLUMN]), corpus.skipped
