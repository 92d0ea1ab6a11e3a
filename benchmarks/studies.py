"""What the studies (domain_adaptation.py, supervised_mining.py, duplicates.py, methods.py) share: reusing finished
runs, the mean and sample standard deviation over seeds, the text table with one row per seed and one per arm, the bar
plot of the means, and the files they go to."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def reused(output_dir) -> list[str]:
    """``--resume`` where ``output_dir`` holds a started or finished run (it is reused), else nothing (a new run)."""
    return ["--resume"] if (Path(output_dir) / "arguments.json").is_file() else []


def summarise(result: dict, columns: tuple[str, ...]) -> dict:
    """Add ``mean`` (and, over several seeds, ``std``) of every column to an arm's ``result`` (its ``runs``)."""
    runs = list(result["runs"].values())
    for statistic, function in (("mean", statistics.mean), ("std", statistics.stdev)):
        if len(runs) > 1 or statistic == "mean":
            result[statistic] = {column: round(function([run[column] for run in runs]), 2) for column in columns}
    return result


def table(results: dict[str, dict], columns: tuple[str, ...], note: str, last: str = "kept") -> list[str]:
    """One line per seed (with its ``last`` field at the end), one ``mean ± std`` line per arm, and ``note``."""
    lines = [f"{'arm':<50} {'seed':>5} " + " ".join(f"{c:>12}" for c in columns) + f"  {last}"]
    lines.append("-" * len(lines[0]))
    for result in results.values():
        for seed, run in result["runs"].items():
            cells = " ".join(f"{run[c]:>12.2f}" for c in columns)
            lines.append(f"{result['label']:<50} {seed:>5} {cells}  {run.get(last, '')}")
        if "std" in result:
            cells = " ".join(f"{result['mean'][c]:>6.2f} ± {result['std'][c]:<4.2f}" for c in columns)
            lines.append(f"{result['label'] + ', mean ± std':<56} {cells}")
    lines.append(note)
    return lines


def plot(results: dict[str, dict], columns: tuple[str, ...], path: Path, bottom: float = 40) -> None:
    """Bars of each arm's mean per column, the seeds' standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(9, 1.2 * len(results)), 4.5))
    width = 0.8 / len(columns)
    for index, column in enumerate(columns):
        means = [result["mean"][column] for result in results.values()]
        errors = [result.get("std", {}).get(column, 0.0) for result in results.values()]
        positions = [arm + (index - (len(columns) - 1) / 2) * width for arm in range(len(results))]
        axes.bar(positions, means, width, yerr=errors, label=column, capsize=3)
    axes.set_xticks(range(len(results)), [result["label"] for result in results.values()], rotation=25, ha="right")
    axes.set_ylabel("Spearman x 100")
    axes.set_ylim(bottom, 100)
    axes.legend()
    axes.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(
    results: dict[str, dict], columns: tuple[str, ...], note: str, output_dir: Path, plot_name: str
) -> None:
    """Print the table; write it as ``table.txt``, the results as ``summary.json`` and the plot as ``plot_name``."""
    lines = table(results, columns, note, last="kept")
    print("\n" + "\n".join(lines))
    (output_dir / "table.txt").write_text("\n".join(lines) + "\n")
    (output_dir / "summary.json").write_text(json.dumps(results, indent=2))
    plot(results, columns, output_dir / plot_name)
    print(f"\nWrote {output_dir / 'table.txt'}, summary.json and {plot_name}")
