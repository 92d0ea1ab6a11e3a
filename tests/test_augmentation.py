"""The discrete views of the positive (paper Table 1, ESimCSE's word repetition): exact behaviour on hand-made
sentences, and reproducibility under a seed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from st_simcse import DuplicateInputDataset
from st_simcse.data.augmentation import Crop, DeleteOneWord, WordDeletion, WordRepetition, make_augmentation

TEN = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"


def _is_subsequence(part: list[str], whole: list[str]) -> bool:
    remaining = iter(whole)
    return all(word in remaining for word in part)


@pytest.mark.parametrize("fraction, kept", [(0.1, 9), (0.2, 8), (0.3, 7), (0.0, 10)])
def test_crop_keeps_one_contiguous_span_of_the_stated_length(fraction, kept):
    words = TEN.split()
    starts = set()
    for seed in range(200):
        out = Crop(fraction)(TEN, random.Random(seed)).split()
        assert len(out) == kept
        start = words.index(out[0])
        assert out == words[start : start + kept]
        starts.add(start)
    assert starts == set(range(10 - kept + 1))  # every start position occurs


def test_crop_never_empties_a_sentence():
    assert Crop(0.3)("alone", random.Random(0)) == "alone"
    assert len(Crop(0.9)("a b c", random.Random(0)).split()) == 1


@pytest.mark.parametrize("fraction, deleted", [(0.1, 1), (0.2, 2), (0.3, 3)])
def test_word_deletion_deletes_the_stated_count_and_keeps_the_order(fraction, deleted):
    words = TEN.split()
    for seed in range(100):
        out = WordDeletion(fraction)(TEN, random.Random(seed)).split()
        assert len(out) == 10 - deleted
        assert _is_subsequence(out, words)
    assert WordDeletion(0.5)("one", random.Random(0)) == "one"
    assert WordDeletion(0.9)("a b", random.Random(0)).split() in (["a"], ["b"])


def test_delete_one_word():
    words = "the cat sat on mats".split()
    removed = Counter()
    for seed in range(300):
        out = DeleteOneWord()(" ".join(words), random.Random(seed)).split()
        assert len(out) == 4 and _is_subsequence(out, words)
        removed[next(w for w in words if w not in out)] += 1
    assert set(removed) == set(words)  # each word is sometimes the one deleted
    assert DeleteOneWord()("single", random.Random(0)) == "single"


def test_word_repetition_follows_esimcse_rule():
    words = TEN.split()
    counts = Counter()
    for seed in range(400):
        out = WordRepetition(0.32)(TEN, random.Random(seed)).split()
        # Each word stays in place and appears once or twice in a row.
        collapsed = [w for i, w in enumerate(out) if i == 0 or out[i - 1] != w]
        assert collapsed == words
        assert all(c in (1, 2) for c in Counter(out).values())
        counts[len(out) - len(words)] += 1
    # k is uniform over 0 .. max(2, int(0.32 * 10)) = 0 .. 3.
    assert set(counts) == {0, 1, 2, 3}
    assert all(60 < counts[k] < 140 for k in range(4))
    # Short sentences: the upper bound is max(2, ...), capped at the number of words.
    assert {len(WordRepetition(0.32)("a b", random.Random(s)).split()) for s in range(100)} == {2, 3, 4}


def test_dataset_augments_only_the_positive_reproducibly():
    sentences = [f"sentence number {i} has five words extra" for i in range(50)]
    first = DuplicateInputDataset(sentences, augmentation=WordDeletion(0.3), seed=7)
    again = DuplicateInputDataset(sentences, augmentation=WordDeletion(0.3), seed=7)
    other = DuplicateInputDataset(sentences, augmentation=WordDeletion(0.3), seed=8)
    # Reading order does not matter: example i draws from its own seeded generator.
    backwards = {i: again[i].texts for i in reversed(range(50))}
    for i in range(50):
        anchor, positive = first[i].texts
        assert anchor == sentences[i] and positive != anchor
        assert backwards[i] == [anchor, positive]
    assert any(first[i].texts[1] != other[i].texts[1] for i in range(50))
    hf = first.to_hf_dataset()
    assert hf["positive"] == [first[i].texts[1] for i in range(50)]


def test_bad_augmentation_arguments_are_refused():
    with pytest.raises(ValueError, match="duplicate_in_loss"):
        DuplicateInputDataset(["a b"], duplicate_in_loss=True, augmentation=DeleteOneWord())
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Crop(1.5)
    with pytest.raises(ValueError, match="Unknown augmentation"):
        make_augmentation("shuffle")
    with pytest.raises(ValueError, match="takes no rate"):
        make_augmentation("delete_one_word", 0.1)
    assert make_augmentation("crop") == Crop(0.1) and make_augmentation("none") is None
    assert make_augmentation("word_repetition") == WordRepetition(0.32)
