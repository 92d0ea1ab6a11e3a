"""Any start model: tiny random encoders of the common architectures (from configs, no download) train a few
SimCSELoss steps through the merged forward, save, and reload with plain SentenceTransformer(path) to encode
identically; decoder-only models (Qwen2, Llama) with mean or last-token pooling do the same."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import WORDS, sentences
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, BertTokenizerFast

from st_simcse import SimCSELoss, build_model
from st_simcse.losses import dropout_probabilities

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
DECODER = {**SMALL, "num_key_value_heads": 2, "max_position_embeddings": 64, "pad_token_id": 0}
# RoBERTa-style position ids start after the padding index, so they need two more positions.
CONFIGS = {
    "bert": ("BertConfig", {**SMALL, "max_position_embeddings": 64}),
    "roberta": ("RobertaConfig", {**SMALL, "max_position_embeddings": 66, "pad_token_id": 0}),
    "distilbert": (
        "DistilBertConfig",
        {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "max_position_embeddings": 64, "pad_token_id": 0},
    ),
    "xlm-roberta": ("XLMRobertaConfig", {**SMALL, "max_position_embeddings": 66, "pad_token_id": 0}),
    "mpnet": ("MPNetConfig", {**SMALL, "max_position_embeddings": 66, "pad_token_id": 0}),
    "deberta-v2": ("DebertaV2Config", {**SMALL, "max_position_embeddings": 64, "pad_token_id": 0}),
    "electra": ("ElectraConfig", {**SMALL, "embedding_size": 32, "max_position_embeddings": 64}),
    "modernbert": (
        "ModernBertConfig",
        {
            **SMALL,
            "max_position_embeddings": 64,
            "pad_token_id": 0,
            "cls_token_id": 2,
            "sep_token_id": 3,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "global_attn_every_n_layers": 1,
        },
    ),
    "qwen2-mean": ("Qwen2Config", DECODER),
    "llama-lasttoken": ("LlamaConfig", DECODER),
}


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]]
    path.write_text("\n".join(vocab + list("abcdefghijklmnopqrstuvwxyz.,")) + "\n")
    return path


@pytest.mark.parametrize("name", list(CONFIGS))
def test_architecture_trains_saves_and_reloads(tmp_path, vocab_file, name):
    config_class, options = CONFIGS[name]
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), model_max_length=64)
    config = getattr(transformers, config_class)(vocab_size=tokenizer.vocab_size, **options)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(tmp_path / "start")
    tokenizer.save_pretrained(tmp_path / "start")
    pooling = name.split("-")[1] if name.startswith(("qwen2", "llama")) else "cls"
    model = build_model(str(tmp_path / "start"), pooling=pooling, max_seq_length=16, dropout=0.1)
    assert dropout_probabilities(model) and all(p == 0.1 for p in dropout_probabilities(model))
    loss = SimCSELoss(model)
    optimizer = torch.optim.AdamW(list(model.parameters()), lr=1e-3)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.train()
    texts = sentences(32)
    losses = []
    for batch in (texts[:16], texts[16:]):
        value = loss([model.preprocess(batch)])  # one column: the merged forward embeds it twice
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(value.item())
    # Two dropout masks make two views: a collapsed loss would be log(1) = 0 for identical views only.
    assert all(0 < value < 10 for value in losses)
    assert any(not torch.equal(before[key], value) for key, value in model.state_dict().items())
    model.save(str(tmp_path / "saved"))
    reloaded = SentenceTransformer(str(tmp_path / "saved"))
    assert all(type(module).__module__.startswith("sentence_transformers.") for module in reloaded)
    probe = ["a man plays a guitar", "two dogs run on the beach in the sun"]
    torch.testing.assert_close(
        reloaded.encode(probe, convert_to_tensor=True), model.encode(probe, convert_to_tensor=True), atol=1e-5, rtol=0
    )


def test_sentence_transformer_start_model_is_kept_as_it_is(tmp_path):
    """A sentence-transformers model keeps its modules; a pooling that would not apply is refused; an MLP asked for
    is added for real, before the final Normalize, and saved as a built-in module."""
    from conftest import SHARED

    from st_simcse.models.build import model_pooling
    from st_simcse.models.settings import describe_start_model

    minilm = SHARED / "models" / "all-MiniLM-L6-v2"
    if not minilm.exists():
        pytest.skip(f"needs {minilm}")
    start = describe_start_model(str(minilm))
    assert (start.sentence_transformer, start.pooling, start.max_seq_length) == (True, "mean", 256)
    assert start.modules == ["Transformer", "Pooling", "Normalize"]
    model = build_model(str(minilm), max_seq_length=32)
    assert [type(m).__name__ for m in model] == start.modules and model_pooling(model) == "mean"
    assert build_model(str(minilm), pooling="mean") is not None  # its own mode: fine
    with pytest.raises(ValueError, match="pools with 'mean', so pooling='cls' would not apply"):
        build_model(str(minilm), pooling="cls")
    with_mlp = build_model(str(minilm), mlp_in_model=True)
    assert [type(m).__name__ for m in with_mlp] == ["Transformer", "Pooling", "Dense", "Normalize"]
    with_mlp.save(str(tmp_path / "saved"))
    reloaded = SentenceTransformer(str(tmp_path / "saved"))
    assert [type(m).__name__ for m in reloaded] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert not describe_start_model(str(SHARED / "models" / "splade-tiny")).sentence_transformer


def test_start_model_with_a_pooling_the_recipes_do_not_offer(tiny_bert_dir, tmp_path):
    """A sentence-transformers model pooling with a mode outside --pooling's choices still trains as it is."""
    import sys

    from conftest import REPO
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    sys.path.insert(0, str(REPO / "recipes"))
    import unsup_wiki

    transformer = Transformer(tiny_bert_dir)
    pooling = Pooling(transformer.get_embedding_dimension(), "mean_sqrt_len_tokens")
    SentenceTransformer(modules=[transformer, pooling]).save(str(tmp_path / "st"))
    args = unsup_wiki.parse_args(["--quick", "--model", str(tmp_path / "st")])
    assert args.pooling == "mean_sqrt_len_tokens"
    model = build_model(str(tmp_path / "st"), pooling=args.pooling)
    assert model[1].pooling_mode == "mean_sqrt_len_tokens"
