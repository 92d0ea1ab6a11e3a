"""Supervised SimCSE on the user's own labelled data: pairs or triplets in any format and with any column names
(load_labelled, the recipe's --train-file / --columns), and hard negatives mined with the start model through
sentence-transformers' mine_hard_negatives."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import sys

import pytest
from conftest import REPO, fails_before_loading
from datasets import Dataset, DatasetDict

import st_simcse
from st_simcse import PairDataset, TripletDataset, build_model, load_labelled, mine_hard_negatives

sys.path.insert(0, str(REPO / "recipes"))
import sup_nli  # noqa: E402

ROWS = [
    ("A man, smiling.", "A man smiles.", "Nobody smiles."),
    ("Two dogs run in a field.", "Animals are outside.", "The dogs sleep indoors."),
    ("A child plays the piano.", "Someone makes music.", "The child is asleep."),
]


def write(path, rows, header, kind: str):
    """``rows`` under the column names ``header`` as a ``kind`` file (csv, tsv, jsonl, json, parquet, csv.gz)."""
    records = [dict(zip(header, row)) for row in rows]
    if kind in ("csv", "csv.gz", "tsv"):
        opener = gzip.open if kind.endswith(".gz") else open
        with opener(path, "wt", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t" if kind == "tsv" else ",")
            writer.writerows([header, *rows])
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    elif kind == "json":
        path.write_text(json.dumps(records))
    elif kind == "parquet":
        Dataset.from_list(records).to_parquet(str(path))
    return path


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "json", "parquet", "csv.gz"])
@pytest.mark.parametrize("header", [("sent0", "sent1", "hard_neg"), ("anchor", "positive", "negative")])
def test_every_format_and_both_namings_give_the_same_triplets(tmp_path, kind, header):
    path = write(tmp_path / f"train.{kind}", ROWS, header, kind)
    dataset = load_labelled(path)
    assert isinstance(dataset, TripletDataset) and dataset.rows == ROWS
    assert dataset.to_hf_dataset().column_names == ["anchor", "positive", "negative"]
    assert [example.texts for example in dataset.__getitems__([2, 0])] == [list(ROWS[2]), list(ROWS[0])]


def test_pairs_other_names_columns_option_and_saved_folders(tmp_path):
    path = write(tmp_path / "qa.jsonl", [(a, p, 7) for a, p, _ in ROWS], ("question", "answer", "id"), "jsonl")
    with pytest.raises(ValueError, match=r"none of them sentence-transformers' \(anchor, positive.*--columns"):
        load_labelled(path)
    pairs = load_labelled(path, columns=["question", "answer"])
    assert isinstance(pairs, PairDataset) and pairs.rows == [row[:2] for row in ROWS]
    swapped = load_labelled(path, columns=["answer", "question"])
    assert swapped.rows == [(p, a) for a, p, _ in ROWS]
    with pytest.raises(ValueError, match=r"qa.jsonl: column 'id' holds int64, not text"):
        load_labelled(path, columns=["question", "answer", "id"])
    with pytest.raises(ValueError, match=r"has no column\(s\) \['query'\]"):
        load_labelled(path, columns=["query", "answer"])
    folder = tmp_path / "saved"
    DatasetDict({"dev": Dataset.from_list([dict(zip(("anchor", "positive"), r[:2])) for r in ROWS])}).save_to_disk(
        str(folder)
    )
    assert load_labelled(folder, split="dev").rows == [row[:2] for row in ROWS]
    triplets = write(tmp_path / "t.csv", ROWS, ("anchor", "positive", "negative"), "csv")
    assert PairDataset.from_corpus(triplets).rows == [row[:2] for row in ROWS]
    with pytest.raises(ValueError, match="no hard-negative column"):
        TripletDataset.from_corpus(path, columns=["question", "answer"])


def test_hub_dataset_with_subset_and_split(monkeypatch):
    """A hub name reaches datasets with its subset and split (the hub is out of reach here: a recorder serves)."""
    import datasets

    from st_simcse.data import readers

    calls = []

    def fake_load_dataset(name, subset=None, *, split, streaming):
        calls.append((name, subset, split))
        return Dataset.from_list([dict(zip(("anchor", "positive", "negative"), row)) for row in ROWS])

    monkeypatch.setattr(readers, "check_hub_name", lambda name, what: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset = load_labelled("sentence-transformers/all-nli", split="dev", subset="triplet")
    assert calls == [("sentence-transformers/all-nli", "triplet", "dev")] and dataset.rows == ROWS


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("sent0,sent1,hard_neg\na,b,c\nd,,f\n", "t.csv", r"t.csv, row 2 \(line 3\): column 'sent1' is empty"),
        ("anchor,positive\na,b\n ,x\n", "p.csv", r"p.csv, row 2 \(line 3\): column 'anchor' is empty"),
        ('{"anchor": "a", "positive": null}\n', "p.jsonl", r"p.jsonl, row 1: column 'positive' is empty"),
        ("sent0,sent1,hard_neg\n", "h.csv", r"h.csv: no rows \(an empty file, or a header line alone\)"),
        ('{"anchor": "a", "positive": "b"}\n', "j.csv", r"j.csv: named .csv but its text starts with '\{', as JSON"),
        ("anchor;positive\na;b\n", "s.csv", r"columns \['anchor;positive'\] \(one column: is the file separated"),
    ],
)
def test_bad_files_name_the_file_row_and_fix(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_labelled(path)


def test_a_parquet_file_under_another_name(tmp_path):
    parquet = write(tmp_path / "train.parquet", ROWS, ("anchor", "positive", "negative"), "parquet")
    disguised = tmp_path / "train.csv"
    disguised.write_bytes(parquet.read_bytes())
    with pytest.raises(ValueError, match=r"train.csv: a Parquet file named .csv; rename it to end in .parquet"):
        load_labelled(disguised)
    compressed = tmp_path / "train.csv.gz"
    compressed.write_bytes(bz2.compress(b"anchor,positive\na,b\n"))
    with pytest.raises(ValueError, match=r"train.csv.gz: named .gz but not gzip-compressed"):
        load_labelled(compressed)


def test_the_papers_csv_reads_as_before(nli_triplets):
    """The paper's nli_for_simcse.csv layout through the new reader: every row as the csv module reads it."""
    with open(nli_triplets, newline="", encoding="utf-8") as handle:
        expected = [(row["sent0"], row["sent1"], row["hard_neg"]) for row in csv.DictReader(handle)]
    dataset = TripletDataset.from_nli_csv(nli_triplets)
    assert len(dataset) == 6339 and dataset.rows == expected


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--columns", "question"], "--columns question: name the anchor, the positive"),
        (["--columns", "question,reply"], "has no column(s) ['reply']"),
        (["--mining-relative-margin", "1.5"], "--mining-relative-margin must be in [0, 1)"),
        (["--mine-hard-negatives", "--columns", "question,answer,wrong"], "column 'wrong' holds int64"),
    ],
)
def test_recipe_refuses_bad_labelled_input_before_loading(
    tmp_path, monkeypatch, capsys, senteval_dir, arguments, message
):
    rows = [(a, p, i) for i, (a, p, _) in enumerate(ROWS * 50)]
    path = write(tmp_path / "qa.jsonl", rows, ("question", "answer", "wrong"), "jsonl")
    full = ["--quick", "--train-file", str(path), *arguments]
    fails_before_loading(monkeypatch, capsys, sup_nli, full, message, tmp_path / "o")


