"""The paper's ablations on the offline testbed, every row a run of the recipe itself (recipes/unsup_wiki.py
--quick ... --seeds ...), reported as best STS-B dev (Spearman x 100) beside the paper's BERT-base numbers:

- Table 1: how the positive is made: dropout alone (none), crop, word deletion, delete one word, with and without
  dropout;
- Table 3: the dropout rate p, and "fixed 0.1" (p = 0.1 with one mask shared by both copies).

    python benchmarks/ablations.py [--tables 1 3] [--seeds 42] [--output-dir output/ablations]

Identical settings run once (Table 1's "none" is Table 3's p = 0.1). Prints both tables with ranks and the Spearman
correlation between the paper's column and ours, then where the orderings agree and where they do not; writes
ablations.json, table.txt and ablations.png to --output-dir. Finished runs are reused (the recipe's --resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from methods import run_recipe_seeds
from scipy.stats import spearmanr

# (row, recipe options, the paper's STS-B dev for BERT-base)
TABLE_1 = [
    ("none (dropout only)", [], 82.5),
    ("crop 10%", ["--augmentation", "crop", "--augmentation-rate", "0.1"], 77.8),
    ("crop 20%", ["--augmentation", "crop", "--augmentation-rate", "0.2"], 71.4),
    ("crop 30%", ["--augmentation", "crop", "--augmentation-rate", "0.3"], 63.6),
    ("word deletion 10%", ["--augmentation", "word_deletion", "--augmentation-rate", "0.1"], 75.9),
    ("word deletion 20%", ["--augmentation", "word_deletion", "--augmentation-rate", "0.2"], 72.2),
    ("word deletion 30%", ["--augmentation", "word_deletion", "--augmentation-rate", "0.3"], 68.2),
    ("delete one word", ["--augmentation", "delete_one_word"], 75.9),
    ("delete one word, no dropout", ["--augmentation", "delete_one_word", "--dropout", "0"], 74.2),
]
TABLE_3 = [
    ("p = 0", ["--dropout", "0"], 71.1),
    ("p = 0.01", ["--dropout", "0.01"], 72.6),
    ("p = 0.05", ["--dropout", "0.05"], 81.1),
    ("p = 0.1", [], 82.5),
    ("p = 0.15", ["--dropout", "0.15"], 81.4),
    ("p = 0.2", ["--dropout", "0.2"], 80.5),
    ("p = 0.5", ["--dropout", "0.5"], 71.0),
    ("fixed 0.1", ["--shared-dropout-mask"], 43.6),
]
TABLES = {"1": ("Table 1: augmentations of the positive", TABLE_1), "3": ("Table 3: dropout rate", TABLE_3)}


def run_name(options: list[str]) -> str:
    """A folder name per distinct setting, so identical settings share one run."""
    return "-".join(option.lstrip("-") for option in options) or "default"


def ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=lambda i: -values[i])
    result = [0] * len(values)
    for rank, index in enumerate(order, start=1):
        result[index] = rank
    return result


def report(title: str, rows: list[tuple[str, list[str], float]], results: dict[str, dict]) -> tuple[list[str], dict]:
    """The table's lines (paper, ours, ranks), the correlation, and the pairs whose order differs."""
    names = [name for name, _, _ in rows]
    paper = [value for _, _, value in rows]
    ours = [results[run_name(options)]["mean"]["best_dev"] for _, options, _ in rows]
    spread = [results[run_name(options)]["std"]["best_dev"] for _, options, _ in rows]
    paper_ranks, our_ranks = ranks(paper), ranks(ours)
    lines = [title, f"{'setting':<30} {'paper':>6} {'rank':>5} {'ours':>7} {'std':>5} {'rank':>5}"]
    for i, name in enumerate(names):
        lines.append(
            f"{name:<30} {paper[i]:>6.1f} {paper_ranks[i]:>5} {ours[i]:>7.2f} {spread[i]:>5.2f} {our_ranks[i]:>5}"
        )
    rho = spearmanr(paper, ours).statistic
    flipped = [
        f"{names[i]} vs {names[j]}"
        for i in range(len(names))
        for j in range(i + 1, len(names))
        if (paper[i] - paper[j]) * (ours[i] - ours[j]) < 0
    ]
    # Pairs the paper ranks (its ties, e.g. two rows at 75.9, order nothing).
    pairs = sum(paper[i] != paper[j] for i in range(len(names)) for j in range(i + 1, len(names)))
    lines.append(f"Spearman rank correlation, paper vs testbed: {rho:.2f}")
    lines.append(f"Pairs ordered as in the paper: {pairs - len(flipped)} of {pairs}")
    if flipped:
        lines.append("Ordered differently: " + "; ".join(flipped))
    summary = {"rows": names, "paper": paper, "ours": ours, "std": spread, "spearman": rho, "flipped_pairs": flipped}
    return lines, summary


def plot(summaries: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(summaries), figsize=(7 * len(summaries), 5), squeeze=False)
    for axis, (title, summary) in zip(axes[0], summaries.items()):
        positions = range(len(summary["rows"]))
        axis.bar([p - 0.2 for p in positions], summary["paper"], width=0.4, label="paper (BERT-base, wiki 1M)")
        axis.bar(
            [p + 0.2 for p in positions],
            summary["ours"],
            width=0.4,
            yerr=summary["std"],
            label="testbed (splade-tiny, 40k sentences)",
        )
        axis.set_xticks(list(positions), summary["rows"], rotation=45, ha="right")
        axis.set_ylabel("best STS-B dev Spearman x 100")
        axis.set_title(f"{title} (Spearman rho {summary['spearman']:.2f})")
        axis.set_ylim(0, 100)
        axis.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--output-dir", default="output/ablations")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    results: dict[str, dict] = {}
    for table in args.tables:
        for _, options, _ in TABLES[table][1]:
            if run_name(options) not in results:
                results[run_name(options)] = run_recipe_seeds(options, args.seeds, output_dir / run_name(options))
    lines, summaries = [], {}
    for table in args.tables:
        title, rows = TABLES[table]
        table_lines, summaries[title] = report(f"{title}, best STS-B dev, seeds {args.seeds}", rows, results)
        lines += table_lines + [""]
    print("\n" + "\n".join(lines))
    (output_dir / "ablations.json").write_text(json.dumps(summaries, indent=2))
    (output_dir / "table.txt").write_text("\n".join(lines))
    plot(summaries, output_dir / "ablations.png")
    print(f"Wrote {output_dir / 'table.txt'}, {output_dir / 'ablations.json'} and {output_dir / 'ablations.png'}")
    return summaries


if __name__ == "__main__":
    main(sys.argv[1:])
