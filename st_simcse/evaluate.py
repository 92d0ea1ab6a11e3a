"""Evaluate a model on the paper's 7 STS tasks, the way SimCSE's evaluation.py does with SentEval ("test" mode):

    python -m st_simcse.evaluate MODEL --senteval-dir DIR [--pooling cls|mean|...] [--output results.json]

MODEL is a saved SentenceTransformer folder, or any transformers checkpoint (hub name or path) with the chosen
pooling, so plain BERT baselines are evaluated as in the paper's Table 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from st_simcse.evaluation import sts_evaluator
from st_simcse.models import POOLING_MODES, build_model
from st_simcse.training import print_table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="saved SentenceTransformer folder, or a transformers checkpoint / hub name")
    parser.add_argument("--senteval-dir", default=None, help="SentEval data/downstream folder (default: hub copies)")
    parser.add_argument(
        "--pooling", choices=POOLING_MODES, default="cls", help="pooling for a plain transformers checkpoint"
    )
    parser.add_argument(
        "--split", choices=("test", "dev"), default="test", help="the 7 test tasks, or STS-B/SICK-R dev"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="encoding batch size")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    parser.add_argument("--output", default=None, help="write the table and all metrics to this JSON file")
    args = parser.parse_args(argv)

    # Building the evaluator reads and checks every task file, so bad data fails before the model is loaded.
    evaluator = sts_evaluator(args.senteval_dir, args.split, batch_size=args.batch_size, show_progress_bar=True)
    model = build_model(args.model, pooling=args.pooling, max_seq_length=None, device=args.device)
    started = time.perf_counter()
    results = evaluator(model)
    seconds = time.perf_counter() - started
    table = evaluator.table(results)
    print_table(table)
    print(f"({seconds:.1f} s)")
    payload = {"model": args.model, "pooling": args.pooling, "split": args.split, "table": table, "metrics": results}
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
