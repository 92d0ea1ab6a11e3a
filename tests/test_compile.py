"""The torch.compile lever: the compiled encoder trains as the eager one does, saves as plain built-in modules, and
the STS evaluation runs it eagerly (no graph per batch width)."""

from __future__ import annotations

import pytest
import torch
from conftest import sentences
from sentence_transformers import SentenceTransformer
from torch._dynamo.testing import CompileCounter

from st_simcse import SimCSELoss, build_model
from st_simcse.evaluation.evaluators import SentenceEmbeddingCache
from st_simcse.models.build import compile_encoder


def test_unknown_compile_mode_is_refused(tiny_bert_dir):
    with pytest.raises(ValueError, match="compile_mode 'fast'.*reduce-overhead"):
        build_model(tiny_bert_dir, compile=True, compile_mode="fast")


def test_evaluation_runs_a_compiled_encoder_eagerly(tiny_model):
    counter = CompileCounter()
    compile_encoder(tiny_model, backend=counter)
    # Lengths 3 to 8 words: length-sorted batches of 4 come in several widths.
    batch = sentences(24)
    with SentenceEmbeddingCache(batch_size=4).filled(tiny_model, batch):
        pass
    assert counter.frame_count == 0
    tiny_model.encode(batch, batch_size=4)  # outside the evaluation the same model is compiled
    assert counter.frame_count > 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_encoder_trains_like_the_eager_one(tiny_bert_dir, tmp_path, mode):
    """Dropout 0, so both runs see the same function; three AdamW steps of SimCSELoss on (anchor, other) pairs.
    On a CPU "reduce-overhead" compiles without CUDA graphs; on a GPU it replays them."""
    anchors, positives = sentences(8, seed=1), sentences(8, seed=2)
    losses, models = {}, {}
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(tiny_bert_dir, pooling="mean", dropout=0.0, compile=compiled, compile_mode=mode)
        loss = SimCSELoss(model, mlp_head=True)
        optimizer = torch.optim.AdamW(loss.parameters(), lr=1e-2)
        values = []
        for _ in range(3):
            value = loss([model.preprocess(anchors), model.preprocess(positives)], None)
            value.backward()
            optimizer.step()
            optimizer.zero_grad()
            values.append(value.item())
        losses[compiled], models[compiled] = values, model
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the compiled run did run compiled graphs
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
    assert losses[False][0] != pytest.approx(losses[False][-1], abs=1e-3)  # the steps changed the model
    eager_state, compiled_state = models[False].state_dict(), models[True].state_dict()
    assert compiled_state.keys() == eager_state.keys()  # no "_orig_mod." prefix
    for name, tensor in eager_state.items():
        torch.testing.assert_close(compiled_state[name], tensor, atol=1e-4, rtol=1e-4)

    models[True].save(str(tmp_path / "compiled"))
    reloaded = SentenceTransformer(str(tmp_path / "compiled"))  # plain loading, built-in modules
    torch.testing.assert_close(
        torch.from_numpy(reloaded.encode(anchors)), torch.from_numpy(models[True].encode(anchors)), atol=1e-5, rtol=0
    )
