"""The paper's released models and baselines as SentenceTransformers: a sentence-transformers model as it was saved,
or a plain transformers checkpoint with the pooler the paper's tool and evaluation give it. Used by the ``simcse``
tool and the evaluation command."""

from __future__ import annotations

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
from torch import Tensor, nn

from st_simcse.models.build import expected_load_report_quiet
from st_simcse.models.settings import BUILT_IN_POOLERS, REFERENCE_POOLERS, default_pooler, is_sentence_transformer


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
