"""SimCSELoss in real training on the testbed encoder: model.fit and SentenceTransformerTrainer."""

from __future__ import annotations

import json

import pytest
import torch
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from torch.utils.data import DataLoader

from st_simcse import DuplicateInputDataset, SimCSEDataCollator, SimCSELoss, build_model, read_sentences


def _held_out_loss(loss: SimCSELoss, batch: list[str]) -> float:
    """The loss on a fixed batch with fixed dropout draws, so before/after values are comparable."""
    model = loss.model
    model.train()
    torch.manual_seed(1234)
    with torch.no_grad():
        features = [model.preprocess(batch), model.preprocess(batch)]
        features = [{k: v.to(model.device) if hasattr(v, "to") else v for k, v in f.items()} for f in features]
        return loss(features, None).item()


@pytest.fixture(scope="module")
def corpus(train_40k):
    sentences, _ = read_sentences(train_40k)
    return sentences[:1600], sentences[-64:]


def _fresh_model_and_loss(model_dir: str, held_out: list[str]):
    torch.manual_seed(0)
    model = build_model(model_dir, pooling="cls", max_seq_length=32)
    loss = SimCSELoss(model, mlp_head=True)
    return model, loss, loss.mlp.dense.weight.detach().clone(), _held_out_loss(loss, held_out)


def _assert_trained_and_saved(model, loss, head_before, before, after, tmp_path):
    assert after < before, f"loss did not fall: {before:.4f} -> {after:.4f}"
    assert not torch.equal(head_before, loss.mlp.dense.weight.detach()), "the MLP head was not trained"
    model.save(str(tmp_path / "saved"))
    modules = json.loads((tmp_path / "saved" / "modules.json").read_text())
    assert [m["type"] for m in modules] == [
        "sentence_transformers.base.modules.transformer.Transformer",
        "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
    ]
    reloaded = SentenceTransformer(str(tmp_path / "saved"))
    embeddings = reloaded.encode(["a man plays a guitar", "a dog runs in the park"])
    assert embeddings.shape == (2, 128)
    torch.testing.assert_close(
        torch.from_numpy(embeddings),
        torch.from_numpy(model.encode(["a man plays a guitar", "a dog runs in the park"])),
    )


@pytest.mark.slow
def test_model_fit_trains_encoder_and_mlp_head(tmp_path, monkeypatch, splade_tiny, corpus):
    monkeypatch.chdir(tmp_path)  # without a checkpoint_path, model.fit's Trainer creates ./checkpoints/model
    train, held_out = corpus
    model, loss, head_before, before = _fresh_model_and_loss(splade_tiny, held_out)
    loader = DataLoader(DuplicateInputDataset(train), batch_size=32, shuffle=True)
    model.fit(
        train_objectives=[(loader, loss)],
        epochs=1,
        warmup_steps=0,
        optimizer_params={"lr": 3e-4},
        weight_decay=0.0,
        show_progress_bar=False,
        checkpoint_path=None,
    )
    after = _held_out_loss(loss, held_out)
    _assert_trained_and_saved(model, loss, head_before, before, after, tmp_path)


@pytest.mark.slow
def test_trainer_trains_encoder_and_mlp_head(tmp_path, splade_tiny, corpus):
    train, held_out = corpus
    model, loss, head_before, before = _fresh_model_and_loss(splade_tiny, held_out)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        per_device_train_batch_size=32,
        num_train_epochs=1,
        learning_rate=3e-4,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=DuplicateInputDataset(train).to_hf_dataset(),
        loss=loss,
        data_collator=SimCSEDataCollator(preprocess_fn=model.preprocess),  # each sentence tokenized once
    )
    trainer.train()
    assert trainer.state.global_step == 50
    after = _held_out_loss(loss, held_out)
    _assert_trained_and_saved(model, loss, head_before, before, after, tmp_path)


def test_bf16_autocast_wrapper_runs_the_encoder_in_bf16(tiny_model):
    from conftest import sentences

    from st_simcse.training.paths import BFloat16Autocast

    loss = SimCSELoss(tiny_model, mlp_head=True)
    wrapped = BFloat16Autocast(loss)
    assert wrapped.model is tiny_model and list(wrapped.parameters()) == list(loss.parameters())
    dense = tiny_model[0].auto_model.encoder.layer[0].intermediate.dense
    dtypes = []
    hook = dense.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    batch = sentences(4)
    value = wrapped([tiny_model.preprocess(batch), tiny_model.preprocess(batch)], None)
    hook.remove()
    assert dtypes == [torch.bfloat16]  # one merged forward, in bf16
    assert value.dtype == torch.float32  # the similarities stay in float32
    value.backward()
    assert loss.mlp.dense.weight.grad is not None and loss.mlp.dense.weight.grad.dtype == torch.float32


