"""The MLM auxiliary objective: BERT's 80/10/10 masking, the loss = SimCSE's + weight x masked-LM cross-entropy
(computed independently, by transformers' own BertForMaskedLM), the LM head owned by the loss: trained,
checkpointed, never saved in the model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import sentences
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from transformers import BertForMaskedLM

from st_simcse import DuplicateInputDataset, SimCSELoss, build_model
from st_simcse.losses.mlm import mask_tokens
from st_simcse.losses.state import load_loss_state, loss_owned_state, save_loss_state

SENTENCES = [
    "a man is playing a guitar on the street",
    "two dogs run through the snowy park",
    "the sun rises over the quiet sea",
    "children eat ice cream at the beach",
]


def test_masking_statistics():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (4000, 40), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    attention = torch.ones_like(ids)
    attention[:, 30:] = 0  # padding
    masked, labels = mask_tokens(ids, attention, [0, 101, 102, 103], 103, 30522, 0.15, generator)
    chosen = labels != -100
    real = (attention == 1) & (ids != 101) & (ids != 102)
    assert not chosen[~real].any()  # never a special token or padding
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(masked[~chosen], ids[~chosen])
    assert chosen[real].float().mean().item() == pytest.approx(0.15, abs=0.005)
    to_mask = (masked[chosen] == 103).float().mean().item()
    kept = (masked[chosen] == ids[chosen]).float().mean().item()
    assert to_mask == pytest.approx(0.8, abs=0.01)
    assert kept == pytest.approx(0.1 + 0.1 / 30522, abs=0.01)  # 10 % kept (+ random draws of the same id)
    assert 1 - to_mask - kept == pytest.approx(0.1, abs=0.01)  # 10 % random


def test_loss_is_simcse_plus_weight_times_masked_lm_cross_entropy(splade_tiny):
    weight = 0.1
    model = build_model(splade_tiny, pooling="cls", max_seq_length=32, dropout=0.0)  # deterministic embeddings
    loss = SimCSELoss(model, temperature=0.05, mlm_weight=weight, mlm_head_init="checkpoint")
    assert loss.mlm_head_source == "checkpoint"
    model.train()
    features = model.preprocess(SENTENCES)
    torch.manual_seed(11)
    value = loss([dict(features), dict(features)])

    # The same masks, drawn again with the same seed (the masking is the loss's first random draw).
    torch.manual_seed(11)
    tokenizer = model.tokenizer
    masked, labels = mask_tokens(
        features["input_ids"], features["attention_mask"], tokenizer.all_special_ids, tokenizer.mask_token_id,
        len(tokenizer), 0.15,
    )  # fmt: skip
    assert (labels != -100).any()
    with torch.no_grad():
        embeddings = model(dict(features))["sentence_embedding"]
        normalized = F.normalize(embeddings, dim=-1)
        contrastive = F.cross_entropy(normalized @ normalized.T / 0.05, torch.arange(len(SENTENCES)))
        reference = BertForMaskedLM.from_pretrained(splade_tiny).eval()
        masked_lm = reference(
            input_ids=masked,
            attention_mask=features["attention_mask"],
            token_type_ids=features["token_type_ids"],
            labels=labels,
        ).loss
    assert value.item() == pytest.approx(contrastive.item() + weight * masked_lm.item(), abs=1e-5)
    assert masked_lm.item() > 1.0  # the MLM term is really there


def test_random_head_init_is_the_reference_codes(tiny_bert_dir):
    model = build_model(tiny_bert_dir, pooling="cls")
    loss = SimCSELoss(model, mlm_weight=0.1)  # a BertModel checkpoint has no MLM head: "auto" falls back
    assert loss.mlm_head_source == "random"
    decoder = loss.mlm_head.predictions.decoder.weight
    embeddings = model[0].auto_model.embeddings.word_embeddings.weight
    assert decoder.data_ptr() != embeddings.data_ptr()  # untied, as the paper's lm_head
    assert decoder.std().item() == pytest.approx(0.02, rel=0.2)
    with pytest.raises(ValueError, match="no trained MLM head"):
        SimCSELoss(model, mlm_weight=0.1, mlm_head_init="checkpoint")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mlm_weight": -1.0}, "mlm_weight"),
        ({"mlm_weight": 0.1, "mlm_probability": 1.5}, "mlm_probability"),
        ({"mlm_weight": 0.1, "mlm_head_init": "pretrained"}, "mlm_head_init"),
    ],
)
def test_bad_mlm_arguments(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimCSELoss(tiny_model, **kwargs)


def test_mlm_refused_inside_matryoshka(tiny_model):
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    wrapped = MatryoshkaLoss(tiny_model, SimCSELoss(tiny_model, mlm_weight=0.1), matryoshka_dims=[32, 16])
    with pytest.raises(ValueError, match="mlm_weight > 0 cannot be wrapped in MatryoshkaLoss"):
        wrapped([tiny_model.preprocess(["a man plays", "a dog runs"])], None)


def test_mlm_refuses_unpadded_inputs(tiny_model):
    """Flash attention's unpadded batches carry no attention mask, which the masking needs: a clear error."""
    loss = SimCSELoss(tiny_model, mlm_weight=0.1)
    padded = tiny_model.preprocess(SENTENCES)
    unpadded = {key: value for key, value in padded.items() if key != "attention_mask"}
    with pytest.raises(ValueError, match="masks padded batches, but these inputs come unpadded"):
        loss([unpadded], None)


@pytest.mark.slow
def test_lm_head_trains_is_checkpointed_and_never_saved_in_the_model(tmp_path, monkeypatch, splade_tiny):
    monkeypatch.chdir(tmp_path)  # model.fit without a checkpoint_path would create ./checkpoints
    torch.manual_seed(0)
    model = build_model(splade_tiny, pooling="cls", max_seq_length=32)
    loss = SimCSELoss(model, mlp_head=True, mlm_weight=0.1)
    head_before = {k: v.clone() for k, v in loss.mlm_head.state_dict().items()}
    loader = DataLoader(DuplicateInputDataset(sentences(96, seed=4), duplicate_in_loss=True), batch_size=16)
    model.fit(
        train_objectives=[(loader, loss)],
        epochs=1,
        optimizer_params={"lr": 1e-3},
        show_progress_bar=False,
        checkpoint_path=None,
    )
    changed = [k for k, v in loss.mlm_head.state_dict().items() if not torch.equal(v, head_before[k])]
    assert "predictions.transform.dense.weight" in changed and "predictions.decoder.weight" in changed

    model.save(str(tmp_path / "saved"))
    modules = json.loads((tmp_path / "saved" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling"]
    saved_keys = load_file(str(tmp_path / "saved" / "model.safetensors")).keys()
    assert not [key for key in saved_keys if "predictions" in key or key.startswith("cls.")]

    # The checkpointed loss state carries the head, and loads back exactly into a fresh loss.
    save_loss_state([loss], str(tmp_path / "checkpoint"))
    fresh = SimCSELoss(model, mlp_head=True, mlm_weight=0.1)
    load_loss_state([fresh], str(tmp_path / "checkpoint"))
    for name, tensor in loss_owned_state(loss).items():
        assert torch.equal(loss_owned_state(fresh)[name], tensor), name
