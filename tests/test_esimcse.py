"""ESimCSELoss: the momentum encoder gets no gradient and follows m * old + (1 - m) * new; the queue is
first-in-first-out with its stated size; with an empty queue the loss is SimCSE's, with a filled one it scores the
queue as extra negatives; its state is checkpointed with the loss and never saved in the model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import sentences

from st_simcse import ESimCSELoss, SimCSELoss, build_model, set_dropout
from st_simcse.losses.state import _trained_owners, load_loss_state, loss_owned_state, save_loss_state

BATCH = 4


def _batches(count: int) -> list[list[str]]:
    texts = sentences(BATCH * count, seed=5)
    return [texts[i * BATCH : (i + 1) * BATCH] for i in range(count)]


def _pair(model, texts):
    features = model.preprocess(texts)
    return [dict(features), dict(features)]


def _keys(model, texts) -> torch.Tensor:
    """What the momentum encoder embeds, computed from the model itself (equal to it while m = 0 or no step)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        keys = F.normalize(model(model.preprocess(texts))["sentence_embedding"], dim=-1)
    model.train(was_training)
    return keys


def test_momentum_encoder_gets_no_gradient_and_follows_the_moving_average(tiny_model):
    momentum = 0.9
    loss = ESimCSELoss(tiny_model, momentum=momentum, queue_size=8)
    tiny_model.train()
    optimizer = torch.optim.SGD(tiny_model.parameters(), lr=0.5)
    first, second = _batches(2)
    loss(_pair(tiny_model, first)).backward()
    assert all(not p.requires_grad and p.grad is None for p in loss.momentum_encoder.parameters())
    old = [p.detach().clone() for p in loss.momentum_encoder.parameters()]
    optimizer.step()
    new = [p.detach().clone() for p in tiny_model.parameters()]
    assert any(not torch.equal(o, n) for o, n in zip(old, new))  # the step moved the model
    loss(_pair(tiny_model, second))
    for got, previous, current in zip(loss.momentum_encoder.parameters(), old, new):
        torch.testing.assert_close(got, momentum * previous + (1 - momentum) * current)


def test_queue_is_first_in_first_out_with_its_size(tiny_model):
    loss = ESimCSELoss(tiny_model, queue_size=6)
    tiny_model.train()
    batches = _batches(3)
    assert loss.queue.shape == (6, 32) and not loss.queue_filled.any()
    with torch.no_grad():
        loss(_pair(tiny_model, batches[0]))
        assert loss.queue_filled.tolist() == [True] * 4 + [False] * 2
        torch.testing.assert_close(loss.queue[:4], _keys(tiny_model, batches[0]))
        loss(_pair(tiny_model, batches[1]))
        loss(_pair(tiny_model, batches[2]))
    # Newest first: batch 3's four keys, then the two newest-but-one of batch 2; batch 1 has left.
    assert loss.queue_filled.all()
    expected = torch.cat([_keys(tiny_model, batches[2]), _keys(tiny_model, batches[1])[:2]])
    torch.testing.assert_close(loss.queue, expected)


def test_empty_queue_equals_simcse_and_a_filled_one_adds_negatives(tiny_model):
    set_dropout(tiny_model, 0.0)  # deterministic embeddings, so both losses see the same ones
    tiny_model.train()
    esimcse = ESimCSELoss(tiny_model, temperature=0.05, queue_size=8)
    simcse = SimCSELoss(tiny_model, temperature=0.05)
    first, second = _batches(2)
    with torch.no_grad():
        assert esimcse(_pair(tiny_model, first)).item() == pytest.approx(
            simcse(_pair(tiny_model, first)).item(), abs=1e-6
        )
        with_queue = esimcse(_pair(tiny_model, second)).item()
        # Independently: every anchor against the batch's positives and the 4 queued keys of the first batch.
        anchors = F.normalize(tiny_model(tiny_model.preprocess(second))["sentence_embedding"], dim=-1)
        candidates = torch.cat([anchors, _keys(tiny_model, first)])
        expected = F.cross_entropy(anchors @ candidates.T / 0.05, torch.arange(BATCH)).item()
    assert with_queue == pytest.approx(expected, abs=1e-5)
    assert with_queue > simcse(_pair(tiny_model, second)).item()  # more negatives, a harder task


def test_state_is_checkpointed_and_not_part_of_the_model(tmp_path, tiny_model):
    loss = ESimCSELoss(tiny_model, queue_size=8)
    tiny_model.train()
    with torch.no_grad():
        loss(_pair(tiny_model, _batches(1)[0]))
    owned = loss_owned_state(loss)
    assert {"queue", "queue_filled"} <= owned.keys()
    assert any(name.startswith("momentum_encoder.") for name in owned)
    assert not any("momentum" in name for name in tiny_model.state_dict())
    # No trainable parameters of its own, yet the callback must still checkpoint it.
    optimizer = torch.optim.AdamW(tiny_model.parameters())
    assert _trained_owners(tiny_model, optimizer) == [loss]
    with_head = ESimCSELoss(tiny_model, queue_size=8, mlp_head=True)  # registered once, though both classes ask
    optimizer = torch.optim.AdamW([*tiny_model.parameters(), *with_head.mlp.parameters()])
    assert _trained_owners(tiny_model, optimizer).count(with_head) == 1
    save_loss_state([loss], str(tmp_path))
    fresh = ESimCSELoss(tiny_model, queue_size=8)
    load_loss_state([fresh], str(tmp_path))
    for name, tensor in owned.items():
        assert torch.equal(loss_owned_state(fresh)[name], tensor), name


def test_config_and_citation(tiny_model):
    loss = ESimCSELoss(tiny_model, momentum=0.99, queue_size=32)
    assert loss.get_config_dict() == {
        "temperature": 0.05,
        "momentum": 0.99,
        "queue_size": 32,
        "mlp_head": False,
        "gather_across_devices": False,
    }
    assert "wu2022esimcse" in loss.citation and "gao2021simcse" in loss.citation


def test_bad_esimcse_arguments(tiny_model):
    with pytest.raises(ValueError, match="momentum"):
        ESimCSELoss(tiny_model, momentum=1.0)
    with pytest.raises(ValueError, match="queue_size"):
        ESimCSELoss(tiny_model, queue_size=-1)
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    wrapped = MatryoshkaLoss(tiny_model, ESimCSELoss(tiny_model), matryoshka_dims=[32, 16])
    with pytest.raises(ValueError, match="momentum queue"):  # at the first step, before any gradient
        wrapped([tiny_model.preprocess(["a man plays", "a dog runs"])], None)


def test_esimcse_trains_with_model_fit(tmp_path, monkeypatch, tiny_bert_dir):
    from torch.utils.data import DataLoader

    from st_simcse import DuplicateInputDataset
    from st_simcse.data.augmentation import WordRepetition

    monkeypatch.chdir(tmp_path)  # model.fit without a checkpoint_path would create ./checkpoints
    torch.manual_seed(0)
    model = build_model(tiny_bert_dir, pooling="cls")
    loss = ESimCSELoss(model, queue_size=16, mlp_head=True)
    data = DuplicateInputDataset(sentences(64, seed=9), augmentation=WordRepetition(0.32), seed=1)
    before = [p.detach().clone() for p in loss.momentum_encoder.parameters()]
    model.fit([(DataLoader(data, batch_size=8), loss)], epochs=1, show_progress_bar=False, checkpoint_path=None)
    assert loss.queue_filled.all()
    assert any(not torch.equal(b, p) for b, p in zip(before, loss.momentum_encoder.parameters()))
