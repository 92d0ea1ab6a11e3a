"""gather_across_devices under torch.distributed: 2 real processes (gloo, CPU) against one process on the
concatenated batch, for SimCSELoss and for ESimCSELoss's queue. Dropout is off, so both settings see the same
embeddings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import sentences
from torch.nn.parallel import DistributedDataParallel

from st_simcse import ESimCSELoss, SimCSELoss, build_model, set_dropout

WORLD_SIZE = 2
PER_RANK = 4
HARD_NEGATIVE_WEIGHT = 0.5


def _model_and_loss(model_dir: str):
    torch.manual_seed(0)
    model = build_model(model_dir, pooling="cls", max_seq_length=32)
    set_dropout(model, 0.0)
    loss = SimCSELoss(model, mlp_head=True, hard_negative_weight=HARD_NEGATIVE_WEIGHT, gather_across_devices=True)
    return model, loss


def _columns(start: int, stop: int) -> list[list[str]]:
    anchors, positives, negatives = sentences(16, seed=1), sentences(16, seed=2), sentences(16, seed=3)
    return [anchors[start:stop], positives[start:stop], negatives[start:stop]]


def _gradients(model, loss) -> list[torch.Tensor]:
    # BERT's pooler layer is unused by [CLS] pooling and gets no gradient.
    parameters = [*model.parameters(), *loss.mlp.parameters()]
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in parameters]


@contextmanager
def _process_group(rank: int, out_dir: str) -> Iterator[None]:
    # Rendezvous through a file in the test's temp folder: no TCP port to pick, so no race for a free one.
    rendezvous = f"file://{os.path.join(out_dir, 'rendezvous')}"
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=WORLD_SIZE)
    try:
        torch.set_num_threads(1)
        yield
        dist.barrier()  # both ranks done before the group goes
    finally:
        dist.destroy_process_group()


def _spawn(worker, model_dir: str, out_dir) -> list[dict]:
    """Run ``worker`` on every rank; each saves its results to ``rank{N}.pt``."""
    mp.spawn(worker, args=(model_dir, str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


def _worker(rank: int, model_dir: str, out_dir: str) -> None:
    with _process_group(rank, out_dir):
        model, loss = _model_and_loss(model_dir)
        model.train()
        # What the Trainer does under torchrun (it finds unused parameters, such as BERT's pooler, by default).
        loss.model = DistributedDataParallel(model, find_unused_parameters=True)
        features = [model.preprocess(column) for column in _columns(rank * PER_RANK, (rank + 1) * PER_RANK)]
        value = loss(features, None)
        value.backward()
        loss.gather_across_devices = False
        with torch.no_grad():
            local_only = loss(features, None)
        torch.save(
            {"loss": value.item(), "local_only": local_only.item(), "gradients": _gradients(model, loss)},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path, tiny_bert_dir):
    ranks = _spawn(_worker, tiny_bert_dir, tmp_path)

    model, loss = _model_and_loss(tiny_bert_dir)
    model.train()
    loss.gather_across_devices = False
    features = [model.preprocess(column) for column in _columns(0, WORLD_SIZE * PER_RANK)]
    single = loss(features, None)
    single.backward()
    expected = _gradients(model, loss)

    # The mean of the per-rank losses is the single-process loss over the global batch of 8 anchors,
    # each seeing all 8 positives and 8 hard negatives.
    assert sum(r["loss"] for r in ranks) / WORLD_SIZE == pytest.approx(single.item(), abs=1e-6)
    # Without gathering each rank sees only its own 4 + 4 candidates: a different (easier) loss.
    assert abs(sum(r["local_only"] for r in ranks) / WORLD_SIZE - single.item()) > 1e-3
    # DDP sums the ranks' gradients and divides by the world size; the MLP head (owned by the loss, outside DDP)
    # is averaged the same way. Every rank ends with the single-process gradients of encoder and head alike.
    for rank in ranks:
        assert len(rank["gradients"]) == len(expected)
        for got, want in zip(rank["gradients"], expected):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def _esimcse(model_dir: str, gather: bool):
    torch.manual_seed(0)
    model = build_model(model_dir, pooling="cls", max_seq_length=32)
    set_dropout(model, 0.0)
    return model, ESimCSELoss(model, queue_size=16, gather_across_devices=gather)


def _esimcse_batch(step: int, start: int, stop: int) -> list[str]:
    return sentences(16, seed=1)[step * WORLD_SIZE * PER_RANK :][start:stop]


def _esimcse_worker(rank: int, model_dir: str, out_dir: str) -> None:
    with _process_group(rank, out_dir):
        model, loss = _esimcse(model_dir, gather=True)
        model.train()  # no DDP wrapper: nothing here is back-propagated; the loss gathers through torch.distributed
        losses = []
        with torch.no_grad():
            for step in range(2):
                features = model.preprocess(_esimcse_batch(step, rank * PER_RANK, (rank + 1) * PER_RANK))
                losses.append(loss([dict(features), dict(features)]).item())
        torch.save({"losses": losses, "queue": loss.queue, "filled": loss.queue_filled}, f"{out_dir}/rank{rank}.pt")


@pytest.mark.slow
def test_esimcse_queue_is_gathered_across_processes(tmp_path, tiny_bert_dir):
    ranks = _spawn(_esimcse_worker, tiny_bert_dir, tmp_path)

    model, loss = _esimcse(tiny_bert_dir, gather=False)
    model.train()
    with torch.no_grad():
        single = []
        for step in range(2):
            features = model.preprocess(_esimcse_batch(step, 0, WORLD_SIZE * PER_RANK))
            single.append(loss([dict(features), dict(features)]).item())
    # Every device queues every device's keys in rank order: the queue of one process on the whole batch.
    for rank in ranks:
        assert rank["filled"].tolist() == loss.queue_filled.tolist() == [True] * 16
        torch.testing.assert_close(rank["queue"], loss.queue)
    # And the loss with a filled queue (step 2) averages to the single-process loss.
    for step in range(2):
        assert sum(r["losses"][step] for r in ranks) / WORLD_SIZE == pytest.approx(single[step], abs=1e-5)
