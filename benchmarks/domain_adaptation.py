"""Does SimCSE on a domain's own text help? Every run goes through the recipe (``recipes/unsup_wiki.py``), the same
number of steps per arm, several seeds; the model after those steps (its last checkpoint) is judged on the STS
subsets one by one (SentEval protocol), split into the caption domain (STS12 MSRvid, STS14 images, STS15 images:
captions of videos and pictures) and the other 21 STS12-16 subsets:

    python benchmarks/domain_adaptation.py [--seeds 42 43 44] [--steps 625] [--arms ...] [--output-dir ...]

Arms:
- ``tiny-40k`` / ``tiny-captions``: splade-tiny (the testbed, the paper's set-up) on ``train_40k.txt`` or on the
  in-domain ``captions.txt``;
- ``minilm``: sentence-transformers' all-MiniLM-L6-v2 as it is (no training);
- ``minilm-captions``: all-MiniLM-L6-v2 continued with SimCSE on ``captions.txt`` (the paper's lr 3e-5, its own
  mean pooling + Normalize, the training-only MLP head); ``minilm-captions-lr1e-5`` and ``minilm-captions-no-mlp``
  change one setting each.

Prints each arm's per-seed and mean +- std numbers (caption subsets, the other 21, the 7-task average) and what
the recipe's own model selection on STS-B dev kept; writes ``table.txt``, ``summary.json`` and ``domain.png`` to
``--output-dir``. Finished runs are reused (the recipe's ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import testbed  # noqa: E402
import unsup_wiki  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from studies import reused, summarise, write_report  # noqa: E402

from st_simcse.evaluation.evaluators import STSSuiteEvaluator, STSTaskEvaluator  # noqa: E402
from st_simcse.evaluation.sts import load_sts_subsets, load_sts_tasks  # noqa: E402

CAPTIONS = str(Path(testbed.SHARED) / "data" / "unsup" / "captions.txt")
MINILM = str(Path(testbed.SHARED) / "models" / "all-MiniLM-L6-v2")
CAPTION_SUBSETS = ("STS12 MSRvid", "STS14 images", "STS15 images")
MINILM_CAPTIONS = ["--model", MINILM, "--train-file", CAPTIONS, "--senteval-dir", testbed.SENTEVAL]
# Plain SimCSE on the sentence-transformers model (the recipe's default for one is GuidedSimCSELoss without the MLP).
MINILM_SIMCSE = [*MINILM_CAPTIONS, "--distillation-weight", "0"]


def guided_arm(
    weight: str, temperature: str | None = None, threshold: str | None = None, lr: str | None = None
) -> tuple[str, tuple[str, list[str]]]:
    """A GuidedSimCSELoss arm on all-MiniLM-L6-v2 + captions, without the MLP: its name, label and options."""
    name, label, options = f"minilm-captions-distill-{weight}", f"... --no-mlp, distillation {weight}", []
    if temperature:
        name, label = f"{name}-t{temperature}", f"{label} at temperature {temperature}"
        options += ["--distillation-temperature", temperature]
    if lr:
        name, label = f"{name}-lr{lr}", f"{label}, --lr {lr}"
        options += ["--lr", lr]
    if threshold:
        name, label = f"{name}-fn-{threshold}", f"{label}, false negatives > {threshold} out"
        options += ["--false-negative-threshold", threshold]
    return name, (label, [*MINILM_CAPTIONS, "--no-mlp", "--distillation-weight", weight, *options])


# arm -> (label, the recipe's options; None: the start model, not trained)
ARMS = {
    "tiny-40k": ("splade-tiny + SimCSE on train_40k", ["--quick"]),
    "tiny-captions": ("splade-tiny + SimCSE on captions", ["--quick", "--train-file", CAPTIONS]),
    "tiny-captions-guided": (
        "splade-tiny + GuidedSimCSELoss (distillation 10) on captions",
        ["--quick", "--train-file", CAPTIONS, "--distillation-weight", "10"],
    ),
    "minilm": ("all-MiniLM-L6-v2, as it is", None),
    "minilm-captions": ("all-MiniLM-L6-v2 + SimCSE on captions", [*MINILM_SIMCSE, "--mlp"]),
    "minilm-captions-lr1e-5": ("... with --lr 1e-5", [*MINILM_SIMCSE, "--mlp", "--lr", "1e-5"]),
    "minilm-captions-no-mlp": ("... with --no-mlp", [*MINILM_SIMCSE, "--no-mlp"]),
    "minilm-captions-no-mlp-lr1e-5": ("... with --no-mlp --lr 1e-5", [*MINILM_SIMCSE, "--no-mlp", "--lr", "1e-5"]),
    "minilm-captions-no-mlp-lr3e-6": ("... with --no-mlp --lr 3e-6", [*MINILM_SIMCSE, "--no-mlp", "--lr", "3e-6"]),
    "minilm-captions-no-mlp-50-steps": (
        "... with --no-mlp, 50 steps",
        [*MINILM_SIMCSE, "--no-mlp", "--max-steps", "50"],
    ),
    # GuidedSimCSELoss: a frozen copy of the start model guides (distillation, false-negative removal).
    **dict(guided_arm(weight) for weight in ("1", "10")),
    "minilm-captions-fn-0.7": (
        "... --no-mlp, false negatives > 0.7 out",
        [*MINILM_SIMCSE, "--no-mlp", "--false-negative-threshold", "0.7"],
    ),
    **dict(
        guided_arm(*setting)
        for setting in [
            ("1", "0.1"),
            ("3", "0.1"),
            ("10", "0.1"),
            ("1", None, None, "1e-5"),
            ("3", None, "0.7"),
            ("10", None, "0.7"),
            ("30", None, "0.7"),
            ("1", None, "0.6"),
            ("1", None, "0.7"),
        ]
    ),
}
COLUMNS = ("captions", "other 21", "7-task avg.")


def judge(model: SentenceTransformer) -> dict[str, float]:
    """Spearman x 100 on each STS12-16 subset, the caption-domain and other means, and the 7-task average: one suite
    of the library's evaluators over one shared encoding of every sentence (each is encoded once)."""
    subsets = load_sts_subsets(testbed.SENTEVAL)
    seven = load_sts_tasks(testbed.SENTEVAL, "test")
    suite = STSSuiteEvaluator([STSTaskEvaluator(data, batch_size=128) for data in [*subsets, *seven]], name="all")
    results = suite(model)

    def score(name: str) -> float:
        return 100 * results[f"{name}_spearman_cosine"]

    per_subset = {data.name: round(score(data.name), 2) for data in subsets}
    return {
        "captions": round(float(np.mean([score(name) for name in CAPTION_SUBSETS])), 2),
        "other 21": round(float(np.mean([score(d.name) for d in subsets if d.name not in CAPTION_SUBSETS])), 2),
        "7-task avg.": round(float(np.mean([score(data.name) for data in seven])), 2),
        "subsets": per_subset,
        "7-task": {data.name: round(score(data.name), 2) for data in seven},
    }


