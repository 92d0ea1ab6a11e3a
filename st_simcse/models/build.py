"""Building and adjusting a SimCSE encoder as a SentenceTransformer of built-in modules: a transformers checkpoint
with the paper's pooling (and optionally its MLP), or a sentence-transformers model kept as it is; its dropout, its
compilation, and how evaluation encodes with it (whole sentences, eagerly). Used by the recipes, the evaluation and
users' own training code."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
from torch import nn

from st_simcse.models.settings import ATTENTION_IMPLEMENTATIONS, COMPILE_MODES, POOLING_MODES, describe_start_model

logger = logging.getLogger(__name__)


def build_model(
    model_name_or_path: str,
    pooling: str | None = None,
    max_seq_length: int | None = 32,
    mlp_in_model: bool = False,
    dropout: float | None = None,
    device: str | None = None,
    attention: str = "auto",
    compile: bool = False,
    compile_mode: str = "default",
) -> SentenceTransformer:
    """A SentenceTransformer of built-in modules for SimCSE.

    A transformers checkpoint becomes ``Transformer`` + ``Pooling(pooling)`` (``pooling=None``: ``"cls"``, the
    paper's), and with ``mlp_in_model=True`` a ``Dense(d, d, tanh)`` on top, the MLP the paper keeps at test time
    for supervised SimCSE (initialised like the paper's, normal(0, initializer_range), zero bias).

    A sentence-transformers model (a local folder or a hub name with ``modules.json``) is trained as it is: its
    pooling, Dense and Normalize modules are kept. ``pooling`` must then be None or the model's own mode (another
    mode raises a ``ValueError`` instead of being ignored); ``mlp_in_model=True`` adds the Dense(tanh) MLP for real,
    before a final Normalize.

    ``max_seq_length`` is the training length (the paper's 32); the STS evaluation of :mod:`st_simcse.evaluation`
    always encodes whole sentences. ``dropout``, if given, sets every dropout probability of the encoder (hidden and
    attention). ``attention`` picks transformers' attention implementation (``ATTENTION_IMPLEMENTATIONS``).
    ``compile`` compiles the encoder in place with ``torch.compile`` in ``compile_mode`` (``COMPILE_MODES``); its
    parameters and state dict keep their names, so the saved model is still plain built-in modules. The graph is
    specialised to the first batch's shape and recompiled once with dynamic shapes if another width comes; the
    paper's training batches are all ``max_seq_length`` wide, so they run one static graph, which CUDA graphs can
    replay. The STS evaluation runs the encoder eagerly (:func:`eager_forward`).
    """
    if attention not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"Unknown attention {attention!r}; choose one of {ATTENTION_IMPLEMENTATIONS}.")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"Unknown compile_mode {compile_mode!r}; choose one of {COMPILE_MODES}.")
    model_kwargs = {} if attention == "auto" else {"attn_implementation": attention}
    start = describe_start_model(model_name_or_path)
    if start.sentence_transformer:
        if pooling is not None and pooling != start.pooling:
            raise ValueError(
                f"{model_name_or_path} is a sentence-transformers model that pools with {start.pooling!r}, so "
                f"pooling={pooling!r} would not apply: pass pooling=None to train it with its own pooling, or "
                "start from the checkpoint of its encoder to choose another."
            )
        with expected_load_report_quiet():
            model = SentenceTransformer(model_name_or_path, device=device, model_kwargs=model_kwargs)
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        if mlp_in_model:
            at = len(model) - 1 if type(model[-1]).__name__ == "Normalize" else len(model)
            model.insert(at, _mlp(model.get_embedding_dimension(), model[0]))
    else:
        if pooling is not None and pooling not in POOLING_MODES:
            raise ValueError(f"Unknown pooling {pooling!r}; choose one of {POOLING_MODES}.")
        with expected_load_report_quiet():
            transformer = Transformer(model_name_or_path, max_seq_length=max_seq_length, model_kwargs=model_kwargs)
        dimension = transformer.get_embedding_dimension()
        modules: list[nn.Module] = [transformer, Pooling(dimension, pooling or "cls")]
        if mlp_in_model:
            modules.append(_mlp(dimension, transformer))
        model = SentenceTransformer(modules=modules, device=device)
    if dropout is not None:
        set_dropout(model, dropout)
    if compile:
        compile_encoder(model, mode=compile_mode)
    return model


def _mlp(dimension: int, transformer: nn.Module) -> Dense:
    dense = Dense(dimension, dimension, activation_function=nn.Tanh())
    std = getattr(getattr(transformer, "auto_model", None), "config", None)
    nn.init.normal_(dense.linear.weight, mean=0.0, std=getattr(std, "initializer_range", 0.02))
    nn.init.zeros_(dense.linear.bias)
    return dense


def model_pooling(model: SentenceTransformer) -> str | None:
    """The pooling mode of ``model``'s Pooling module (modes joined by "+"), None where it has none."""
    for module in model:
        if isinstance(module, Pooling):
            mode = module.pooling_mode
            return "+".join(mode) if isinstance(mode, (list, tuple)) else mode
    return None


class _ExpectedLoadReport(logging.Filter):
    """transformers' load report, kept in the log (INFO) when it lists only what loading an encoder from a checkpoint
    of another task always leaves: unused weights (an MLM head) and a missing pooler, which sentence-transformers'
    Transformer never uses (it pools the token embeddings). Weights missing elsewhere stay a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message or record.levelno != logging.WARNING:
            return True
        missing = re.findall(r"^(\S+)\s*\|\s*MISSING", message, flags=re.MULTILINE)
        if all(key.startswith("pooler.") for key in missing) and "MISMATCH" not in message:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = (
                f"{message}\n(expected: unused checkpoint weights, and a pooler that sentence-transformers' "
                "Transformer module does not use)"
            )
            record.args = ()
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


@contextmanager
def expected_load_report_quiet() -> Iterator[None]:
    """Keep transformers' expected load report out of a library user's console (see :class:`_ExpectedLoadReport`)."""
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_filter = _ExpectedLoadReport()
    report_logger.addFilter(report_filter)
    try:
        yield
    finally:
        report_logger.removeFilter(report_filter)


def compile_encoder(model: SentenceTransformer, **compile_options: Any) -> None:
    """``torch.compile`` the transformers model of ``model`` in place, with ``compile_options`` (``mode``, ...).
    sentence-transformers calls that model's ``forward`` directly, which ``nn.Module.compile`` on the model would
    not reach, so the compiled units are its children (BERT: embeddings, encoder, pooler), which its forward calls
    as modules. Parameter names are unchanged: the model still saves as plain built-in modules."""
    for child in model[0].auto_model.children():
        child.compile(**compile_options)


def set_dropout(model: nn.Module, probability: float) -> None:
    """Set every dropout probability of ``model`` to ``probability``: each ``nn.Dropout``, the float
    ``attention_dropout`` of attention modules that apply dropout functionally (Llama, Qwen2, ...), and the matching
    config fields."""
    if not 0.0 <= probability < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {probability}.")
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = probability
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = probability
        config = getattr(module, "config", None)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout"):
            if isinstance(getattr(config, name, None), float):
                setattr(config, name, probability)


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


@contextmanager
def eager_forward() -> Iterator[None]:
    """Run ``torch.compile``'d modules eagerly inside the block. Evaluation encodes batches of every width:
    compiling a graph (or recording a CUDA graph) for each would cost more than the encoding itself."""
    set_stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
    if set_stance is None:
        yield
        return
    with set_stance("force_eager"):
        yield
