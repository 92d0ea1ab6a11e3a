"""What training data holds, counted before any model loads, so that a run says what it trains on: for a corpus,
its exact repeats (scraped text repeats itself: boilerplate lines, navigation, signatures), which unsupervised SimCSE
would train as each other's in-batch negatives; for labelled data, the rows whose anchor equals their positive (not a
supervised pair at all) or whose hard negative equals the positive. The recipes print these figures, record them in
``metrics.json`` and act on them (:func:`drop_repeats`; a refusal where most labelled rows are not pairs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset

from st_simcse.data.corpus import TEXT_COLUMN, Corpus

SHOWN_CHARACTERS = 60


@dataclass
class RepeatCount:
    """Exact repeats among ``rows`` texts: ``repeats`` rows equal an earlier row; ``repeated`` distinct texts occur
    more than once; the most repeated one and how often it occurs."""

    rows: int
    repeats: int
    repeated: int
    most_repeated: str | None
    most_repeated_count: int

    @property
    def share(self) -> float:
        return self.repeats / self.rows if self.rows else 0.0

    def line(self, what: str = "sentences") -> str:
        if not self.repeats:
            return f"no exact repeats among the {self.rows} {what}"
        shown = self.most_repeated or ""
        shown = shown if len(shown) <= SHOWN_CHARACTERS else shown[: SHOWN_CHARACTERS - 3] + "..."
        return (
            f"{self.repeats} of the {self.rows} {what} ({100 * self.share:.1f} %) repeat an earlier one "
            f"({self.repeated} distinct {what[:-1] if self.repeated == 1 else what} repeated; the most repeated, "
            f"{self.most_repeated_count} times: "
            f"{shown!r})"
        )


def first_occurrences(dataset: Dataset, columns: list[str]) -> tuple[np.ndarray, RepeatCount]:
    """The indices of the rows of ``dataset`` that do not repeat an earlier row (over ``columns``), in order, and the
    count of repeats. Hashes in memory (8 bytes a row), texts compared where hashes are equal (no collision counts)."""
    hashes, index = [], 0
    for table in dataset.select_columns(columns).with_format("arrow").iter(batch_size=100_000):
        values = zip(*(table.column(name).to_pylist() for name in columns))
        hashes.append(np.fromiter((hash(row) for row in values), dtype=np.int64, count=table.num_rows))
        index += table.num_rows
    all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.int64)
    _, first, inverse, counts = np.unique(all_hashes, return_index=True, return_inverse=True, return_counts=True)
    keep = np.ones(len(all_hashes), dtype=bool)
    keep[first[inverse] != np.arange(len(all_hashes))] = False  # a row whose hash an earlier row had
    dropped = np.flatnonzero(~keep)
    if len(dropped):  # equal hashes are equal texts, but for a collision: compare them
        earlier = first[inverse[dropped]]
        rows, firsts = dataset.select(dropped.tolist()), dataset.select(earlier.tolist())
        for name in columns:
            same = np.asarray(rows[name], dtype=object) == np.asarray(firsts[name], dtype=object)
            keep[dropped[~same]] = True
    kept = np.flatnonzero(keep)
    repeats = len(all_hashes) - len(kept)
    most, count = None, 1
    if repeats:
        top = int(np.argmax(counts))
        count = int(counts[top])
        most = " | ".join(str(dataset[int(first[top])][name]) for name in columns)
    repeated = int(np.sum(counts > 1)) if repeats else 0
    return kept, RepeatCount(len(all_hashes), repeats, repeated, most, count)


@dataclass
class CorpusReport:
    """The figures a run prints and records about its corpus, before training (see the module docstring)."""

    source: str
    sentences: int
    skipped: int
    skipped_kind: str
    repeats: RepeatCount
    repeats_dropped: bool

    def lines(self) -> list[str]:
        first = f"{self.sentences} training sentences ({self.skipped} {self.skipped_kind}s skipped)"
        if self.skipped == 1:
            first = first.replace(f"{self.skipped_kind}s skipped", f"{self.skipped_kind} skipped")
        if not self.repeats.repeats:
            return [f"{first}; no exact repeats"]
        consequence = (
            f"the repeats are dropped: {self.sentences - self.repeats.repeats} distinct sentences train, each once, "
            "and "
            "no two copies of one sentence are each other's in-batch negatives (--duplicates keep trains them all)"
            if self.repeats_dropped
            else "the repeats are kept (--duplicates keep): copies of one sentence in a batch are each other's "
            "negatives"
        )
        return [first, f"{self.repeats.line()}; {consequence}"]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "repeat_share": round(self.repeats.share, 4)}


def corpus_report(corpus: Corpus, drop: bool) -> tuple[Corpus, CorpusReport]:
    """Count the exact repeats of ``corpus`` and, with ``drop``, keep each sentence's first occurrence only (the
    order otherwise unchanged; a corpus without repeats is returned as it is)."""
    kept, repeats = first_occurrences(corpus.dataset, [TEXT_COLUMN])
    report = CorpusReport(
        corpus.source, len(corpus.dataset), corpus.skipped or 0, corpus.kind, repeats, drop and repeats.repeats > 0
    )
    if report.repeats_dropped:
        corpus = Corpus(corpus.dataset.select(kept.tolist()), corpus.source, corpus.skipped, corpus.kind)
    return corpus, report


@dataclass
class LabelledReport:
    """The figures a run prints and records about its labelled pairs or triplets, before training."""

    source: str
    kind: str  # "pairs" or "triplets"
    rows: int
    anchor_is_positive: int
    negative_is_positive: int
    repeats: RepeatCount

    def lines(self, detail: str = "") -> list[str]:
        first = f"{self.rows} training {self.kind}{detail}"
        notes = [self.repeats.line(self.kind) if self.repeats.repeats else "no exact repeats"]
        if self.anchor_is_positive:
            notes.append(f"{self.anchor_is_positive} whose anchor equals the positive")
        if self.negative_is_positive:
            notes.append(f"{self.negative_is_positive} whose hard negative equals the positive")
        return [f"{first}; {'; '.join(notes)}"]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def labelled_report(table: Dataset, source: str) -> LabelledReport:
    """Count the rows of labelled ``table`` (columns anchor, positive[, negative]) that are not what they claim."""
    names = list(table.column_names)

    def equal(first: str, second: str) -> int:
        count = 0
        for batch in table.with_format("arrow").iter(batch_size=100_000):
            same = pc.equal(
                pc.utf8_trim_whitespace(batch.column(first)), pc.utf8_trim_whitespace(batch.column(second))
            )
            count += pc.sum(pc.fill_null(same, False)).as_py() or 0
        return count

    negative = equal("negative", "positive") if "negative" in names else 0
    _, repeats = first_occurrences(table, names)
    kind = "triplets" if "negative" in names else "pairs"
    return LabelledReport(source, kind, len(table), equal("anchor", "positive"), negative, repeats)
