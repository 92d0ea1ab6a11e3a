"""Unsupervised SimCSE (recipes/unsup_wiki.py --quick) against sentence-transformers' MultipleNegativesRankingLoss
trained with identical settings (the recipe's own code path with --loss mnrl: [CLS] pooling, no MLP, scale 20 =
1 / 0.05), seed by seed, on the offline testbed.

    python benchmarks/unsup_vs_mnrl.py [--seeds 42 43 44] [--output-dir output/bench-unsup]

Both variants run the recipe's main() (model.fit, dev selection every 125 steps, 7-task STS evaluation) and are
interleaved seed by seed. Prints per-seed rows, mean +- std and wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import unsup_wiki  # noqa: E402


def run_variant(loss: str, seed: int, output_dir: Path) -> dict:
    started = time.perf_counter()
    argv = ["--quick", "--loss", loss, "--seed", str(seed), "--output-dir", str(output_dir / f"{loss}-{seed}")]
    metrics = unsup_wiki.main(argv)
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--output-dir", default="output/bench-unsup")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    variants = {"simcse": "SimCSELoss ([CLS] + train-only MLP)", "mnrl": "MNRL ([CLS], no MLP)"}
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    for seed in args.seeds:
        for name in variants:  # interleaved, so machine noise hits both alike
            rows[name].append({"seed": seed, **run_variant(name, seed, output_dir)})

    columns = ["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R", "Avg."]
    header = f"{'variant':<38} {'seed':>5} {'dev':>6} " + " ".join(f"{c:>6}" for c in columns) + f" {'wall s':>7}"
    lines = [header, "-" * len(header)]
    summary = {}
    for name, label in variants.items():
        for row in rows[name]:
            cells = " ".join(f"{row['test'][c]:>6.2f}" for c in columns)
            lines.append(
                f"{label:<38} {row['seed']:>5} {row['best_dev_stsb']:>6.2f} {cells} {row['wall_seconds']:>7.1f}"
            )
        means = {c: statistics.mean(r["test"][c] for r in rows[name]) for c in columns}
        stds = {c: statistics.pstdev(r["test"][c] for r in rows[name]) for c in columns}
        dev = statistics.mean(r["best_dev_stsb"] for r in rows[name])
        wall = statistics.mean(r["wall_seconds"] for r in rows[name])
        lines.append(
            f"{label + ' mean':<38} {'':>5} {dev:>6.2f} "
            + " ".join(f"{means[c]:>6.2f}" for c in columns)
            + f" {wall:>7.1f}"
        )
        lines.append(f"{label + ' std':<38} {'':>5} {'':>6} " + " ".join(f"{stds[c]:>6.2f}" for c in columns))
        summary[name] = {"mean": means, "std": stds, "best_dev_mean": dev, "wall_mean": wall, "runs": rows[name]}
    difference = summary["simcse"]["mean"]["Avg."] - summary["mnrl"]["mean"]["Avg."]
    lines.append(f"SimCSELoss - MNRL, mean 7-task Avg.: {difference:+.2f} points")
    print("\n".join(lines))
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (output_dir / "table.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
