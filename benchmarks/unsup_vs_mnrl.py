"""Unsupervised SimCSE (recipes/unsup_wiki.py --quick) against sentence-transformers' MultipleNegativesRankingLoss
trained with identical settings (the recipe's own code path with --loss mnrl: [CLS] pooling, no MLP, scale 20 =
1 / 0.05), 3 seeds each, on the offline testbed:

    python benchmarks/unsup_vs_mnrl.py [--seeds 42 43 44] [--output-dir output/bench-unsup]

This is benchmarks/methods.py with --variants simcse mnrl: both variants run the recipe's main() with --seeds
(model.fit, dev selection every 125 steps, 7-task STS evaluation); it prints per-seed rows and mean +- std.
"""

from __future__ import annotations

import sys

from methods import main as compare_methods


def main(argv: list[str] | None = None) -> dict:
    # Options given here come after the defaults, so they win.
    return compare_methods(["--variants", "simcse", "mnrl", "--output-dir", "output/bench-unsup", *(argv or [])])


if __name__ == "__main__":
    main(sys.argv[1:])
