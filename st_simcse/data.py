from __future__ import annotations

import csv
import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset as HFDataset
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
from sentence_transformers.sentence_transformer.readers import InputExample
from torch.utils.data import Dataset

from st_simcse.augmentation import Augmentation

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


class DuplicateInputDataset(_TextTupleDataset):
    """Unsupervised SimCSE data: every sentence becomes the pair ``(sentence, sentence)``.

    Fed to :class:`st_simcse.SimCSELoss`, the two copies are encoded with independent dropout masks, and that
    noise alone makes the positive pair (paper section 3).

    Args:
        sentences: The training sentences. Empty or whitespace-only entries are an error.
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

            dataset = DuplicateInputDataset.from_text_file("wiki1m_for_simcse.txt")
            model.fit([(DataLoader(dataset, shuffle=True, batch_size=64), SimCSELoss(model, mlp_head=True))])
            # or, with the Trainer: train_dataset=dataset.to_hf_dataset()
    """

    column_names = ("anchor", "positive")

    def __init__(
        self,
        sentences: Iterable[str],
        duplicate_in_loss: bool = False,
        augmentation: Augmentation | None = None,
        seed: int = 0,
    ) -> None:
        if augmentation is not None and duplicate_in_loss:
            raise ValueError(
                "duplicate_in_loss=True makes the positive a copy of the anchor's tokens, so it cannot carry an "
                "augmentation: use duplicate_in_loss=False with an augmentation."
            )
        sentences = list(sentences)
        for index, sentence in enumerate(sentences):
            if not isinstance(sentence, str) or not sentence.strip():
                raise ValueError(
                    f"Sentence {index} is {sentence!r}: every training sentence must be a non-empty string. "
                    "Filter out empty or missing values first."
                )
        if not sentences:
            raise ValueError("DuplicateInputDataset needs at least one sentence, got none.")
        super().__init__([(sentence,) if duplicate_in_loss else (sentence, sentence) for sentence in sentences])
        if duplicate_in_loss:
            self.column_names = ("anchor",)
        self.sentences = sentences
        self.augmentation = augmentation
        self.seed = seed
        self.skipped_blank_lines = 0

    def __getitem__(self, index: int) -> InputExample:
        if self.augmentation is None:
            return super().__getitem__(index)
        return InputExample(texts=[self.sentences[index], self._positive(index)])

    def _positive(self, index: int) -> str:
        # Each example draws from its own generator, so its positive does not depend on the reading order.
        return self.augmentation(self.sentences[index], random.Random(f"{self.seed}/{index}"))

    def to_hf_dataset(self) -> HFDataset:
        if self.augmentation is None:
            return super().to_hf_dataset()
        positives = [self._positive(index) for index in range(len(self.sentences))]
        return HFDataset.from_dict({"anchor": self.sentences, "positive": positives})

    @classmethod
    def from_text_file(cls, path: str | os.PathLike, **options: Any) -> DuplicateInputDataset:
        """One sentence per line (UTF-8). Blank lines are skipped and counted in ``skipped_blank_lines``;
        a line that is not valid UTF-8 raises a ``ValueError`` naming the line. ``options`` are the constructor's
        (``duplicate_in_loss``, ``augmentation``, ``seed``)."""
        sentences, blank = read_sentences(path)
        dataset = cls(sentences, **options)
        dataset.skipped_blank_lines = blank
        return dataset

    @classmethod
    def from_hf_dataset(cls, dataset: HFDataset, column: str = "text", **options: Any) -> DuplicateInputDataset:
        """The sentences of one column of a ``datasets.Dataset``; ``options`` are the constructor's."""
        if column not in dataset.column_names:
            raise ValueError(
                f"The dataset has no column {column!r}; its columns are {dataset.column_names}. "
                "Pass the column that holds the sentences as column=..."
            )
        return cls(dataset[column], **options)


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
    """Read one sentence per line from a UTF-8 text file; returns the sentences and the number of blank lines
    skipped. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for undecodable or empty files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Training file not found: {path!r}. Pass an existing text file, one sentence per line."
        )
    sentences: list[str] = []
    blank = 0
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}, line {line_number}: not valid UTF-8 ({error.reason} at byte {error.start}). "
                    "Re-encode the file as UTF-8, e.g. with `iconv -f latin1 -t utf-8`."
                ) from None
            line = line.strip()
            if line:
                sentences.append(line)
            else:
                blank += 1
    if not sentences:
        raise ValueError(f"{path} holds no sentences ({blank} blank lines): it needs one sentence per line.")
    if blank:
        logger.info(f"{path}: skipped {blank} blank lines, read {len(sentences)} sentences.")
    return sentences, blank


# The paper's training files, published with its code on the Hugging Face hub.
SIMCSE_HUB_REPO = "princeton-nlp/datasets-for-simcse"
SIMCSE_HUB_FILES = ("wiki1m_for_simcse.txt", "nli_for_simcse.csv")


def resolve_training_file(name_or_path: str | os.PathLike) -> str:
    """A local path as it is; one of the paper's file names (``SIMCSE_HUB_FILES``) downloaded from the hub.
    Raises ``FileNotFoundError`` saying what to pass when neither works."""
    path = os.fspath(name_or_path)
    if os.path.isfile(path):
        return path
    if os.path.basename(path) in SIMCSE_HUB_FILES and not os.path.dirname(path):
        from huggingface_hub import hf_hub_download

        try:
            return hf_hub_download(SIMCSE_HUB_REPO, path, repo_type="dataset")
        except Exception as error:
            raise FileNotFoundError(
                f"{path!r} is not a local file and could not be downloaded from the hub dataset {SIMCSE_HUB_REPO} "
                f"({type(error).__name__}). Pass the path of a local copy instead."
            ) from error
    raise FileNotFoundError(f"Training file not found: {path!r}. Pass an existing file, one example per line.")
