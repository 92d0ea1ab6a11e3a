"""GuidedSimCSELoss: SimCSE with a frozen guide (distillation of its in-batch similarities, removal of the false
negatives it finds), checked against an independent computation; its guide is training-only state, rebuilt on resume
and checked by fingerprint."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import sentences
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from st_simcse import DuplicateInputDataset, GuidedSimCSELoss, SimCSELoss, build_model
from st_simcse.losses.state import LOSS_STATE_FILE

BATCH = ["a man plays a guitar", "a man plays the guitar", "a dog runs in the park", "two cats sit on a red car"]
POSITIVES = ["a man is playing guitar", "the man plays a guitar", "a dog is running", "cats sit on a car"]
NEGATIVES = ["a woman eats food", "the sun is bright", "children walk on the beach", "a blue house"]


def features(model, texts):
    return model.preprocess(texts)


def cosine_matrix(first: torch.Tensor, second: torch.Tensor) -> list[list[float]]:
    return [[float(torch.dot(a, b) / (a.norm() * b.norm())) for b in second] for a in first]


def expected_loss(student, guide, tau, weight, tau_d, threshold, hard_negative_weight=0.0) -> float:
    """The loss computed by hand from the embedding columns (student: the model's, guide: the guide's), row by row:
    SimCSE's cross-entropy over the candidates the guide leaves (eq. 1 / 5 of the paper), plus ``weight`` times the
    KL divergence of the model's softmax from the guide's over all candidates."""
    anchors, candidates = student[0], torch.cat(student[1:])
    guide_anchors, guide_candidates = guide[0], torch.cat(guide[1:])
    cosines, guide_cosines = cosine_matrix(anchors, candidates), cosine_matrix(guide_anchors, guide_candidates)
    size, total = len(anchors), 0.0
    for i in range(size):
        logits = []
        for j, cosine in enumerate(cosines[i]):
            removed = threshold is not None and j != i and guide_cosines[i][j] > threshold
            if removed:
                continue
            own_negative = j >= size and j % size == i
            logits.append((cosine / tau + (hard_negative_weight if own_negative else 0.0), j == i))
        normaliser = math.log(sum(math.exp(value) for value, _ in logits))
        simcse = normaliser - next(value for value, positive in logits if positive)
        model_logits = [c / tau_d for c in cosines[i]]
        guide_logits = [c / tau_d for c in guide_cosines[i]]
        model_norm = math.log(sum(math.exp(v) for v in model_logits))
        guide_norm = math.log(sum(math.exp(v) for v in guide_logits))
        pairs = zip(guide_logits, model_logits)
        kl = sum(math.exp(g - guide_norm) * ((g - guide_norm) - (m - model_norm)) for g, m in pairs)
        total += simcse + weight * kl
    return total / size


@pytest.fixture
def student_and_guide(tiny_bert_dir):
    """A guide, and a model that has moved away from it (as during training): same tokenizer, other weights. The
    guide's weight matrices are redrawn wide, so its sentence embeddings spread out (cosines from about 0.4 to 1): a
    random tiny BERT's embeddings all lie within 1e-3 of each other in cosine, too close for a threshold test."""
    torch.manual_seed(0)
    guide = build_model(tiny_bert_dir, pooling="mean", max_seq_length=32)
    with torch.no_grad():
        for parameter in guide.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.5)
    model = copy.deepcopy(guide)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.eval()  # no dropout: the hand computation embeds the same inputs again
    return model, guide


@pytest.mark.parametrize("threshold", [None, "median"])
@pytest.mark.parametrize("columns", [2, 3])
def test_loss_equals_the_hand_computation(student_and_guide, threshold, columns):
    model, guide = student_and_guide
    texts = [BATCH, POSITIVES, NEGATIVES][:columns]
    with torch.no_grad():
        student = [model(features(model, t))["sentence_embedding"] for t in texts]
        guided = [guide(features(guide, t))["sentence_embedding"] for t in texts]
    if threshold == "median":  # half of the negatives removed, half kept
        cosines = torch.tensor(cosine_matrix(guided[0], torch.cat(guided[1:])))
        negatives = cosines[~torch.eye(*cosines.shape, dtype=torch.bool)].sort().values
        middle = len(negatives) // 2
        threshold = float(negatives[middle - 1] + negatives[middle]) / 2  # halfway between two cosines
        assert float(negatives[middle] - negatives[middle - 1]) > 1e-4, "too close for float rounding to agree"
    loss = GuidedSimCSELoss(
        model, temperature=0.05, guide=guide, distillation_weight=0.7, distillation_temperature=0.1,
        false_negative_threshold=threshold, hard_negative_weight=math.log(2),
    )  # fmt: skip
    with torch.no_grad():
        value = loss([features(model, t) for t in texts]).item()
    expected = expected_loss(student, guided, 0.05, 0.7, 0.1, threshold, math.log(2) if columns == 3 else 0.0)
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_the_threshold_removes_candidates_only_where_the_guide_says(student_and_guide):
    model, guide = student_and_guide
    inputs = [features(model, BATCH), features(model, POSITIVES)]
    values = {}
    with torch.no_grad():
        for threshold in (None, 1.0, -0.999):
            loss = GuidedSimCSELoss(model, guide=guide, distillation_weight=0.0, false_negative_threshold=threshold)
            values[threshold] = loss(inputs).item()
    assert values[None] == pytest.approx(values[1.0])  # no cosine is above 1: nothing removed
    assert values[-0.999] == pytest.approx(0.0, abs=1e-6)  # every negative removed: only the positive is left


