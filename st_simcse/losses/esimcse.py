"""ESimCSELoss (Wu et al. 2022): SimCSE with a momentum encoder and a queue of earlier batches' embeddings as extra
negatives."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sentence_transformers.sentence_transformer.model import SentenceTransformer
from torch import Tensor

from st_simcse.losses.heads import at_least_float32
from st_simcse.losses.simcse import SIMCSE_CITATION, SimCSELoss
from st_simcse.losses.state import register_loss_state, unwrap_model

ESIMCSE_CITATION = """
@inproceedings{wu2022esimcse,
    title={{ESimCSE}: Enhanced Sample Building Method for Contrastive Learning of Unsupervised Sentence Embedding},
    author={Wu, Xing and Gao, Chaochen and Zang, Liangjun and Han, Jizhong and Wang, Zhongyuan and Hu, Songlin},
    booktitle={Proceedings of the 29th International Conference on Computational Linguistics (COLING)},
    year={2022}
}
"""


class ESimCSELoss(SimCSELoss):
    def __init__(
        self,
        model: SentenceTransformer,
        temperature: float = 0.05,
        momentum: float = 0.995,
        queue_size: int = 160,
        mlp_head: bool = False,
        gather_across_devices: bool = False,
    ) -> None:
        """
        ESimCSE (Wu et al., COLING 2022): SimCSE with a momentum-contrast queue of extra negatives. A momentum
        encoder, an exponential moving average of the model that receives no gradient, embeds each batch's anchors;
        a first-in-first-out queue keeps those embeddings from the last ``queue_size`` sentences of earlier
        batches, and every anchor is scored against them as further negatives:

        ``loss_i = -log( e^{sim(h_i, h_i+)/τ} / ( Σ_j e^{sim(h_i, h_j+)/τ} + Σ_k e^{sim(h_i, q_k)/τ} ) )``

        Before each forward pass the momentum encoder follows the model: ``θ_m ← m θ_m + (1 - m) θ``. It runs
        without dropout (a stable target), and its embeddings pass through the loss's MLP head when there is one.
        The batch's own keys enter the queue after its loss is computed, so a sentence is never its own negative.
        With an empty queue (the first step) the loss equals :class:`SimCSELoss`'s. ESimCSE's other half, word
        repetition for the positive, is data: ``DuplicateInputDataset(..., augmentation=WordRepetition(0.32))``.

        The momentum encoder and the queue belong to this loss: they are never saved in the model, and Trainer
        checkpoints carry them (``loss_state.safetensors``, see :class:`st_simcse.LossStateCallback`), so a resumed
        run continues with the same queue. Under torchrun every device's keys are gathered before they are queued,
        so all devices hold the same queue.

        Args:
            model: SentenceTransformer model (its copy becomes the momentum encoder, so memory grows by one model).
            temperature: The temperature ``τ`` (0.05, as SimCSE).
            momentum: The momentum ``m`` of the moving average (ESimCSE's 0.995). 0 copies the model every step.
            queue_size: How many earlier sentence embeddings serve as extra negatives (ESimCSE: 2.5 times the
                batch size, 160 for batch 64). 0 gives SimCSE with word repetition alone.
            mlp_head: See :class:`SimCSELoss` (the paper's training-only MLP, owned by the loss).
            gather_across_devices: See :class:`SimCSELoss`.

        References:
            - ESimCSE: Enhanced Sample Building Method for Contrastive Learning of Unsupervised Sentence Embedding:
              https://arxiv.org/abs/2109.04380
            - Momentum Contrast (MoCo): https://arxiv.org/abs/1911.05722
            - SimCSE: https://arxiv.org/abs/2104.08821

        Requirements:
            1. Unsupervised (sentence, augmented sentence) pairs, e.g. ``DuplicateInputDataset`` with
               ``WordRepetition``; single columns and plain (s, s) pairs also train (SimCSE plus the queue).
            2. Batches of several examples.

        Inputs:
            +---------------------------------------------------+--------+
            | Inputs                                            | Labels |
            +===================================================+========+
            | (sentence, word-repeated sentence) pairs          | none   |
            +---------------------------------------------------+--------+
            | (sentence,) or (sentence, sentence)               | none   |
            +---------------------------------------------------+--------+

        Relations:
            - :class:`SimCSELoss` is this loss with ``queue_size=0``.
            - Refused inside :class:`MatryoshkaLoss` and :class:`AdaptiveLayerLoss` (the queue holds full,
              last-layer embeddings).

        Example:
            ::

                from torch.utils.data import DataLoader
                from st_simcse import DuplicateInputDataset, ESimCSELoss, build_model
                from st_simcse.data.augmentation import WordRepetition

                model = build_model("bert-base-uncased", pooling="cls", max_seq_length=32)
                data = DuplicateInputDataset.from_text_file("wiki1m_for_simcse.txt", augmentation=WordRepetition(0.32))
                loss = ESimCSELoss(model, momentum=0.995, queue_size=160, mlp_head=True)
                model.fit([(DataLoader(data, shuffle=True, batch_size=64), loss)], optimizer_params={"lr": 3e-5})
        """
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}; ESimCSE uses 0.995.")
        if not (isinstance(queue_size, int) and queue_size >= 0):
            raise ValueError(
                f"queue_size must be an integer >= 0, got {queue_size!r}; ESimCSE uses 2.5 x the batch size."
            )
        super().__init__(
            model, temperature=temperature, mlp_head=mlp_head, gather_across_devices=gather_across_devices
        )
        dimension = model.get_embedding_dimension()
        if dimension is None:
            raise ValueError("ESimCSELoss needs a model with a known embedding dimension.")
        self.momentum = float(momentum)
        self.queue_size = queue_size
        self.momentum_encoder = copy.deepcopy(unwrap_model(model)).requires_grad_(False)
        # Newest first; an entry is a negative only once filled (an empty queue leaves SimCSE's loss unchanged).
        self.register_buffer("queue", torch.zeros(queue_size, dimension))
        self.register_buffer("queue_filled", torch.zeros(queue_size, dtype=torch.bool))
        register_loss_state(self)

    def _options_without_wrappers(self) -> list[str]:
        return ["the momentum queue", *super()._options_without_wrappers()]

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        sentence_features = self._checked_columns(sentence_features)
        self._follow_model()
        embeddings, _ = self._embed(sentence_features)
        keys = self._momentum_keys(sentence_features[0])
        loss = self.compute_loss_from_embeddings(embeddings, labels)
        self._enqueue(keys)
        return loss

    @torch.no_grad()
    def _follow_model(self) -> None:
        momentum_parameters = list(self.momentum_encoder.parameters())
        torch._foreach_mul_(momentum_parameters, self.momentum)
        torch._foreach_add_(momentum_parameters, list(unwrap_model(self.model).parameters()), alpha=1 - self.momentum)

    @torch.no_grad()
    def _momentum_keys(self, anchors: dict[str, Tensor]) -> Tensor:
        self.momentum_encoder.eval()
        keys = self.momentum_encoder(dict(anchors))["sentence_embedding"]
        if self.mlp is not None:
            keys = self.mlp(keys)
        return F.normalize(at_least_float32(keys), dim=-1)

    def _extra_logits(self, anchors: Tensor) -> Tensor | None:
        if self.queue_size == 0:
            return None
        logits = anchors @ self.queue.T / self.temperature
        return logits.masked_fill(~self.queue_filled, float("-inf"))

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        if self.queue_size == 0:
            return
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, keys.contiguous())
            keys = torch.cat(gathered)  # rank order: every device queues the same keys
        filled = torch.ones(keys.size(0), dtype=torch.bool, device=keys.device)
        # New tensors, not in-place writes: this step's logits still hold the old queue for the backward pass.
        self.queue = torch.cat([keys.to(self.queue.dtype), self.queue])[: self.queue_size]
        self.queue_filled = torch.cat([filled, self.queue_filled])[: self.queue_size]

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "momentum": self.momentum,
            "queue_size": self.queue_size,
            "mlp_head": self.mlp_head,
            "gather_across_devices": self.gather_across_devices,
        }

    @property
    def citation(self) -> str:
        return ESIMCSE_CITATION + SIMCSE_CITATION
