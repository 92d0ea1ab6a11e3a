"""load_simcse_model on checkpoints in the layout of the paper's released models (a transformers BertModel or
RobertaModel folder, with or without its trained pooler), and the reference poolers of the evaluation CLI."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import WORDS
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, RobertaConfig, RobertaModel

from st_simcse import load_simcse_model
from st_simcse.models.released import reference_pooler_model

TEXTS = ["a man plays the guitar", "two dogs run in the park", "the sun is bright"]


def _write_checkpoint(folder, tiny_bert_dir, architecture: str = "bert", pooler: bool = True) -> str:
    """A randomly initialised checkpoint as transformers saves the released models (weights, config, tokenizer);
    random pooler weights stand in for trained ones, which is what matters: they must be the checkpoint's own."""
    torch.manual_seed(7)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if architecture == "bert":
        config = BertConfig(vocab_size=len(WORDS) + 100, max_position_embeddings=64, **common)
        model = BertModel(config, add_pooling_layer=pooler)
    else:
        config = RobertaConfig(vocab_size=len(WORDS) + 100, max_position_embeddings=66, pad_token_id=0, **common)
        model = RobertaModel(config, add_pooling_layer=pooler)
    if pooler:
        torch.nn.init.normal_(model.pooler.dense.weight, std=0.5)  # far from any fresh initialisation
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return str(folder)


def _reference_outputs(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' own pooler_output and last_hidden_state[:, 0], as the paper's tool computes them."""
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        outputs = model(**tokenizer(TEXTS, padding=True, return_tensors="pt"))
    return outputs.pooler_output, outputs.last_hidden_state[:, 0]


@pytest.mark.parametrize("architecture", ["bert", "roberta"])
def test_cls_uses_the_checkpoints_own_pooler(tmp_path, tiny_bert_dir, architecture):
    path = _write_checkpoint(tmp_path / f"sup-simcse-{architecture}-tiny", tiny_bert_dir, architecture)
    pooler_output, cls_token = _reference_outputs(path)
    model = load_simcse_model(path)  # no "unsup" in the name: cls, as the paper's tool picks
    assert [type(module).__name__ for module in model] == ["Transformer", "Pooling", "Dense"]
    embeddings = model.encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(embeddings, pooler_output, atol=1e-5, rtol=0)
    assert not torch.allclose(embeddings, cls_token, atol=1e-3)

    model.save(str(tmp_path / "saved"))
    modules = json.loads((tmp_path / "saved" / "modules.json").read_text())
    assert all(module["type"].startswith("sentence_transformers.") for module in modules)
    reloaded = SentenceTransformer(str(tmp_path / "saved"))
    torch.testing.assert_close(reloaded.encode(TEXTS, convert_to_tensor=True), pooler_output, atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture", ["bert", "roberta"])
def test_unsup_name_picks_cls_before_pooler(tmp_path, tiny_bert_dir, architecture):
    path = _write_checkpoint(tmp_path / f"unsup-simcse-{architecture}-tiny", tiny_bert_dir, architecture)
    _, cls_token = _reference_outputs(path)
    model = load_simcse_model(path)
    assert [type(module).__name__ for module in model] == ["Transformer", "Pooling"]
    torch.testing.assert_close(model.encode(TEXTS, convert_to_tensor=True), cls_token, atol=1e-5, rtol=0)
    model.save(str(tmp_path / "saved"))
    reloaded = SentenceTransformer(str(tmp_path / "saved"))
    torch.testing.assert_close(reloaded.encode(TEXTS, convert_to_tensor=True), cls_token, atol=1e-5, rtol=0)


def test_cls_without_pooler_weights_is_an_error(tmp_path, tiny_bert_dir):
    path = _write_checkpoint(tmp_path / "sup-simcse-no-pooler", tiny_bert_dir, pooler=False)
    with pytest.raises(ValueError, match="has no trained pooler weights .*pooler='cls_before_pooler'"):
        load_simcse_model(path, pooler="cls")
    _, cls_token = _reference_outputs(path)
    explicit = load_simcse_model(path, pooler="cls_before_pooler")
    torch.testing.assert_close(explicit.encode(TEXTS, convert_to_tensor=True), cls_token, atol=1e-5, rtol=0)


def test_unknown_pooler_is_an_error(tmp_path, tiny_bert_dir):
    path = _write_checkpoint(tmp_path / "sup", tiny_bert_dir)
    with pytest.raises(ValueError, match="avg_first_last and avg_top2 need a layer-averaging module"):
        load_simcse_model(path, pooler="avg_first_last")


@pytest.mark.parametrize(("pooler", "layers"), [("avg", (-1,)), ("avg_first_last", (1, -1)), ("avg_top2", (-2, -1))])
def test_reference_average_poolers(tmp_path, tiny_bert_dir, pooler, layers):
    path = _write_checkpoint(tmp_path / "sup", tiny_bert_dir)
    tokenizer, encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    # The reference evaluation: sum of the layers / 2 (or the last layer), masked mean over the tokens.
    expected = (sum(hidden[layer] for layer in layers) / len(layers) * mask).sum(1) / mask.sum(1)
    model = reference_pooler_model(path, pooler)
    torch.testing.assert_close(model.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5, rtol=0)
