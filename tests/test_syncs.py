"""A training step of SimCSELoss never makes the host wait for the GPU (no .item(), no data-dependent shapes), so
the host can queue the next step's kernels while the GPU runs this one. Needs a GPU: skipped elsewhere."""

from __future__ import annotations

import pytest
import torch
from conftest import sentences

from st_simcse import SimCSELoss, build_model

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="host-device synchronisation is a CUDA notion: needs a GPU"
)


@pytest.mark.parametrize("columns", [1, 2])
def test_a_training_step_never_waits_for_the_gpu(tiny_bert_dir, columns):
    model = build_model(tiny_bert_dir, device="cuda")
    loss = SimCSELoss(model, mlp_head=True).to("cuda")
    texts = [sentences(16, seed=column) for column in range(columns)]
    features = [{key: value.to("cuda") for key, value in model.preprocess(batch).items()} for batch in texts]

    def step() -> None:
        loss([dict(column) for column in features], None).backward()
        torch.nn.utils.clip_grad_norm_(loss.parameters(), 1.0)  # as the Trainer clips, on the device

    step()  # the first step checks once whether the two views can differ (a host-side look at dropout)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
