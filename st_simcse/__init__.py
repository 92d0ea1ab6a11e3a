"""SimCSE (Gao, Yao & Chen, EMNLP 2021) as sentence-transformers components."""

from __future__ import annotations

from st_simcse.data import (
    DuplicateInputDataset,
    SimCSEDataCollator,
    TripletDataset,
    read_sentences,
    resolve_training_file,
)
from st_simcse.evaluation import (
    AlignmentUniformityEvaluator,
    STSSuiteEvaluator,
    STSTaskEvaluator,
    load_sts_tasks,
    sts_evaluator,
)
from st_simcse.losses import CachedSimCSELoss, SimCSELoss
from st_simcse.models import build_model, set_dropout

__version__ = "0.1.0"

__all__ = [
    "AlignmentUniformityEvaluator",
    "CachedSimCSELoss",
    "DuplicateInputDataset",
    "STSSuiteEvaluator",
    "STSTaskEvaluator",
    "SimCSEDataCollator",
    "SimCSELoss",
    "TripletDataset",
    "build_model",
    "load_sts_tasks",
    "read_sentences",
    "resolve_training_file",
    "set_dropout",
    "sts_evaluator",
]
