"""Looking does not change the run: the same seed and steps train the same weights whatever --eval-steps, on every
training path (model.fit, the Trainer, a stream). The Trainer's evaluation iterates an empty evaluation DataLoader,
which draws from torch's global generator and so shifted every later dropout mask; checkpoints come with the
evaluations, so they are covered too."""

from __future__ import annotations

import pytest
import torch
from conftest import sentences

from st_simcse import DuplicateInputDataset, SimCSELoss, build_model, load_corpus


def trained(tiny_bert_dir: str, tmp_path, path: str, eval_steps: int) -> dict[str, torch.Tensor]:
    from st_simcse.training.callbacks import CheckpointClock
    from st_simcse.training.paths import fit, fit_with_trainer
    from st_simcse.training.run import TrainingRun
    from st_simcse.training.selection import DevTracker

    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("\n".join(sentences(96, seed=4)) + "\n", encoding="utf-8")
    dev = tmp_path / "dev.csv"
    dev.write_text("".join(["sentence1,sentence2,score\n", *(f"{a},{b},{i % 5}\n" for i, (a, b) in
                   enumerate(zip(sentences(20, seed=6), sentences(20, seed=7))))]))  # fmt: skip
    output = tmp_path / f"{path}-{eval_steps}"
    run = TrainingRun(
        output_dir=str(output), senteval_dir=None, batch_size=16, learning_rate=1e-3, epochs=1, max_steps=6,
        scheduler="WarmupLinear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, amp="none",
        eval_steps=eval_steps, eval_batch_size=32, seed=3, resume=False, dev_file=str(dev),
        streaming=path == "streaming", training_path="fit" if path == "fit" else "trainer",
    )  # fmt: skip
    output.mkdir()
    torch.manual_seed(0)
    model = build_model(tiny_bert_dir, max_seq_length=32)
    loss = SimCSELoss(model, mlp_head=True)
    corpus = load_corpus(corpus_file, streaming=path == "streaming")
    dataset = DuplicateInputDataset.from_corpus(corpus, duplicate_in_loss=True, seed=3)
    tracker = DevTracker(run, model, main_process=True)
    tracker.evaluate_untrained()
    (fit if path == "fit" else fit_with_trainer)(model, loss, dataset, run, tracker, CheckpointClock(tracker))
    assert [entry["steps"] for entry in tracker.evaluator.history] == list(range(0, 7, eval_steps))
    return {**model.state_dict(), **{f"head.{k}": v for k, v in loss.mlp.state_dict().items()}}


@pytest.mark.parametrize("path", ["fit", "trainer", "streaming"])
def test_the_same_weights_whatever_the_evaluation_interval(tiny_bert_dir, tmp_path, path):
    often, once = (trained(tiny_bert_dir, tmp_path, path, eval_steps) for eval_steps in (1, 6))
    assert often.keys() == once.keys()
    changed = [name for name in often if not torch.equal(often[name], once[name])]
    assert not changed, f"evaluating every step changed {len(changed)} tensors, e.g. {changed[:3]}"
