"""SimCSE (Gao, Yao & Chen, EMNLP 2021) as sentence-transformers components."""

from __future__ import annotations

from st_simcse.corpus import load_corpus
from st_simcse.data import (
    DuplicateInputDataset,
    PairDataset,
    SimCSEDataCollator,
    TripletDataset,
    load_labelled,
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
from st_simcse.losses import CachedSimCSELoss, ESimCSELoss, GuidedSimCSELoss, LossStateCallback, SimCSELoss
from st_simcse.mining import mine_hard_negatives
from st_simcse.models import build_model, load_simcse_model, set_dropout
from st_simcse.pairs import scored_pairs_evaluator
from st_simcse.tool import SimCSE

__version__ = "0.1.0"

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
