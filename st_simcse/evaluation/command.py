"""The ``st-simcse-evaluate`` command (also ``python -m st_simcse.evaluate``): a model on the paper's 7 STS tasks, the
way SimCSE's evaluation.py does with SentEval ("test" mode), and/or on the user's own scored pairs. Everything that
needs no model is checked before the heavy libraries load, so a refusal takes well under 2 seconds."""

from __future__ import annotations

import argparse
import json
import os
import time

from st_simcse.console import run_cli
from st_simcse.data.formats import describe_sources
from st_simcse.evaluation.pairs import load_scored_pairs, pair_columns
from st_simcse.evaluation.sts import HUB_DATASETS, load_sts_tasks
from st_simcse.hub import SourceError, check_hub_name, check_model_source, check_writable_folder
from st_simcse.models.settings import (
    POOLING_MODES,
    REFERENCE_POOLERS,
    describe_start_model,
    is_sentence_transformer,
)

DESCRIPTION = f"""Evaluate a model on the paper's 7 STS tasks, the way SimCSE's evaluation.py does with SentEval
("test" mode), and/or on your own scored pairs:

    st-simcse-evaluate MODEL --senteval-dir DIR [--pooler cls|cls_before_pooler|avg|...] [--output x.json]
    st-simcse-evaluate MODEL --test-file PAIRS [--test-columns S1,S2,SCORE] [--senteval-dir DIR]

MODEL is a sentence-transformers model (a folder or hub name with modules.json: a recipe's output, a model from the
hub such as all-MiniLM-L6-v2), evaluated with its own modules (its pooling, Dense and Normalize), exactly as
SentenceTransformer(MODEL) encodes; or a transformers checkpoint (hub name or path) with a pooler, so the paper's
baselines and released models are evaluated as in its tables:

  --pooler    the reference evaluation's poolers: cls (BERT's trained pooler over [CLS]), cls_before_pooler
              (the last layer's [CLS]), avg (mean of the last layer), avg_first_last (mean of the first and the
              last layer; the paper's Table 1 baselines), avg_top2 (mean of the last two layers).
  --pooling   instead, a sentence-transformers Pooling mode (cls = cls_before_pooler, mean = avg, max, ...).

Without either, a transformers checkpoint gets --pooling cls; a sentence-transformers model needs neither (its own
mode is accepted, another is refused).

  --test-file  scored pairs in the recipes' --dev-file/--test-file format (columns sentence1, sentence2, score, or
               those --test-columns names; {describe_sources(tabular_only=True)}), scored as an STS task: cosine
               Spearman x 100 over all its pairs, whole sentences. Alone, it is the only evaluation (the STS tasks
               are not needed, nor the hub); with --senteval-dir, both are reported.

Without --senteval-dir and --test-file the 7 tasks come from the hub's public copies. Bad input (a missing model or
folder, a pairs file that is not scored pairs, an output path that cannot be written, the hub out of reach) ends
with one error: line and exit code 2, before any model loads.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a sentence-transformers model, or a transformers checkpoint (hub name or path)")
    parser.add_argument("--senteval-dir", default=None, help="SentEval data/downstream folder (default: hub copies)")
    parser.add_argument("--test-file", default=None, help="your scored pairs: their Spearman x 100")
    parser.add_argument(
        "--test-columns",
        default=None,
        help="the two sentence columns and the score column of --test-file, e.g. query,passage,label "
        "(default: sentence1,sentence2,score)",
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
    return parser.parse_args(argv)


def check_pooling(args: argparse.Namespace) -> str | None:
    """The pooling the model is evaluated with, named for the report: a sentence-transformers model's own (a
    --pooling equal to it is accepted, any other choice refused), else the chosen one (cls by default)."""
    if not is_sentence_transformer(args.model):
        return args.pooler or args.pooling or "cls"
    own = describe_start_model(args.model).pooling
    if args.pooler or (args.pooling and args.pooling != own):
        chosen = f"--pooler {args.pooler}" if args.pooler else f"--pooling {args.pooling}"
        raise ValueError(
            f"{args.model} is a saved SentenceTransformer, which pools with its own modules ({own}); {chosen} "
            "applies only to plain transformers checkpoints. Drop the option, or pass the checkpoint of its encoder "
            "(the folder's Transformer module) to choose a pooling."
        )
    return None


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    # Everything that can fail without the model, before it (and the libraries that run it) loads: the model's
    # source and pooling, the data, the output path.
    check_model_source(args.model, "MODEL")
    chosen_pooling = check_pooling(args)
    pooling = chosen_pooling or "model's own"
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}.")
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
    if args.test_columns and not args.test_file:
        raise ValueError("--test-columns names the columns of --test-file: pass --test-file too, or drop it.")
    columns = pair_columns(args.test_columns, "--test-columns")
    pairs = load_scored_pairs(args.test_file, "test", what="--test-file", columns=columns) if args.test_file else None
    if run_sts and args.senteval_dir is not None:
        load_sts_tasks(args.senteval_dir, args.split)  # every task file read and checked

    # The model, and the libraries that run it.
    from st_simcse.evaluation.evaluators import pairs_evaluator, print_table, sts_evaluator

    evaluator = (
        sts_evaluator(args.senteval_dir, args.split, batch_size=args.batch_size, show_progress_bar=True)
        if run_sts
        else None
    )
    model = load_model(args, chosen_pooling)
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


def load_model(args: argparse.Namespace, pooling: str | None):
    """A sentence-transformers model as it was saved (``SentenceTransformer(MODEL)``: its own modules); a
    transformers checkpoint with the chosen reference pooler or Pooling mode."""
    import torch

    from st_simcse.models.build import build_model
    from st_simcse.models.released import load_simcse_model, reference_pooler_model

    if args.device is not None:
        try:
            torch.device(args.device)
        except RuntimeError as error:
            raise ValueError(f"--device {args.device}: {error} (e.g. cpu, cuda, cuda:1, mps).") from None

    if pooling is None:
        return load_simcse_model(args.model, device=args.device)
    if args.pooler:
        return reference_pooler_model(args.model, args.pooler, device=args.device)
    return build_model(args.model, pooling=pooling, max_seq_length=None, device=args.device)


def console_main() -> None:
    """The ``st-simcse-evaluate`` console script. It returns nothing: the console-script wrapper passes the return
    value to sys.exit, and main returns the metrics."""
    run_cli(main)


if __name__ == "__main__":
    console_main()
