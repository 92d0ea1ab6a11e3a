from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
from torch import Tensor, nn

logger = logging.getLogger(__name__)

POOLING_MODES = ("cls", "mean", "max", "lasttoken", "weightedmean")
# transformers' attention implementations for BERT-like encoders; "auto" keeps transformers' own choice (SDPA).
# flash_attention_2 needs the flash-attn package and a CUDA GPU; sentence-transformers then feeds it unpadded
# (flattened) batches, and the losses embed each column in its own forward pass.
ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
# torch.compile's modes: "reduce-overhead" and "max-autotune" add CUDA graphs (one replay per step instead of one
# kernel launch per operation) on a GPU; on a CPU they compile as "default" does.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# The poolers of the paper's evaluation.py and its `simcse` tool, by their names there.
REFERENCE_POOLERS = ("cls", "cls_before_pooler", "avg", "avg_first_last", "avg_top2")
# Those that sentence-transformers' built-in modules express exactly, so a model using them saves as a plain folder.
BUILT_IN_POOLERS = ("cls", "cls_before_pooler", "avg")


@dataclass
class StartModel:
    """What a start model is, read from its files before it loads: a sentence-transformers model (its module types,
    its pooling mode, the length it serves with) or a plain transformers checkpoint."""

    sentence_transformer: bool
    modules: list[str] = field(default_factory=list)
    pooling: str | None = None
    max_seq_length: int | None = None


@functools.lru_cache(maxsize=8)
def describe_start_model(model_name_or_path: str) -> StartModel:
    """A local folder or a hub name (fetched from the hub: call it where the hub is reachable or cached)."""
    from sentence_transformers.util import load_file_path

    modules_file = load_file_path(model_name_or_path, "modules.json")
    if modules_file is None:
        return StartModel(False)
    with open(modules_file, encoding="utf-8") as handle:
        modules = json.load(handle)
    pooling = None
    for module in modules:
        if module["type"].endswith("Pooling"):
            mode = Pooling.load_config(model_name_or_path, subfolder=module["path"]).get("pooling_mode")
            pooling = "+".join(mode) if isinstance(mode, (list, tuple)) else mode
    config_file = load_file_path(model_name_or_path, "sentence_bert_config.json")
    max_seq_length = None
    if config_file is not None:
        with open(config_file, encoding="utf-8") as handle:
            max_seq_length = json.load(handle).get("max_seq_length")
    names = [module["type"].rsplit(".", 1)[-1] for module in modules]
    return StartModel(True, names, pooling, max_seq_length)


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


def default_pooler(model_name_or_path: str) -> str:
    """The paper's tool's choice for a plain transformers checkpoint in the paper's layout: ``cls_before_pooler`` for
    unsupervised models (a name containing "unsup"), whose training-only MLP was dropped, else ``cls`` (the
    supervised models keep the MLP as BERT's pooler). A sentence-transformers model needs no choice: it pools with
    its own modules (:func:`is_sentence_transformer`)."""
    return "cls_before_pooler" if "unsup" in os.fspath(model_name_or_path) else "cls"


def is_sentence_transformer(model_name_or_path: str) -> bool:
    """Whether ``model_name_or_path`` (a local folder, or a hub name: fetched from the hub or its cache) is a
    sentence-transformers model, i.e. has a ``modules.json``. Read afresh on every call (no cache), so a folder
    overwritten with another kind of model is seen as it is now."""
    from sentence_transformers.util import load_file_path

    from st_simcse.sources import hub_offline_mode, hub_reachable, looks_like_local_path

    name = os.fspath(model_name_or_path)
    # Offline, a hub name is looked up in the local cache only: the hub libraries' retries take half a minute.
    cache_only = not looks_like_local_path(name) and (hub_offline_mode() or not hub_reachable())
    return load_file_path(name, "modules.json", local_files_only=cache_only) is not None


