"""Every way a run can go wrong before training ends in one ``error:`` line, exit code 2, no traceback, no wait for
the hub, and nothing written: the recipes and the evaluation CLI, in this process (no model is built)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, fails_before_loading

sys.path.insert(0, str(REPO / "recipes"))
import sup_nli  # noqa: E402
import unsup_wiki  # noqa: E402

from st_simcse import evaluate  # noqa: E402
from st_simcse.console import run_cli  # noqa: E402
from st_simcse.evaluation import command  # noqa: E402


def lines(path, count: int, words: str = "a man plays a guitar in the park") -> str:
    path.write_text("".join(f"{words} {i}\n" for i in range(count)))
    return str(path)


def read_only_folder(tmp_path):
    """A folder this process cannot write into: a chmod 555 folder for a normal user, else (root ignores modes) a
    read-only file system of this machine, if it has one."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return folder
    for candidate in ("/proc/sys", "/sys/fs/cgroup"):
        if os.path.isdir(candidate) and not os.access(candidate, os.W_OK):
            return Path(candidate)
    pytest.skip("no folder here is read-only for this process (root, and no read-only file system)")


def test_corpus_smaller_than_one_batch(tmp_path, monkeypatch, capsys, senteval_dir, splade_tiny):
    arguments = ["--quick", "--train-file", lines(tmp_path / "three.txt", 3)]
    message = "has 3 training example(s), fewer than one batch (--batch-size 64)"
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, message, tmp_path / "o")


def test_one_very_long_line(tmp_path, monkeypatch, capsys, senteval_dir, splade_tiny):
    arguments = ["--quick", "--train-file", lines(tmp_path / "long.txt", 1, "word " * 20000)]
    message = "has 1 training example(s), fewer than one batch (--batch-size 64)"
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, message, tmp_path / "o")


def test_supervised_corpus_smaller_than_one_batch(tmp_path, monkeypatch, capsys, senteval_dir, splade_tiny):
    path = tmp_path / "nli.csv"
    path.write_text("sent0,sent1,hard_neg\na,b,c\nd,e,f\n")
    message = "has 2 training example(s), fewer than one batch (--batch-size 128)"
    fails_before_loading(monkeypatch, capsys, sup_nli, ["--quick", "--train-file", str(path)], message, tmp_path / "o")


def test_train_split_is_the_one_read(tmp_path, monkeypatch, capsys, senteval_dir, splade_tiny):
    from datasets import Dataset, DatasetDict

    train = Dataset.from_dict({"text": [f"sentence {i}" for i in range(200)]})
    DatasetDict({"train": train, "dev": Dataset.from_dict({"text": ["a", "b", "c"]})}).save_to_disk(tmp_path / "d")
    capsys.readouterr()  # save_to_disk's progress bar
    arguments = ["--quick", "--train-file", str(tmp_path / "d"), "--train-split", "dev"]
    message = "has 3 training example(s), fewer than one batch"  # the dev split's 3 sentences, not train's 200
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, message, tmp_path / "o")


def test_mistyped_local_model_path_is_not_sent_to_the_hub(tmp_path, monkeypatch, capsys, senteval_dir, train_40k):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "output").mkdir()  # `output/unsup-simcs` is then a local path, even though it is shaped owner/name
    arguments = ["--quick", "--model", "output/unsup-simcs"]
    message = "--model output/unsup-simcs: no such folder"
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, message, tmp_path / "o", seconds=3)


def test_hub_model_out_of_reach(tmp_path, monkeypatch, capsys, senteval_dir, train_40k, hub_unreachable):
    arguments = ["--quick", "--model", "someone/some-model"]
    message = "--model 'someone/some-model': not a local path, and the Hugging Face hub cannot be reached"
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, message, tmp_path / "o", seconds=5)


def test_output_dir_that_is_a_file(tmp_path, monkeypatch, capsys, senteval_dir, train_40k):
    taken = tmp_path / "results.txt"
    taken.write_text("a user's file\n")
    fails_before_loading(monkeypatch, capsys, unsup_wiki, ["--quick"], "is a file, not a folder", taken)
    assert taken.read_text() == "a user's file\n"
    fails_before_loading(monkeypatch, capsys, unsup_wiki, ["--quick"], "which is a file", taken / "run")


def test_output_dir_that_cannot_be_written(tmp_path, monkeypatch, capsys, senteval_dir, train_40k):
    locked = read_only_folder(tmp_path)
    fails_before_loading(monkeypatch, capsys, unsup_wiki, ["--quick"], "cannot be written", locked / "run")


