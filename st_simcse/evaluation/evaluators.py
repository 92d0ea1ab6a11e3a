"""The paper's STS evaluation (SentEval "test" mode, cosine Spearman), the user's scored pairs judged the same way,
and the alignment/uniformity analysis, built on sentence-transformers evaluators so they plug into ``model.fit`` and
the Trainer. Used by the recipes, the evaluation command and users' own training code."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
from sentence_transformers.base.evaluation.sequential import SequentialEvaluator
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from st_simcse.evaluation.pairs import load_scored_pairs
from st_simcse.evaluation.sts import STSData, load_sts_tasks
from st_simcse.models.build import eager_forward, whole_sentences

logger = logging.getLogger(__name__)


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
        if len(self.task_evaluators) > 1:  # the average of several tasks is a result of its own (the model card's)
            self.store_metrics_in_model_card_data(
                model, {self.primary_metric: results[self.primary_metric]}, epoch, steps
            )
        return results

    @property
    def description(self) -> str:
        return "Semantic Similarity"

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


def pairs_evaluator(data: STSData, batch_size: int = 64) -> STSSuiteEvaluator:
    """One :class:`st_simcse.STSTaskEvaluator` (an ``EmbeddingSimilarityEvaluator``: cosine Spearman, whole
    sentences) over ``data``, as a suite whose main score is ``{data.name}_avg``."""
    return STSSuiteEvaluator([STSTaskEvaluator(data, batch_size=batch_size)], name=data.name)


def scored_pairs_evaluator(
    source: str | os.PathLike, name: str = "dev", split: str = "train", batch_size: int = 64
) -> STSSuiteEvaluator:
    """An evaluator of any model on the scored pairs of ``source`` (see :func:`load_scored_pairs`), for
    ``model.fit(evaluator=...)``, the Trainer, or a plain call: ``scored_pairs_evaluator("dev.csv")(model)`` gives
    ``{"dev_spearman_cosine": ..., "dev_avg": ...}``."""
    return pairs_evaluator(load_scored_pairs(source, name, split, what="Pairs file"), batch_size)
