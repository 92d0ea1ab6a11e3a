"""The offline testbed beside the checkout (see ../shared/README.md), defined once for the recipes and benchmarks.
Paths are relative to this file, so the recipes find it from any working directory."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODEL = str(SHARED / "models" / "splade-tiny")
SENTEVAL = str(SHARED / "data" / "senteval")
UNSUP_TRAIN_FILE = str(SHARED / "data" / "unsup" / "train_40k.txt")
NLI_TRAIN_FILE = str(SHARED / "data" / "nli" / "snli_triplets.csv")