def _trained_both_ways(tiny_bert_dir: str, tmp_path, dataset, **run_options) -> list[dict[str, torch.Tensor]]:
    from st_simcse.training.paths import fit, fit_with_trainer
    from st_simcse.training.run import TrainingRun

    states = []
    for index, path in enumerate((fit, fit_with_trainer)):
        torch.manual_seed(0)
        model = build_model(tiny_bert_dir, max_seq_length=32)
        loss = SimCSELoss(model, mlp_head=True)
        settings = {"epochs": 2, "max_steps": None, "scheduler": "WarmupLinear", "warmup_steps": 0, **run_options}
        run = TrainingRun(
            output_dir=str(tmp_path / str(index)), senteval_dir=None, batch_size=16, learning_rate=1e-3,
            weight_decay=0.0, max_grad_norm=1.0, amp="none", eval_steps=5, eval_batch_size=32, seed=3, resume=False,
            **settings,
        )  # fmt: skip
        path(model, loss, dataset, run, None)
        states.append({**model.state_dict(), **{f"head.{k}": v for k, v in loss.mlp.state_dict().items()}})
    return states


@pytest.mark.parametrize("columns", ["single", "pairs"])
def test_trainer_path_trains_exactly_as_model_fit(tiny_bert_dir, tmp_path, columns):
    """The Trainer path (the Trainer model.fit runs underneath, reading the corpus's Arrow table instead of
    model.fit's in-memory copy) gives bit-identical weights: the same batches, schedule, optimizer and seeds, over
    two epochs with a last partial batch."""
    from conftest import sentences

    dataset = DuplicateInputDataset(sentences(100), duplicate_in_loss=columns == "single")
    by_fit, by_trainer = _trained_both_ways(tiny_bert_dir, tmp_path, dataset)
    assert by_fit.keys() == by_trainer.keys()
    for name in by_fit:
        assert torch.equal(by_fit[name], by_trainer[name]), name
    untrained = build_model(tiny_bert_dir, max_seq_length=32).state_dict()
    assert any(not torch.equal(untrained[name], by_fit[name]) for name in untrained)


def test_model_fit_on_a_corpus_smaller_than_one_batch_is_refused(tiny_bert_dir, tmp_path, monkeypatch):
    """model.fit sizes its schedule as len(dataset) // batch_size = 0 steps: a learning rate of 0 throughout, and a
    "successful" run that leaves the model as it was. With an st_simcse loss the run is refused before its first
    step; a Trainer without one is left alone (st_simcse's callback only acts where its losses train)."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    monkeypatch.chdir(tmp_path)  # model.fit writes its default checkpoint folder into the working directory
    model = build_model(tiny_bert_dir, max_seq_length=32)
    three = DuplicateInputDataset(["a man plays", "a dog runs", "two cats sit"])
    with pytest.raises(ValueError, match=r"0 at every one of the 1 training step.*3 example\(s\) in batches of 64"):
        model.fit([(DataLoader(three, batch_size=64, shuffle=True), SimCSELoss(model))], epochs=1)
    other = build_model(tiny_bert_dir, max_seq_length=32)
    before = {name: tensor.clone() for name, tensor in other.state_dict().items()}
    other.fit([(DataLoader(three, batch_size=64), MultipleNegativesRankingLoss(other))], epochs=1)
    assert all(torch.equal(before[name], tensor) for name, tensor in other.state_dict().items())  # ST's own result


def test_resume_after_an_evaluation_that_was_never_checkpointed(tiny_bert_dir, tmp_path, capsys):
    """Killed after the dev evaluation at step 30 (a new best, saved to best_model/) but before checkpoint-30: the
    resumed run's best is the resumed checkpoint's model at its own score, never the lost part's."""
    from st_simcse.training.run import TrainingRun
    from st_simcse.training.selection import DevTracker

    pairs = tmp_path / "dev.csv"
    pairs.write_text("sentence1,sentence2,score\na man plays,a man plays a guitar,4\na dog runs,two cats sit,0\n")
    run = TrainingRun(
        output_dir=str(tmp_path / "run"), senteval_dir=None, batch_size=16, learning_rate=1e-3, epochs=1,
        max_steps=40, scheduler="WarmupLinear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, amp="none",
        eval_steps=10, eval_batch_size=32, seed=3, resume=True, dev_file=str(pairs),
    )  # fmt: skip
    model = build_model(tiny_bert_dir, max_seq_length=32)
    model.save(str(tmp_path / "run" / "checkpoints" / "checkpoint-20"))
    scores = {0: 0.5, 10: 0.7, 20: 0.6, 30: 0.9}
    history = [{"epoch": 0, "steps": step, "dev_avg": score} for step, score in scores.items()]
    (tmp_path / "run" / "dev_history.json").write_text(
        json.dumps({"history": history, "alignment_uniformity": [[s, 1.0, -1.0] for s in scores], "best_score": 0.9,
                    "best_step": 30, "train_seconds": {"0": 0.0, "10": 5.0, "20": 10.0, "30": 15.0}})
    )  # fmt: skip
    tracker = DevTracker(run, model, main_process=True)
    assert tracker.best == {"score": 0.6, "step": 20} and tracker.seconds_before_resume == 10.0
    assert [entry["steps"] for entry in tracker.evaluator.history] == [0, 10, 20]
    assert (tmp_path / "run" / "best_model" / "modules.json").is_file()
    assert "The best model so far (step 10) was overwritten by an evaluation the interruption lost" in (
        capsys.readouterr().out
    )
