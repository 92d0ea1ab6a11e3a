"""CachedSimCSELoss: SimCSELoss with GradCache (Gao et al. 2021b), for batches beyond the activation memory."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin, has_static_embedding_input
from sentence_transformers.base.losses.merged_forward import merge_feature_batches
from sentence_transformers.sentence_transformer.model import SentenceTransformer
from torch import Tensor, nn

from st_simcse.losses.heads import MLPHead
from st_simcse.losses.inputs import checked_columns
from st_simcse.losses.simcse import SIMCSE_CITATION, SimCSELoss
from st_simcse.losses.wrappers import ADAPTIVE_CACHED_ERROR, MATRYOSHKA_HEAD_ERROR, under_adaptive_layer_loss

GRADCACHE_CITATION = """
@misc{gao2021scaling,
    title={Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup},
    author={Luyu Gao and Yunyi Zhang and Jiawei Han and Jamie Callan},
    year={2021},
    eprint={2101.06983},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}
"""


class CachedSimCSELoss(CachedLossMixin, nn.Module):
    def __init__(
        self,
        model: SentenceTransformer,
        temperature: float = 0.05,
        hard_negative_weight: float = 0.0,
        mlp_head: bool = False,
        gather_across_devices: bool = False,
        mini_batch_size: int = 64,
        show_progress_bar: bool = False,
    ) -> None:
        """
        :class:`SimCSELoss` with GradCache (Gao et al. 2021b): any batch size within the activation memory of
        one mini-batch. All columns are merged into one batch of rows (as :class:`SimCSELoss` does), then:

            (1) the rows are embedded mini-batch by mini-batch without gradients, saving each mini-batch's RNG
                state;
            (2) the SimCSE loss is computed on the full batch of embeddings and back-propagated to them;
            (3) every mini-batch is embedded again with gradients, *replaying the saved RNG state* so dropout
                draws the same masks as in (1), and the cached embedding gradients are pushed through it.

        The loss and the gradients therefore equal :class:`SimCSELoss` computed on the same dropout draws; with
        ``mini_batch_size`` at least the number of rows (``columns * batch_size``) the single mini-batch is exactly
        :class:`SimCSELoss`'s merged forward pass.

        Args:
            model: SentenceTransformer model.
            temperature: See :class:`SimCSELoss`.
            hard_negative_weight: See :class:`SimCSELoss` (a log-weight on each anchor's own hard negative).
            mlp_head: See :class:`SimCSELoss` (training-only MLP owned by the loss).
            gather_across_devices: See :class:`SimCSELoss`.
            mini_batch_size: Rows per forward pass: this bounds the activation memory. Larger is faster.
            show_progress_bar: Show a progress bar over the mini-batches.

        References:
            - SimCSE: https://arxiv.org/abs/2104.08821
            - Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup (GradCache):
              https://arxiv.org/abs/2101.06983

        Requirements:
            1. (anchor, positive) pairs or (anchor, positive, hard_negative) triplets, as :class:`SimCSELoss`.
            2. Large batches with a small ``mini_batch_size``; each step costs about one extra forward pass.

        Inputs:
            +---------------------------------------------------+--------+
            | Inputs                                            | Labels |
            +===================================================+========+
            | (sentence,) single column (unsupervised SimCSE)   | none   |
            +---------------------------------------------------+--------+
            | (sentence, sentence) pairs (unsupervised SimCSE)  | none   |
            +---------------------------------------------------+--------+
            | (anchor, positive, hard_negative) triplets        | none   |
            +---------------------------------------------------+--------+

        Relations:
            - Equal to :class:`SimCSELoss` (same loss and gradients), trading about one extra forward pass per
              step for memory that does not grow with the batch.
            - The SimCSE counterpart of :class:`CachedMultipleNegativesRankingLoss`, with the same surface: the
              hyperparameters are properties delegated to (and assignable through) the wrapped ``SimCSELoss``.
            - Inside :class:`MatryoshkaLoss`: trains with ``mlp_head=False``; ``mlp_head=True`` is refused at the
              first step, before any gradient. Inside :class:`AdaptiveLayerLoss`: refused at the first step
              (GradCache re-embeds after AdaptiveLayerLoss's hook is gone); use :class:`SimCSELoss` there.

        Example:
            ::

                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
                from st_simcse import CachedSimCSELoss, DuplicateInputDataset

                model = SentenceTransformer("bert-base-uncased")
                train_dataset = DuplicateInputDataset.from_text_file("wiki1m_for_simcse.txt").to_hf_dataset()
                loss = CachedSimCSELoss(model, mlp_head=True, mini_batch_size=64)
                # per_device_train_batch_size=1024 now fits where SimCSELoss would run out of memory
        """
        super().__init__()
        if has_static_embedding_input(model):
            raise ValueError(
                "CachedSimCSELoss cannot split a StaticEmbedding model's inputs into mini-batches; "
                "use SimCSELoss instead."
            )
        if not (isinstance(mini_batch_size, int) and mini_batch_size > 0):
            raise ValueError(f"mini_batch_size must be a positive integer, got {mini_batch_size!r}.")
        self.model = model
        # The wrapped loss validates and owns the hyperparameters (and the MLP head's parameters).
        self.loss = SimCSELoss(
            model,
            temperature=temperature,
            hard_negative_weight=hard_negative_weight,
            mlp_head=mlp_head,
            gather_across_devices=gather_across_devices,
        )
        self.mini_batch_size = mini_batch_size
        self.show_progress_bar = show_progress_bar
        self._num_columns = 0

    # The hyperparameters live on the wrapped SimCSELoss; assigning them here reaches it (see __setattr__).
    _delegated_to_wrapped_loss = ("temperature", "hard_negative_weight", "gather_across_devices")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._delegated_to_wrapped_loss and isinstance(getattr(self, "loss", None), nn.Module):
            setattr(self.loss, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        sentence_features = checked_columns(sentence_features)
        # A wrapper shows itself when it first hands the loss its inputs: refused here, before any gradient.
        if under_adaptive_layer_loss(self.model):
            raise ValueError(ADAPTIVE_CACHED_ERROR)
        if self.mlp is not None and "calculate_loss" in self.__dict__:  # MatryoshkaLoss decorated calculate_loss
            raise ValueError(MATRYOSHKA_HEAD_ERROR.format(name=type(self).__name__))
        self.loss._warn_if_views_identical(sentence_features)
        merged = merge_feature_batches(sentence_features)
        self._num_columns = len(sentence_features)
        # Columns that cannot merge are cached one by one; calculate_loss splits a merged column back apart.
        return self.forward_cached([merged] if merged is not None else sentence_features, labels)

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        columns = [torch.cat(column) for column in reps]
        if len(columns) == 1:
            columns = list(columns[0].chunk(self._num_columns))
        loss = self.loss.compute_loss_from_embeddings(columns, labels)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        # This loss's own constructor arguments (the wrapped loss has more, which this one does not take).
        inner = self.loss.get_config_dict()
        shared = ("temperature", "hard_negative_weight", "mlp_head", "gather_across_devices")
        return {**{name: inner[name] for name in shared}, "mini_batch_size": self.mini_batch_size}

    @property
    def temperature(self) -> float:
        return self.loss.temperature

    @property
    def hard_negative_weight(self) -> float:
        return self.loss.hard_negative_weight

    @property
    def gather_across_devices(self) -> bool:
        return self.loss.gather_across_devices

    @property
    def mlp_head(self) -> bool:
        return self.loss.mlp_head

    @property
    def mlp(self) -> MLPHead | None:
        return self.loss.mlp

    @property
    def scale(self) -> float:
        return self.loss.scale

    @property
    def citation(self) -> str:
        return SIMCSE_CITATION + GRADCACHE_CITATION
