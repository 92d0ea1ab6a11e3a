"""Discrete augmentations of the positive copy of a sentence: the paper's Table 1 (crop, word deletion, delete one
word) and ESimCSE's word repetition. Unsupervised SimCSE's own choice is none: dropout alone makes the positive.

Every augmentation works on whitespace-separated words and draws from the ``random.Random`` it is given, so a
dataset that seeds one per example (:class:`st_simcse.DuplicateInputDataset`) is reproducible and independent of
the order in which examples are read.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Crop:
    """Keep one contiguous span of ``round((1 - fraction) * n)`` of the ``n`` words (at least one), starting at a
    uniformly drawn position: the paper's "crop k%" with ``fraction = k / 100``."""

    fraction: float

    def __post_init__(self) -> None:
        _check_fraction("Crop", self.fraction)

    def __call__(self, sentence: str, rng: random.Random) -> str:
        words = sentence.split()
        keep = max(1, round((1 - self.fraction) * len(words)))
        start = rng.randint(0, len(words) - keep)
        return " ".join(words[start : start + keep])


@dataclass(frozen=True)
class WordDeletion:
    """Delete ``round(fraction * n)`` of the ``n`` words, drawn without replacement, keeping at least one word: the
    paper's "word deletion k%"."""

    fraction: float

    def __post_init__(self) -> None:
        _check_fraction("WordDeletion", self.fraction)

    def __call__(self, sentence: str, rng: random.Random) -> str:
        words = sentence.split()
        deleted = set(rng.sample(range(len(words)), min(round(self.fraction * len(words)), len(words) - 1)))
        return " ".join(word for index, word in enumerate(words) if index not in deleted)


@dataclass(frozen=True)
class DeleteOneWord:
    """Delete one uniformly drawn word (a one-word sentence is left as it is): the paper's "delete one word"."""

    def __call__(self, sentence: str, rng: random.Random) -> str:
        words = sentence.split()
        if len(words) < 2:
            return sentence.strip()
        del words[rng.randrange(len(words))]
        return " ".join(words)


@dataclass(frozen=True)
class WordRepetition:
    """ESimCSE's word repetition: draw ``k`` uniformly from ``0 .. max(2, int(rate * n))`` (at most ``n``), then
    repeat ``k`` distinct words drawn without replacement, each right after itself. The positive then differs in
    length from its anchor without changing its meaning. ESimCSE applies the rule to subword tokens; here it works
    on words, so that the augmented positive is plain text. ESimCSE's rate for BERT-base is 0.32."""

    rate: float = 0.32

    def __post_init__(self) -> None:
        _check_fraction("WordRepetition", self.rate)

    def __call__(self, sentence: str, rng: random.Random) -> str:
        words = sentence.split()
        count = min(rng.randint(0, max(2, int(self.rate * len(words)))), len(words))
        repeated = set(rng.sample(range(len(words)), count))
        return " ".join(" ".join([word, word]) if index in repeated else word for index, word in enumerate(words))


Augmentation = Crop | WordDeletion | DeleteOneWord | WordRepetition

# The command-line names, with the rate each takes by default (None: it takes none).
AUGMENTATIONS: dict[str, tuple[type, float | None]] = {
    "crop": (Crop, 0.1),
    "word_deletion": (WordDeletion, 0.1),
    "delete_one_word": (DeleteOneWord, None),
    "word_repetition": (WordRepetition, 0.32),
}


def make_augmentation(name: str, rate: float | None = None) -> Augmentation | None:
    """The augmentation called ``name`` ("none" gives None), with ``rate`` (its default where None)."""
    if name == "none":
        return None
    if name not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {name!r}; choose one of {('none', *AUGMENTATIONS)}.")
    kind, default = AUGMENTATIONS[name]
    if default is None:
        if rate is not None:
            raise ValueError(f"The augmentation {name!r} takes no rate; leave the rate unset.")
        return kind()
    return kind(default if rate is None else rate)


def _check_fraction(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value < 1):
        raise ValueError(f"{name} needs a fraction in [0, 1), got {value!r} (e.g. 0.1 for the paper's 10%).")
