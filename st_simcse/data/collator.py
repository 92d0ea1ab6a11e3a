"""A data collator for the Trainer that tokenizes each distinct column of a batch once: unsupervised SimCSE's
(s, s) pairs cost one tokenization instead of two."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator


@dataclass
class SimCSEDataCollator(SentenceTransformerDataCollator):
    """The sentence-transformers data collator, except that a column whose texts equal an earlier column's in the
    same batch is tokenized once: for unsupervised SimCSE's (s, s) pairs that halves the tokenization, which on
    a GPU is a noticeable share of a step. The duplicate columns share the same tensors, and SimCSELoss still
    embeds them as separate rows with separate dropout masks.

    Pass it to the Trainer: ``SentenceTransformerTrainer(..., data_collator=SimCSEDataCollator(model.preprocess))``.

    ``drop_repeats=True`` also leaves out every example whose texts repeat an earlier example of the same batch, so
    that two copies of one sentence are never each other's in-batch negatives (for a stream, which cannot be
    de-duplicated before training; the batch is then smaller by the repeats).
    """

    drop_repeats: bool = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if self.drop_repeats:
            seen: set[tuple] = set()
            kept = []
            for feature in features:
                texts = tuple(value for key, value in feature.items() if isinstance(value, str))
                if texts not in seen:
                    seen.add(texts)
                    kept.append(feature)
            features = kept
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
