"""SimCSE (Gao, Yao & Chen, EMNLP 2021) as sentence-transformers components.

The public names below load on first use (PEP 562), so that ``import st_simcse`` and the commands' argument checks
cost no heavy library; ``from st_simcse import SimCSELoss`` works as always. Where each lives: ``losses/`` (the
losses), ``data/`` (corpora, labelled data, mining), ``models/`` (building the encoder), ``evaluation/`` (the STS
protocol, scored pairs, the ``simcse`` tool, the evaluation command) and ``training/`` (the recipes' machinery, which
nothing else imports). Importing any loss adds :class:`LossStateCallback` to every Trainer (see
:mod:`st_simcse.losses.state`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_PUBLIC = {
    "AlignmentUniformityEvaluator": "st_simcse.evaluation.evaluators",
    "CachedSimCSELoss": "st_simcse.losses",
    "DuplicateInputDataset": "st_simcse.data.unsupervised",
    "ESimCSELoss": "st_simcse.losses",
    "GuidedSimCSELoss": "st_simcse.losses",
    "LossStateCallback": "st_simcse.losses",
    "PairDataset": "st_simcse.data.labelled",
    "STSSuiteEvaluator": "st_simcse.evaluation.evaluators",
    "STSTaskEvaluator": "st_simcse.evaluation.evaluators",
    "SimCSE": "st_simcse.evaluation.tool",
    "SimCSEDataCollator": "st_simcse.data.collator",
    "SimCSELoss": "st_simcse.losses",
    "TripletDataset": "st_simcse.data.labelled",
    "build_model": "st_simcse.models.build",
    "load_corpus": "st_simcse.data.corpus",
    "load_labelled": "st_simcse.data.labelled",
    "load_simcse_model": "st_simcse.models.released",
    "load_sts_tasks": "st_simcse.evaluation.sts",
    "mine_hard_negatives": "st_simcse.data.mining",
    "read_sentences": "st_simcse.data.unsupervised",
    "resolve_training_file": "st_simcse.data.corpus",
    "scored_pairs_evaluator": "st_simcse.evaluation.evaluators",
    "set_dropout": "st_simcse.models.build",
    "sts_evaluator": "st_simcse.evaluation.evaluators",
}

__all__ = [
    "AlignmentUniformityEvaluator",
    "CachedSimCSELoss",
    "DuplicateInputDataset",
    "ESimCSELoss",
    "GuidedSimCSELoss",
    "LossStateCallback",
    "PairDataset",
    "STSSuiteEvaluator",
    "STSTaskEvaluator",
    "SimCSE",
    "SimCSEDataCollator",
    "SimCSELoss",
    "TripletDataset",
    "build_model",
    "load_corpus",
    "load_labelled",
    "load_simcse_model",
    "load_sts_tasks",
    "mine_hard_negatives",
    "read_sentences",
    "resolve_training_file",
    "scored_pairs_evaluator",
    "set_dropout",
    "sts_evaluator",
]


# Its subpackages and modules, reachable as attributes too (``st_simcse.losses.SimCSELoss``).
_MODULES = ("console", "data", "evaluate", "evaluation", "hub", "losses", "models", "training")


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"st_simcse.{name}")
    if name not in _PUBLIC:
        raise AttributeError(f"module 'st_simcse' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC, *_MODULES})


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from st_simcse.data.collator import SimCSEDataCollator
    from st_simcse.data.corpus import load_corpus, resolve_training_file
    from st_simcse.data.labelled import PairDataset, TripletDataset, load_labelled
    from st_simcse.data.mining import mine_hard_negatives
    from st_simcse.data.unsupervised import DuplicateInputDataset, read_sentences
    from st_simcse.evaluation.evaluators import (
        AlignmentUniformityEvaluator,
        STSSuiteEvaluator,
        STSTaskEvaluator,
        scored_pairs_evaluator,
        sts_evaluator,
    )
    from st_simcse.evaluation.sts import load_sts_tasks
    from st_simcse.evaluation.tool import SimCSE
    from st_simcse.losses import CachedSimCSELoss, ESimCSELoss, GuidedSimCSELoss, LossStateCallback, SimCSELoss
    from st_simcse.models.build import build_model, set_dropout
    from st_simcse.models.released import load_simcse_model
