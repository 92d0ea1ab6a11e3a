"""Resuming a run restores the loss-owned MLP head exactly, through SentenceTransformerTrainer and model.fit, and one
seed drives every random draw of model.fit (dropout included)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import sentences
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from torch.utils.data import DataLoader

from st_simcse import DuplicateInputDataset, ESimCSELoss, SimCSELoss, build_model
from st_simcse.losses.state import LOSS_STATE_FILE, loss_owned_state
from st_simcse.training.callbacks import SeedCallback, model_fit_callbacks

STEPS, CHECKPOINT_STEP, BATCH = 20, 10, 16
TRAIN = sentences(STEPS * BATCH, seed=3)


def _model_and_loss(model_dir: str, init_seed: int, kind: str = "simcse"):
    """``kind``: the loss-owned state to restore: the MLP head (simcse), + the LM head (mlm), + ESimCSE's momentum
    encoder and queue (esimcse)."""
    torch.manual_seed(init_seed)
    model = build_model(model_dir, pooling="cls", max_seq_length=32)
    if kind == "esimcse":
        return model, ESimCSELoss(model, mlp_head=True, queue_size=40)
    return model, SimCSELoss(model, mlp_head=True, mlm_weight=0.1 if kind == "mlm" else 0.0)


def _weights(model, loss) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    state.update({f"head.{k[4:]}": v.detach().clone() for k, v in loss_owned_state(loss).items() if k[:4] == "mlp."})
    state.update({f"loss.{k}": v.detach().clone() for k, v in loss_owned_state(loss).items()})
    return state


def _assert_equal_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def _train_with_trainer(model, loss, output_dir, resume=None):
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        learning_rate=1e-3,
        warmup_steps=0,
        weight_decay=0.0,
        save_strategy="steps",
        save_steps=CHECKPOINT_STEP,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    dataset = DuplicateInputDataset(TRAIN).to_hf_dataset()
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _assert_checkpoint_holds_builtin_model_and_head(checkpoint) -> None:
    assert (checkpoint / LOSS_STATE_FILE).is_file()
    modules = json.loads((checkpoint / "modules.json").read_text())
    assert all(module["type"].startswith("sentence_transformers.") for module in modules)


def _assert_resume_equals_uninterrupted(train, model_dir, tmp_path, kind: str = "simcse") -> None:
    """``train(model, loss, folder, resume)`` runs STEPS steps with a checkpoint every CHECKPOINT_STEP."""
    model, loss = _model_and_loss(model_dir, init_seed=0, kind=kind)
    train(model, loss, tmp_path / "straight", None)
    uninterrupted = _weights(model, loss)

    # The same run "interrupted" after its step-10 checkpoint: drop what came later, resume with a fresh model and
    # loss. The fresh head is initialised differently, so only a restored head can match.
    model, loss = _model_and_loss(model_dir, init_seed=0, kind=kind)
    train(model, loss, tmp_path / "interrupted", None)
    shutil.rmtree(tmp_path / "interrupted" / f"checkpoint-{STEPS}")
    _assert_checkpoint_holds_builtin_model_and_head(tmp_path / "interrupted" / f"checkpoint-{CHECKPOINT_STEP}")

    model, loss = _model_and_loss(model_dir, init_seed=1, kind=kind)
    assert not torch.equal(loss.mlp.dense.weight, uninterrupted["head.dense.weight"])
    train(model, loss, tmp_path / "interrupted", True)
    _assert_equal_weights(_weights(model, loss), uninterrupted)


@pytest.mark.slow
def test_trainer_resume_restores_head_bit_exactly(tmp_path, tiny_bert_dir):
    _assert_resume_equals_uninterrupted(_train_with_trainer, tiny_bert_dir, tmp_path)


@pytest.mark.slow
def test_trainer_resume_without_saved_head_is_refused(tmp_path, tiny_bert_dir):
    model, loss = _model_and_loss(tiny_bert_dir, init_seed=0)
    _train_with_trainer(model, loss, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / f"checkpoint-{STEPS}")
    (tmp_path / "run" / f"checkpoint-{CHECKPOINT_STEP}" / LOSS_STATE_FILE).unlink()
    model, loss = _model_and_loss(tiny_bert_dir, init_seed=0)
    head_before = loss.mlp.dense.weight.detach().clone()
    with pytest.raises(FileNotFoundError, match=r"are in none of .*checkpoint-10 \(no loss_state.safetensors"):
        _train_with_trainer(model, loss, tmp_path / "run", resume=True)
    assert torch.equal(head_before, loss.mlp.dense.weight)


@pytest.mark.slow
def test_trainer_resume_from_a_checkpoint_outside_output_dir(tmp_path, tiny_bert_dir):
    """A new Trainer writing elsewhere resumes an old run's checkpoint: the loss state is found beside it."""
    model, loss = _model_and_loss(tiny_bert_dir, init_seed=0)
    _train_with_trainer(model, loss, tmp_path / "straight")
    uninterrupted = _weights(model, loss)
    model, loss = _model_and_loss(tiny_bert_dir, init_seed=0)
    _train_with_trainer(model, loss, tmp_path / "first")
    checkpoint = tmp_path / "first" / f"checkpoint-{CHECKPOINT_STEP}"
    model, loss = _model_and_loss(tiny_bert_dir, init_seed=1)
    _train_with_trainer(model, loss, tmp_path / "second", resume=str(checkpoint))
    _assert_equal_weights(_weights(model, loss), uninterrupted)

    # A copy of that checkpoint, and its first folder reused by another run: the other run's loss state (another
    # token) is never taken; the error names where it looked.
    copied = tmp_path / "copied" / checkpoint.name
    shutil.copytree(checkpoint, copied)
    shutil.rmtree(tmp_path / "first")
    model, loss = _model_and_loss(tiny_bert_dir, init_seed=5)
    _train_with_trainer(model, loss, tmp_path / "first")
    model, loss = _model_and_loss(tiny_bert_dir, init_seed=1)
    looked = f"{checkpoint}, {tmp_path / 'third' / checkpoint.name}"
    with pytest.raises(FileNotFoundError, match=f"are in none of {looked} .no loss_state.safetensors, or one of"):
        _train_with_trainer(model, loss, tmp_path / "third", resume=str(copied))