def load_simcse_model(
    model_name_or_path: str, pooler: str | None = None, device: str | None = None, max_seq_length: int | None = None
) -> SentenceTransformer:
    """A SimCSE model (or any sentence-transformers model) as a SentenceTransformer, for the tool and evaluation.

    A sentence-transformers model (a folder or hub name with ``modules.json``: a recipe's output folder, a model
    from the hub) loads as it was saved, ``SentenceTransformer(model_name_or_path)``: its own pooling, Dense and
    Normalize modules, whatever its name. It pools with those modules, so a ``pooler`` for it raises a
    ``ValueError``.

    A released SimCSE checkpoint (e.g. ``princeton-nlp/sup-simcse-bert-base-uncased``, BERT or RoBERTa), or any
    plain transformers checkpoint, gets the pooling the paper uses for it:

    - ``cls_before_pooler``: ``Transformer`` + ``Pooling("cls")``, the last layer's [CLS] (unsupervised models);
    - ``cls``: the same plus a built-in ``Dense(d, d, tanh)`` carrying the checkpoint's own trained pooler weights
      (``pooler.dense``), i.e. BERT's ``pooler_output`` (supervised models);
    - ``avg``: ``Pooling("mean")`` over the last layer.

    ``pooler=None`` picks as the paper's tool does (:func:`default_pooler`). A checkpoint without pooler weights
    asked for ``cls`` raises a ``ValueError`` (transformers would fill the pooler with random weights). The result
    saves with ``model.save(path)`` and reloads with plain ``SentenceTransformer(path)``. ``max_seq_length``, where
    given, is the length it truncates to.
    """
    if is_sentence_transformer(model_name_or_path):
        if pooler is not None:
            raise ValueError(
                f"{model_name_or_path} is a sentence-transformers model (it has modules.json), which pools with its "
                f"own modules; pooler={pooler!r} applies only to plain transformers checkpoints. Drop pooler, or "
                "pass the checkpoint of its encoder (the folder's Transformer module) to choose a pooler."
            )
        with expected_load_report_quiet():
            model = SentenceTransformer(model_name_or_path, device=device)
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        return model
    pooler = pooler or default_pooler(model_name_or_path)
    if pooler not in BUILT_IN_POOLERS:
        raise ValueError(
            f"pooler must be one of {BUILT_IN_POOLERS} (built-in modules only), got {pooler!r}. "
            "avg_first_last and avg_top2 need a layer-averaging module: evaluate them with "
            "`python -m st_simcse.evaluate MODEL --pooler avg_first_last`."
        )
    pooler_weights = _checkpoint_pooler(model_name_or_path) if pooler == "cls" else None
    with expected_load_report_quiet():
        transformer = Transformer(model_name_or_path, max_seq_length=max_seq_length)
    dimension = transformer.get_embedding_dimension()
    modules: list[nn.Module] = [transformer, Pooling(dimension, "mean" if pooler == "avg" else "cls")]
    if pooler_weights is not None:
        weight, bias = pooler_weights
        modules.append(Dense(dimension, dimension, activation_function=nn.Tanh(), init_weight=weight, init_bias=bias))
    return SentenceTransformer(modules=modules, device=device)


def _checkpoint_pooler(model_name_or_path: str) -> tuple[Tensor, Tensor]:
    """The trained ``pooler.dense`` weight and bias of a transformers checkpoint; ValueError if it has none."""
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(model_name_or_path, output_loading_info=True)
    dense = getattr(getattr(model, "pooler", None), "dense", None)
    missing = [key for key in info["missing_keys"] if "pooler" in key]
    if dense is None or missing:
        raise ValueError(
            f"{model_name_or_path} has no trained pooler weights ({', '.join(missing) or 'no pooler layer'}), so "
            "pooler='cls' would use a randomly initialised pooler. Use pooler='cls_before_pooler' (the last layer's "
            "[CLS], the paper's choice for unsupervised models), or a checkpoint that carries pooler.dense."
        )
    return dense.weight.detach().clone(), dense.bias.detach().clone()


class LayerAveragePooling(nn.Module):
    """Mean over the tokens of the average of several hidden layers: the reference evaluation's ``avg_first_last``
    (layers 1 and -1, i.e. the first Transformer layer and the last) and ``avg_top2`` (layers -2 and -1). For
    evaluation only: it is not a built-in sentence-transformers module, so a model using it is not saved."""

    def __init__(self, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        hidden = features["all_layer_embeddings"]
        mask = features["attention_mask"].unsqueeze(-1).to(hidden[-1].dtype)
        averaged = torch.stack([hidden[layer] for layer in self.layers]).mean(0)
        features["sentence_embedding"] = (averaged * mask).sum(1) / mask.sum(1)
        return features

    def save(self, *args, **kwargs) -> None:
        raise NotImplementedError("LayerAveragePooling is for evaluation only; it is not saved with the model.")


def reference_pooler_model(model_name_or_path: str, pooler: str, device: str | None = None) -> SentenceTransformer:
    """A transformers checkpoint with one of the reference evaluation's poolers (``REFERENCE_POOLERS``), whole
    sentences (no truncation below the encoder's limit). ``cls``, ``cls_before_pooler`` and ``avg`` are built-in
    modules (:func:`load_simcse_model`); ``avg_first_last`` and ``avg_top2`` use :class:`LayerAveragePooling`."""
    if pooler not in REFERENCE_POOLERS:
        raise ValueError(f"Unknown pooler {pooler!r}; choose one of {REFERENCE_POOLERS}.")
    if pooler in BUILT_IN_POOLERS:
        return load_simcse_model(model_name_or_path, pooler, device=device)
    with expected_load_report_quiet():
        transformer = Transformer(model_name_or_path, config_kwargs={"output_hidden_states": True})
    layers = (1, -1) if pooler == "avg_first_last" else (-2, -1)
    return SentenceTransformer(modules=[transformer, LayerAveragePooling(layers)], device=device)
