"""Does mining hard negatives help supervised SimCSE on pairs? Every run goes through the supervised recipe
(``recipes/sup_nli.py``) on the testbed's SNLI set, the same steps per arm, several seeds:

    python benchmarks/supervised_mining.py [--models tiny minilm] [--arms pairs labelled mined] [--seeds 42 43 44]
        [--output-dir output/supervised_mining]

Arms:
- ``pairs``: the (premise, entailment) pairs alone (``--columns sent0,sent1``): the other positives of the batch are
  the negatives;
- ``labelled``: the labelled contradiction of each premise as its hard negative (the paper's triplets);
- ``mined``: the pairs, with one hard negative per pair mined from the start model before training
  (``--mine-hard-negatives``: sentence-transformers' ``mine_hard_negatives``, relative margin 0.05, the 100 closest
  candidates); pairs without a negative that clears the margin are dropped, and the table says how many are left.

Models:
- ``tiny``: splade-tiny with the paper's set-up on the testbed (``--quick``: [CLS] + the MLP kept, batch 128, lr 3e-4),
  147 steps (the paper's 3 epochs of the 6,339 triplets);
- ``minilm``: all-MiniLM-L6-v2 as it is (mean pooling + Normalize, no MLP: the recipe's setting for a
  sentence-transformers model; lr 5e-5), batch 64, 90 steps.

Each run is judged after its steps (its last checkpoint): the 7-task STS average (SentEval protocol) and STS-B dev;
the recipe's own model selection (the untrained model included) and the examples trained on are reported beside.
Writes ``table.txt``, ``summary.json`` and ``mining.png`` to ``--output-dir``; finished runs are reused (the
recipe's ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import sup_nli  # noqa: E402
import testbed  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from studies import reused, summarise, write_report  # noqa: E402

from st_simcse.evaluation.evaluators import sts_evaluator  # noqa: E402

MINILM = str(Path(testbed.SHARED) / "models" / "all-MiniLM-L6-v2")
# model -> (label, the recipe's options, steps)
MODELS = {
    "tiny": ("splade-tiny", ["--quick"], 147),
    "minilm": ("all-MiniLM-L6-v2", ["--quick", "--model", MINILM, "--batch-size", "64"], 90),
}
# arm -> (label, the recipe's options)
ARMS = {
    "pairs": ("pairs", ["--columns", "sent0,sent1"]),
    "labelled": ("labelled negatives", []),
    "mined": ("mined negatives", ["--columns", "sent0,sent1", "--mine-hard-negatives"]),
}
COLUMNS = ("7-task avg.", "STS-B dev")


def run(model: str, arm: str, seeds: list[int], output_dir: Path) -> dict:
    model_label, model_options, steps = MODELS[model]
    arm_label, arm_options = ARMS[arm]
    runs = {}
    for seed in seeds:
        out = output_dir / f"{model}-{arm}" / f"seed-{seed}"
        schedule = ["--max-steps", str(steps), "--eval-steps", str(steps), "--seed", str(seed)]
        # The last checkpoint is judged below: the recipe's own final table (of the kept model) would repeat it.
        extra = ["--no-sts-test", "--keep-checkpoints", "--train-file", testbed.NLI_TRAIN_FILE]
        options = [*model_options, *arm_options, *schedule, *extra, *reused(out), "--output-dir", str(out)]
        metrics = sup_nli.main(options)
        judged_file = out / "judged.json"
        if not judged_file.exists():
            trained = SentenceTransformer(str(out / "checkpoints" / f"checkpoint-{steps}"))
            seven = sts_evaluator(testbed.SENTEVAL, "test", batch_size=128)
            judged_file.write_text(json.dumps({"7-task": seven.table(seven(trained))}, indent=2))
        judged = json.loads(judged_file.read_text())
        last_dev = next(e for e in metrics["dev_history"] if e["steps"] == steps)
        mining = metrics["training_data"].get("mining")
        examples = f"{metrics['training_data']['examples']} examples"
        if mining:
            examples += f", mined for {mining['triplets']} of {mining['pairs']} pairs in {mining['seconds']:.0f} s"
        kept = "untrained" if metrics["best_step"] == 0 else f"step {metrics['best_step']}"
        runs[str(seed)] = {
            "7-task avg.": judged["7-task"]["Avg."],
            "STS-B dev": round(100 * last_dev[metrics_key(last_dev)], 2),
            "7-task": judged["7-task"],
            "mining": mining,
            "kept": f"{kept} ({examples})",
        }
    return {"label": f"{model_label}, {arm_label}", "runs": runs}


def metrics_key(entry: dict) -> str:
    """The dev score's key in a dev-history entry (the STS-B dev suite's main score)."""
    return next(key for key in entry if key.endswith("_avg"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--output-dir", default="output/supervised_mining")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for model in args.models:
        for arm in args.arms:
            results[f"{model}-{arm}"] = summarise(run(model, arm, args.seeds, output_dir), COLUMNS)
    steps = ", ".join(f"{MODELS[m][0]} {MODELS[m][2]}" for m in args.models)
    note = f"(steps per arm: {steps}; judged after the last step; Spearman x 100, SentEval protocol)"
    write_report(results, COLUMNS, note, output_dir, "mining.png")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
