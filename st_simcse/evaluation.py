"""The paper's STS evaluation (SentEval "test" mode, cosine Spearman) and the alignment/uniformity analysis,
built on sentence-transformers evaluators so they plug into ``model.fit`` and the Trainer."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
from sentence_transformers.base.evaluation.sequential import SequentialEvaluator
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from st_simcse.models import eager_forward, whole_sentences

logger = logging.getLogger(__name__)

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


class SentenceEmbeddingCache:
    """Encodes each unique sentence once, longest first in length-sorted batches (``model.encode`` sorts by
    length), with whole sentences, and serves the rows to every evaluator that shares the cache."""

    def __init__(self, batch_size: int = 64, show_progress_bar: bool = False) -> None:
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self._index: dict[str, int] | None = None
        self._embeddings: np.ndarray | None = None
        self._depth = 0

    @contextmanager
    def filled(self, model: SentenceTransformer, sentences: Sequence[str]) -> Iterator[None]:
        """Encode ``sentences`` once for the duration of the block; nested blocks reuse the outer encoding."""
        if self._depth == 0:
            unique = list(dict.fromkeys(sentences))
            with whole_sentences(model), eager_forward():
                self._embeddings = model.encode(
                    unique,
                    batch_size=self.batch_size,
                    show_progress_bar=self.show_progress_bar,
                    convert_to_numpy=True,
                )
            self._index = {sentence: row for row, sentence in enumerate(unique)}
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._index, self._embeddings = None, None

    def lookup(self, sentences: Sequence[str]) -> np.ndarray:
        if self._index is None or self._embeddings is None:
            raise RuntimeError("SentenceEmbeddingCache.lookup called outside of a `filled` block.")
        return self._embeddings[[self._index[sentence] for sentence in sentences]]


class STSTaskEvaluator(EmbeddingSimilarityEvaluator):
    """:class:`EmbeddingSimilarityEvaluator` for one STS task with the paper's protocol: cosine Spearman over
    all pairs of the task at once, whole sentences, each unique sentence encoded once."""

    def __init__(self, data: STSData, cache: SentenceEmbeddingCache | None = None, **kwargs) -> None:
        kwargs.setdefault("write_csv", False)
        super().__init__(
            data.sentences1,
            data.sentences2,
            data.scores,
            main_similarity="cosine",
            similarity_fn_names=["cosine"],
            name=data.name,
            **kwargs,
        )
        self.primary_metric = "spearman_cosine"
        self.cache = cache or SentenceEmbeddingCache(batch_size=self.batch_size)

    @property
    def sentences(self) -> list[str]:
        return [*self.sentences1, *self.sentences2]

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        with self.cache.filled(model, self.sentences):
            return super().__call__(model, output_path, epoch, steps)

    def embed_inputs(self, model, sentences, **kwargs) -> np.ndarray:
        return self.cache.lookup(sentences)


class AlignmentUniformityEvaluator(BaseEvaluator):
    """Alignment and uniformity of the embedding space (Wang & Isola 2020; SimCSE section 5), lower is better:

    - ``alignment`` = E over positive pairs of ``||f(x) - f(y)||^2`` (normalised embeddings), positives being the
      pairs with gold score > ``threshold`` (4.0 on STS-B's 0-5 scale, as in the paper);
    - ``uniformity`` = ``log E exp(-2 ||f(x) - f(y)||^2)`` over all pairs of distinct sentences of the set.

    Every call is appended to :attr:`history` as ``(steps, alignment, uniformity)`` for the paper's Figure 2.
    """

    def __init__(
        self, data: STSData, threshold: float = 4.0, cache: SentenceEmbeddingCache | None = None, name: str = ""
    ) -> None:
        super().__init__()
        positives = [(a, b) for a, b, score in zip(data.sentences1, data.sentences2, data.scores) if score > threshold]
        if not positives:
            raise ValueError(f"{data.name}: no pair has a gold score above {threshold}, so alignment is undefined.")
        self.positive_pairs = positives
        self.unique_sentences = list(dict.fromkeys([*data.sentences1, *data.sentences2]))
        self.name = name or data.name
        self.threshold = threshold
        self.cache = cache or SentenceEmbeddingCache()
        self.greater_is_better = False
        self.primary_metric = "uniformity"
        self.history: list[tuple[int, float, float]] = []

    @property
    def sentences(self) -> list[str]:
        return self.unique_sentences

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        with self.cache.filled(model, self.unique_sentences):
            first = torch.from_numpy(self.cache.lookup([a for a, _ in self.positive_pairs]))
            second = torch.from_numpy(self.cache.lookup([b for _, b in self.positive_pairs]))
            everything = torch.from_numpy(self.cache.lookup(self.unique_sentences))
        alignment, uniformity = alignment_uniformity(first, second, everything)
        self.history.append((steps, alignment, uniformity))
        metrics = self.prefix_name_to_metrics({"alignment": alignment, "uniformity": uniformity}, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    @property
    def description(self) -> str:
        return "Alignment and uniformity"


def alignment_uniformity(first: torch.Tensor, second: torch.Tensor, sentences: torch.Tensor) -> tuple[float, float]:
    """``(l_align, l_uniform)`` for positive pairs ``(first[i], second[i])`` and the sentence set ``sentences``;
    all embeddings are L2-normalised first."""
    first, second, sentences = (torch.nn.functional.normalize(x.double(), dim=-1) for x in (first, second, sentences))
    alignment = (first - second).norm(dim=1).pow(2).mean()
    uniformity = torch.pdist(sentences).pow(2).mul(-2).exp().mean().log()
    return float(alignment), float(uniformity)


class STSSuiteEvaluator(SequentialEvaluator):
    """The STS tasks (and optionally an :class:`AlignmentUniformityEvaluator`) as one sentence-transformers
    evaluator. The union of all their sentences is encoded once per call; the main score, ``sts_avg``, is the
    plain mean of the tasks' cosine Spearman correlations. :attr:`history` keeps every call's metrics."""

    def __init__(self, evaluators: Sequence[BaseEvaluator], name: str = "sts") -> None:
        tasks = [evaluator for evaluator in evaluators if isinstance(evaluator, STSTaskEvaluator)]
        if not tasks:
            raise ValueError("STSSuiteEvaluator needs at least one STSTaskEvaluator.")
        super().__init__(evaluators)
        self.task_evaluators = tasks
        self.cache = tasks[0].cache
        for evaluator in evaluators:
            evaluator.cache = self.cache
        self.name = name
        self.primary_metric = f"{name}_avg"
        self.history: list[dict[str, float]] = []

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        sentences = [sentence for evaluator in self.evaluators for sentence in evaluator.sentences]
        with self.cache.filled(model, sentences):
            results = super().__call__(model, output_path, epoch, steps)
        # SequentialEvaluator names its main score "sequential_score"; ours is the plain mean of the tasks.
        results.pop("sequential_score")
        self.primary_metric = f"{self.name}_avg"
        task_scores = [results[f"{task.name}_spearman_cosine"] for task in self.task_evaluators]
        results[self.primary_metric] = float(np.mean(task_scores))
        self.history.append({"epoch": epoch, "steps": steps, **{key: float(v) for key, v in results.items()}})
        return results

    def table(self, results: dict[str, float]) -> dict[str, float]:
        """The paper's table row: each task's Spearman x 100 (2 decimals) and the plain mean of them."""
        row = {task.name: round(100 * results[f"{task.name}_spearman_cosine"], 2) for task in self.task_evaluators}
        row["Avg."] = round(100 * results[self.primary_metric], 2)
        return row


def sts_evaluator(
    senteval_dir: str | None = None,
    split: str = "test",
    tasks: Sequence[str] | None = None,
    batch_size: int = 64,
    alignment_uniformity_task: str | None = None,
    show_progress_bar: bool = False,
    name: str | None = None,
) -> STSSuiteEvaluator:
    """The paper's STS evaluation as one evaluator.

    Args:
        senteval_dir: SentEval's ``data/downstream`` folder; None loads public hub copies instead.
        split: ``"test"`` (the paper's 7 tasks, its reported numbers) or ``"dev"`` (STS-B dev and SICK-R trial,
            for model selection during training).
        tasks: A subset of ``STS_TASKS`` (e.g. ``["STS-B"]`` to select on STS-B dev as the paper does).
        batch_size: Encoding batch size.
        alignment_uniformity_task: Also compute alignment/uniformity on this task's pairs of the same split
            (the paper uses STS-B).
        show_progress_bar: Show the encoding progress bar.
        name: The metric prefix; defaults to ``"sts_test"`` or ``"sts_dev"``.
    """
    data = load_sts_tasks(senteval_dir, split, tasks)
    cache = SentenceEmbeddingCache(batch_size=batch_size, show_progress_bar=show_progress_bar)
    evaluators: list[BaseEvaluator] = [STSTaskEvaluator(task, cache, batch_size=batch_size) for task in data]
    if alignment_uniformity_task is not None:
        by_name = {task.name: task for task in data}
        task = (
            by_name.get(alignment_uniformity_task)
            or load_sts_tasks(senteval_dir, split, [alignment_uniformity_task])[0]
        )
        evaluators.append(AlignmentUniformityEvaluator(task, cache=cache))
    return STSSuiteEvaluator(evaluators, name=name or f"sts_{split}")


def print_table(table: dict[str, float]) -> None:
    """Print a table row of :meth:`STSSuiteEvaluator.table` as the paper lays it out: task names, then scores."""
    print(" ".join(f"{name:>7}" for name in table))
    print(" ".join(f"{value:>7.2f}" for value in table.values()))
