from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from sentence_transformers.sentence_transformer.readers import InputExample
from torch.utils.data import DataLoader

from st_simcse import DuplicateInputDataset, TripletDataset


def test_duplicate_pairs_from_list():
    dataset = DuplicateInputDataset(["a dog runs", "two cats"])
    assert len(dataset) == 2
    example = dataset[1]
    assert isinstance(example, InputExample)
    assert example.texts == ["two cats", "two cats"]
    hf = dataset.to_hf_dataset()
    assert hf.column_names == ["anchor", "positive"]
    assert hf["anchor"] == hf["positive"] == ["a dog runs", "two cats"]


def test_duplicate_pairs_drop_into_a_shuffled_dataloader():
    dataset = DuplicateInputDataset([f"sentence {i}" for i in range(10)])
    loader = DataLoader(dataset, shuffle=True, batch_size=4, collate_fn=lambda batch: batch)
    seen = [example.texts[0] for batch in loader for example in batch]
    assert sorted(seen) == sorted(dataset.sentences)


def test_text_file_skips_and_counts_blank_lines(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("first sentence\n\n  \nsecond sentence\n\n", encoding="utf-8")
    dataset = DuplicateInputDataset.from_text_file(path)
    assert dataset.sentences == ["first sentence", "second sentence"]
    assert dataset.skipped_blank_lines == 3


def test_text_file_reports_bad_utf8_with_line_number(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"good line\nanother\ncaf\xe9 latin-1\n")
    with pytest.raises(ValueError, match=r"line 3: not valid UTF-8"):
        DuplicateInputDataset.from_text_file(path)


def test_empty_and_missing_files(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no sentences"):
        DuplicateInputDataset.from_text_file(path)
    with pytest.raises(FileNotFoundError, match="Training file not found"):
        DuplicateInputDataset.from_text_file(tmp_path / "nope.txt")


def test_from_hf_dataset_column():
    dataset = DuplicateInputDataset.from_hf_dataset(Dataset.from_dict({"text": ["x y", "z"]}))
    assert [example.texts for example in dataset] == [["x y", "x y"], ["z", "z"]]
    with pytest.raises(ValueError, match="no column 'sentence'; its columns are text \\(string\\)"):
        DuplicateInputDataset.from_hf_dataset(Dataset.from_dict({"text": ["x"]}), column="sentence")


def test_empty_sentence_is_rejected():
    with pytest.raises(ValueError, match="Sentence 1 is ''"):
        DuplicateInputDataset(["fine", ""])


def test_nli_csv(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text('sent0,sent1,hard_neg\n"A man, smiling.",A man smiles.,Nobody smiles.\nx,y,z\n', encoding="utf-8")
    dataset = TripletDataset.from_nli_csv(path)
    assert dataset[0].texts == ["A man, smiling.", "A man smiles.", "Nobody smiles."]
    hf = dataset.to_hf_dataset()
    assert hf.column_names == ["anchor", "positive", "negative"]
    assert hf["negative"] == ["Nobody smiles.", "z"]


def test_nli_csv_missing_columns(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text("premise,hypothesis\na,b\n")
    with pytest.raises(ValueError, match=r"columns \['premise', 'hypothesis'\], none of them sentence-transformers'"):
        TripletDataset.from_nli_csv(path)


def test_nli_csv_with_two_columns_gives_positive_pairs(tmp_path):
    from st_simcse import PairDataset

    path = tmp_path / "nli.csv"
    path.write_text("sent0,sent1\nA man smiles.,Someone is happy.\nx,y\n", encoding="utf-8")
    dataset = TripletDataset.from_nli_csv(path)
    assert isinstance(dataset, PairDataset) and len(dataset) == 2
    assert dataset[0].texts == ["A man smiles.", "Someone is happy."]
    assert dataset.to_hf_dataset().column_names == ["anchor", "positive"]


def test_nli_csv_empty_cell(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text("sent0,sent1,hard_neg\na,b,c\nd,,f\n")
    with pytest.raises(ValueError, match=r"row 2 \(line 3\): column 'sent1' is empty"):
        TripletDataset.from_nli_csv(path)


def test_shared_nli_triplets(nli_triplets):
    dataset = TripletDataset.from_nli_csv(nli_triplets)
    assert len(dataset) == 6339


def test_collator_tokenizes_duplicate_columns_once():
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    from st_simcse import SimCSEDataCollator

    calls = []

    def preprocess(inputs, prompt=None, task=None):
        calls.append(list(inputs))
        return {"input_ids": torch.tensor([[len(text), 1] for text in inputs])}

    rows = [{"anchor": s, "positive": s} for s in ["a b", "c d e"]]
    batch = SimCSEDataCollator(preprocess_fn=preprocess)(rows)
    assert calls == [["a b", "c d e"]]
    expected = SentenceTransformerDataCollator(preprocess_fn=preprocess)(rows)
    assert batch.keys() == expected.keys()
    for key in batch:
        assert torch.equal(batch[key], expected[key])

    calls.clear()
    SimCSEDataCollator(preprocess_fn=preprocess)(
        [{"anchor": "a b", "positive": "x"}, {"anchor": "c", "positive": "y"}]
    )
    assert calls == [["a b", "c"], ["x", "y"]]


def test_duplicate_in_loss_gives_one_column():
    dataset = DuplicateInputDataset(["a man plays", "a dog runs"], duplicate_in_loss=True)
    assert dataset[1].texts == ["a dog runs"]
    hf = dataset.to_hf_dataset()
    assert hf.column_names == ["anchor"] and hf["anchor"] == ["a man plays", "a dog runs"]
    assert DuplicateInputDataset(["a man plays", "x"])[0].texts == ["a man plays", "a man plays"]
