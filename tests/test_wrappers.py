"""SimCSELoss and CachedSimCSELoss inside sentence-transformers' loss modifiers (MatryoshkaLoss, AdaptiveLayerLoss):
every combination either trains on the testbed with its loss falling, or is refused when the wrapper first hands the
loss its inputs, before any gradient."""

from __future__ import annotations

import random

import pytest
import torch
from sentence_transformers.sentence_transformer.losses import AdaptiveLayerLoss, MatryoshkaLoss

from st_simcse import CachedSimCSELoss, SimCSELoss, build_model, read_sentences

WRAPPERS = {
    "matryoshka": lambda model, loss: MatryoshkaLoss(model, loss, [128, 64, 32]),
    "adaptive": lambda model, loss: AdaptiveLayerLoss(model, loss),
}
LOSSES = {
    "SimCSELoss": lambda model, head: SimCSELoss(model, mlp_head=head),
    "CachedSimCSELoss": lambda model, head: CachedSimCSELoss(model, mlp_head=head, mini_batch_size=16),
}
# (wrapper, loss, head) -> the start of the error raised at the first step, or None if it trains.
REFUSED = {
    ("matryoshka", "SimCSELoss", True): "SimCSELoss(mlp_head=True) cannot be wrapped in MatryoshkaLoss",
    ("matryoshka", "CachedSimCSELoss", True): "CachedSimCSELoss(mlp_head=True) cannot be wrapped in MatryoshkaLoss",
    ("adaptive", "CachedSimCSELoss", False): "CachedSimCSELoss cannot be wrapped in AdaptiveLayerLoss",
    ("adaptive", "CachedSimCSELoss", True): "CachedSimCSELoss cannot be wrapped in AdaptiveLayerLoss",
}
COMBINATIONS = [(w, name, head) for w in WRAPPERS for name in LOSSES for head in (False, True)]


@pytest.fixture(scope="module")
def corpus(train_40k):
    sentences, _ = read_sentences(train_40k)
    return sentences[:480], sentences[-32:]


def _features(model, batch):
    return [model.preprocess(batch), model.preprocess(batch)]


def _held_out(wrapper, model, batch) -> float:
    """The wrapped loss on a fixed batch with fixed dropout masks and layer draws, without updating anything."""
    torch.manual_seed(1234)
    random.seed(1234)
    model.train()
    with torch.no_grad():
        return float(wrapper(_features(model, batch), None))


@pytest.mark.slow
@pytest.mark.parametrize(("wrapper_name", "loss_name", "head"), COMBINATIONS)
def test_wrapper_combination(wrapper_name, loss_name, head, splade_tiny, corpus):
    train, held_out = corpus
    torch.manual_seed(0)
    model = build_model(splade_tiny, pooling="cls", max_seq_length=32)
    loss = LOSSES[loss_name](model, head)
    refused = REFUSED.get((wrapper_name, loss_name, head))
    wrapper = WRAPPERS[wrapper_name](model, loss)
    if refused:
        with pytest.raises(ValueError, match=refused.replace("(", r"\(").replace(")", r"\)")):
            wrapper(_features(model, train[:32]), None).backward()
        assert all(parameter.grad is None for parameter in wrapper.parameters()), "a gradient before the refusal"
        return

    head_before = loss.mlp.dense.weight.detach().clone() if head else None
    before = _held_out(wrapper, model, held_out)
    optimizer = torch.optim.AdamW(wrapper.parameters(), lr=3e-4)
    torch.manual_seed(0)
    for start in range(0, len(train), 32):
        value = wrapper(_features(model, train[start : start + 32]), None)
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = _held_out(wrapper, model, held_out)
    assert after < before, f"{wrapper_name}({loss_name}, head={head}): loss {before:.4f} -> {after:.4f}"
    if head:
        assert not torch.equal(head_before, loss.mlp.dense.weight), "the head was not trained"


def test_cached_loss_surface(tiny_model):
    loss = CachedSimCSELoss(tiny_model, temperature=0.05, hard_negative_weight=0.5, mlp_head=True)
    assert (loss.temperature, loss.hard_negative_weight, loss.mlp_head, loss.gather_across_devices) == (
        0.05,
        0.5,
        True,
        False,
    )
    assert loss.scale == pytest.approx(20.0) and loss.mlp is loss.loss.mlp
    loss.temperature = 0.1  # assignments reach the wrapped SimCSELoss, which computes the loss
    loss.hard_negative_weight = 1.0
    assert loss.loss.temperature == 0.1 and loss.loss.hard_negative_weight == 1.0 and loss.scale == 10.0
    assert "gao2021simcse" in loss.citation and "Scaling Deep Contrastive Learning Batch Size" in loss.citation
    assert loss.get_config_dict()["temperature"] == 0.1


def test_single_column_inside_adaptive_layer_loss_is_refused(tiny_model):
    loss = AdaptiveLayerLoss(tiny_model, SimCSELoss(tiny_model))
    with pytest.raises(ValueError, match="needs \\(sentence, sentence\\) pairs, not a single column"):
        loss([tiny_model.preprocess(["a man plays", "a dog runs"])], None)
