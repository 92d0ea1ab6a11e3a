"""Hard negatives for the user's own (anchor, positive) pairs, mined with a model before training: the paper's
supervised gain over pairs comes from hard negatives (its Table 4), and most labelled data comes as pairs. The mining
is sentence-transformers' own ``mine_hard_negatives``; this module chooses its settings for SimCSE, bounds its
memory, and records what it did."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import time
from collections.abc import Iterator
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives as st_mine_hard_negatives

from st_simcse.data.labelled import PairDataset, TripletDataset

logger = logging.getLogger(__name__)

# NV-Retriever's "TopK-PercPos (95%)", sentence-transformers' recommendation: the most similar candidate whose
# similarity to the anchor stays 5 % of the positive's below the positive's; closer ones are likely false negatives.
RELATIVE_MARGIN = 0.05
# The closest candidates looked at per anchor. sentence-transformers derives 11 from one negative and a margin: on an
# anisotropic encoder (raw BERT: every cosine near 0.9) those are all within the margin, and most pairs get none.
RANGE_MAX = 100
# glibc's mallopt parameter; 32 MiB is where its own adaptive threshold ends up in a process that frees large blocks.
M_MMAP_THRESHOLD, ADAPTED_MMAP_THRESHOLD = -3, 32 << 20


@contextlib.contextmanager
def large_blocks_returned_to_the_system() -> Iterator[None]:
    """sentence-transformers' miner scores a block of anchors against every candidate, then keeps the block's few
    best. Under glibc's adaptive malloc each freed block stays in the heap, pinned by the small results allocated after
    it, and the next block goes elsewhere: the process grows by the whole anchors x candidates matrix (10.8 GB at 50k
    pairs, benchmarks/mining_memory.py). Served by mmap, each block goes back to the system when freed."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator has its own behaviour, left as it is
        yield
        return
    mallopt(M_MMAP_THRESHOLD, 1 << 20)
    try:
        yield
    finally:
        mallopt(M_MMAP_THRESHOLD, ADAPTED_MMAP_THRESHOLD)
        malloc_trim(0)


def mine_hard_negatives(
    pairs: PairDataset,
    model: SentenceTransformer,
    relative_margin: float | None = RELATIVE_MARGIN,
    absolute_margin: float | None = None,
    range_max: int = RANGE_MAX,
    batch_size: int = 64,
) -> TripletDataset:
    """One hard negative per (anchor, positive) pair: among the other pairs' positives, the one ``model`` finds most
    similar to the anchor, leaving out those too close to the positive to be true negatives. Pairs with no such
    candidate are dropped. The result's ``mining`` attribute records the settings, the counts and the seconds.

    Args:
        pairs: The (anchor, positive) pairs, e.g. ``PairDataset.from_corpus("pairs.jsonl")``.
        model: The model that judges similarity: for SimCSE, the start model (before training).
        relative_margin: A candidate is kept only if its similarity to the anchor is at most the positive's minus
            ``relative_margin`` times the positive's magnitude (0.05: at least 5 % below). None: no such bound.
        absolute_margin: The same bound as a difference of cosines (0 keeps candidates below the positive). None:
            no such bound.
        range_max: How many of the most similar candidates are looked at per anchor; the first that clears the
            margins is the negative.
        batch_size: Encoding batch size (the encoding shows a progress bar).

    Memory: the anchors' and the candidates' embeddings (2 x pairs x dimension x 4 bytes: 3.1 GB for 1M pairs at
    dimension 384), the similarities of ``dimension`` anchors at a time against every candidate (no more than the
    candidates' embeddings), the ``range_max`` best candidates of every anchor (12 bytes each: 1.2 GB for 1M pairs),
    and the texts, which sentence-transformers' miner holds as Python lists (docs/data.md has a measurement).
    """
    if relative_margin is None and absolute_margin is None:
        logger.warning("Mining without a margin: a paraphrase of the positive can become the negative.")
    dimension = model.get_embedding_dimension() or 768
    started = time.perf_counter()
    with large_blocks_returned_to_the_system():
        mined = st_mine_hard_negatives(
            pairs.to_hf_dataset(),
            model,
            anchor_column_name="anchor",
            positive_column_name="positive",
            relative_margin=relative_margin,
            absolute_margin=absolute_margin,
            range_max=range_max,
            num_negatives=1,
            sampling_strategy="top",
            output_format="triplet",
            batch_size=batch_size,
            # Similarities are scored this many anchors at a time against every candidate: with the embedding's
            # dimension, that block is no larger than the candidates' embeddings (16384 would be 65 GB at 1M pairs).
            faiss_batch_size=dimension,
            use_faiss=False,
            verbose=False,
        )
    seconds = time.perf_counter() - started
    triplets = TripletDataset(mined.select_columns(list(TripletDataset.column_names)))
    triplets.mining = {
        "pairs": len(pairs),
        "triplets": len(triplets),
        # Pairs for which no candidate cleared the margin, and repeats of a pair (the miner keeps each pair once).
        "pairs_dropped": len(pairs) - len(triplets),
        "relative_margin": relative_margin,
        "absolute_margin": absolute_margin,
        "range_max": range_max,
        "seconds": round(seconds, 1),
        "similarity_block": dimension,
    }
    return triplets


def describe_mining(mining: dict[str, Any]) -> str:
    """``N training triplets (hard negatives mined for N of M pairs in S s; K pairs without one dropped)``."""
    return (
        f"{mining['triplets']} training triplets (hard negatives mined for {mining['triplets']} of {mining['pairs']} "
        f"pairs in {mining['seconds']:.0f} s; {mining['pairs_dropped']} pairs without one dropped)"
    )
