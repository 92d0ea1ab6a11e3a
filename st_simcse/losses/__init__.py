"""The SimCSE losses, one file each as in sentence-transformers' own ``losses`` package, with their heads, the
wrapper refusals and the checkpointing of the tensors a loss owns beside them."""

from __future__ import annotations

from st_simcse.losses.cached_simcse import CachedSimCSELoss
from st_simcse.losses.esimcse import ESimCSELoss
from st_simcse.losses.guided_simcse import GuidedSimCSELoss
from st_simcse.losses.heads import MLPHead
from st_simcse.losses.inputs import dropout_probabilities
from st_simcse.losses.simcse import SimCSELoss
from st_simcse.losses.state import LOSS_STATE_FILE, LossStateCallback, install_default_callback

# Every Trainer (model.fit's included) then checkpoints the parameters our losses own, e.g. the MLP head; see
# st_simcse.losses.state for what this adds to transformers' default callbacks and why.
install_default_callback()

__all__ = [
    "LOSS_STATE_FILE",
    "CachedSimCSELoss",
    "ESimCSELoss",
    "GuidedSimCSELoss",
    "LossStateCallback",
    "MLPHead",
    "SimCSELoss",
    "dropout_probabilities",
]
