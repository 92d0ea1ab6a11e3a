"""The masked-language-model auxiliary objective of the paper's appendix (its code's ``--do_mlm``): BERT's masking
of the input tokens and the LM head that predicts them, owned by the loss (never part of the saved model)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import merge_feature_batches
from torch import Tensor, nn
from transformers import AutoModelForMaskedLM

from st_simcse.losses.heads import at_least_float32

logger = logging.getLogger(__name__)

MLM_HEAD_INITS = ("auto", "checkpoint", "random")
IGNORE_INDEX = -100  # cross_entropy's ignore_index: positions that are not predicted


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor,
    special_ids: list[int],
    mask_token_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: each real token (not padding, not a special token) is chosen with ``probability``; a chosen
    token becomes ``[MASK]`` 80 % of the time, a uniformly random token 10 %, and stays as it is 10 %. Returns the
    masked ids and the labels (the original id where chosen, ``-100`` elsewhere), as the reference code does."""
    special = torch.isin(input_ids, torch.tensor(special_ids, device=input_ids.device)) | (attention_mask == 0)
    chances = torch.full(input_ids.shape, probability, device=input_ids.device).masked_fill(special, 0.0)
    chosen = torch.bernoulli(chances, generator=generator).bool()
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    half = torch.full(input_ids.shape, 0.5, device=input_ids.device)
    to_mask = torch.bernoulli(torch.full(input_ids.shape, 0.8, device=input_ids.device), generator=generator).bool()
    to_mask &= chosen
    to_random = torch.bernoulli(half, generator=generator).bool() & chosen & ~to_mask
    masked = input_ids.masked_fill(to_mask, mask_token_id)
    random_ids = torch.randint(vocab_size, input_ids.shape, device=input_ids.device, generator=generator)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def build_lm_head(encoder: nn.Module, init: str = "auto") -> tuple[nn.Module, str]:
    """The LM head of ``encoder``'s architecture (``BertOnlyMLMHead``, ``RobertaLMHead``, ...): hidden states in,
    vocabulary logits out. Returns the head and where its weights came from ("checkpoint" or "random").

    ``init``: "checkpoint" takes the checkpoint's own trained MLM head (an error where it has none); "random"
    initialises it as the paper's code does (its ``BertForCL`` creates a fresh ``lm_head`` that the pre-trained
    ``cls.predictions`` weights do not load into: normal(0, initializer_range), untied from the embeddings);
    "auto" is "checkpoint" where the checkpoint has a head, else "random".
    """
    if init not in MLM_HEAD_INITS:
        raise ValueError(f"mlm_head_init must be one of {MLM_HEAD_INITS}, got {init!r}.")
    config = encoder.config
    masked_lm = None
    if init != "random":
        masked_lm, missing = _load_masked_lm(encoder.name_or_path)
        if missing and init == "checkpoint":
            raise ValueError(
                f"{encoder.name_or_path!r} has no trained MLM head ({missing}). Use mlm_head_init='random' (the "
                "paper's code) or 'auto'."
            )
        if missing:
            masked_lm = None
    source = "checkpoint" if masked_lm is not None else "random"
    if masked_lm is None:
        masked_lm = AutoModelForMaskedLM.from_config(config)
        # The paper's lm_head is untied from the embeddings: a decoder of its own, freshly initialised.
        decoder = masked_lm.get_output_embeddings()
        decoder.weight = nn.Parameter(torch.empty_like(decoder.weight))
        nn.init.normal_(decoder.weight, mean=0.0, std=getattr(config, "initializer_range", 0.02))
    head = getattr(masked_lm, _head_name(masked_lm))
    logger.info(f"MLM head: {type(head).__name__} initialised from the {source}")
    return head, source


@torch.no_grad()
def reset_lm_head(head: nn.Module, initializer_range: float, generator: torch.Generator) -> None:
    """Initialise a randomly initialised LM head again, as transformers initialises BERT-style layers (normal(0,
    initializer_range) weights, zero biases, LayerNorm at one and zero), drawing from the CPU ``generator``."""
    for module in head.modules():
        if isinstance(module, nn.Linear):
            module.weight.copy_(torch.empty(module.weight.shape).normal_(0.0, initializer_range, generator=generator))
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
    for name, parameter in head.named_parameters():
        if name.endswith("bias"):
            parameter.zero_()


def _load_masked_lm(name: str) -> tuple[nn.Module | None, str]:
    """The checkpoint as a masked LM, and why its head is unusable ("" when it is trained)."""
    try:
        masked_lm, info = AutoModelForMaskedLM.from_pretrained(name, output_loading_info=True)
    except (OSError, ValueError) as error:
        return None, f"it does not load as a masked LM: {error}"
    head_name = _head_name(masked_lm)
    untrained = [key for key in info.get("missing_keys", []) if key.startswith(f"{head_name}.")]
    return masked_lm, f"untrained weights {untrained[:3]}" if untrained else ""


def _head_name(masked_lm: nn.Module) -> str:
    names = [name for name, _ in masked_lm.named_children() if name != masked_lm.base_model_prefix]
    if len(names) != 1:
        raise ValueError(
            f"{type(masked_lm).__name__} has no single LM-head module (children besides the encoder: {names}); "
            "the MLM objective supports BERT- and RoBERTa-style masked LMs."
        )
    return names[0]


def embed_with_masked_copy(
    model: nn.Module, head: nn.Module, columns: list[dict[str, Tensor]], mask_arguments: tuple, probability: float
) -> tuple[list[Tensor], Tensor]:
    """Every column and a masked copy of the anchors (``columns[0]``, masked by :func:`mask_tokens` with
    ``mask_arguments``: special ids, mask id, vocabulary size) in one merged forward pass; returns the columns'
    sentence embeddings and the masked-LM cross-entropy of ``head`` on the copy."""
    anchors = columns[0]
    if "attention_mask" not in anchors:
        raise ValueError(
            "SimCSELoss(mlm_weight > 0) masks padded batches, but these inputs come unpadded (flattened for "
            "flash attention's variable-length kernels). Load the model with attn_implementation 'sdpa', or "
            "set model[0].unpad_inputs = False."
        )
    masked_ids, labels = mask_tokens(
        anchors["input_ids"], anchors["attention_mask"], *mask_arguments, probability=probability
    )
    features = [*columns, {**anchors, "input_ids": masked_ids}]
    merged = merge_feature_batches(features)
    if merged is None:
        outputs = [model(column) for column in features]
        embeddings = [output["sentence_embedding"] for output in outputs[:-1]]
        tokens = outputs[-1]["token_embeddings"]
    else:
        output = model(merged)
        batch_size = masked_ids.size(0)
        embeddings = list(output["sentence_embedding"][:-batch_size].reshape(len(columns), batch_size, -1).unbind(0))
        tokens = output["token_embeddings"][-batch_size:]
    # The merged batch may be wider than the anchors (right-padded): their tokens come first.
    tokens = tokens[:, : labels.size(1)]
    predicted = labels != IGNORE_INDEX
    # Only the chosen positions go through the vocabulary projection: the same loss as scoring every token and
    # ignoring the rest, for about a seventh of the cost.
    logits = head(tokens[predicted])
    if logits.size(0) == 0:
        return embeddings, tokens.sum() * 0.0  # nothing was chosen in this batch
    return embeddings, F.cross_entropy(at_least_float32(logits), labels[predicted])
