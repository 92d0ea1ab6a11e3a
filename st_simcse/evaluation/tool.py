"""The paper's ``simcse`` tool (``from simcse import SimCSE``, version 0.4) on sentence-transformers: the same
class, signatures, defaults and return types, so a user of the old tool changes only the import. The model loads
through :func:`st_simcse.load_simcse_model`: a sentence-transformers model (a folder or hub name with
``modules.json``, e.g. a recipe's output folder) as it was saved, a plain transformers checkpoint with the paper's
pooler. Search uses FAISS where it is installed (``pip install "st-simcse[faiss]"``) and sentence-transformers'
exact ``semantic_search`` otherwise."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from numpy import ndarray
from sentence_transformers.util import semantic_search
from torch import Tensor

from st_simcse.models.released import load_simcse_model
from st_simcse.models.settings import default_pooler, is_sentence_transformer

logger = logging.getLogger(__name__)

# FAISS's k-means warns below 39 training points per centroid.
MIN_POINTS_PER_CELL = 39


def _as_list(sentences: str | list[str], what: str) -> tuple[list[str], bool]:
    single = isinstance(sentences, str)
    sentences = [sentences] if single else list(sentences)
    if not sentences:
        raise ValueError(f"{what} is empty: pass a sentence or a non-empty list of sentences.")
    if not all(isinstance(sentence, str) for sentence in sentences):
        raise ValueError(f"{what} must be a string or a list of strings.")
    return sentences, single


class SimCSE:
    """Embed sentences, compare them and search a corpus with a SimCSE model, as the paper's tool does.

    Args:
        model_name_or_path: A sentence-transformers model (a folder or hub name with ``modules.json``, such as a
            recipe's output folder or ``sentence-transformers/all-MiniLM-L6-v2``), which encodes exactly as
            ``SentenceTransformer(model_name_or_path)`` does, with its own pooling, Dense and Normalize modules;
            or a released SimCSE checkpoint (``princeton-nlp/sup-simcse-bert-base-uncased``) or any other plain
            transformers checkpoint or local path, with the paper's pooler.
        device: ``"cuda"``, ``"cpu"``, ...; default: CUDA when available.
        num_cells: Number of IVF cells of the FAISS index built with ``faiss_fast=True``.
        num_cells_in_search: Cells probed per query in that index.
        pooler: For a plain transformers checkpoint: ``"cls"`` (BERT's trained pooler over [CLS]),
            ``"cls_before_pooler"`` (the last layer's [CLS]) or ``"avg"``; default: ``cls_before_pooler`` for a
            name containing "unsup", else ``cls``, as the paper's tool picks. A sentence-transformers model pools
            with its own modules: a pooler for it raises a ``ValueError``, and :attr:`pooler` is None.

    Example:
        ::

            from st_simcse import SimCSE  # was: from simcse import SimCSE

            model = SimCSE("princeton-nlp/sup-simcse-bert-base-uncased")
            embeddings = model.encode("A woman is reading.")
            similarities = model.similarity(["A woman is reading."], ["A man is playing a guitar."])
            model.build_index(["A woman is reading.", "A man is playing a guitar."])
            results = model.search("He plays guitar.")
    """

    def __init__(
        self,
        model_name_or_path: str,
        device: str | None = None,
        num_cells: int = 100,
        num_cells_in_search: int = 10,
        pooler: str | None = None,
    ) -> None:
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # The paper's name-based pooler rule is for its plain checkpoints; a sentence-transformers model (whatever
        # its name) pools with its own modules, and load_simcse_model refuses a pooler for it.
        own_modules = pooler is None and is_sentence_transformer(model_name_or_path)
        self.pooler = None if own_modules else pooler or default_pooler(model_name_or_path)
        self.model = load_simcse_model(model_name_or_path, self.pooler, device=self.device)
        self.index: dict[str, Any] | None = None
        self.is_faiss_index = False
        self.num_cells = num_cells
        self.num_cells_in_search = num_cells_in_search

    def encode(
        self,
        sentence: str | list[str],
        device: str | None = None,
        return_numpy: bool = False,
        normalize_to_unit: bool = True,
        keepdim: bool = False,
        batch_size: int = 64,
        max_length: int = 128,
    ) -> ndarray | Tensor:
        """Embeddings of ``sentence``: a ``(dim,)`` vector for one string (``(1, dim)`` with ``keepdim``), an
        ``(N, dim)`` matrix for a list; a CPU tensor, or a numpy array with ``return_numpy``. Sentences are
        truncated to ``max_length`` tokens (for this call only; a sentence-transformers model too) and, with
        ``normalize_to_unit``, scaled to unit length."""
        sentences, single = _as_list(sentence, "sentence")
        previous = self.model.max_seq_length
        self.model.max_seq_length = max_length
        try:
            embeddings = self.model.encode(
                sentences,
                batch_size=batch_size,
                device=device or self.device,
                convert_to_tensor=True,
                normalize_embeddings=normalize_to_unit,
            ).cpu()
        finally:
            self.model.max_seq_length = previous
        if single and not keepdim:
            embeddings = embeddings[0]
        return embeddings.numpy() if return_numpy else embeddings

    def similarity(
        self, queries: str | list[str], keys: str | list[str] | ndarray, device: str | None = None
    ) -> float | ndarray:
        """Cosine similarities: a float for one query and one key, a ``(M,)`` array for one query and M keys, an
        ``(N, M)`` array otherwise. ``keys`` may also be precomputed embeddings (a numpy array)."""
        query_vectors = self.encode(queries, device=device, return_numpy=True)
        key_vectors = keys if isinstance(keys, ndarray) else self.encode(keys, device=device, return_numpy=True)
        single_query, single_key = query_vectors.ndim == 1, key_vectors.ndim == 1
        query_vectors, key_vectors = np.atleast_2d(query_vectors), np.atleast_2d(key_vectors)
        query_vectors = query_vectors / np.linalg.norm(query_vectors, axis=1, keepdims=True)
        key_vectors = key_vectors / np.linalg.norm(key_vectors, axis=1, keepdims=True)
        similarities = query_vectors @ key_vectors.T
        if single_query:
            similarities = similarities[0]
            if single_key:
                return float(similarities[0])
        return similarities

    def build_index(
        self,
        sentences_or_file_path: str | list[str],
        use_faiss: bool | None = None,
        faiss_fast: bool = False,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        """Embed a corpus (a list of sentences, or the path of a file with one sentence per line) for
        :meth:`search`. Blank lines of the file and blank or whitespace-only strings of the list are skipped: they
        are never indexed, so ``''`` is never a hit. ``use_faiss=None`` uses FAISS where it is installed;
        ``faiss_fast`` builds an approximate IVF index with up to ``num_cells`` cells (at most one per 39 sentences)
        instead of an exact one; its scores are cosine similarities like exact search's."""
        if isinstance(sentences_or_file_path, str):
            path = sentences_or_file_path
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"Corpus file not found: {path!r}. Pass a list of sentences, or a file with one sentence per line."
                )
            with open(path, encoding="utf-8") as handle:
                given = [line.rstrip("\r\n") for line in handle]
        else:
            given = list(sentences_or_file_path)
        # An empty line (a file's trailing or separating newline) is no sentence: indexed, '' would be a search hit.
        sentences = [sentence for sentence in given if not isinstance(sentence, str) or sentence.strip()]
        if given and not sentences:
            raise ValueError(
                f"The corpus has no sentences: its {len(given)} line(s) or string(s) are all blank. Pass a list of "
                "sentences, or a file with one sentence per line."
            )
        sentences, _ = _as_list(sentences, "The corpus")
        faiss = _import_faiss() if use_faiss is None or use_faiss else None
        if use_faiss and faiss is None:
            logger.warning('faiss is not installed (pip install "st-simcse[faiss]"): using exact search instead.')
        embeddings = self.encode(sentences, device=device, batch_size=batch_size, return_numpy=True)
        self.index = {"sentences": sentences}
        if faiss is None:
            self.index["index"] = embeddings
            self.is_faiss_index = False
            return
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.index["index"] = self._faiss_index(faiss, vectors, faiss_fast)
        self.is_faiss_index = True

    def _faiss_index(self, faiss: Any, vectors: ndarray, fast: bool) -> Any:
        """An exact inner-product index, or with ``fast`` an IVF index whose cells and search also use the inner
        product (on unit vectors: the cosine), so that search returns cosine scores, best first, as exact search
        does. (The paper's tool builds its IVF index with FAISS's default L2 metric, and so returns squared
        distances, smallest first, as if they were scores.) FAISS's k-means wants at least 39 points per cell: a
        corpus gets at most ``len // 39`` cells, and one too small for two cells an exact index."""
        dimension = vectors.shape[1]
        cells = min(self.num_cells, len(vectors) // MIN_POINTS_PER_CELL)
        if not fast or cells < 2:
            index = faiss.IndexFlatIP(dimension)
        else:
            quantizer = faiss.IndexFlatIP(dimension)
            index = faiss.IndexIVFFlat(quantizer, dimension, cells, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.nprobe = min(self.num_cells_in_search, cells)
        index.add(vectors)
        return index

    def search(
        self, queries: str | list[str], device: str | None = None, threshold: float = 0.6, top_k: int = 5
    ) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """The ``top_k`` most similar corpus sentences with cosine similarity >= ``threshold``, best first, as
        ``(sentence, score)`` pairs: a list for one query, a list of such lists for a list of queries."""
        if self.index is None:
            raise RuntimeError("No index: call build_index(sentences_or_file_path) before search().")
        query_list, single = _as_list(queries, "queries")
        query_vectors = self.encode(query_list, device=device, keepdim=True, return_numpy=True)
        sentences = self.index["sentences"]
        if self.is_faiss_index:
            scores, ids = self.index["index"].search(np.ascontiguousarray(query_vectors, dtype=np.float32), top_k)
            # FAISS pads rows with id -1 where fewer than top_k vectors were found.
            hits = [[(int(i), float(s)) for i, s in zip(row, values) if i >= 0] for row, values in zip(ids, scores)]
        else:
            corpus = torch.from_numpy(self.index["index"])
            found = semantic_search(torch.from_numpy(query_vectors), corpus, top_k=top_k)
            hits = [[(hit["corpus_id"], float(hit["score"])) for hit in row] for row in found]
        results = [[(sentences[i], score) for i, score in row if score >= threshold] for row in hits]
        return results[0] if single else results


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss
