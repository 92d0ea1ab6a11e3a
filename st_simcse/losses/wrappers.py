"""The losses inside sentence-transformers' loss modifiers, MatryoshkaLoss and AdaptiveLayerLoss: how a running
wrapper is recognised, and the refusals of the combinations that cannot train correctly (the README's wrapper table).
A wrapper shows itself when it first hands the loss its inputs, before any gradient: MatryoshkaLoss decorates the
model's ``forward`` (or a gradient-caching loss's ``calculate_loss``), AdaptiveLayerLoss the Transformer module's
``forward``. Refusing there, instead of when the wrapper is built, needs nothing but those public decorations."""

from __future__ import annotations

from sentence_transformers.sentence_transformer.losses.adaptive_layer import AdaptiveLayerLoss, TransformerDecorator
from sentence_transformers.sentence_transformer.losses.matryoshka import ForwardDecorator as MatryoshkaForward
from sentence_transformers.sentence_transformer.losses.matryoshka import MatryoshkaLoss
from torch import nn

from st_simcse.losses.state import unwrap_model

MATRYOSHKA_HEAD_ERROR = (
    "{name}(mlp_head=True) cannot be wrapped in MatryoshkaLoss: the training-only head is a Linear(d, d) over the "
    "full embedding, but MatryoshkaLoss hands the loss truncated, re-normalised embeddings. Use mlp_head=False "
    "(the Matryoshka sizes are then trained directly, as the saved model serves them), or keep the paper's MLP in "
    "the model with st_simcse.build_model(..., mlp_in_model=True), so that MatryoshkaLoss truncates its output."
)
WRAPPED_OPTION_ERROR = (
    "{name} with {options} cannot be wrapped in {wrapper}: these options need the loss's own single forward pass "
    "over the untruncated embeddings (the masked-LM copy, the shared dropout mask, the momentum encoder's queue). "
    "Use the loss without the wrapper, or without those options."
)
ADAPTIVE_CACHED_ERROR = (
    "CachedSimCSELoss cannot be wrapped in AdaptiveLayerLoss: GradCache re-embeds the inputs during the backward "
    "pass, after AdaptiveLayerLoss has removed the hook that supplies the earlier layers. Use SimCSELoss inside "
    "AdaptiveLayerLoss (with or without mlp_head), with a batch size that fits in memory."
)


def under_adaptive_layer_loss(model: nn.Module) -> bool:
    first = unwrap_model(model)[0]
    return isinstance(first.__dict__.get("forward"), TransformerDecorator)


def running_wrapper(model: nn.Module) -> type[nn.Module] | None:
    """The MatryoshkaLoss or AdaptiveLayerLoss class whose forward is running ``model`` now, if any."""
    if isinstance(model.__dict__.get("forward"), MatryoshkaForward):
        return MatryoshkaLoss
    if under_adaptive_layer_loss(model):
        return AdaptiveLayerLoss
    return None


def refuse_wrapper(wrapper: type[nn.Module] | None, name: str, has_head: bool, options: list[str]) -> None:
    """Raise for a combination that cannot train correctly: the training-only head under MatryoshkaLoss, and the
    ``options`` that need the loss's own single forward pass (the masked-LM copy, the shared mask, the queue)."""
    if wrapper is MatryoshkaLoss and has_head:
        raise ValueError(MATRYOSHKA_HEAD_ERROR.format(name=name))
    if wrapper is not None and options:
        raise ValueError(WRAPPED_OPTION_ERROR.format(name=name, options=", ".join(options), wrapper=wrapper.__name__))
