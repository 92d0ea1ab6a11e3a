"""GuidedSimCSELoss: SimCSE that keeps what a trained start model knows, for domain adaptation. A frozen guide (by
default a copy of the start model) judges every batch: its in-batch similarity distribution is distilled into the
model, and the in-batch negatives it finds too similar to an anchor (false negatives) can be left out."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer.model import SentenceTransformer
from torch import Tensor

from st_simcse.losses.heads import at_least_float32
from st_simcse.losses.simcse import SIMCSE_CITATION, SimCSELoss
from st_simcse.losses.state import register_loss_state, unwrap_model

DISTILLATION_CITATION = """
@article{hinton2015distilling,
    title={Distilling the Knowledge in a Neural Network},
    author={Hinton, Geoffrey and Vinyals, Oriol and Dean, Jeff},
    journal={arXiv preprint arXiv:1503.02531},
    year={2015}
}
"""


class GuidedSimCSELoss(SimCSELoss):
    def __init__(
        self,
        model: SentenceTransformer,
        temperature: float = 0.05,
        hard_negative_weight: float = 0.0,
        mlp_head: bool = False,
        gather_across_devices: bool = False,
        guide: SentenceTransformer | None = None,
        distillation_weight: float = 10.0,
        distillation_temperature: float = 0.05,
        false_negative_threshold: float | None = None,
    ) -> None:
        """
        SimCSE guided by a frozen model, for continuing a trained sentence model on its user's domain without
        losing what it knows. Unsupervised SimCSE treats every other sentence of the batch as a negative; a trained
        model already places paraphrases together, and in a domain corpus many in-batch "negatives" are
        near-paraphrases, so plain SimCSE pulls its embedding away from what it learnt. The guide, by default a
        frozen copy of the model as it is when the loss is built (the start model), embeds each batch without
        dropout and without gradients, and adds two things to :class:`SimCSELoss`:

        - **distillation**: each anchor's similarity distribution over the batch's candidates (its positive, the
          other positives, the hard negatives) is kept close to the guide's,
          ``loss = SimCSE + λ · mean_i KL(p_guide(·|i) || p_model(·|i))`` with
          ``p(j|i) = softmax_j(cos(h_i, h_j+) / τ_d)``, computed on the model's own embedding (before the
          training-only MLP head, i.e. the embedding that is saved and served);
        - **false-negative removal**: a candidate other than the anchor's own positive whose guide cosine with the
          anchor exceeds ``false_negative_threshold`` is dropped from that anchor's negatives in SimCSE's term.

        With ``distillation_weight=0`` and ``false_negative_threshold=None`` the loss equals :class:`SimCSELoss`.

        Args:
            model: SentenceTransformer model, with dropout active for unsupervised SimCSE.
            temperature: SimCSE's temperature ``τ`` (see :class:`SimCSELoss`).
            hard_negative_weight: See :class:`SimCSELoss`.
            mlp_head: See :class:`SimCSELoss` (the training-only MLP; distillation acts before it).
            gather_across_devices: See :class:`SimCSELoss`. The guide's embeddings are gathered too, so false
                negatives are found among every device's candidates; distillation uses each device's own batch.
            guide: The frozen model that judges the batches. None (the default): a frozen copy of ``model`` as it
                is now, the start model. Another model must share ``model``'s tokenizer, since the loss receives
                token ids. The guide is training-only state: it is never saved with the model, and not written
                into checkpoints; a resumed run rebuilds it from the start model, and a fingerprint of its weights
                in the checkpoint refuses a resume whose guide differs.
            distillation_weight: ``λ``, the weight of the distillation term; 0 turns it off. The default, 10, is
                the domain study's recommended setting for a trained start model (with ``mlp_head=False``).
            distillation_temperature: ``τ_d``, the temperature of both distributions of the distillation term.
            false_negative_threshold: A cosine in (-1, 1]: in-batch candidates that the guide places closer than
                this to an anchor are not its negatives. None (the default) removes none.

        References:
            - SimCSE: Simple Contrastive Learning of Sentence Embeddings: https://arxiv.org/abs/2104.08821
            - Distilling the Knowledge in a Neural Network: https://arxiv.org/abs/1503.02531
            - GISTEmbed (a guide model that removes in-batch false negatives): https://arxiv.org/abs/2402.16829

        Requirements:
            1. A start model worth keeping: a trained sentence-transformers model (for a raw transformers checkpoint
               there is nothing to keep; use :class:`SimCSELoss`).
            2. The inputs of :class:`SimCSELoss`: single sentences or (sentence, sentence) pairs for unsupervised
               SimCSE, (anchor, positive) pairs, or (anchor, positive, hard_negative) triplets.

        Inputs:
            +---------------------------------------------------+--------+
            | Inputs                                            | Labels |
            +===================================================+========+
            | (sentence,) single column (unsupervised SimCSE)   | none   |
            +---------------------------------------------------+--------+
            | (sentence, sentence) pairs (unsupervised SimCSE)  | none   |
            +---------------------------------------------------+--------+
            | (anchor, positive) pairs                          | none   |
            +---------------------------------------------------+--------+
            | (anchor, positive, hard_negative) triplets        | none   |
            +---------------------------------------------------+--------+

        Relations:
            - :class:`SimCSELoss` is this loss without the guide.
            - :class:`GISTEmbedLoss` uses a guide model to remove false negatives from
              :class:`MultipleNegativesRankingLoss`; here the guide also anchors the model through distillation,
              which is what keeps a strong start model from drifting on unlabelled text.
            - :class:`MSELoss` distils a teacher's embeddings themselves; this distils only the in-batch similarity
              structure, leaving the model free to move where that structure is kept.
            - MatryoshkaLoss and AdaptiveLayerLoss cannot wrap it (the guide's term needs the full embedding).

        Example:
            ::

                from torch.utils.data import DataLoader
                from st_simcse import DuplicateInputDataset, GuidedSimCSELoss, build_model

                model = build_model("sentence-transformers/all-MiniLM-L6-v2", max_seq_length=32)
                train = DuplicateInputDataset.from_corpus("my_domain.txt", duplicate_in_loss=True)
                loss = GuidedSimCSELoss(model)  # distillation 10; the guide: a frozen copy of the model
                model.fit([(DataLoader(train, shuffle=True, batch_size=64), loss)], optimizer_params={"lr": 3e-5})
        """
        super().__init__(
            model,
            temperature=temperature,
            hard_negative_weight=hard_negative_weight,
            mlp_head=mlp_head,
            gather_across_devices=gather_across_devices,
        )
        if not (isinstance(distillation_weight, (int, float)) and math.isfinite(distillation_weight)):
            raise ValueError(f"distillation_weight must be a finite number >= 0, got {distillation_weight!r}.")
        if distillation_weight < 0:
            raise ValueError(f"distillation_weight must be >= 0 (0: no distillation), got {distillation_weight}.")
        if not (
            isinstance(distillation_temperature, (int, float))
            and math.isfinite(distillation_temperature)
            and distillation_temperature > 0
        ):
            raise ValueError(
                f"distillation_temperature must be a positive finite number, got {distillation_temperature!r} "
                "(0.05, SimCSE's temperature, is a good start)."
            )
        if false_negative_threshold is not None and not (
            isinstance(false_negative_threshold, (int, float)) and -1 < false_negative_threshold <= 1
        ):
            raise ValueError(
                f"false_negative_threshold must be a cosine in (-1, 1] or None (remove none), got "
                f"{false_negative_threshold!r}."
            )
        if guide is None:
            guide = copy.deepcopy(unwrap_model(model))
        elif guide.tokenizer.get_vocab() != model.tokenizer.get_vocab():
            raise ValueError(
                "The guide must share the model's tokenizer (the loss receives token ids, not texts); this guide's "
                "vocabulary differs. Pass guide=None to guide with a frozen copy of the model itself."
            )
        self.guide = guide.requires_grad_(False).eval()
        self.distillation_weight = float(distillation_weight)
        self.distillation_temperature = float(distillation_temperature)
        self.false_negative_threshold = None if false_negative_threshold is None else float(false_negative_threshold)
        # The guide is rebuilt, not checkpointed: a fingerprint of its weights is, to refuse a resume with another.
        self.register_buffer("guide_fingerprint", weights_fingerprint(self.guide))
        self._false_negatives: Tensor | None = None
        register_loss_state(self)

    # Checkpointing (st_simcse.losses.state): the guide's weights are left out, its fingerprint is compared.
    not_checkpointed = ("guide.",)
    compared_on_resume = ("guide_fingerprint",)

    def train(self, mode: bool = True) -> GuidedSimCSELoss:
        super().train(mode)
        self.guide.eval()  # the guide judges without dropout, always
        return self

    def _options_without_wrappers(self) -> list[str]:
        return ["the guide", *super()._options_without_wrappers()]

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        columns = self._checked_columns(sentence_features)
        embeddings, _ = self._embed(columns)
        guided = self._guide_embeddings(columns)
        if self.false_negative_threshold is not None:
            self._false_negatives = self._false_negative_mask(guided)
        try:
            loss = self.compute_loss_from_embeddings(embeddings, labels)
        finally:
            self._false_negatives = None
        if self.distillation_weight > 0:
            loss = loss + self.distillation_weight * self.distillation_loss(embeddings, guided)
        return loss

    @torch.no_grad()
    def _guide_embeddings(self, columns: list[dict[str, Tensor]]) -> list[Tensor]:
        """The guide's normalised float32 embeddings of every column; a column that repeats an earlier one (the
        duplicated sentences of unsupervised SimCSE) is embedded once."""
        self.guide.eval()
        unique: list[dict[str, Tensor]] = []
        which: list[int] = []
        for column in columns:
            same = next((k for k, seen in enumerate(unique) if _same_inputs(seen, column)), None)
            if same is None:
                unique.append({name: value for name, value in column.items() if name in _INPUT_KEYS})
                same = len(unique) - 1
            which.append(same)
        embedded = embed_columns(self.guide, unique, separate_first=False)
        normalised = [F.normalize(at_least_float32(embedding), dim=-1) for embedding in embedded]
        return [normalised[k] for k in which]

    def _false_negative_mask(self, guided: list[Tensor]) -> Tensor:
        """True where a candidate (columns 1..n, gathered like SimCSE's candidates) is closer to the anchor, in the
        guide's judgement, than ``false_negative_threshold``, except each anchor's own positive."""
        anchors, candidates = guided[0], guided[1:]
        offset = 0
        if self.gather_across_devices and dist.is_available() and dist.is_initialized():
            candidates = [_all_gather(candidate) for candidate in candidates]
            offset = dist.get_rank() * anchors.size(0)
        similarities = anchors @ torch.cat(candidates).T
        mask = similarities > self.false_negative_threshold
        rows = torch.arange(anchors.size(0), device=mask.device)
        mask[rows, rows + offset] = False  # the positive is never removed
        return mask

    def _masked_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self._false_negatives is None:
            return logits
        return logits.masked_fill(self._false_negatives, float("-inf"))

    def distillation_loss(self, embeddings: list[Tensor], guided: list[Tensor]) -> Tensor:
        """``mean_i KL(p_guide(·|i) || p_model(·|i))`` over this device's batch, ``p(j|i)`` the softmax of the
        anchor's cosines to the candidates divided by ``distillation_temperature``."""
        with torch.autocast(device_type=embeddings[0].device.type, enabled=False):
            anchors = F.normalize(at_least_float32(embeddings[0]), dim=-1)
            candidates = F.normalize(at_least_float32(torch.cat(embeddings[1:])), dim=-1)
            student = F.log_softmax(anchors @ candidates.T / self.distillation_temperature, dim=-1)
            teacher = F.log_softmax(guided[0] @ torch.cat(guided[1:]).T / self.distillation_temperature, dim=-1)
            return F.kl_div(student, teacher, reduction="batchmean", log_target=True)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "hard_negative_weight": self.hard_negative_weight,
            "mlp_head": self.mlp_head,
            "gather_across_devices": self.gather_across_devices,
            "distillation_weight": self.distillation_weight,
            "distillation_temperature": self.distillation_temperature,
            "false_negative_threshold": self.false_negative_threshold,
        }

    @property
    def citation(self) -> str:
        return SIMCSE_CITATION + DISTILLATION_CITATION


# What a forward pass reads of a column; the rest (e.g. an AdaptiveLayerLoss's stored layers) is not input.
_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds", "cu_seq_lens_q",
               "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")  # fmt: skip


def _same_inputs(first: dict[str, Tensor], second: dict[str, Tensor]) -> bool:
    a, b = first.get("input_ids"), second.get("input_ids")
    return a is not None and b is not None and (a is b or (a.shape == b.shape and torch.equal(a, b)))


def _all_gather(tensor: Tensor) -> Tensor:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered)


def weights_fingerprint(model: torch.nn.Module) -> Tensor:
    """Per weight tensor of ``model``, its sum and its sum of squares (float64): equal for a rebuilt copy of the same
    weights, different for another model or a trained one."""
    values = [
        torch.stack([tensor.detach().double().sum(), tensor.detach().double().pow(2).sum()])
        for tensor in model.state_dict().values()
        if torch.is_floating_point(tensor)
    ]
    return torch.cat(values).cpu() if values else torch.zeros(0, dtype=torch.float64)
