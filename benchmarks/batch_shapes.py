"""How static the training shapes already are: the padded width of every training batch of a text file, tokenized
as the recipe does (truncated at --max-seq-length, padded to the longest sentence of each shuffled batch).

    python benchmarks/batch_shapes.py [--train-file ../shared/data/unsup/train_40k.txt] [--model ...] [--batch-size 64]

Where nearly every batch is already --max-seq-length wide, padding to that length ("static shapes", the condition
for CUDA graphs) costs nothing and changes nothing; where many are narrower it would add compute.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path

from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import testbed  # noqa: E402

from st_simcse import read_sentences  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-file", default=testbed.UNSUP_TRAIN_FILE)
    parser.add_argument("--model", default=testbed.MODEL, help="the tokenizer's model (bert-base-uncased vocabulary)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    sentences, _ = read_sentences(args.train_file)
    random.Random(args.seed).shuffle(sentences)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    lengths = [len(ids) for ids in tokenizer(sentences, truncation=True, max_length=args.max_seq_length)["input_ids"]]
    widths = Counter(max(lengths[i : i + args.batch_size]) for i in range(0, len(lengths), args.batch_size))
    batches = sum(widths.values())
    full = widths[args.max_seq_length]
    print(f"{len(sentences)} sentences, mean length {sum(lengths) / len(lengths):.1f} tokens (truncated)")
    print(
        f"{batches} batches of {args.batch_size}: {full} ({100 * full / batches:.1f} %) are {args.max_seq_length} wide"
    )
    print("widths: " + ", ".join(f"{width}: {count}" for width, count in sorted(widths.items(), reverse=True)))


if __name__ == "__main__":
    main(sys.argv[1:])
