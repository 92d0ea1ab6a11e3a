"""Evaluate a model on the paper's 7 STS tasks, the way SimCSE's evaluation.py does with SentEval ("test" mode),
and/or on your own scored pairs:

    python -m st_simcse.evaluate MODEL --senteval-dir DIR [--pooler cls|cls_before_pooler|avg|...] [--output x.json]
    python -m st_simcse.evaluate MODEL --test-file PAIRS [--senteval-dir DIR] [--output x.json]

MODEL is a saved SentenceTransformer folder (evaluated with its own modules), or a transformers checkpoint (hub
name or path) with a pooler, so the paper's baselines and released models are evaluated as in its tables:

  --pooler    the reference evaluation's poolers: cls (BERT's trained pooler over [CLS]), cls_before_pooler
              (the last layer's [CLS]), avg (mean of the last layer), avg_first_last (mean of the first and the
              last layer; the paper's Table 1 baselines), avg_top2 (mean of the last two layers). cls,
              cls_before_pooler and avg are built-in sentence-transformers modules (st_simcse.load_simcse_model
              saves them as a plain folder); avg_first_last and avg_top2 need a layer-averaging module and are
              for evaluation only.
  --pooling   instead, a sentence-transformers Pooling mode (cls = cls_before_pooler, mean = avg, max, ...).

Without either, a transformers checkpoint gets --pooling cls.

  --test-file  a scored-pairs file in the recipes' --dev-file/--test-file format (columns sentence1, sentence2,
               score; csv, tsv, jsonl, json, parquet or a save_to_disk folder), scored as an STS task: cosine
               Spearman x 100 over all its pairs, whole sentences. Alone, it is the only evaluation (the STS tasks
               are not needed, nor the hub); with --senteval-dir, both are reported.

Without --senteval-dir and --test-file the 7 tasks come from the hub's public copies. Bad input (a missing model or
folder, a pairs file that is not scored pairs, an output path that cannot be written, the hub out of reach) ends
with one ``error:`` line and exit code 2, before any model loads.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from st_simcse.console import run_cli
from st_simcse.evaluation import HUB_DATASETS, print_table, sts_evaluator
from st_simcse.models import POOLING_MODES, REFERENCE_POOLERS, build_model, reference_pooler_model
from st_simcse.pairs import load_scored_pairs, pairs_evaluator
from st_simcse.sources import SourceError, check_hub_name, check_model_source, check_writable_folder


def is_saved_sentence_transformer(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "modules.json"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="saved SentenceTransformer folder, or a transformers checkpoint / hub name")
    parser.add_argument("--senteval-dir", default=None, help="SentEval data/downstream folder (default: hub copies)")
    parser.add_argument(
        "--test-file",
        default=None,
        help="your scored pairs (sentence1, sentence2, score; csv/tsv/jsonl/json/parquet/folder): their Spearman",
    )
    poolers = parser.add_mutually_exclusive_group()
    poolers.add_argument("--pooler", choices=REFERENCE_POOLERS, default=None, help="reference evaluation pooler")
    poolers.add_argument("--pooling", choices=POOLING_MODES, default=None, help="sentence-transformers Pooling mode")
    parser.add_argument(
        "--split", choices=("test", "dev"), default="test", help="the STS tasks: the 7 test tasks, or STS-B/SICK-R dev"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="encoding batch size")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    parser.add_argument("--output", default=None, help="write the table and all metrics to this JSON file")
    args = parser.parse_args(argv)

    # Everything that can fail without the model, before it loads: the model's source, the data, the output path.
    check_model_source(args.model, "MODEL")
    chosen = args.pooler or args.pooling
    if chosen and is_saved_sentence_transformer(args.model):
        raise ValueError(
            f"{args.model} is a saved SentenceTransformer, which pools with its own modules; "
            f"--pooler/--pooling {chosen} applies only to plain transformers checkpoints. Drop the option, or pass "
            "the checkpoint of its encoder (the folder's Transformer module) to choose a pooling."
        )
    # The STS tasks run unless only a pairs file is asked for; only they may need the hub.
    run_sts = args.senteval_dir is not None or args.test_file is None
    if run_sts and args.senteval_dir is None:
        try:
            check_hub_name(HUB_DATASETS["STS-B"], "The STS sets")
        except SourceError:
            raise ValueError(
                "No --senteval-dir was given, and the hub's copies of the STS sets cannot be reached from this "
                "machine. Pass --senteval-dir DIR, SentEval's data/downstream folder."
            ) from None
    if args.output:
        if os.path.isdir(args.output):
            raise ValueError(f"--output {args.output} is a folder; pass the path of a JSON file to write.")
        check_writable_folder(os.path.dirname(os.path.abspath(args.output)), f"--output {args.output}: its folder")
    # Building the evaluators reads and checks every task file and the pairs file, so bad data fails before the
    # model is loaded.
    pairs = load_scored_pairs(args.test_file, "test", what="--test-file") if args.test_file else None
    evaluator = (
        sts_evaluator(args.senteval_dir, args.split, batch_size=args.batch_size, show_progress_bar=True)
        if run_sts
        else None
    )
    if args.pooler:
        model = reference_pooler_model(args.model, args.pooler, device=args.device)
    else:
        model = build_model(args.model, pooling=args.pooling or "cls", max_seq_length=None, device=args.device)
    pooling = "model's own" if is_saved_sentence_transformer(args.model) else (args.pooler or args.pooling or "cls")
    payload: dict = {"model": args.model, "pooling": pooling, "metrics": {}}
    if evaluator is not None:
        started = time.perf_counter()
        results = evaluator(model)
        seconds = time.perf_counter() - started
        table = evaluator.table(results)
        tasks = "the 7 STS test tasks" if args.split == "test" else "STS-B dev and SICK-R trial"
        print(f"\n{args.model} ({pooling} pooling) on {tasks}, Spearman x 100 of the cosine (SentEval protocol):")
        print_table(table)
        print(f"({seconds:.1f} s)")
        payload.update({"split": args.split, "table": table})
        payload["metrics"].update(results)
    if pairs is not None:
        started = time.perf_counter()
        results = pairs_evaluator(pairs, batch_size=args.batch_size)(model)
        seconds = time.perf_counter() - started
        spearman = round(100 * results[f"{pairs.name}_spearman_cosine"], 2)
        print(
            f"\n{args.model} ({pooling} pooling) on the {len(pairs)} pairs of --test-file {args.test_file}, "
            f"Spearman x 100 of the cosine: {spearman:.2f} ({seconds:.1f} s)"
        )
        payload["test_file"] = {"path": args.test_file, "pairs": len(pairs), "spearman": spearman}
        payload["metrics"].update(results)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return payload


if __name__ == "__main__":
    run_cli(main)