def run_arm(arm: str, seeds: list[int], steps: int, output_dir: Path) -> dict:
    label, options = ARMS[arm]
    if options is None:
        return {"label": label, "runs": {"-": {**judge(SentenceTransformer(MINILM)), "kept": "-"}}}
    runs = {}
    if "--max-steps" in options:  # an arm that trains for fewer steps than the study's
        steps = int(options[options.index("--max-steps") + 1])
    for seed in seeds:
        out = output_dir / arm / f"seed-{seed}"
        schedule = ["--max-steps", str(steps), "--eval-steps", str(steps), "--seed", str(seed)]
        # The judge below evaluates the 7 tasks too: the recipe's own final table would repeat it.
        extra = ["--no-sts-test", "--keep-checkpoints"]
        metrics = unsup_wiki.main([*options, *schedule, *extra, *reused(out), "--output-dir", str(out)])
        judged_file = out / "domain.json"
        if not judged_file.exists():  # the model after `steps` steps, whatever the recipe's selection kept
            trained = SentenceTransformer(str(out / "checkpoints" / f"checkpoint-{steps}"))
            judged_file.write_text(json.dumps(judge(trained), indent=2))
        kept = "untrained" if metrics["best_step"] == 0 else f"step {metrics['best_step']}"
        runs[str(seed)] = {**json.loads(judged_file.read_text()), "kept": kept}
    return {"label": label, "runs": runs}