def test_a_trainer_without_st_simcse_losses_is_unaffected(tmp_path, tiny_bert_dir):
    """Importing st_simcse adds its callback to every Trainer; one that trains no st_simcse loss gets the same
    weights and the same checkpoint files as without the callback."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import trainer as hf_trainer

    from st_simcse import LossStateCallback

    def train(folder):
        torch.manual_seed(0)
        model = build_model(tiny_bert_dir, pooling="cls", max_seq_length=32)
        _train_with_trainer(model, MultipleNegativesRankingLoss(model), folder)
        return {k: v.clone() for k, v in model.state_dict().items()}, sorted(p.name for p in folder.rglob("*"))

    assert LossStateCallback in hf_trainer.DEFAULT_CALLBACKS
    with_callback, with_files = train(tmp_path / "with")
    hf_trainer.DEFAULT_CALLBACKS.remove(LossStateCallback)
    try:
        without_callback, without_files = train(tmp_path / "without")
    finally:
        hf_trainer.DEFAULT_CALLBACKS.append(LossStateCallback)
    assert LOSS_STATE_FILE not in with_files and with_files == without_files
    for name in with_callback:
        assert torch.equal(with_callback[name], without_callback[name]), name


def _fit(model, loss, checkpoint_dir, resume=False, seed=None, duplicate_in_loss=False):
    dataset = DuplicateInputDataset(TRAIN, duplicate_in_loss=duplicate_in_loss)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=False)
    arguments = dict(
        epochs=1,
        steps_per_epoch=STEPS,
        warmup_steps=0,
        optimizer_params={"lr": 1e-3},
        weight_decay=0.0,
        show_progress_bar=False,
        checkpoint_path=str(checkpoint_dir),
        checkpoint_save_steps=CHECKPOINT_STEP,
        resume_from_checkpoint=resume,
    )
    if seed is None:
        model.fit(train_objectives=[(loader, loss)], **arguments)
    else:
        with model_fit_callbacks(SeedCallback(seed)):
            model.fit(train_objectives=[(loader, loss)], **arguments)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["simcse", "mlm", "esimcse"])
def test_model_fit_resume_restores_loss_state_bit_exactly(tmp_path, tiny_bert_dir, kind):
    def train(model, loss, folder, resume):
        _fit(model, loss, folder, resume=bool(resume))

    _assert_resume_equals_uninterrupted(train, tiny_bert_dir, tmp_path, kind)


@pytest.mark.slow
def test_seed_callback_drives_dropout_under_model_fit(tmp_path, tiny_bert_dir):
    """Same initial weights and batch order in every run: only the dropout masks can differ, and they follow
    the seed (without the callback model.fit's Trainer would seed 42 every time)."""
    finals = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        model, loss = _model_and_loss(tiny_bert_dir, init_seed=0)
        _fit(model, loss, tmp_path / name, seed=seed)
        finals[name] = _weights(model, loss)
    _assert_equal_weights(finals["a"], finals["b"])
    assert not torch.equal(finals["a"]["head.dense.weight"], finals["c"]["head.dense.weight"])


@pytest.mark.slow
def test_model_fit_on_single_columns_trains_exactly_as_on_pairs(tmp_path, tiny_bert_dir):
    """The recipe's --tokenize-once: model.fit's collator tokenizes one column, the loss embeds it twice; the
    weights after 20 steps equal those of training on (s, s) pairs."""
    finals = []
    for once in (False, True):
        model, loss = _model_and_loss(tiny_bert_dir, init_seed=0)
        _fit(model, loss, tmp_path / f"once-{once}", seed=5, duplicate_in_loss=once)
        finals.append(_weights(model, loss))
    _assert_equal_weights(*finals)
