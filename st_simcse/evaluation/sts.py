"""The paper's STS tasks as data: STS12-16, STS-B and SICK-R read from a SentEval ``data/downstream`` folder the
way SentEval reads them (or from the hub's public copies), and checked before any model loads. Used by the
evaluators (:mod:`st_simcse.evaluation.evaluators`), the evaluation command and the recipes' checks. Nothing here
imports a heavy library."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

# The paper's 7 tasks, in the order of its tables, with the sub-datasets of SentEval's "all" setting.
STS_YEAR_SUBSETS: dict[str, tuple[str, ...]] = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),  # SentEval has no input file for the licensed SMT subset
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}
STS_TASKS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R")
DEV_TASKS = ("STS-B", "SICK-R")
# The public hub copies used when no SentEval folder is given (sentence1, sentence2, score columns).
HUB_DATASETS = {
    "STS12": "mteb/sts12-sts",
    "STS13": "mteb/sts13-sts",
    "STS14": "mteb/sts14-sts",
    "STS15": "mteb/sts15-sts",
    "STS16": "mteb/sts16-sts",
    "STS-B": "mteb/stsbenchmark-sts",
    "SICK-R": "mteb/sickr-sts",
}


@dataclass
class STSData:
    """One STS task: sentence pairs and gold scores."""

    name: str
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]

    def __len__(self) -> int:
        return len(self.scores)


def _read_lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Missing SentEval file {path}. Is the SentEval folder its data/downstream folder?")
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines()


def _parse_score(text: str, path: str, line_number: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}, line {line_number}: gold score {text!r} is not a number.") from None


def _tokens(text: str) -> str:
    # SentEval splits each sentence on whitespace and the SimCSE batcher joins the tokens with single spaces.
    return " ".join(text.split())


def _load_sts_subset(folder: str, task: str, subset: str) -> STSData:
    sentences1, sentences2, scores = [], [], []
    input_path = os.path.join(folder, f"STS.input.{subset}.txt")
    gold_path = os.path.join(folder, f"STS.gs.{subset}.txt")
    pairs, gold = _read_lines(input_path), _read_lines(gold_path)
    if len(pairs) != len(gold):
        raise ValueError(
            f"{gold_path} has {len(gold)} lines but {input_path} has {len(pairs)}: every input pair needs "
            "one gold line (empty for an unscored pair)."
        )
    for line_number, (pair, score) in enumerate(zip(pairs, gold), start=1):
        if not score.strip():
            continue  # unscored pair, skipped as SentEval does
        fields = pair.split("\t")
        if len(fields) < 2:
            raise ValueError(f"{input_path}, line {line_number}: expected two tab-separated sentences.")
        sentences1.append(_tokens(fields[0]))
        sentences2.append(_tokens(fields[1]))
        scores.append(_parse_score(score, gold_path, line_number))
    return STSData(f"{task} {subset}", sentences1, sentences2, scores)


def _load_sts_year(folder: str, task: str) -> STSData:
    subsets = [_load_sts_subset(folder, task, subset) for subset in STS_YEAR_SUBSETS[task]]
    return STSData(
        task,
        [s for data in subsets for s in data.sentences1],
        [s for data in subsets for s in data.sentences2],
        [s for data in subsets for s in data.scores],
    )


def load_sts_subsets(senteval_dir: str) -> list[STSData]:
    """The 24 sub-datasets of STS12-16 one by one (``"STS12 MSRvid"``, ...), each scored on its own: for reading a
    model by domain (MSRvid and images are captions of videos and pictures; the paper's "all" setting pools them)."""
    return [
        _load_sts_subset(os.path.join(senteval_dir, "STS", f"{task}-en-test"), task, subset)
        for task, subsets in STS_YEAR_SUBSETS.items()
        for subset in subsets
    ]


def _load_table(path: str, task: str, first: int, second: int, score: int, skip_header: bool) -> STSData:
    sentences1, sentences2, scores = [], [], []
    for line_number, line in enumerate(_read_lines(path), start=1):
        if (skip_header and line_number == 1) or not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) <= max(first, second, score):
            raise ValueError(f"{path}, line {line_number}: expected at least {max(first, second, score) + 1} fields.")
        sentences1.append(_tokens(fields[first]))
        sentences2.append(_tokens(fields[second]))
        scores.append(_parse_score(fields[score], path, line_number))
    return STSData(task, sentences1, sentences2, scores)


