"""What users really bring: scraped corpora that repeat themselves, labelled files with broken rows, malformed json
and csv, byte-order marks, datasets' own Arrow files, other column names; and what every refusal costs."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from conftest import REPO, fails_before_loading, needs_testbed, sentences
from datasets import Dataset

from st_simcse import load_corpus, load_labelled
from st_simcse.data.report import first_occurrences
from st_simcse.evaluation.pairs import load_scored_pairs

sys.path.insert(0, str(REPO / "recipes"))
import sup_nli  # noqa: E402
import unsup_wiki  # noqa: E402

BOILERPLATE = "Click here to subscribe to our newsletter and never miss a story"


def half_boilerplate(path, count: int = 2000) -> list[str]:
    lines = sentences(count // 2, seed=3) + [BOILERPLATE] * (count // 2)
    random.Random(0).shuffle(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def test_repeats_are_counted_and_dropped_before_training(tmp_path):
    corpus = tmp_path / "scraped.txt"
    lines = half_boilerplate(corpus)
    distinct = list(dict.fromkeys(lines))
    dataset = unsup_wiki.training_data(unsup_wiki.parse_args(["--quick", "--train-file", str(corpus)]))
    assert dataset.sentences == distinct  # first occurrences, in their order
    report = dataset.record["report"]
    assert report["sentences"] == 2000 and report["repeats"]["repeats"] == 2000 - len(distinct)
    assert report["repeats"]["most_repeated"] == BOILERPLATE and report["repeats"]["most_repeated_count"] == 1000
    text = "\n".join(dataset.report)
    assert f"{2000 - len(distinct)} of the 2000 sentences" in text and "the repeats are dropped" in text
    assert f"1000 times: {BOILERPLATE[:57]!r}"[:40] in text
    kept = unsup_wiki.training_data(
        unsup_wiki.parse_args(["--quick", "--train-file", str(corpus), "--duplicates", "keep"])
    )
    assert len(kept) == 2000 and "the repeats are kept" in "\n".join(kept.report)


def test_a_corpus_without_repeats_is_trained_as_it_is(tmp_path):
    corpus = tmp_path / "clean.txt"
    corpus.write_text("\n".join(dict.fromkeys(sentences(300))) + "\n", encoding="utf-8")
    dataset = unsup_wiki.training_data(unsup_wiki.parse_args(["--quick", "--train-file", str(corpus)]))
    assert dataset.report[0].endswith("; no exact repeats") and len(dataset) == 300
    assert dataset.texts._indices is None  # not a selection of rows: the memory-mapped table itself


def test_repeats_are_found_exactly_whatever_the_hashes():
    rows = Dataset.from_dict({"a": ["x", "y", "x", "x", "z"], "b": ["1", "1", "1", "2", "1"]})
    kept, count = first_occurrences(rows, ["a", "b"])
    assert kept.tolist() == [0, 1, 3, 4] and count.repeats == 1 and count.most_repeated == "x | 1"


def labelled_file(path, rows: list[tuple[str, ...]], header: str = "sent0,sent1,hard_neg") -> str:
    path.write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n", encoding="utf-8")
    return str(path)


@needs_testbed
def test_labelled_rows_that_are_not_pairs_are_counted_warned_or_refused(tmp_path, monkeypatch, capsys):
    texts = sentences(200, seed=5)
    some = labelled_file(
        tmp_path / "some.csv",
        [(a, a if i < 20 else b) for i, (a, b) in enumerate(zip(texts, texts[1:]))],
        "sent0,sent1",
    )
    dataset = sup_nli.training_data(sup_nli.parse_args(["--quick", "--train-file", some, "--batch-size", "16"]))
    assert dataset.record["report"]["anchor_is_positive"] == 20
    assert any(line.startswith("warning: in 20 rows the anchor equals the positive") for line in dataset.report)
    most = labelled_file(tmp_path / "most.csv", [(a, a) for a in texts], "query,passage")
    arguments = ["--quick", "--train-file", most, "--columns", "query,passage"]
    fails_before_loading(
        monkeypatch, capsys, sup_nli, arguments, "the anchor equals the positive in 200 of 200", tmp_path / "o"
    )
    repeated = ["--quick", "--train-file", most, "--columns", "query,query"]
    fails_before_loading(
        monkeypatch, capsys, sup_nli, repeated, "--columns query,query names the column query twice", tmp_path / "o"
    )


@needs_testbed
def test_empty_negatives_are_counted_with_the_hint_to_train_pairs(tmp_path, monkeypatch, capsys):
    rows = [(a, b, "" if i % 4 else c) for i, (a, b, c) in enumerate(zip(*[iter(sentences(300, seed=2))] * 3))]
    path = labelled_file(tmp_path / "gaps.csv", rows)
    with pytest.raises(
        ValueError, match=r"row 2 \(line 3\): column 'hard_neg' is empty \(75 of 100 rows are\).*--columns sent0,sent1"
    ):
        load_labelled(path)
    message = "is empty (75 of 100 rows are); every triplet needs a hard negative. To train on the (anchor, positive)"
    fails_before_loading(monkeypatch, capsys, sup_nli, ["--quick", "--train-file", path], message, tmp_path / "o")


def test_a_malformed_jsonl_names_its_own_line_and_nothing_else(tmp_path, capfd):
    path = tmp_path / "corpus.jsonl"
    records = [json.dumps({"text": text}) for text in sentences(4000, seed=1)]
    records[2999] = '{"text": "an unterminated string}'
    path.write_text("\n".join(records) + "\n", encoding="utf-8")
    capfd.readouterr()
    with pytest.raises(ValueError) as raised:
        load_corpus(path)
    assert str(raised.value).startswith(f"{path}, line 3000: not valid JSON (Unterminated string starting at")
    assert capfd.readouterr().err == ""  # no stray "Failed to load JSON" line before the error
    records[2999] = json.dumps({"text": 7})
    path.write_text("\n".join(records) + "\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"line 3000: field 'text' holds a number, where the lines above hold a string"
    ):
        load_corpus(path)


def test_a_malformed_dev_csv_is_one_line_naming_its_line(tmp_path, monkeypatch, capsys, train_40k, senteval_dir):
    dev = tmp_path / "dev.csv"
    dev.write_text("sentence1,sentence2,score\na,b,1\nc,d,2,extra\ne,f,3\n", encoding="utf-8")
    arguments = ["--quick", "--train-file", train_40k, "--dev-file", str(dev)]
    fails_before_loading(
        monkeypatch, capsys, unsup_wiki, arguments, "dev.csv, line 3: 4 fields where the header", tmp_path / "o"
    )


@needs_testbed
def test_other_column_names_for_dev_and_test_pairs(tmp_path):
    pairs = tmp_path / "qrels.jsonl"
    pairs.write_text("".join(json.dumps({"q": f"q {i}", "p": f"p {i}", "label": i % 3}) + "\n" for i in range(9)))
    data = load_scored_pairs(pairs, "dev", columns=["q", "p", "label"])
    assert data.sentences1[4] == "q 4" and data.scores[:3] == [0.0, 1.0, 2.0]
    with pytest.raises(
        ValueError, match=r"no column\(s\) \['sentence1', 'sentence2', 'score'\].*--dev-columns S1,S2,SCORE"
    ):
        load_scored_pairs(pairs, "dev")
    args = unsup_wiki.parse_args(["--quick", "--dev-file", str(pairs), "--dev-columns", "q,p,label"])
    assert unsup_wiki.check(args).dev_columns == ["q", "p", "label"]


def test_a_byte_order_mark_is_not_part_of_the_first_sentence(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufefffirst sentence\nsecond sentence\n".encode())
    assert list(load_corpus(path).dataset["text"]) == ["first sentence", "second sentence"]


def test_an_arrow_file_that_datasets_wrote_is_read_as_arrow(tmp_path):
    Dataset.from_dict({"text": sentences(5), "id": list(range(5))}).save_to_disk(tmp_path / "saved")
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    assert list(load_corpus(arrow, text_column="text").dataset["text"]) == sentences(5)


def test_resume_needs_a_run(tmp_path, monkeypatch, capsys, train_40k):
    arguments = ["--quick", "--resume", "--train-file", train_40k]
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, "holds no run to resume", tmp_path / "NOPE")


PROBE = """
import os, runpy, sys
target, *arguments = sys.argv[1:]
sys.argv = [target, *arguments]
try:
    if target.endswith(".py"):
        sys.path.insert(0, os.path.dirname(target))
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
except SystemExit as exited:
    print(exited.code, [m for m in ("torch", "transformers", "sentence_transformers", "datasets") if m in sys.modules])
"""
UNSUP, SUP = str(REPO / "recipes" / "unsup_wiki.py"), str(REPO / "recipes" / "sup_nli.py")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        pytest.param(
            [UNSUP, "--quick", "--train-file", "missing.txt", "--output-dir", "o"],
            "Training file not found",
            marks=needs_testbed,
        ),
        ([SUP, "--quick", "--lr", "-1", "--output-dir", "o"], "--lr must be positive"),
        pytest.param(
            [UNSUP, "--quick", "--report-to", "nope", "--output-dir", "o"],
            "no tracker called nope",
            marks=needs_testbed,
        ),
        ([UNSUP, "--quick", "--resume", "--output-dir", "nope"], "holds no run to resume"),
        (["st_simcse.evaluate", "missing-folder/", "--senteval-dir", "x"], "MODEL missing-folder/: no such folder"),
    ],
)
def test_a_refusal_imports_no_heavy_library(tmp_path, command, message):
    """Arguments and files that need no model are refused before torch, transformers or datasets load (their imports
    made every refusal take 6-12 s): the process that refuses never imported them."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *command], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.stdout.strip() == "2 []", result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and message in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # nothing written
