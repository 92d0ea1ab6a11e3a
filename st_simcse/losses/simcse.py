"""SimCSELoss: the contrastive loss of SimCSE (Gao, Yao & Chen 2021), unsupervised and supervised, in one merged
forward pass over every column."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer.model import SentenceTransformer
from sentence_transformers.util import all_gather_with_grad, get_rank
from torch import Tensor, nn

from st_simcse.losses.heads import MLPHead, at_least_float32, initializer_range
from st_simcse.losses.inputs import checked_columns, dropout_probabilities
from st_simcse.losses.mlm import MLM_HEAD_INITS, build_lm_head, embed_with_masked_copy, reset_lm_head
from st_simcse.losses.state import register_loss, register_loss_state, trained_own_parameters
from st_simcse.losses.wrappers import refuse_wrapper, running_wrapper, under_adaptive_layer_loss

logger = logging.getLogger(__name__)

SIMCSE_CITATION = """
@inproceedings{gao2021simcse,
    title={{SimCSE}: Simple Contrastive Learning of Sentence Embeddings},
    author={Gao, Tianyu and Yao, Xingcheng and Chen, Danqi},
    booktitle={Empirical Methods in Natural Language Processing (EMNLP)},
    year={2021}
}
"""


class SimCSELoss(nn.Module):
    def __init__(
        self,
        model: SentenceTransformer,
        temperature: float = 0.05,
        hard_negative_weight: float = 0.0,
        mlp_head: bool = False,
        gather_across_devices: bool = False,
        mlm_weight: float = 0.0,
        mlm_probability: float = 0.15,
        mlm_head_init: str = "auto",
        shared_dropout_mask: bool = False,
    ) -> None:
        """
        SimCSE: the contrastive loss of Gao, Yao & Chen (2021). For every anchor ``h_i`` in a batch of ``N``,
        its positive ``h_i+`` must be more similar than the positives of all other anchors (in-batch
        negatives) and, when a third column is given, than every hard negative ``h_j-`` in the batch:

        ``loss_i = -log( e^{sim(h_i, h_i+)/τ} / Σ_j ( e^{sim(h_i, h_j+)/τ} + α^{1[i=j]} e^{sim(h_i, h_j-)/τ} ) )``

        with ``sim`` the cosine similarity and ``τ`` the temperature (paper eq. 1 for pairs, eq. 5 with the
        weight ``α`` of its Table D.1 for triplets). The loss is the mean of ``loss_i`` over the batch.

        Unsupervised SimCSE is the pair case in which anchor and positive are the *same* sentence: the two
        copies pass through the encoder with different dropout masks, and dropout alone makes the positive
        pair. So all columns are embedded in ONE merged forward pass (rows ``[anchors; positives;
        negatives]``), exactly like the paper's code, which flattens ``(batch, 2, length)`` into one batch:
        every row draws its own dropout mask within a single encoder call. This is also faster than one
        forward per column.

        Args:
            model: SentenceTransformer model. Dropout must be active (the default for BERT-like models) for
                unsupervised SimCSE; a model without dropout gets a warning, as the two views would be identical.
            temperature: The temperature ``τ`` dividing the cosine similarities (the paper uses 0.05).
                ``scale = 1 / temperature`` in the terms of :class:`MultipleNegativesRankingLoss`.
            hard_negative_weight: The paper's ``α``, given as a **log-weight**, exactly as the reference code
                applies it: this constant is *added to the logit* ``sim(h_i, h_i-)/τ`` of each anchor's OWN hard
                negative only; the hard negatives of other anchors are untouched. ``0.0`` (the default and the
                paper's best setting) therefore means ``α = 1``, i.e. no reweighting; ``math.log(2)`` means
                ``α = 2``. It has no effect without a hard-negative column.
            mlp_head: If True, add the paper's training-only MLP (``Linear(d, d)`` + ``tanh``) over the pooled
                embedding, as used for unsupervised SimCSE with [CLS] pooling. The head belongs to this loss: it
                is trained with the model (its parameters are picked up by ``model.fit`` and by
                :class:`SentenceTransformerTrainer`), but it is not part of ``model``, so evaluation and the
                saved model use the embedding *without* it (the paper's ``cls_before_pooler``). Trainer
                checkpoints carry it (``loss_state.safetensors``, written by :class:`st_simcse.LossStateCallback`,
                which importing ``st_simcse`` adds to every Trainer, ``model.fit``'s included), so
                ``resume_from_checkpoint`` restores it exactly; a checkpoint without it is refused on resume.
                For supervised SimCSE, where the paper keeps the MLP at test time, build the model with
                :func:`st_simcse.build_model` and ``mlp_in_model=True`` instead.
            gather_across_devices: If True, gather the positives and hard negatives of all devices (with
                gradients) before computing the loss, so every anchor sees ``world_size * N`` positives and
                as many hard negatives per column. Recommended for multi-GPU training.
            mlm_weight: The weight ``λ`` of the masked-language-model auxiliary objective of the paper's appendix
                (its code's ``--do_mlm --mlm_weight 0.1``): the loss becomes SimCSE's plus ``λ`` times BERT's
                masked-LM cross-entropy on a separately masked copy of the anchors, which is embedded in the same
                merged forward pass. ``0.0`` (the default, the paper's main setting) turns it off. The LM head
                belongs to this loss like the MLP head: trained, checkpointed with the loss state, never saved in
                the model.
            mlm_probability: The share of real tokens chosen for prediction (0.15); a chosen token becomes
                ``[MASK]`` 80 % of the time, a random token 10 %, and stays 10 %, as in BERT.
            mlm_head_init: Where the LM head's weights come from: ``"checkpoint"`` (the encoder checkpoint's own
                trained MLM head), ``"random"`` (as the paper's code, whose ``lm_head`` does not load the
                pre-trained head: normal(0, initializer_range), untied from the embeddings), or ``"auto"`` (the
                checkpoint's where it has one, else random). Only used with ``mlm_weight > 0``.
            shared_dropout_mask: An ablation, not a training setting: both copies of a sentence share ONE
                dropout mask (the paper's "fixed 0.1" of Table 3), so the positive equals its anchor and training
                collapses. Needs positives that equal their anchors.

        References:
            - SimCSE: Simple Contrastive Learning of Sentence Embeddings: https://arxiv.org/abs/2104.08821
            - Reference implementation: https://github.com/princeton-nlp/SimCSE

        Requirements:
            1. Single sentences or (sentence, sentence) pairs for unsupervised SimCSE (see
               :class:`st_simcse.DuplicateInputDataset`): a single column is embedded twice in the merged pass, so
               each sentence is tokenized only once; or supervised (anchor, positive) pairs.
            2. (anchor, positive, hard_negative) triplets, e.g. NLI (premise, entailment, contradiction).
            3. Batches of several examples: the other examples of the batch are the negatives.

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
            - :class:`MultipleNegativesRankingLoss` computes the same objective for pairs without the MLP head
              and with ``hard_negative_weight=0``, but embeds the anchor column in its own forward pass; this loss
              merges all columns into one pass, as SimCSE's code does, and adds the head and the ``α`` weight.
            - :class:`st_simcse.CachedSimCSELoss` gives the same loss and gradients with GradCache, for batch
              sizes that do not fit in memory.
            - Inside :class:`MatryoshkaLoss`: trains with ``mlp_head=False`` (the loss at every truncated size);
              ``mlp_head=True`` is refused at the first step, before any gradient (the head is ``d x d``).
            - Inside :class:`AdaptiveLayerLoss`: trains, with or without the head (the head then maps every layer's
              pooled embedding). AdaptiveLayerLoss needs one forward pass per column, so the merged forward is off
              there; each copy of a sentence still gets its own dropout mask. ``mlm_weight > 0`` and
              ``shared_dropout_mask`` are refused inside either wrapper.
            - :class:`st_simcse.ESimCSELoss` adds a momentum encoder and a queue of earlier batches' embeddings as
              extra negatives.

        Example:
            ::

                from sentence_transformers import (
                    SentenceTransformer,
                    SentenceTransformerTrainer,
                    SentenceTransformerTrainingArguments,
                )
                from st_simcse import DuplicateInputDataset, SimCSELoss, build_model

                model = build_model("bert-base-uncased", pooling="cls", max_seq_length=32)
                train_dataset = DuplicateInputDataset.from_text_file("wiki1m_for_simcse.txt").to_hf_dataset()
                loss = SimCSELoss(model, temperature=0.05, mlp_head=True)
                args = SentenceTransformerTrainingArguments(
                    output_dir="output/unsup-simcse",
                    per_device_train_batch_size=64,
                    learning_rate=3e-5,
                    num_train_epochs=1,
                    warmup_steps=0,
                    weight_decay=0.0,
                    lr_scheduler_type="linear",
                )
                trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss)
                trainer.train()  # later: trainer.train(resume_from_checkpoint=True) restores the head too
        """
        super().__init__()
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(
                f"temperature must be a positive finite number, got {temperature!r}. The paper uses 0.05; "
                "the logits are cos_sim / temperature."
            )
        if not (isinstance(hard_negative_weight, (int, float)) and math.isfinite(hard_negative_weight)):
            raise ValueError(
                f"hard_negative_weight must be a finite number, got {hard_negative_weight!r}. It is the paper's "
                "alpha as a log-weight added to each anchor's own hard-negative logit: 0.0 means alpha = 1 "
                "(no reweighting), math.log(alpha) gives any other alpha > 0."
            )
        if not (isinstance(mlm_weight, (int, float)) and math.isfinite(mlm_weight) and mlm_weight >= 0):
            raise ValueError(
                f"mlm_weight must be a finite number >= 0, got {mlm_weight!r}. The paper's appendix uses 0.1; 0 turns "
                "the masked-LM objective off."
            )
        if not (isinstance(mlm_probability, (int, float)) and 0 < mlm_probability < 1):
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability!r}; BERT uses 0.15.")
        if mlm_head_init not in MLM_HEAD_INITS:
            raise ValueError(f"mlm_head_init must be one of {MLM_HEAD_INITS}, got {mlm_head_init!r}.")
        if shared_dropout_mask and mlm_weight > 0:
            raise ValueError(
                "shared_dropout_mask=True is the paper's 'fixed 0.1' ablation of plain SimCSE; it does not combine "
                "with mlm_weight > 0. Set one of them."
            )
        self.model = model
        register_loss(self)
        self.temperature = float(temperature)
        self.hard_negative_weight = float(hard_negative_weight)
        self.gather_across_devices = gather_across_devices
        self.mlm_weight = float(mlm_weight)
        self.mlm_probability = float(mlm_probability)
        self.mlm_head_init = mlm_head_init
        self.shared_dropout_mask = shared_dropout_mask
        self.mlp = None
        if mlp_head:
            dimension = model.get_embedding_dimension()
            if dimension is None:
                raise ValueError("mlp_head=True needs a model with a known embedding dimension.")
            self.mlp = MLPHead(dimension, initializer_range(model))
        self.mlm_head = None
        self.mlm_head_source = None
        if self.mlm_weight > 0:
            tokenizer = model.tokenizer
            if getattr(tokenizer, "mask_token_id", None) is None:
                raise ValueError("mlm_weight > 0 needs a tokenizer with a mask token, e.g. BERT's [MASK].")
            self._mask_arguments = (tokenizer.all_special_ids, tokenizer.mask_token_id, len(tokenizer))
            self.mlm_head, self.mlm_head_source = build_lm_head(model[0].auto_model, mlm_head_init)
            self.mlm_head.to(model.device)
        if self.mlp is not None or self.mlm_head is not None:
            register_loss_state(self)
        self._checked_dropout = False
        self._noted_separate_forwards = False
        self._head_hooks: list = []

    @property
    def mlp_head(self) -> bool:
        return self.mlp is not None

    @torch.no_grad()
    def initialise_heads(self, generator: torch.Generator) -> None:
        """Draw this loss's randomly initialised heads again from ``generator``: the MLP head, and an LM head that did
        not come from the checkpoint. :class:`st_simcse.LossStateCallback` does so from the training arguments'
        seed when a Trainer run starts, so that the seed alone makes the run repeatable, heads included."""
        if self.mlp is not None:
            self.mlp.reset_parameters(generator)
        if self.mlm_head is not None and self.mlm_head_source == "random":
            reset_lm_head(self.mlm_head, initializer_range(self.model), generator)

    def _options_without_wrappers(self) -> list[str]:
        """The options set on this loss that MatryoshkaLoss / AdaptiveLayerLoss cannot carry."""
        options = {"mlm_weight > 0": self.mlm_head is not None, "shared_dropout_mask": self.shared_dropout_mask}
        return [name for name, on in options.items() if on]

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        embeddings, mlm_loss = self._embed(self._checked_columns(sentence_features))
        loss = self.compute_loss_from_embeddings(embeddings, labels)
        return loss if mlm_loss is None else loss + self.mlm_weight * mlm_loss

    def _checked_columns(self, sentence_features: Iterable[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """The input columns (a single column duplicated), after every check that needs the batch or the wrapper
        the loss runs in."""
        sentence_features = list(sentence_features)
        if len(sentence_features) == 1 and under_adaptive_layer_loss(self.model):
            # AdaptiveLayerLoss hands layers between calls through each column's dict; a copy made here would
            # carry the first copy's layers into the second.
            raise ValueError(
                "Inside AdaptiveLayerLoss, SimCSELoss needs (sentence, sentence) pairs, not a single column: use "
                "st_simcse.DuplicateInputDataset without duplicate_in_loss."
            )
        sentence_features = checked_columns(sentence_features)
        self._warn_if_views_identical(sentence_features)
        # A wrapper shows itself when it first hands the loss its inputs: refused here, before any gradient.
        wrapper, has_head = running_wrapper(self.model), self.mlp is not None
        refuse_wrapper(wrapper, type(self).__name__, has_head, self._options_without_wrappers())
        self._note_separate_forwards()
        return sentence_features

    def _embed(self, columns: list[dict[str, Tensor]]) -> tuple[list[Tensor], Tensor | None]:
        """One merged forward pass over every column (the anchors too), plus the masked copy of the anchors when
        the MLM objective is on; returns the columns' embeddings and the masked-LM loss (None without MLM)."""
        if self.shared_dropout_mask:
            anchors, positives = columns[0].get("input_ids"), columns[1].get("input_ids")
            if anchors is None or anchors.shape != positives.shape or not torch.equal(anchors, positives):
                raise ValueError(
                    "shared_dropout_mask=True needs positives that equal their anchors (unsupervised SimCSE without "
                    "augmentation): one dropout mask for two different inputs is not defined."
                )
            # One pass for both copies: the positive IS the anchor's embedding, the same mask by construction.
            shared, *negatives = embed_columns(self.model, [columns[0], *columns[2:]], separate_first=False)
            return [shared, shared, *negatives], None
        if self.mlm_head is None:
            # separate_first=False: every column (the anchor too) goes into one merged forward pass.
            return embed_columns(self.model, columns, separate_first=False), None
        return embed_with_masked_copy(self.model, self.mlm_head, columns, self._mask_arguments, self.mlm_probability)

    def _note_separate_forwards(self) -> None:
        if self._noted_separate_forwards or not under_adaptive_layer_loss(self.model):
            return
        self._noted_separate_forwards = True
        logger.warning(
            "SimCSELoss inside AdaptiveLayerLoss: every input column is embedded in its own forward pass, because "
            "AdaptiveLayerLoss reads each layer back from per-column calls. Each copy of a sentence still gets its "
            "own dropout mask, so the objective is SimCSE's; only the speed-up of the merged forward is lost."
        )

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        if len(embeddings) < 2:
            raise ValueError(f"SimCSELoss needs at least 2 embedding columns, got {len(embeddings)}.")
        self._average_own_gradients_across_devices()
        if self.mlp is not None:
            embeddings = [self.mlp(embedding) for embedding in embeddings]
        anchors, candidates = embeddings[0], embeddings[1:]
        batch_size = anchors.size(0)
        offset = 0
        if self.gather_across_devices:
            # This device's anchors against every device's candidates; gradients flow back to their owners.
            candidates = [all_gather_with_grad(candidate) for candidate in candidates]
            offset = get_rank() * batch_size
        world_batch_size = candidates[0].size(0)

        # Similarities in at least float32, also under autocast: in half precision cos/τ with τ = 0.05 would lose
        # most of the softmax's resolution.
        with torch.autocast(device_type=anchors.device.type, enabled=False):
            anchors, candidates = at_least_float32(anchors), at_least_float32(torch.cat(candidates))
            anchors = F.normalize(anchors, dim=-1)
            logits = anchors @ F.normalize(candidates, dim=-1).T / self.temperature
            rows = torch.arange(batch_size, device=logits.device)
            targets = rows + offset
            num_negative_columns = len(embeddings) - 2
            if self.hard_negative_weight != 0.0 and num_negative_columns > 0:
                # The log-weight goes on each anchor's own hard negative only: row i, column i of every
                # hard-negative block (block k >= 1 of world_batch_size columns).
                own_negatives = torch.cat([targets + k * world_batch_size for k in range(1, num_negative_columns + 1)])
                logits = logits.index_put(
                    (rows.repeat(num_negative_columns), own_negatives),
                    torch.tensor(self.hard_negative_weight, dtype=logits.dtype, device=logits.device),
                    accumulate=True,
                )
            logits = self._masked_logits(logits, targets)
            extra = self._extra_logits(anchors)
            if extra is not None:
                logits = torch.cat([logits, extra], dim=1)
            return F.cross_entropy(logits, targets)

    def _masked_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The batch's logits with candidates that must not count as negatives removed (set to -inf);
        :class:`st_simcse.GuidedSimCSELoss` removes the false negatives its guide finds, SimCSE none."""
        return logits

    def _extra_logits(self, anchors: Tensor) -> Tensor | None:
        """Logits of further negatives for the normalised float32 ``anchors``, appended after the batch's
        candidates (ESimCSE's queue); none for SimCSE."""
        return None

    def _average_own_gradients_across_devices(self) -> None:
        # DDP wraps only the model, so it would leave the gradients of the loss's own heads rank-local and the
        # heads would drift apart; average them across ranks exactly as DDP does for the encoder.
        if self._head_hooks or not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        own = trained_own_parameters(self)
        if not own:
            return
        world_size = dist.get_world_size()

        def average(gradient: Tensor) -> Tensor:
            gradient = gradient.clone()
            dist.all_reduce(gradient)
            return gradient / world_size

        self._head_hooks = [parameter.register_hook(average) for parameter in own]

    def _warn_if_views_identical(self, sentence_features: list[dict[str, Tensor]]) -> None:
        if self._checked_dropout or not self.model.training:
            return
        self._checked_dropout = True
        first, second = sentence_features[0].get("input_ids"), sentence_features[1].get("input_ids")
        same_text = first is not None and second is not None and first.shape == second.shape
        if same_text and torch.equal(first, second) and not any(p > 0 for p in dropout_probabilities(self.model)):
            logger.warning(
                "SimCSELoss: anchors and positives are the same sentences but every dropout probability of the "
                "model is 0, so both views get identical embeddings and the loss cannot learn anything useful "
                "(the paper's 'no dropout' row in Table 3 collapses). Keep the encoder's dropout (0.1 for BERT), "
                "e.g. with st_simcse.set_dropout(model, 0.1)."
            )

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "hard_negative_weight": self.hard_negative_weight,
            "mlp_head": self.mlp_head,
            "gather_across_devices": self.gather_across_devices,
            "mlm_weight": self.mlm_weight,
            "mlm_probability": self.mlm_probability,
            "mlm_head_init": self.mlm_head_init,
            "shared_dropout_mask": self.shared_dropout_mask,
        }

    @property
    def scale(self) -> float:
        return 1.0 / self.temperature

    @property
    def citation(self) -> str:
        return SIMCSE_CITATION