def false_negatives(batches: int = 20, batch_size: int = 64, seed: int = 0) -> dict:
    """How many of SimCSE's in-batch negatives the start model (all-MiniLM-L6-v2) itself calls near-paraphrases:
    over random batches of the caption corpus and of the general ``train_40k.txt``, the share of anchor-negative pairs
    above each cosine, and each anchor's closest negative on average."""
    import random

    model = SentenceTransformer(MINILM)
    model.max_seq_length = 32  # as in training
    report = {}
    for name, path in (("captions", CAPTIONS), ("train_40k", testbed.UNSUP_TRAIN_FILE)):
        lines = [line.strip() for line in open(path, encoding="utf-8") if line.strip()]
        sample = random.Random(seed).sample(lines, batches * batch_size)
        embeddings = model.encode(sample, convert_to_tensor=True, normalize_embeddings=True)
        shares, closest = {0.5: [], 0.7: [], 0.9: []}, []
        for start in range(0, len(sample), batch_size):
            block = embeddings[start : start + batch_size]
            cosines = block @ block.T
            negatives = cosines[~np.eye(len(block), dtype=bool)].reshape(len(block), -1)
            for threshold in shares:
                shares[threshold].append(float((negatives > threshold).float().mean()))
            closest.append(float(negatives.max(dim=1).values.mean()))
        report[name] = {
            **{f"share above {t}": round(100 * float(np.mean(v)), 2) for t, v in shares.items()},
            "closest negative (mean cosine)": round(float(np.mean(closest)), 3),
        }
    return report


def drift(arms: list[str], output_dir: Path, seed: int = 42) -> dict:
    """How far each arm's model (seed ``seed``, after the study's steps) moved from the start model on the STS pairs
    themselves: the Spearman agreement of its cosines with the start model's, and its mean cosine, on the caption
    subsets (the domain that is lost)."""
    from scipy.stats import spearmanr

    subsets = load_sts_subsets(testbed.SENTEVAL)
    groups = {"captions": [d for d in subsets if d.name in CAPTION_SUBSETS]}

    def cosines(model: SentenceTransformer) -> dict[str, np.ndarray]:
        result = {}
        for group, data in groups.items():
            first = model.encode([s for d in data for s in d.sentences1], normalize_embeddings=True, batch_size=128)
            second = model.encode([s for d in data for s in d.sentences2], normalize_embeddings=True, batch_size=128)
            result[group] = (first * second).sum(axis=1)
        return result

    start = cosines(SentenceTransformer(MINILM))
    report = {}
    for arm in arms:
        folder = output_dir / arm / f"seed-{seed}" / "checkpoints"
        checkpoint = max(folder.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]), default=None)
        if checkpoint is None:
            continue
        trained = cosines(SentenceTransformer(str(checkpoint)))
        report[arm] = {
            group: {
                "agreement with the start model": round(float(spearmanr(start[group], trained[group]).statistic), 4),
                "mean cosine": round(float(trained[group].mean()), 3),
                "start model's mean cosine": round(float(start[group].mean()), 3),
            }
            for group in groups
        }
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--steps", type=int, default=625, help="training steps of every trained arm")
    parser.add_argument("--output-dir", default="output/domain_adaptation")
    parser.add_argument(
        "--false-negatives",
        action="store_true",
        help="only measure how many in-batch negatives the start model calls near-paraphrases, per corpus",
    )
    parser.add_argument(
        "--drift",
        action="store_true",
        help="only measure how far the --arms' models (seed 42) moved from the start model on the caption STS pairs",
    )
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.drift:
        report = drift([arm for arm in args.arms if ARMS[arm][1] and "--model" in ARMS[arm][1]], output_dir)
        print(json.dumps(report, indent=2))
        (output_dir / "drift.json").write_text(json.dumps(report, indent=2))
        return report
    if args.false_negatives:
        report = false_negatives()
        print(json.dumps(report, indent=2))
        (output_dir / "false_negatives.json").write_text(json.dumps(report, indent=2))
        return report
    results = {arm: summarise(run_arm(arm, args.seeds, args.steps, output_dir), COLUMNS) for arm in args.arms}
    note = f"(trained arms: {args.steps} steps each; Spearman x 100, SentEval protocol, whole sentences)"
    write_report(results, COLUMNS, note, output_dir, "domain.png")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
