"""What a corpus that repeats itself does to unsupervised SimCSE, and what the recipe's ``--duplicates drop`` (its
default) does about it. Scraped text repeats boilerplate; in a batch, copies of one sentence are each other's
in-batch negatives (false negatives by construction). Every run goes through the unsupervised recipe
(``recipes/unsup_wiki.py --quick``: splade-tiny, batch 64, one epoch, the dev set every 5 steps):

    python benchmarks/duplicates.py [--seeds 42 43 44] [--output-dir output/duplicates]

Arms, on a corpus of 2,000 lines where one boilerplate line is half of them (1,000 distinct sentences of
``train_40k.txt`` and 1,000 copies of "Click here to subscribe ...", shuffled):
- ``clean``: the 1,000 distinct sentences alone (the reference);
- ``keep``: the whole corpus, every copy trained (``--duplicates keep``: what the recipe did before);
- ``drop``: the whole corpus, each sentence once (``--duplicates drop``).

Reported per arm (mean ± std over the seeds): STS-B dev Spearman x 100 at step 15 (the same steps for every arm) and
after the epoch (16 steps, or 32 where every copy trains), and the alignment and uniformity of the dev set at the end
(the untrained model: STS-B dev 64.17). Writes ``table.txt``,
``summary.json`` and ``duplicates.png`` to ``--output-dir``; finished runs are reused (the recipe's ``--resume``).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import testbed  # noqa: E402
import unsup_wiki  # noqa: E402
from studies import reused, summarise, write_report  # noqa: E402

BOILERPLATE = "Click here to subscribe to our newsletter and never miss a story from our newsroom ."
ARMS = {
    "clean": ("the distinct half alone", "keep"),
    "keep": ("--duplicates keep", "keep"),
    "drop": ("--duplicates drop", "drop"),
}
COLUMNS = ("STS-B dev, step 15", "STS-B dev, last step")


def corpora(output_dir: Path) -> dict[str, Path]:
    distinct = Path(testbed.UNSUP_TRAIN_FILE).read_text(encoding="utf-8").splitlines()[:1000]
    lines = [*distinct, *[BOILERPLATE] * 1000]
    random.Random(0).shuffle(lines)
    clean, scraped = output_dir / "clean.txt", output_dir / "scraped.txt"
    clean.write_text("\n".join(distinct) + "\n", encoding="utf-8")
    scraped.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"clean": clean, "keep": scraped, "drop": scraped}


def run(arm: str, corpus: Path, seeds: list[int], output_dir: Path) -> dict:
    label, duplicates = ARMS[arm]
    runs = {}
    for seed in seeds:
        out = output_dir / arm / f"seed-{seed}"
        options = ["--quick", "--train-file", str(corpus), "--duplicates", duplicates, "--eval-steps", "5"]
        options += ["--no-sts-test", "--seed", str(seed), *reused(out), "--output-dir", str(out)]
        metrics = unsup_wiki.main(options)
        history = {entry["steps"]: entry for entry in metrics["dev_history"]}
        last = metrics["dev_history"][-1]
        _, alignment, uniformity = metrics["dev_alignment_uniformity"][-1]
        runs[str(seed)] = {
            "STS-B dev, step 15": round(100 * history[15]["sts_dev_avg"], 2),
            "STS-B dev, last step": round(100 * last["sts_dev_avg"], 2),
            "kept": f"{last['steps']} steps; at the end alignment {alignment:.3f}, uniformity {uniformity:.3f}",
        }
    return {"label": f"{arm}: {label}", "runs": runs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--output-dir", default="output/duplicates")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = corpora(output_dir)
    results = {arm: summarise(run(arm, files[arm], args.seeds, output_dir), COLUMNS) for arm in ARMS}
    note = "(splade-tiny, --quick, one epoch; Spearman x 100; the untrained model's STS-B dev is 64.17)"
    write_report(results, COLUMNS, note, output_dir, "duplicates.png")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