def load_sts_task(senteval_dir: str, task: str, split: str = "test") -> STSData:
    """Load one of the paper's tasks from a SentEval ``data/downstream`` folder.

    STS12-16 exist only as test sets and are concatenated over their sub-datasets (the "all" setting);
    STS-B reads ``sts-{split}.csv``; SICK-R reads ``SICK_test_annotated.txt`` (test), ``SICK_trial.txt`` (dev)
    or ``SICK_train.txt``. Sentences are whitespace-normalised as SentEval tokenises them.
    """
    if task in STS_YEAR_SUBSETS:
        if split != "test":
            raise ValueError(f"{task} has only a test split, got split={split!r}.")
        folder = os.path.join(senteval_dir, "STS", f"{task}-en-test")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Missing task folder {folder} for {task}. {_LAYOUT_HINT}")
        return _load_sts_year(folder, task)
    if task == "STS-B":
        folder = os.path.join(senteval_dir, "STS", "STSBenchmark")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Missing task folder {folder} for STS-B. {_LAYOUT_HINT}")
        # genre, file, year, id, score, sentence1, sentence2 (SentEval reads fields 4, 5, 6)
        return _load_table(os.path.join(folder, f"sts-{split}.csv"), task, 5, 6, 4, skip_header=False)
    if task == "SICK-R":
        folder = os.path.join(senteval_dir, "SICK")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Missing task folder {folder} for SICK-R. {_LAYOUT_HINT}")
        file_name = {"test": "SICK_test_annotated.txt", "dev": "SICK_trial.txt", "train": "SICK_train.txt"}[split]
        # pair_ID, sentence_A, sentence_B, relatedness_score, entailment_judgment, after a header line
        return _load_table(os.path.join(folder, file_name), task, 1, 2, 3, skip_header=True)
    raise ValueError(f"Unknown task {task!r}; the paper's tasks are {STS_TASKS}.")


_LAYOUT_HINT = (
    "Pass SentEval's data/downstream folder (with STS/STS12-en-test ... STS/STSBenchmark and SICK/) as "
    "the SentEval folder; get it with SentEval's data/downstream/get_transfer_data.bash."
)


def _load_hub_task(task: str, split: str) -> STSData:
    from datasets import load_dataset

    hub_split = {"dev": "validation"}.get(split, split)
    try:
        dataset = load_dataset(HUB_DATASETS[task], split=hub_split)
    except Exception as error:
        raise ValueError(
            f"No SentEval folder was given and {HUB_DATASETS[task]!r} could not be loaded from the hub ({error}). "
            f"{_LAYOUT_HINT}"
        ) from error
    return STSData(
        task,
        [_tokens(text) for text in dataset["sentence1"]],
        [_tokens(text) for text in dataset["sentence2"]],
        [float(score) for score in dataset["score"]],
    )


def load_sts_tasks(
    senteval_dir: str | None = None, split: str = "test", tasks: Sequence[str] | None = None
) -> list[STSData]:
    """Load several tasks (default: the paper's 7 for ``split="test"``, STS-B and SICK-R for ``"dev"``).

    Without ``senteval_dir`` the tasks come from public hub copies (``HUB_DATASETS``); note that the hub's
    SICK-R holds all 9,927 SICK pairs, not SentEval's 4,927-pair test split, so use a SentEval folder to
    reproduce the paper's numbers exactly.
    """
    if split not in ("test", "dev"):
        raise ValueError(f"split must be 'test' or 'dev', got {split!r}.")
    tasks = tuple(tasks or (STS_TASKS if split == "test" else DEV_TASKS))
    if senteval_dir is not None and not os.path.isdir(senteval_dir):
        raise FileNotFoundError(f"SentEval folder not found: {senteval_dir!r}. {_LAYOUT_HINT}")
    if senteval_dir is None:
        return [_load_hub_task(task, split) for task in tasks]
    return [load_sts_task(senteval_dir, task, split) for task in tasks]


def check_senteval_dir(senteval_dir: str, split: str = "test", tasks: Sequence[str] | None = None) -> None:
    """Fail fast (before any model is loaded) if ``senteval_dir`` lacks a task the evaluation needs."""
    load_sts_tasks(senteval_dir, split, tasks)
