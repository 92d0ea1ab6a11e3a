"""The evaluation command on a real sentence-transformers model, against that model's own encoding scored by hand:

    python benchmarks/real_model_evaluation.py [--model ../shared/models/all-MiniLM-L6-v2] [--senteval-dir DIR]

Runs ``st-simcse-evaluate MODEL --senteval-dir DIR`` (the paper's 7 STS test tasks, the SentEval protocol), then
encodes every task's sentences with ``SentenceTransformer(MODEL).encode`` (its own pooling and Normalize, as saved)
and computes each task's cosine Spearman with scipy over all its pairs (SentEval's "all" setting), and prints both
tables and their largest difference. For all-MiniLM-L6-v2 about 80 s and 110 s on 2 CPU cores (143 s each on one):
too long for the test suite, which checks the same on scored pairs (tests/test_real_models.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import testbed  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

from st_simcse.evaluation.command import main as evaluate  # noqa: E402
from st_simcse.evaluation.sts import load_sts_tasks  # noqa: E402


def by_hand(model_path: str, senteval_dir: str) -> dict[str, float]:
    """Each task's Spearman x 100 of the cosine of the model's own embeddings, and their plain mean."""
    model = SentenceTransformer(model_path, device="cpu")
    table = {}
    for task in load_sts_tasks(senteval_dir, "test"):
        first = model.encode(task.sentences1, convert_to_tensor=True, normalize_embeddings=True)
        second = model.encode(task.sentences2, convert_to_tensor=True, normalize_embeddings=True)
        table[task.name] = round(100 * spearmanr((first * second).sum(1).tolist(), task.scores).statistic, 2)
    table["Avg."] = round(sum(table.values()) / len(table), 2)
    return table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(Path(testbed.SHARED) / "models" / "all-MiniLM-L6-v2"))
    parser.add_argument("--senteval-dir", default=testbed.SENTEVAL)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    command = evaluate([args.model, "--senteval-dir", args.senteval_dir])["table"]
    command_seconds = time.perf_counter() - started
    started = time.perf_counter()
    hand = by_hand(args.model, args.senteval_dir)
    hand_seconds = time.perf_counter() - started
    print(f"\n{'':<24}" + " ".join(f"{name:>7}" for name in command))
    print(f"{'st-simcse-evaluate':<24}" + " ".join(f"{value:>7.2f}" for value in command.values()))
    print(f"{'by hand (scipy)':<24}" + " ".join(f"{hand[name]:>7.2f}" for name in command))
    largest = max(abs(command[name] - hand[name]) for name in command)
    print(f"largest difference: {largest:.2f} ({command_seconds:.0f} s and {hand_seconds:.0f} s)")
    return {"command": command, "by_hand": hand, "largest_difference": largest}


if __name__ == "__main__":
    main(sys.argv[1:])
