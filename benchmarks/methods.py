"""SimCSE, SimCSE + MLM, ESimCSE and MultipleNegativesRankingLoss on the offline testbed, several seeds each, every
run through the recipe itself (recipes/unsup_wiki.py --quick ... --seeds ...):

    python benchmarks/methods.py [--variants simcse mlm esimcse mnrl] [--seeds 42 43 44] [--output-dir output/methods]

The speed levers must leave quality unchanged; each lever flipped against the recipe's default (SimCSE) is a variant:

    python benchmarks/methods.py --variants simcse eager compile pairs bf16

Prints each variant's 7-task table per seed, mean +- std (sample std over seeds), and each variant's difference to
SimCSE on the 7-task average, called a gain only where it exceeds the seeds' spread (the larger of the two stds).
Writes summary.json and table.txt to --output-dir. Finished seeds are reused (the recipe's --resume), so an
interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import unsup_wiki  # noqa: E402
from studies import reused  # noqa: E402

# Each variant is the recipe with these options (the rest are the testbed's --quick settings).
VARIANTS = {
    "simcse": ("SimCSE ([CLS] + train-only MLP)", []),
    "mlm": ("SimCSE + MLM 0.1", ["--mlm-weight", "0.1"]),
    "esimcse": ("ESimCSE (word repetition + momentum queue)", ["--loss", "esimcse"]),
    "mnrl": ("MNRL ([CLS], no MLP)", ["--loss", "mnrl"]),
    # Speed levers, each against SimCSE's defaults (SDPA attention, no compile, each sentence tokenized once, fp32
    # on a CPU): quality must stay within the seeds' spread.
    "eager": ("SimCSE, eager attention", ["--attention", "eager"]),
    "compile": ("SimCSE, torch.compile", ["--compile"]),
    "pairs": ("SimCSE, (s, s) pairs tokenized twice", ["--no-tokenize-once"]),
    "bf16": ("SimCSE, bf16 autocast", ["--amp", "bf16"]),
}
COLUMNS = ["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R", "Avg."]


def run_recipe_seeds(options: list[str], seeds: list[int], output_dir: Path) -> dict:
    """The testbed recipe with ``options`` over all seeds, into ``output_dir`` (its seeds.json summary); finished
    seeds are reused. Quality only: the runs are not timed."""
    seed_options = ["--seeds", *map(str, seeds)]
    return unsup_wiki.main(["--quick", *options, *seed_options, *reused(output_dir), "--output-dir", str(output_dir)])


def table(summaries: dict[str, dict]) -> list[str]:
    header = f"{'variant':<44} {'seed':>5} {'dev':>6} " + " ".join(f"{c:>6}" for c in COLUMNS)
    lines = [header, "-" * len(header)]
    for name, summary in summaries.items():
        label = VARIANTS[name][0]
        for seed, run in summary["runs"].items():
            cells = " ".join(f"{run['test'][c]:>6.2f}" for c in COLUMNS)
            lines.append(f"{label:<44} {seed:>5} {run['best_dev']:>6.2f} {cells}")
        for statistic in ("mean", "std"):
            values = summary[statistic]
            cells = " ".join(f"{values[c]:>6.2f}" for c in COLUMNS)
            lines.append(f"{label + ' ' + statistic:<44} {'':>5} {values['best_dev']:>6.2f} {cells}")
    if "simcse" in summaries:
        base = summaries["simcse"]
        for name, summary in summaries.items():
            if name == "simcse":
                continue
            difference = summary["mean"]["Avg."] - base["mean"]["Avg."]
            spread = max(summary["std"]["Avg."], base["std"]["Avg."])
            verdict = "beyond" if abs(difference) > spread else "within"
            lines.append(
                f"{VARIANTS[name][0]} - SimCSE, mean 7-task Avg.: {difference:+.2f} points ({verdict} the seeds' "
                f"spread of {spread:.2f})"
            )
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--output-dir", default="output/methods")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    summaries = {name: run_recipe_seeds(VARIANTS[name][1], args.seeds, output_dir / name) for name in args.variants}
    lines = table(summaries)
    print("\n" + "\n".join(lines))
    (output_dir / "summary.json").write_text(json.dumps(summaries, indent=2))
    (output_dir / "table.txt").write_text("\n".join(lines) + "\n")
    return summaries


if __name__ == "__main__":
    main(sys.argv[1:])
