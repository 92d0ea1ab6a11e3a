"""The user's own yardstick: scored pairs from any format and score range, judged as sentence-transformers'
EmbeddingSimilarityEvaluator judges them."""

from __future__ import annotations

import csv
import json

import pytest
from datasets import Dataset
from scipy.stats import spearmanr
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from st_simcse import scored_pairs_evaluator
from st_simcse.evaluation.pairs import load_scored_pairs

PAIRS = [
    ("a man plays a guitar", "a man plays the guitar", 4.8),
    ("a dog runs", "a dog is running in the park", 3.9),
    ("two children eat food", "a woman sits on the beach", 0.2),
    ("the red car drives", "a blue car drives on the street", 2.5),
    ("a cat sits", "the water is dark", 0.0),
    ("people walk on the street", "two people are walking", 3.1),
]


def write(path, pairs, scale=1.0):
    rows = [{"sentence1": a, "sentence2": b, "score": score * scale} for a, b, score in pairs]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["sentence1", "sentence2", "score"], dialect="excel")
            if path.suffix == ".tsv":
                writer = csv.DictWriter(handle, fieldnames=["sentence1", "sentence2", "score"], delimiter="\t")
            writer.writeheader()
            writer.writerows(rows)


@pytest.mark.parametrize("name", ["dev.csv", "dev.tsv", "dev.jsonl"])
def test_formats_and_any_score_range_give_the_same_spearman(tmp_path, tiny_model, name):
    path, rescaled = tmp_path / name, tmp_path / f"x10-{name}"
    write(path, PAIRS)
    write(rescaled, PAIRS, scale=10.0)  # 0-50 instead of 0-5: Spearman depends on the order only
    results = scored_pairs_evaluator(path)(tiny_model)
    assert results["dev_avg"] == pytest.approx(scored_pairs_evaluator(rescaled)(tiny_model)["dev_avg"])
    # The same number as sentence-transformers' own evaluator, and as scipy on the cosines.
    a, b, scores = zip(*PAIRS)
    plain = EmbeddingSimilarityEvaluator(list(a), list(b), list(scores), main_similarity="cosine")(tiny_model)
    assert results["dev_spearman_cosine"] == pytest.approx(plain["spearman_cosine"], abs=1e-6)
    embeddings = tiny_model.encode([*a, *b], normalize_embeddings=True)
    cosines = (embeddings[: len(a)] * embeddings[len(a) :]).sum(1)
    assert results["dev_avg"] == pytest.approx(spearmanr(cosines, scores).statistic, abs=1e-6)


def test_saved_dataset_folder(tmp_path):
    a, b, scores = zip(*PAIRS)
    Dataset.from_dict({"sentence1": a, "sentence2": b, "score": scores}).save_to_disk(tmp_path / "pairs")
    data = load_scored_pairs(tmp_path / "pairs", "dev")
    assert data.sentences1 == list(a) and data.scores == list(scores)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("s1,s2,score\na,b,1\n", r"no column\(s\) \['sentence1', 'sentence2'\]; its columns are \['s1', 's2'"),
        ("sentence1,sentence2,score\na,b,high\nc,d,1\n", "row 1: score 'high' is not a number"),
        ("sentence1,sentence2,score\na,,1\nc,d,2\n", "row 1: sentence2 is ''; every pair needs two sentences"),
        ("sentence1,sentence2,score\na,b,1\nc,d,1\n", "2 pair.s. with 1 distinct score.s.; a Spearman correlation"),
    ],
)
def test_bad_pairs_files(tmp_path, content, message):
    path = tmp_path / "dev.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_scored_pairs(path, "dev")


def test_missing_pairs_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="--dev-file not found: .*nope.csv"):
        load_scored_pairs(tmp_path / "nope.csv", "dev")


@pytest.mark.parametrize(
    ("name", "content", "messages"),
    [
        ("dev.csv", "sentence1,sentence2,score\n", ["has a header line ('sentence1,sentence2,score') but no pairs"]),
        ("dev.tsv", "sentence1\tsentence2\tscore\n\n", ["but no pairs", "a score separated by tabs"]),
        ("dev.csv", "", ["is empty: write a header line sentence1, sentence2, score"]),
        (
            "dev.csv",
            "sentence1;sentence2;score\na man;a woman;1\nb;c;2\n",
            [
                "its lines look separated by ';' (first line 'sentence1;sentence2;score'), but a .csv file is read "
                "with commas, so it reads as one column, 'sentence1;sentence2;score', instead of the columns",
                "Fix: separate the fields with commas",
            ],
        ),
        # A comma inside a sentence makes the pandas parser fail instead of reading one column.
        ("dev.csv", "sentence1;sentence2;score\na man, tall;a woman;1\nb;c;2\n", ["look separated by ';'"]),
        (
            "dev.csv",
            "sentence1\tsentence2\tscore\na\tb\t1\nc\td\t2\n",
            ["look separated by tabs", "name the file .tsv (tab-separated), or separate the fields with commas"],
        ),
        ("dev.tsv", "sentence1,sentence2,score\na,b,1\nc,d,2\n", ["look separated by commas", "name the file .csv"]),
        ("dev.txt", "sentence1\tsentence2\tscore\na\tb\t1\nc\td\t2\n", ["is read as plain text", ".tsv"]),
    ],
)
def test_almost_right_pairs_files_say_what_is_wrong(tmp_path, name, content, messages):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError) as raised:
        load_scored_pairs(path, "dev")
    assert str(raised.value).startswith(f"--dev-file {path}")
    for message in messages:
        assert message in str(raised.value), str(raised.value)


def test_compressed_semicolon_file_says_what_is_wrong(tmp_path):
    import gzip

    path = tmp_path / "dev.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("sentence1;sentence2;score\na;b;1\nc;d;2\n")
    with pytest.raises(ValueError, match="look separated by ';'.* but a .csv file is read with commas"):
        load_scored_pairs(path, "dev")
