"""What mining hard negatives costs in memory and time as the pairs grow: ``st_simcse.mine_hard_negatives`` (the
supervised recipe's ``--mine-hard-negatives``) on N synthetic pairs (consecutive lines of the testbed's corpora),
each N in a fresh process so its peak memory is its own:

    python benchmarks/mining_memory.py [--pairs 25000 50000 100000] [--model ../shared/models/splade-tiny]

Prints, per N: the peak resident memory of the process before and after mining, its growth per pair, the seconds;
then the growth per pair fitted over N (a straight line: what grows with the pairs), and that line at 1M pairs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import testbed  # noqa: E402

SOURCES = [Path(testbed.SHARED) / "data" / "unsup" / name for name in ("captions.txt", "train_40k.txt", "brown.txt")]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(pairs: int, model_path: str) -> dict:
    """Mine ``pairs`` pairs in this process; the peak memory before (model and texts loaded) and after."""
    from st_simcse import PairDataset, build_model, mine_hard_negatives

    lines = [line.strip() for source in SOURCES for line in source.open(encoding="utf-8") if line.strip()]
    rows = [(lines[2 * i], lines[2 * i + 1]) for i in range(pairs)]
    dataset = PairDataset(rows)
    model = build_model(model_path, max_seq_length=32)
    model.encode(lines[:256])  # everything the model allocates once, before the baseline
    before = peak_mb()
    started = time.perf_counter()
    triplets = mine_hard_negatives(dataset, model, batch_size=256)
    return {
        "pairs": pairs,
        "dimension": model.get_embedding_dimension(),
        "peak_before_mb": round(before),
        "peak_after_mb": round(peak_mb()),
        "seconds": round(time.perf_counter() - started, 1),
        "triplets": len(triplets),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    parser.add_argument("--model", default=testbed.MODEL)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.model)))
        return []
    results = []
    for pairs in args.pairs:
        command = [sys.executable, __file__, "--one", str(pairs), "--model", args.model]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        result["growth_mb"] = result["peak_after_mb"] - result["peak_before_mb"]
        results.append(result)
        print(
            f"{pairs:>9} pairs (dimension {result['dimension']}): peak {result['peak_before_mb']} -> "
            f"{result['peak_after_mb']} MB (+{result['growth_mb']} MB, {1e6 * result['growth_mb'] / pairs:.0f} B per "
            f"pair), {result['seconds']} s, {result['triplets']} triplets"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        slope = (last["growth_mb"] - first["growth_mb"]) / (last["pairs"] - first["pairs"])
        print(f"growth per pair (fitted): {1e6 * slope:.0f} B; at 1M pairs: about {slope * 1e6 / 1024:.1f} GB")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
