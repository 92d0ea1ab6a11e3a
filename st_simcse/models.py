from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
from torch import nn

POOLING_MODES = ("cls", "mean", "max", "lasttoken", "weightedmean")


def build_model(
    model_name_or_path: str,
    pooling: str = "cls",
    max_seq_length: int | None = 32,
    mlp_in_model: bool = False,
    dropout: float | None = None,
    device: str | None = None,
) -> SentenceTransformer:
    """A SentenceTransformer of built-in modules for SimCSE: ``Transformer`` + ``Pooling(pooling)``, and with
    ``mlp_in_model=True`` a ``Dense(d, d, tanh)`` on top, the MLP the paper keeps at test time for supervised
    SimCSE (initialised like the paper's, normal(0, initializer_range), zero bias).

    ``model_name_or_path`` is a hub name, a local transformers checkpoint, or a saved SentenceTransformer folder
    (loaded as it is; ``pooling`` and ``mlp_in_model`` are then ignored). ``max_seq_length`` is the training
    length (the paper's 32); the STS evaluation of :mod:`st_simcse.evaluation` always encodes whole sentences.
    ``dropout``, if given, sets every dropout probability of the encoder (hidden and attention).
    """
    if pooling not in POOLING_MODES:
        raise ValueError(f"Unknown pooling {pooling!r}; choose one of {POOLING_MODES}.")
    if os.path.isfile(os.path.join(model_name_or_path, "modules.json")):
        model = SentenceTransformer(model_name_or_path, device=device)
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
    else:
        transformer = Transformer(model_name_or_path, max_seq_length=max_seq_length)
        dimension = transformer.get_embedding_dimension()
        modules: list[nn.Module] = [transformer, Pooling(dimension, pooling)]
        if mlp_in_model:
            dense = Dense(dimension, dimension, activation_function=nn.Tanh())
            std = getattr(transformer.auto_model.config, "initializer_range", 0.02)
            nn.init.normal_(dense.linear.weight, mean=0.0, std=std)
            nn.init.zeros_(dense.linear.bias)
            modules.append(dense)
        model = SentenceTransformer(modules=modules, device=device)
    if dropout is not None:
        set_dropout(model, dropout)
    return model


def set_dropout(model: nn.Module, probability: float) -> None:
    """Set every ``nn.Dropout`` of ``model`` (and the matching config fields) to ``probability``."""
    if not 0.0 <= probability < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {probability}.")
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = probability
        config = getattr(module, "config", None)
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if hasattr(config, field):
                setattr(config, field, probability)


def encoder_max_length(model: SentenceTransformer) -> int | None:
    """The longest input the encoder itself accepts (its position embeddings), independent of the training
    ``max_seq_length``; None where the model has no such limit."""
    first = model[0]
    config = getattr(getattr(first, "auto_model", None), "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return model.max_seq_length
    # RoBERTa-style models start positions after the padding index, which costs padding_idx + 1 slots.
    pad = getattr(config, "pad_token_id", None)
    offset = pad + 1 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") and pad else 0
    return positions - offset


@contextmanager
def whole_sentences(model: SentenceTransformer) -> Iterator[None]:
    """Encode without truncation below the encoder's own limit (as SentEval does), whatever max_seq_length the
    model was trained with; the training length is restored afterwards."""
    previous = model.max_seq_length
    limit = encoder_max_length(model)
    if limit is not None:
        model.max_seq_length = limit
    try:
        yield
    finally:
        model.max_seq_length = previous
