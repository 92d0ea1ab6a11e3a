"""CachedSimCSELoss equals SimCSELoss: same loss and gradients on the same dropout draws."""

from __future__ import annotations

import pytest
import torch
from conftest import sentences
from sentence_transformers.base.losses.gradcache import _create_minibatch
from sentence_transformers.base.losses.merged_forward import merge_feature_batches

from st_simcse import CachedSimCSELoss, SimCSELoss


def _grads(model, loss):
    params = [*model.parameters(), *(loss.mlp.parameters() if loss.mlp is not None else [])]
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def _features(model, columns):
    batch = sentences(6, seed=3)
    texts = [batch, batch, sentences(6, seed=4)][:columns]
    return [model.preprocess(column) for column in texts]


@pytest.mark.parametrize("columns", [2, 3])
def test_one_mini_batch_is_exactly_simcse(tiny_model, columns):
    tiny_model.train()
    features = _features(tiny_model, columns)
    cached = CachedSimCSELoss(tiny_model, mlp_head=True, hard_negative_weight=0.3, mini_batch_size=64)
    plain = SimCSELoss(tiny_model, mlp_head=True, hard_negative_weight=0.3)
    plain.mlp.load_state_dict(cached.mlp.state_dict())

    torch.manual_seed(7)
    cached_value = cached(features, None)
    cached_value.backward()
    cached_grads = _grads(tiny_model, cached.loss)
    tiny_model.zero_grad()

    torch.manual_seed(7)
    plain_value = plain(features, None)
    plain_value.backward()
    plain_grads = _grads(tiny_model, plain)
    assert cached_value.item() == pytest.approx(plain_value.item(), abs=1e-5)
    for mine, reference in zip(cached_grads, plain_grads):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)


def test_small_mini_batches_replay_dropout(tiny_model):
    """With dropout on and mini-batches of 4 rows, the gradient pass must replay the first pass's masks: the
    result equals SimCSELoss's equations applied to the same mini-batched forward passes with gradients."""
    tiny_model.train()
    features = _features(tiny_model, 2)
    cached = CachedSimCSELoss(tiny_model, mlp_head=True, mini_batch_size=4)

    torch.manual_seed(11)
    value = cached(features, None)
    value.backward()
    cached_grads = _grads(tiny_model, cached.loss)
    tiny_model.zero_grad()
    cached.loss.mlp.zero_grad()

    torch.manual_seed(11)
    merged = merge_feature_batches(features)
    rows = merged["input_ids"].shape[0]
    chunks = [tiny_model(_create_minibatch(merged, b, b + 4))["sentence_embedding"] for b in range(0, rows, 4)]
    reference = cached.loss.compute_loss_from_embeddings(list(torch.cat(chunks).chunk(2)))
    reference.backward()
    reference_grads = _grads(tiny_model, cached.loss)
    assert value.item() == pytest.approx(reference.item(), abs=1e-5)
    for mine, theirs in zip(cached_grads, reference_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_without_replay_the_gradients_would_differ(tiny_model):
    """The check above can fail: new dropout masks in the gradient pass give different gradients."""
    tiny_model.train()
    features = _features(tiny_model, 2)
    cached = CachedSimCSELoss(tiny_model, mini_batch_size=4)
    torch.manual_seed(11)
    cached(features, None).backward()
    cached_grads = _grads(tiny_model, cached.loss)
    tiny_model.zero_grad()
    torch.manual_seed(12)  # other masks
    merged = merge_feature_batches(features)
    chunks = [tiny_model(_create_minibatch(merged, b, b + 4))["sentence_embedding"] for b in range(0, 12, 4)]
    cached.loss.compute_loss_from_embeddings(list(torch.cat(chunks).chunk(2))).backward()
    other = _grads(tiny_model, cached.loss)
    assert any(not torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(cached_grads, other))


def test_bad_mini_batch_size(tiny_model):
    with pytest.raises(ValueError, match="mini_batch_size must be a positive integer"):
        CachedSimCSELoss(tiny_model, mini_batch_size=0)
    assert CachedSimCSELoss(tiny_model, mini_batch_size=8).get_config_dict()["mini_batch_size"] == 8
