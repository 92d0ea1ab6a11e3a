"""The training-only MLP head of the paper, owned by the loss (never part of the saved model), and the precision
the losses compute their logits in."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MLPHead(nn.Module):
    """The paper's MLP over the pooled [CLS] embedding: ``tanh(W h + b)``, initialised like BERT's own
    layers (normal with std ``initializer_range``, zero bias) as the reference code does."""

    def __init__(self, dimension: int, initializer_range: float = 0.02) -> None:
        super().__init__()
        self.dense = nn.Linear(dimension, dimension)
        self.activation = nn.Tanh()
        self.initializer_range = initializer_range
        nn.init.normal_(self.dense.weight, mean=0.0, std=initializer_range)
        nn.init.zeros_(self.dense.bias)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw the initialisation again from ``generator`` (a CPU generator, whatever device the head is on)."""
        weight = torch.empty(self.dense.weight.shape).normal_(0.0, self.initializer_range, generator=generator)
        self.dense.weight.copy_(weight)
        self.dense.bias.zero_()

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.activation(self.dense(embeddings))


def initializer_range(model: nn.Module) -> float:
    for module in model.modules():
        config = getattr(module, "config", None)
        value = getattr(config, "initializer_range", None)
        if isinstance(value, float):
            return value
    return 0.02


def at_least_float32(tensor: Tensor) -> Tensor:
    """Half-precision logits in float32: cos/tau with tau = 0.05 and a 30k-word softmax need its resolution."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor
