"""st_simcse.SimCSE: the paper's `simcse` tool API (encode, similarity, build_index, search) on the testbed."""

from __future__ import annotations

import importlib.util
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import SHARED
from sentence_transformers import SentenceTransformer

from st_simcse import SimCSE, build_model, read_sentences

HAS_FAISS = importlib.util.find_spec("faiss") is not None
# Short enough that the tool's default max_length=128 truncates none of them.
SENTENCES = ["a man plays a guitar", "two dogs run in the park", "the sun is bright", "A woman is reading."]


@pytest.fixture(scope="module")
def tool(splade_tiny):
    # splade-tiny has no trained pooler, so the [CLS] of the last layer (the unsupervised models' pooler).
    return SimCSE(splade_tiny, device="cpu", pooler="cls_before_pooler")


@pytest.fixture(scope="module")
def minilm() -> str:
    """all-MiniLM-L6-v2, a sentence-transformers model folder: Transformer + mean Pooling + Normalize."""
    path = SHARED / "models" / "all-MiniLM-L6-v2"
    if not path.exists():
        pytest.skip(f"needs {path} (the shared offline testbed beside the checkout), which is absent here")
    return str(path)


@pytest.fixture
def recipe_folder(splade_tiny, tmp_path) -> str:
    """A folder as a recipe saves it: Transformer + Pooling("cls"), no Normalize, named without "unsup"."""
    torch.manual_seed(0)
    build_model(splade_tiny, pooling="cls", max_seq_length=32).save(str(tmp_path / "mymodel"))
    return str(tmp_path / "mymodel")


@pytest.fixture(scope="module")
def corpus(train_40k):
    sentences, _ = read_sentences(train_40k)
    return sentences[:300]


def test_default_pooler_refuses_a_checkpoint_without_pooler(splade_tiny):
    with pytest.raises(ValueError, match="no trained pooler weights"):
        SimCSE(splade_tiny, device="cpu")  # no "unsup" in the name: cls, which needs pooler weights


def test_encode_types_and_shapes(tool):
    vector = tool.encode("a man plays a guitar")
    assert isinstance(vector, torch.Tensor) and vector.shape == (128,)
    assert torch.linalg.vector_norm(vector).item() == pytest.approx(1.0, abs=1e-5)
    assert tool.encode("a man plays a guitar", keepdim=True).shape == (1, 128)
    matrix = tool.encode(["a man plays a guitar", "a dog runs"], return_numpy=True)
    assert isinstance(matrix, np.ndarray) and matrix.shape == (2, 128)
    raw = tool.encode(["a man plays a guitar"], normalize_to_unit=False)
    assert torch.linalg.vector_norm(raw[0]).item() > 1.5  # splade-tiny's [CLS] is far from unit length
    torch.testing.assert_close(raw[0] / raw[0].norm(), vector)


def test_similarity_types(tool):
    single = tool.similarity("a man plays a guitar", "a man plays the guitar")
    assert isinstance(single, float) and -1.0 <= single <= 1.0
    row = tool.similarity("a man plays a guitar", ["a dog runs", "a man plays the guitar"])
    assert isinstance(row, np.ndarray) and row.shape == (2,)
    matrix = tool.similarity(["a", "b", "c"], ["x", "y"])
    assert matrix.shape == (3, 2)
    keys = tool.encode(["a dog runs", "a man plays the guitar"], return_numpy=True)
    np.testing.assert_allclose(tool.similarity("a man plays a guitar", keys), row, atol=1e-6)
    assert single == pytest.approx(float(tool.encode("a man plays a guitar") @ tool.encode("a man plays the guitar")))


def test_search_results_exact(tool, corpus):
    tool.build_index(corpus, use_faiss=False)
    assert not tool.is_faiss_index
    queries = corpus[:3]
    results = tool.search(queries, threshold=0.0, top_k=4)
    assert len(results) == 3
    for query, hits in zip(queries, results):
        assert len(hits) == 4 and hits[0][0] == query and hits[0][1] == pytest.approx(1.0, abs=1e-5)
        assert [score for _, score in hits] == sorted((score for _, score in hits), reverse=True)
    single = tool.search(corpus[0], threshold=0.0, top_k=2)
    assert isinstance(single, list) and isinstance(single[0], tuple) and single[0][0] == corpus[0]
    strict = tool.search(corpus[0], threshold=0.999, top_k=5)
    assert all(score >= 0.999 for _, score in strict)
    # The scores are the cosine similarities.
    assert single[1][1] == pytest.approx(tool.similarity(corpus[0], single[1][0]), abs=1e-5)


@pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed (pip install 'st-simcse[faiss]'); exact half only")
def test_search_with_faiss_returns_the_exact_results(tool, corpus):
    queries = corpus[10:20]
    tool.build_index(corpus, use_faiss=False)
    exact = tool.search(queries, threshold=0.5, top_k=5)
    tool.build_index(corpus, use_faiss=True)
    assert tool.is_faiss_index
    with_faiss = tool.search(queries, threshold=0.5, top_k=5)
    assert [[s for s, _ in hits] for hits in with_faiss] == [[s for s, _ in hits] for hits in exact]
    for hits_faiss, hits_exact in zip(with_faiss, exact):
        np.testing.assert_allclose([s for _, s in hits_faiss], [s for _, s in hits_exact], atol=1e-5)


@pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed (pip install 'st-simcse[faiss]')")
def test_ivf_search_returns_cosine_scores_best_first(tool, train_40k, capfd):
    """At 5,000 sentences the IVF index really clusters (100 cells, 10 probed): its scores are the cosine, best
    first, the default threshold keeps the best matches, and FAISS has enough points per cell not to warn."""
    import faiss

    corpus = read_sentences(train_40k)[0][:5000]
    queries = corpus[100:120]
    tool.build_index(corpus, use_faiss=False)
    exact = tool.search(queries, top_k=5)
    capfd.readouterr()
    tool.build_index(corpus, use_faiss=True, faiss_fast=True)
    assert "please provide at least" not in capfd.readouterr().err
    index = tool.index["index"]
    assert isinstance(index, faiss.IndexIVFFlat) and index.nlist == 100 and index.nprobe == 10
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    fast = tool.search(queries, top_k=5)  # default threshold 0.6
    for query, hits in zip(queries, fast):
        scores = [score for _, score in hits]
        assert scores == sorted(scores, reverse=True) and all(score >= 0.6 for score in scores)
        assert hits[0][0] == query and hits[0][1] == pytest.approx(1.0, abs=1e-5)
        for sentence, score in hits:
            assert score == pytest.approx(tool.similarity(query, sentence), abs=1e-5)
    overlap = [len({s for s, _ in a} & {s for s, _ in b}) / len(b) for a, b in zip(fast, exact)]
    assert sum(overlap) / len(overlap) >= 0.8  # approximate search: most of the exact top 5
    assert all(tool.search(queries, top_k=2))  # never empty: the query itself scores 1.0


@pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed (pip install 'st-simcse[faiss]')")
def test_ivf_cells_fit_the_corpus(tool, corpus, capfd):
    import faiss

    capfd.readouterr()
    tool.build_index(corpus, use_faiss=True, faiss_fast=True)  # 300 sentences: 7 cells of at least 39
    assert tool.index["index"].nlist == 300 // 39 and "please provide" not in capfd.readouterr().err
    tool.build_index(corpus[:50], use_faiss=True, faiss_fast=True)  # too few for two cells: exact
    assert isinstance(tool.index["index"], faiss.IndexFlatIP)


def test_build_index_from_file(tool, tmp_path, corpus):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(corpus[:50]) + "\n", encoding="utf-8")
    tool.build_index(str(path), use_faiss=False)
    assert tool.index["sentences"] == corpus[:50]


def test_bad_input(splade_tiny, tmp_path):
    fresh = SimCSE(splade_tiny, device="cpu", pooler="cls_before_pooler")
    with pytest.raises(RuntimeError, match="call build_index"):
        fresh.search("a man plays a guitar")
    with pytest.raises(ValueError, match="sentence is empty"):
        fresh.encode([])
    with pytest.raises(ValueError, match="The corpus is empty"):
        fresh.build_index([])
    with pytest.raises(FileNotFoundError, match="Corpus file not found"):
        fresh.build_index(str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("name", [None, "unsup-minilm", "my-minilm"])
def test_sentence_transformer_model_encodes_as_saved(minilm, tmp_path, name):
    """Its own mean pooling and Normalize, whatever the folder is called: no [CLS], no untrained BERT pooler."""
    path = minilm
    if name is not None:
        # The same files under another folder name (links: the name is what the paper's pooler rule reads).
        shutil.copytree(minilm, tmp_path / name, copy_function=os.symlink)
        path = str(tmp_path / name)
    expected = SentenceTransformer(minilm, device="cpu").encode(SENTENCES)
    tool = SimCSE(path, device="cpu")
    assert tool.pooler is None
    assert [type(module).__name__ for module in tool.model] == ["Transformer", "Pooling", "Normalize"]
    np.testing.assert_allclose(tool.encode(SENTENCES, return_numpy=True), expected, atol=1e-5, rtol=0)
    assert tool.similarity(SENTENCES[0], SENTENCES[1]) == pytest.approx(float(expected[0] @ expected[1]), abs=1e-5)


def test_recipe_output_folder_encodes_as_saved(recipe_folder):
    reference = SentenceTransformer(recipe_folder, device="cpu")
    tool = SimCSE(recipe_folder, device="cpu")  # no "unsup" in the name: still no Dense from a pooler
    assert [type(module).__name__ for module in tool.model] == ["Transformer", "Pooling"]
    expected = reference.encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(tool.encode(SENTENCES, return_numpy=True), expected, atol=1e-5, rtol=0)
    raw = reference.encode(SENTENCES)
    np.testing.assert_allclose(tool.encode(SENTENCES, normalize_to_unit=False, return_numpy=True), raw, atol=1e-5)
    vector = tool.encode(SENTENCES[0])
    assert isinstance(vector, torch.Tensor) and vector.shape == (raw.shape[1],)


def test_sentence_transformer_model_truncates_to_max_length_for_the_call(recipe_folder):
    long = " ".join(["a man plays a guitar in the park"] * 8)  # about 50 tokens
    reference = SentenceTransformer(recipe_folder, device="cpu")
    reference.max_seq_length = 8
    expected = reference.encode([long], normalize_embeddings=True)
    tool = SimCSE(recipe_folder, device="cpu")
    saved_length = tool.model.max_seq_length
    np.testing.assert_allclose(tool.encode([long], max_length=8, return_numpy=True), expected, atol=1e-5, rtol=0)
    assert tool.model.max_seq_length == saved_length  # set for the call only
    assert not np.allclose(tool.encode([long], return_numpy=True), expected, atol=1e-3)  # 128 tokens: whole


def test_pooler_for_a_sentence_transformer_model_is_refused(recipe_folder):
    with pytest.raises(ValueError, match="sentence-transformers model .*which pools with its own modules; pooler"):
        SimCSE(recipe_folder, device="cpu", pooler="cls_before_pooler")


def test_build_index_skips_blank_lines(tool, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\na man plays a guitar\n\n   \na dog runs\r\n\n\t\nthe sun is bright\n\n", encoding="utf-8")
    tool.build_index(str(path), use_faiss=False)
    assert tool.index["sentences"] == ["a man plays a guitar", "a dog runs", "the sun is bright"]
    assert tool.index["index"].shape[0] == 3
    hits = tool.search(["a man plays a guitar", "", "a cat"], threshold=-1.0, top_k=10)  # every corpus sentence
    assert all(len(row) == 3 and "" not in [sentence for sentence, _ in row] for row in hits)
    tool.build_index(["", "a dog runs", "  ", "\t", "a cat sits"], use_faiss=False)
    assert tool.index["sentences"] == ["a dog runs", "a cat sits"]
    with pytest.raises(ValueError, match="The corpus has no sentences: its 3 line.s. or string.s. are all blank"):
        tool.build_index(["", " ", "\n"])
