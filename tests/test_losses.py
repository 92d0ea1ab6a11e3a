"""SimCSELoss against an independent, loop-by-loop implementation of the paper's eq. 1 and eq. 5."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from conftest import sentences
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

from st_simcse import SimCSELoss, set_dropout


def reference_loss(anchors, positives, negatives=None, temperature=0.05, alpha=1.0, weight_every_negative=False):
    """Paper eq. 1 (pairs) and eq. 5 (triplets), one anchor at a time, with plain Python sums:

    l_i = -log( e^{sim(h_i, h_i+)/t} / sum_j ( e^{sim(h_i, h_j+)/t} + alpha^{1[i=j]} e^{sim(h_i, h_j-)/t} ) )
    """
    total = 0.0
    n = len(anchors)
    for i in range(n):

        def sim(u, v):
            return float(torch.dot(u, v) / (torch.linalg.vector_norm(u) * torch.linalg.vector_norm(v)))

        numerator = math.exp(sim(anchors[i], positives[i]) / temperature)
        denominator = sum(math.exp(sim(anchors[i], positives[j]) / temperature) for j in range(n))
        if negatives is not None:
            for j in range(n):
                weight = alpha if (i == j or weight_every_negative) else 1.0
                denominator += weight * math.exp(sim(anchors[i], negatives[j]) / temperature)
        total += -math.log(numerator / denominator)
    return total / n


class _Stub(torch.nn.Module):
    """Only what SimCSELoss reads from a model when it is handed embeddings directly."""

    training = False

    def get_embedding_dimension(self) -> int:
        return 6


def _embeddings(columns: int, batch: int = 5, dim: int = 6, seed: int = 0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=generator, dtype=dtype) for _ in range(columns)]


@pytest.mark.parametrize("temperature", [0.05, 0.1, 1.0])
def test_pairs_equal_eq1(temperature):
    anchors, positives = _embeddings(2)
    loss = SimCSELoss(_Stub(), temperature=temperature)
    expected = reference_loss(anchors, positives, temperature=temperature)
    assert loss.compute_loss_from_embeddings([anchors, positives]).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("weight", [0.0, math.log(2.0), -1.5, 3.0])
def test_triplets_equal_eq5_with_alpha(weight):
    anchors, positives, negatives = _embeddings(3, seed=1)
    loss = SimCSELoss(_Stub(), temperature=0.05, hard_negative_weight=weight)
    expected = reference_loss(anchors, positives, negatives, alpha=math.exp(weight))
    assert loss.compute_loss_from_embeddings([anchors, positives, negatives]).item() == pytest.approx(
        expected, rel=1e-9
    )


def test_weight_changes_only_the_own_hard_negative():
    # Make the off-diagonal hard negatives matter: anchor i is close to everyone's hard negative.
    anchors, positives, negatives = _embeddings(3, seed=2)
    negatives = negatives * 0.1 + anchors.mean(0, keepdim=True)
    weight = 2.0
    got = SimCSELoss(_Stub(), hard_negative_weight=weight).compute_loss_from_embeddings(
        [anchors, positives, negatives]
    )
    diagonal_only = reference_loss(anchors, positives, negatives, alpha=math.exp(weight))
    every_negative = reference_loss(anchors, positives, negatives, alpha=math.exp(weight), weight_every_negative=True)
    unweighted = reference_loss(anchors, positives, negatives)
    assert got.item() == pytest.approx(diagonal_only, rel=1e-9)
    assert abs(diagonal_only - every_negative) > 1e-3
    assert abs(diagonal_only - unweighted) > 1e-3


def test_weight_without_negatives_has_no_effect():
    anchors, positives = _embeddings(2, seed=3)
    plain = SimCSELoss(_Stub()).compute_loss_from_embeddings([anchors, positives])
    weighted = SimCSELoss(_Stub(), hard_negative_weight=5.0).compute_loss_from_embeddings([anchors, positives])
    assert plain.item() == weighted.item()


@pytest.mark.parametrize("columns,weight", [(2, 0.0), (3, 0.0), (3, 0.7)])
def test_gradcheck(columns, weight):
    inputs = [tensor.requires_grad_() for tensor in _embeddings(columns, batch=4, dim=5, seed=4)]
    loss = SimCSELoss(_Stub(), temperature=0.1, hard_negative_weight=weight)
    assert torch.autograd.gradcheck(lambda *e: loss.compute_loss_from_embeddings(list(e)), inputs)


def test_gradients_match_autograd_of_reference():
    inputs = _embeddings(3, batch=4, dim=5, seed=5)
    ours = [tensor.clone().requires_grad_() for tensor in inputs]
    SimCSELoss(_Stub(), hard_negative_weight=0.5).compute_loss_from_embeddings(ours).backward()

    theirs = [tensor.clone().requires_grad_() for tensor in inputs]
    a, p, n = theirs
    # The same equation in tensor form but written independently: explicit exp / sum / log per anchor.
    cos = lambda u, v: (u @ v.T) / (u.norm(dim=1, keepdim=True) * v.norm(dim=1)[None, :])  # noqa: E731
    pos, neg = torch.exp(cos(a, p) / 0.05), torch.exp(cos(a, n) / 0.05)
    weights = torch.ones_like(neg) + (math.exp(0.5) - 1) * torch.eye(4, dtype=neg.dtype)
    (-(torch.log(pos.diagonal() / (pos.sum(1) + (weights * neg).sum(1))))).mean().backward()
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-7, atol=1e-9)


def test_mlp_head_is_applied_in_the_loss_only():
    anchors, positives = _embeddings(2, dim=6, seed=6)
    loss = SimCSELoss(_Stub(), mlp_head=True).double()
    head = loss.mlp
    expected = reference_loss(head(anchors).detach(), head(positives).detach())
    assert loss.compute_loss_from_embeddings([anchors, positives]).item() == pytest.approx(expected, rel=1e-9)
    assert head.dense.bias.abs().sum() == 0  # initialised like the paper's MLP: zero bias, N(0, 0.02) weights
    assert head.dense.weight.std().item() == pytest.approx(0.02, rel=0.5)


def test_forward_merges_all_columns_into_one_pass(tiny_model):
    calls = []
    tiny_model[0].register_forward_hook(lambda module, args, output: calls.append(output["token_embeddings"].shape[0]))
    loss = SimCSELoss(tiny_model)
    batch = sentences(4)
    features = [tiny_model.preprocess(batch) for _ in range(3)]
    loss(features, None)
    assert calls == [12]


def test_dropout_makes_two_views_in_training_and_none_in_eval(tiny_model):
    batch = sentences(4)
    features = [tiny_model.preprocess(batch), tiny_model.preprocess(batch)]
    from sentence_transformers.base.losses.merged_forward import embed_columns

    tiny_model.train()
    first, second = embed_columns(tiny_model, features, separate_first=False)
    assert not torch.allclose(first, second)
    tiny_model.eval()
    with torch.no_grad():
        first, second = embed_columns(tiny_model, features, separate_first=False)
    torch.testing.assert_close(first, second)


def test_loss_is_positive_and_trains_end_to_end(tiny_model):
    tiny_model.train()
    loss = SimCSELoss(tiny_model, mlp_head=True)
    batch = sentences(8)
    value = loss([tiny_model.preprocess(batch), tiny_model.preprocess(batch)], None)
    value.backward()
    assert value.item() > 0
    assert loss.mlp.dense.weight.grad is not None
    assert tiny_model[0].auto_model.embeddings.word_embeddings.weight.grad is not None


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0, -0.05, float("nan"), float("inf")])
def test_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        SimCSELoss(_Stub(), temperature=temperature)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -float("inf")])
def test_bad_hard_negative_weight(weight):
    with pytest.raises(ValueError, match="hard_negative_weight must be a finite number"):
        SimCSELoss(_Stub(), hard_negative_weight=weight)


def test_no_columns(tiny_model):
    loss = SimCSELoss(tiny_model)
    with pytest.raises(ValueError, match="got no input column.*DuplicateInputDataset"):
        loss([], None)


@pytest.mark.parametrize("cached", [False, True])
def test_single_column_equals_the_duplicated_pair(tiny_model, cached):
    """One column is unsupervised SimCSE: the same loss and gradients as (s, s), on the same dropout draws, but
    the sentences were tokenized once."""
    from st_simcse import CachedSimCSELoss

    if cached:
        loss = CachedSimCSELoss(tiny_model, mlp_head=True, mini_batch_size=3)
    else:
        loss = SimCSELoss(tiny_model, mlp_head=True)
    tiny_model.train()
    batch = sentences(6)
    results = []
    for columns in ([tiny_model.preprocess(batch)], [tiny_model.preprocess(batch), tiny_model.preprocess(batch)]):
        torch.manual_seed(11)
        value = loss(columns, None)
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in loss.parameters() if p.grad is not None]))
        loss.zero_grad()
    (single, single_grads), (pair, pair_grads) = results
    assert torch.equal(single, pair)
    assert len(single_grads) == len(pair_grads) > 0
    assert all(torch.equal(a, b) for a, b in zip(single_grads, pair_grads))


def test_columns_of_unequal_length(tiny_model):
    loss = SimCSELoss(tiny_model)
    with pytest.raises(ValueError, match=r"same number of texts, got column sizes \[3, 2\]"):
        loss([tiny_model.preprocess(sentences(3)), tiny_model.preprocess(sentences(2))], None)


def test_warns_once_when_dropout_is_off_in_the_unsupervised_case(tiny_model, caplog):
    set_dropout(tiny_model, 0.0)
    tiny_model.train()
    loss = SimCSELoss(tiny_model)
    batch = sentences(3)
    with caplog.at_level(logging.WARNING, logger="st_simcse.losses"):
        for _ in range(3):
            loss([tiny_model.preprocess(batch), tiny_model.preprocess(batch)], None)
    warnings = [record for record in caplog.records if "every dropout probability" in record.message]
    assert len(warnings) == 1
    assert "identical" in warnings[0].message


def test_no_warning_with_dropout_or_distinct_positives(tiny_model, caplog):
    tiny_model.train()
    batch = sentences(3)
    with caplog.at_level(logging.WARNING, logger="st_simcse.losses"):
        SimCSELoss(tiny_model)([tiny_model.preprocess(batch), tiny_model.preprocess(batch)], None)
        set_dropout(tiny_model, 0.0)
        SimCSELoss(tiny_model)([tiny_model.preprocess(batch), tiny_model.preprocess(sentences(3, seed=9))], None)
    assert not [record for record in caplog.records if "every dropout probability" in record.message]


def test_config_and_citation(tiny_bert_dir):
    transformer = Transformer(tiny_bert_dir)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "cls")])
    loss = SimCSELoss(model, temperature=0.1, hard_negative_weight=0.5, mlp_head=True)
    assert loss.get_config_dict() == {
        "temperature": 0.1,
        "hard_negative_weight": 0.5,
        "mlp_head": True,
        "gather_across_devices": False,
        "mlm_weight": 0.0,
        "mlm_probability": 0.15,
        "mlm_head_init": "auto",
        "shared_dropout_mask": False,
    }
    assert "gao2021simcse" in loss.citation
    assert loss.model is model


def test_shared_dropout_mask_makes_the_positive_its_anchor(tiny_model):
    """The paper's "fixed 0.1": one dropout mask for both copies, i.e. each positive is its anchor's embedding."""
    loss = SimCSELoss(tiny_model, temperature=0.05, shared_dropout_mask=True)
    tiny_model.train()
    features = tiny_model.preprocess(sentences(8, seed=6))
    torch.manual_seed(3)
    value = loss([dict(features)]).item()
    torch.manual_seed(3)  # the same dropout draw: one forward pass over the 8 anchors
    with torch.no_grad():
        anchors = torch.nn.functional.normalize(tiny_model(dict(features))["sentence_embedding"], dim=-1)
    expected = torch.nn.functional.cross_entropy(anchors @ anchors.T / 0.05, torch.arange(8)).item()
    assert value == pytest.approx(expected, abs=1e-6)
    torch.manual_seed(3)
    assert SimCSELoss(tiny_model, temperature=0.05)([dict(features)]).item() > value + 1e-3  # two masks: harder
    other = tiny_model.preprocess(sentences(8, seed=7))
    with pytest.raises(ValueError, match="positives that equal their anchors"):
        loss([dict(features), dict(other)])
    with pytest.raises(ValueError, match="does not combine with mlm_weight"):
        SimCSELoss(tiny_model, shared_dropout_mask=True, mlm_weight=0.1)
