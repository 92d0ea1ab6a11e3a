"""What each objective of the domain study costs per training step, against plain SimCSELoss, side by side in one run:

    python benchmarks/objective_cost.py [--models minilm tiny] [--batch-size 64] [--repeats 20]

One step = collate a batch of captions as (s, s) pairs (each sentence tokenized once), the loss's forward, backward,
AdamW step: what the recipe's Trainer does per step. Every variant starts from the same weights and sees the same
batch; warm-up steps are excluded; the variants are interleaved repeat by repeat and the median is reported, with its
ratio to plain SimCSELoss without the MLP (the study's baseline for a sentence-transformers model). Variants:

- ``simcse``: SimCSELoss, no MLP;
- ``simcse-mlp``: SimCSELoss with the paper's training-only MLP;
- ``distill``: GuidedSimCSELoss, distillation 10 toward the frozen start model (one extra forward of the guide,
  without dropout and without gradients);
- ``fn``: GuidedSimCSELoss, false negatives above cosine 0.7 removed, no distillation;
- ``distill-fn``: both.

Time nothing else on the machine while it runs (the variants share the cores).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import column_features, time_steps  # noqa: E402

from st_simcse import GuidedSimCSELoss, SimCSEDataCollator, SimCSELoss, build_model, read_sentences  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODELS = {"minilm": SHARED / "models" / "all-MiniLM-L6-v2", "tiny": SHARED / "models" / "splade-tiny"}
VARIANTS = {
    "simcse": lambda model: SimCSELoss(model, mlp_head=False),
    "simcse-mlp": lambda model: SimCSELoss(model, mlp_head=True),
    "distill": lambda model: GuidedSimCSELoss(model, distillation_weight=10.0),
    "fn": lambda model: GuidedSimCSELoss(model, distillation_weight=0.0, false_negative_threshold=0.7),
    "distill-fn": lambda model: GuidedSimCSELoss(model, distillation_weight=10.0, false_negative_threshold=0.7),
}


class ObjectiveStep:
    """One variant's training step over its own copy of the model (so no variant trains another's weights)."""

    def __init__(self, variant: str, model) -> None:
        self.model = copy.deepcopy(model).train()
        self.loss = VARIANTS[variant](self.model)
        self.collator = SimCSEDataCollator(preprocess_fn=self.model.preprocess)
        self.optimizer = torch.optim.AdamW([p for p in self.loss.parameters() if p.requires_grad], lr=1e-5)

    def __call__(self, batch: list[str]) -> None:
        self.loss(column_features(self.collator, batch, "cpu"), None).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=64, help="the domain study's batch")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per variant (interleaved)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    args = parser.parse_args()
    for name in args.models:
        if not MODELS[name].is_dir():
            parser.error(f"needs {MODELS[name]} (the shared offline testbed beside the checkout)")
    sentences, _ = read_sentences(SHARED / "data" / "unsup" / "captions.txt")
    batch = sentences[: args.batch_size]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"median of {args.repeats} interleaved steps")  # fmt: skip
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(str(MODELS[name]), max_seq_length=32)
        steps = {variant: ObjectiveStep(variant, model) for variant in VARIANTS}
        seconds = time_steps(steps, batch, args.repeats, args.warmup, "cpu")
        print(f"\n{name}: seconds per step (ratio to simcse)")
        for variant, value in seconds.items():
            print(f"  {variant:<11} {value:7.3f} s  x{value / seconds['simcse']:.2f}")


if __name__ == "__main__":
    main()
