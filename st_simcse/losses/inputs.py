"""The inputs of the SimCSE losses, checked before the first gradient: the columns of a batch (a single column is
unsupervised SimCSE and becomes two copies), and the dropout that must make two views of one sentence differ."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def dropout_probabilities(model: nn.Module) -> list[float]:
    """The probability of every dropout in ``model``: its ``nn.Dropout`` modules (BERT-style encoders apply all
    their dropout through them) and the float ``attention_dropout`` of attention modules that apply it functionally
    (Llama, Qwen2, ...)."""
    probabilities = []
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            probabilities.append(module.p)
        if isinstance(getattr(module, "attention_dropout", None), float):
            probabilities.append(module.attention_dropout)
    return probabilities


def checked_columns(sentence_features: Iterable[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """The input columns, checked; a single column is unsupervised SimCSE and becomes (column, copy of it), so the
    sentences are tokenized once and still embedded twice, with two dropout masks."""
    sentence_features = list(sentence_features)
    if not sentence_features:
        raise ValueError(
            "SimCSELoss got no input column. Pass (sentence,) for unsupervised SimCSE (or (sentence, sentence), "
            "e.g. from st_simcse.DuplicateInputDataset), (anchor, positive) pairs or (anchor, positive, "
            "hard_negative) triplets."
        )
    if len(sentence_features) == 1:
        # A shallow copy: per-column forwards (under AdaptiveLayerLoss) write their outputs into the dict.
        sentence_features = [sentence_features[0], dict(sentence_features[0])]
    sizes = [
        next(len(value) for value in features.values() if torch.is_tensor(value)) for features in sentence_features
    ]
    if len(set(sizes)) != 1:
        raise ValueError(
            f"All SimCSELoss input columns must hold the same number of texts, got column sizes {sizes}. "
            "Every anchor needs exactly one positive (and one hard negative per negative column): drop or fill "
            "the rows with missing values before training."
        )
    return sentence_features