def test_recipe_refuses_to_mine_where_negatives_exist(tmp_path, monkeypatch, capsys, senteval_dir, nli_triplets):
    arguments = ["--quick", "--train-file", nli_triplets, "--mine-hard-negatives"]
    fails_before_loading(monkeypatch, capsys, sup_nli, arguments, "already has hard negatives", tmp_path / "o")


@pytest.fixture(scope="module")
def nli_pairs(nli_triplets) -> PairDataset:
    return PairDataset(PairDataset.from_corpus(nli_triplets).to_hf_dataset().select(range(300)))


def test_mining_is_sentence_transformers_miner_with_the_margin_kept(splade_tiny, nli_pairs):
    from sentence_transformers.util import mine_hard_negatives as st_miner

    model = build_model(splade_tiny, pooling="mean", max_seq_length=32)
    triplets = mine_hard_negatives(nli_pairs, model, relative_margin=0.05, range_max=100, batch_size=64)
    direct = st_miner(
        nli_pairs.to_hf_dataset(), model, relative_margin=0.05, range_max=100, num_negatives=1, verbose=False
    )
    assert triplets.rows == [(r["anchor"], r["positive"], r["negative"]) for r in direct]
    assert 0 < len(triplets) <= len(nli_pairs)
    assert triplets.mining["pairs"] == 300 and triplets.mining["triplets"] == len(triplets)
    assert triplets.mining["pairs_dropped"] == 300 - len(triplets) and triplets.mining["relative_margin"] == 0.05
    # Every negative clears the margin (recomputed here from the model's embeddings), and is not the positive.
    anchors, positives, negatives = zip(*triplets.rows)
    a, p, n = (model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True) for texts in
               (anchors, positives, negatives))  # fmt: skip
    positive, negative = (a * p).sum(1), (a * n).sum(1)
    assert bool((negative <= positive - 0.05 * positive.abs() + 1e-5).all())
    assert all(neg != pos for pos, neg in zip(positives, negatives))


def test_a_resumed_run_trains_on_the_triplets_it_mined(tmp_path, monkeypatch, nli_pairs, splade_tiny):
    """The triplets are mined once and kept in the output folder; a resume reads them instead of mining again."""
    args = sup_nli.parse_args(["--quick", "--mine-hard-negatives", "--output-dir", str(tmp_path)])
    model = build_model(splade_tiny, pooling="cls", max_seq_length=32, mlp_in_model=True)
    first = sup_nli.mined(nli_pairs, model, args)
    assert (tmp_path / sup_nli.MINED_FILE).is_file()
    assert len(sup_nli.mining_model(model, args)) == 2  # mined without the recipe's (random) MLP
    monkeypatch.setattr(st_simcse, "mine_hard_negatives", lambda *a, **k: pytest.fail("mined again on resume"))
    args.resume = True
    again = sup_nli.mined(nli_pairs, model, args)
    assert again.rows == first.rows and again.mining == first.mining