def test_no_dev_set_offline(tmp_path, monkeypatch, capsys, train_40k, splade_tiny, hub_unreachable):
    arguments = ["--model", splade_tiny, "--train-file", train_40k]  # no --senteval-dir, no --dev-file
    message = "No dev set for model selection"
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, message, tmp_path / "o", seconds=5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--dev-file not found"),
        ("s1,s2,label\na,b,1\nc,d,2\n", "no column(s) ['sentence1', 'sentence2', 'score']"),
        ("sentence1,sentence2,score\na,b,x\nc,d,2\n", "row 1: score 'x' is not a number"),
    ],
)
def test_bad_dev_file(tmp_path, monkeypatch, capsys, senteval_dir, train_40k, content, message):
    path = tmp_path / "dev.csv"
    if content is not None:
        path.write_text(content)
    for option in ("--dev-file", "--test-file"):
        expected = message.replace("--dev-file", option)
        arguments = ["--quick", option, str(path)]
        fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, expected, tmp_path / "o")


def test_corpus_errors(tmp_path, monkeypatch, capsys, senteval_dir, splade_tiny):
    table = tmp_path / "corpus.csv"
    table.write_text("title,body\n" + "".join(f"t{i},sentence number {i}\n" for i in range(100)))
    cases = [
        (["--train-file", str(table)], "2 string columns (columns: title (string), body (string))"),
        (["--train-file", str(table), "--text-column", "text"], "has no column 'text'"),
        (["--train-file", str(tmp_path / "missing.jsonl")], "Training file not found"),
        (["--train-file", str(table), "--streaming"], "needs --max-steps N"),
        (["--train-file", str(table), "--streaming", "--max-steps", "5", "--training-path", "fit"], "or drop"),
    ]
    fake = tmp_path / "corpus.txt.zst"
    fake.write_text("not compressed\n")
    cases.append((["--train-file", str(fake)], "corpus.txt.zst: named .zst but not zstd-compressed"))
    jsonl = tmp_path / "pairs.csv"  # JSON lines under a csv name
    jsonl.write_text("".join(f'{{"anchor": "a {i}", "positive": "b {i}"}}\n' for i in range(100)))
    cases.append((["--train-file", str(jsonl)], "rename it to end in .jsonl"))
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    cases.append((["--train-file", str(binary)], "weights.bin, line 2: not valid UTF-8"))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"fine\n" * 70 + b"caf\xe9\n")
    cases.append((["--train-file", str(latin)], "latin.txt, line 71: not valid UTF-8"))
    for arguments, message in cases:
        fails_before_loading(monkeypatch, capsys, unsup_wiki, ["--quick", *arguments], message, tmp_path / "o")


def test_sentence_transformer_start_model_keeps_its_pooling(tmp_path, monkeypatch, capsys, senteval_dir, train_40k):
    from conftest import SHARED

    minilm = SHARED / "models" / "all-MiniLM-L6-v2"
    if not minilm.exists():
        pytest.skip(f"needs {minilm}")
    arguments = ["--quick", "--model", str(minilm), "--pooling", "max"]
    message = "is a sentence-transformers model that pools with 'mean', which is kept; --pooling max would not apply"
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, message, tmp_path / "o")
    args = unsup_wiki.parse_args(["--quick", "--model", str(minilm)])
    assert args.pooling == "mean" and args.lr == 3e-5  # its own pooling; the tiny testbed model's lr is not applied
    assert sup_nli.parse_args(["--quick", "--model", str(minilm)]).mlp is False  # no MLP added unless asked
    assert sup_nli.parse_args(["--quick", "--model", str(minilm), "--mlp"]).mlp is True


def evaluate_fails(monkeypatch, capsys, arguments: list[str], message: str, seconds: float = 5) -> None:
    """The evaluation CLI, in this process: one error line, exit code 2, quickly, before any model is built."""
    built = []
    monkeypatch.setattr(command, "load_model", lambda *args, **kwargs: built.append(args))
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        run_cli(evaluate.main, arguments)
    assert exited.value.code == 2 and time.perf_counter() - started < seconds
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and message in stderr, stderr
    assert built == []


def test_evaluate_cli_errors(tmp_path, monkeypatch, capsys, senteval_dir, splade_tiny, hub_unreachable):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "output").mkdir()
    senteval = ["--senteval-dir", senteval_dir]
    evaluate_fails(monkeypatch, capsys, [str(tmp_path / "missing"), *senteval], "no such folder")
    evaluate_fails(monkeypatch, capsys, ["output/unsup-simcs", *senteval], "MODEL output/unsup-simcs: no such folder")
    evaluate_fails(monkeypatch, capsys, ["someone/model", *senteval], "the Hugging Face hub cannot be reached")
    evaluate_fails(monkeypatch, capsys, [splade_tiny, "--senteval-dir", "nope"], "SentEval folder not found: 'nope'")
    evaluate_fails(monkeypatch, capsys, [splade_tiny], "No --senteval-dir was given, and the hub's copies")
    (tmp_path / "taken").write_text("x")
    evaluate_fails(monkeypatch, capsys, [splade_tiny, *senteval, "--output", "taken/r.json"], "r.json: its folder")
    evaluate_fails(monkeypatch, capsys, [splade_tiny, *senteval, "--output", str(tmp_path)], "is a folder")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["output", "taken"]  # nothing written
