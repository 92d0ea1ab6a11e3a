"""Any corpus a user has: every format load_corpus reads, the column choice, and one clear error for each bad input."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
import time

import pytest
from datasets import Dataset, DatasetDict, IterableDataset, Value

from st_simcse import DuplicateInputDataset, load_corpus
from st_simcse.hub import hub_reachable

SENTENCES = ["a man plays a guitar", "two dogs run on the beach", "the child eats, then sleeps", 'she said "hi"']


def write_text(path, text: str) -> None:
    data = text.encode("utf-8")
    suffix = path.suffix
    if suffix == ".gz":
        data = gzip.compress(data)
    elif suffix == ".bz2":
        data = bz2.compress(data)
    elif suffix == ".xz":
        data = lzma.compress(data)
    elif suffix == ".zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)


@pytest.mark.parametrize("name", ["corpus.txt", "corpus.txt.gz", "corpus.txt.bz2", "corpus.txt.xz", "corpus.txt.zst"])
def test_plain_text_and_compressed_text(tmp_path, name):
    path = tmp_path / name
    write_text(path, "\n".join([SENTENCES[0], "", "   ", f"  {SENTENCES[1]} ", *SENTENCES[2:]]) + "\n\n")
    corpus = load_corpus(path)
    assert list(corpus.dataset["text"]) == SENTENCES  # blank lines skipped, the rest stripped
    assert corpus.skipped == 3 and corpus.describe() == "4 training sentences (3 blank lines skipped)"


def test_tables_with_one_string_column_need_no_column_name(tmp_path):
    with open(tmp_path / "c.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("id", "sentence"), *enumerate(SENTENCES)])
    (tmp_path / "c.tsv").write_text("id\tsentence\n" + "".join(f"{i}\t{s}\n" for i, s in enumerate(SENTENCES)))
    with open(tmp_path / "c.jsonl", "w") as handle:
        for i, s in enumerate(SENTENCES):
            handle.write(json.dumps({"id": i, "sentence": s}) + "\n")
    (tmp_path / "c.json").write_text(json.dumps([{"id": i, "sentence": s} for i, s in enumerate(SENTENCES)]))
    Dataset.from_dict({"id": list(range(4)), "sentence": SENTENCES}).to_parquet(tmp_path / "c.parquet")
    write_text(tmp_path / "c.jsonl.gz", (tmp_path / "c.jsonl").read_text())
    for name in ("c.csv", "c.tsv", "c.jsonl", "c.json", "c.parquet", "c.jsonl.gz"):
        corpus = load_corpus(tmp_path / name)
        assert list(corpus.dataset["text"]) == SENTENCES, name  # quotes and commas survive
        assert corpus.describe() == "4 training sentences (0 empty values skipped)", name


def test_text_column_is_chosen_or_the_error_lists_the_columns(tmp_path):
    path = tmp_path / "two.csv"
    with open(path, "w", newline="") as handle:
        rows = [("title", "body", "score"), *((f"t{i}", s, i) for i, s in enumerate(SENTENCES)), ("t9", "", 9)]
        csv.writer(handle).writerows(rows)
    with pytest.raises(ValueError, match=r"2 string columns \(columns: title \(.*string\), body .*--text-column NAME"):
        load_corpus(path)
    corpus = load_corpus(path, text_column="body")
    assert list(corpus.dataset["text"]) == SENTENCES and corpus.skipped == 1  # the empty cell
    with pytest.raises(ValueError, match="has no column 'text'; its columns are title"):
        load_corpus(path, text_column="text")
    with pytest.raises(ValueError, match="column 'score' holds int64, not text"):
        load_corpus(path, text_column="score")


def test_saved_datasets_and_their_splits(tmp_path):
    Dataset.from_dict({"text": SENTENCES}).save_to_disk(tmp_path / "one")
    assert list(load_corpus(tmp_path / "one").dataset["text"]) == SENTENCES
    assert load_corpus(tmp_path / "one").describe() == "4 training sentences (0 empty values skipped)"
    splits = DatasetDict({"train": Dataset.from_dict({"text": SENTENCES}), "dev": Dataset.from_dict({"text": ["x"]})})
    splits.save_to_disk(tmp_path / "dict")
    assert len(load_corpus(tmp_path / "dict").dataset) == 4
    assert len(load_corpus(tmp_path / "dict", split="dev").dataset) == 1
    with pytest.raises(ValueError, match=r"holds the splits \['train', 'dev'\], not 'test'"):
        load_corpus(tmp_path / "dict", split="test")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not one written by datasets' save_to_disk"):
        load_corpus(tmp_path / "plain")


def test_hub_dataset_name_and_split(monkeypatch):
    """A hub name reaches ``datasets.load_dataset`` with the split asked for (the hub itself is out of reach here,
    so ``load_dataset`` is replaced by a recorder that serves a small dataset)."""
    import datasets

    from st_simcse.data import readers

    calls = []

    def fake_load_dataset(name, subset=None, *, split, streaming):
        calls.append((name, split, streaming))
        if split == "missing":
            raise ValueError("Unknown split \"missing\". Should be one of ['train', 'validation'].")
        return Dataset.from_dict({"id": list(range(5)), "sentence": [*SENTENCES, " "]})

    monkeypatch.setattr(readers, "check_hub_name", lambda name, what: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    corpus = load_corpus("someone/corpus", split="validation")
    assert calls == [("someone/corpus", "validation", False)]
    assert list(corpus.dataset["text"]) == SENTENCES and corpus.describe().startswith("4 training sentences (1 ")
    with pytest.raises(ValueError, match=r"someone/corpus: could not be loaded as a hub dataset, split 'missing'"):
        load_corpus("someone/corpus", split="missing")


def test_unreadable_inputs_get_one_clear_error(tmp_path):
    fake = tmp_path / "corpus.txt.gz"
    fake.write_text("plain text, not gzip\n")
    with pytest.raises(ValueError, match=r"corpus.txt.gz: named .gz but not gzip-compressed \(it starts with b'pl"):
        load_corpus(fake)
    latin = tmp_path / "latin.txt.xz"
    write_text(latin, "")
    latin.write_bytes(lzma.compress(b"fine\nstill fine\ncaf\xe9\n"))
    with pytest.raises(ValueError, match=r"latin.txt.xz, line 3: not valid UTF-8"):
        load_corpus(latin)
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"weights.bin, line 2: not valid UTF-8 .* Is it a text file\?"):
        load_corpus(binary)
    with pytest.raises(FileNotFoundError, match="Training file not found: .*missing.txt"):
        load_corpus(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="Training file not found"):
        load_corpus("data/missing.jsonl")  # a data-file suffix: a local path, never a hub name
    broken = tmp_path / "broken.csv"
    broken.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(ValueError, match=r"broken.csv, line 3: 3 fields where the header line has 2 \(a, b\)"):
        load_corpus(broken)
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match=r"holds no sentences \(2 blank lines\)"):
        load_corpus(tmp_path / "empty.txt")


def test_hub_name_out_of_reach_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the hub is unreachable
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub_reachable.cache_clear()
    started = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="'someone/corpus': not a local path, and the Hugging Face hub cannot"):
            load_corpus("someone/corpus")
    finally:
        hub_reachable.cache_clear()
    assert time.perf_counter() - started < 5


def test_streaming_corpus_has_features_for_the_trainer(tmp_path):
    path = tmp_path / "corpus.txt.gz"
    write_text(path, "\n".join([SENTENCES[0], "", *SENTENCES[1:]]) + "\n")
    corpus = load_corpus(path, streaming=True)
    assert corpus.streaming and corpus.skipped is None
    assert corpus.dataset.features == {"text": Value("string")}
    assert [row["text"] for row in corpus.dataset] == SENTENCES
    once = DuplicateInputDataset.from_corpus(path, streaming=True, duplicate_in_loss=True).to_hf_dataset()
    pairs = DuplicateInputDataset.from_corpus(path, streaming=True).to_hf_dataset()
    assert isinstance(once, IterableDataset) and once.features == {"anchor": Value("string")}
    assert pairs.features == {"anchor": Value("string"), "positive": Value("string")}
    assert next(iter(pairs)) == {"anchor": SENTENCES[0], "positive": SENTENCES[0]}
    with pytest.raises(TypeError, match="streams its corpus, so it has no length"):
        len(DuplicateInputDataset.from_corpus(path, streaming=True))


def test_adapter_reads_any_corpus_and_refuses_too_few_sentences(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"body": s, "n": 1}) + "\n" for s in SENTENCES))
    dataset = DuplicateInputDataset.from_corpus(path)
    assert [example.texts for example in dataset] == [[s, s] for s in SENTENCES]
    assert dataset.describe() == "4 training sentences (0 empty values skipped)"
    assert dataset.to_hf_dataset()["positive"] == SENTENCES
    (tmp_path / "one.txt").write_text("one very long line " * 1000 + "\n")
    with pytest.raises(ValueError, match="got 1 sentence"):
        DuplicateInputDataset.from_corpus(tmp_path / "one.txt")