def test_without_its_terms_it_is_simcse(tiny_bert_dir):
    torch.manual_seed(0)
    model = build_model(tiny_bert_dir, pooling="cls", max_seq_length=32)
    inputs = [features(model, BATCH), features(model, POSITIVES)]
    guided = GuidedSimCSELoss(model, distillation_weight=0.0, false_negative_threshold=None)
    plain = SimCSELoss(model)
    torch.manual_seed(5)
    first = guided(inputs)
    torch.manual_seed(5)
    second = plain(inputs)
    assert torch.equal(first, second)


def test_the_guide_is_a_frozen_copy_that_never_drops_out(tiny_bert_dir):
    model = build_model(tiny_bert_dir, pooling="cls", max_seq_length=32)
    loss = GuidedSimCSELoss(model, mlp_head=True)
    loss.train()
    assert model.training and not loss.guide.training
    assert all(not p.requires_grad for p in loss.guide.parameters())
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(loss.guide.parameters(), model.parameters()))
    guided = loss._guide_embeddings([features(model, BATCH), features(model, BATCH)])
    assert torch.equal(guided[0], guided[1])  # the same sentences, no dropout: one embedding, used twice
    with pytest.raises(ValueError, match="false_negative_threshold must be a cosine in"):
        GuidedSimCSELoss(model, false_negative_threshold=1.5)
    with pytest.raises(ValueError, match="distillation_temperature must be a positive finite number"):
        GuidedSimCSELoss(model, distillation_temperature=0)


def _trainer_run(model_dir, output_dir, resume=None, perturb_guide=False):
    torch.manual_seed(0)
    model = build_model(model_dir, pooling="cls", max_seq_length=32)
    guide = None
    if perturb_guide:
        guide = copy.deepcopy(model)
        with torch.no_grad():
            next(guide.parameters()).add_(0.01)
    loss = GuidedSimCSELoss(model, mlp_head=True, guide=guide, false_negative_threshold=0.9)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=8, max_steps=8, learning_rate=1e-3, seed=1,
        save_strategy="steps", save_steps=4, report_to="none", disable_tqdm=True, dataloader_pin_memory=False,
    )  # fmt: skip
    dataset = DuplicateInputDataset(sentences(64, seed=2), duplicate_in_loss=True).to_hf_dataset()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss).train(resume)
    return {**model.state_dict(), **{f"head.{k}": v for k, v in loss.mlp.state_dict().items()}}


@pytest.mark.slow
def test_resume_is_exact_and_a_different_guide_is_refused(tmp_path, tiny_bert_dir):
    straight = _trainer_run(tiny_bert_dir, tmp_path / "straight")
    _trainer_run(tiny_bert_dir, tmp_path / "run")
    import shutil

    shutil.rmtree(tmp_path / "run" / "checkpoint-8")
    state = load_file(str(tmp_path / "run" / "checkpoint-4" / LOSS_STATE_FILE))
    assert not any(".guide." in name for name in state)  # the guide is rebuilt, not checkpointed
    assert any(name.endswith("guide_fingerprint") for name in state)
    resumed = _trainer_run(tiny_bert_dir, tmp_path / "run", resume=True)
    different = [name for name in straight if not torch.equal(straight[name], resumed[name])]
    assert not different, different[:3]
    with pytest.raises(ValueError, match="guide is not the one the run was trained with"):
        _trainer_run(tiny_bert_dir, tmp_path / "run", resume=True, perturb_guide=True)
