"""Checkpointing of the tensors a loss owns (SimCSE's training-only MLP head, the MLM head, ESimCSE's momentum
encoder and queue), so that resuming a ``SentenceTransformerTrainer`` or ``model.fit`` run restores them exactly.

The Trainer checkpoints only the model (``model.save_pretrained``), the optimizer, the scheduler and the RNG
states; a loss-owned module would restart from a fresh initialisation on resume while its optimizer state is
restored. :class:`LossStateCallback` closes that gap: it writes the loss-owned tensors into every checkpoint
folder as ``loss_state.safetensors`` and loads them back when a run resumes. Importing any st_simcse loss
(``st_simcse.losses``) adds it to transformers' default callbacks, so every Trainer (the one behind ``model.fit``
included) carries it without a user step; a resume from a checkpoint that lacks the file is refused with an error
instead of continuing with a random head.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
import weakref
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

logger = logging.getLogger(__name__)

LOSS_STATE_FILE = "loss_state.safetensors"

# Losses that own tensors of their own, in creation order (weak: a loss that is gone is forgotten).
_owners: list[weakref.ref[nn.Module]] = []
# Every st_simcse loss: a Trainer whose model none of them holds is left alone by the callback.
_losses: list[weakref.ref[nn.Module]] = []
# The first steps at which a learning-rate schedule is looked at for a learning rate above 0.
SCHEDULE_STEPS_CHECKED = 1000


def register_loss(loss: nn.Module) -> None:
    """Let :class:`LossStateCallback` know that ``loss`` trains its model (for the checks at the start of training)."""
    _losses[:] = [ref for ref in _losses if ref() is not None]
    _losses.append(weakref.ref(loss))


def _trains_with_simcse_loss(model: Any) -> bool:
    return any(ref() is not None and unwrap_model(ref().model) is unwrap_model(model) for ref in _losses)


def refuse_schedule_that_trains_nothing(args: Any, state: Any, lr_scheduler: Any, train_dataloader: Any) -> None:
    """Raise a ``ValueError`` before the first step where the learning rate is 0 at every step. model.fit sizes its
    schedule as ``len(dataset) // batch_size`` steps, which is 0 for a corpus smaller than one batch: the run would
    end as a success with the model unchanged."""
    lambdas = getattr(lr_scheduler, "lr_lambdas", None)
    if not lambdas or state.max_steps <= 0:
        return
    steps = range(min(state.max_steps, SCHEDULE_STEPS_CHECKED))
    if any(schedule(step) > 0 for schedule in lambdas for step in steps):
        return
    dataset = getattr(train_dataloader, "dataset", None)
    examples = len(dataset) if hasattr(dataset, "__len__") else "?"
    raise ValueError(
        f"The learning rate is 0 at every one of the {state.max_steps} training step(s), so training would leave "
        f"the model as it is. model.fit sizes its schedule as len(dataset) // batch_size steps: {examples} "
        f"example(s) in batches of {args.train_batch_size} make 0. Use a batch size of at most {examples}, or more "
        "data."
    )


def register_loss_state(loss: nn.Module) -> None:
    """Let :class:`LossStateCallback` checkpoint ``loss``'s own tensors (see :func:`loss_owned_state`)."""
    _owners[:] = [ref for ref in _owners if ref() is not None]
    if not any(ref() is loss for ref in _owners):  # a subclass may register what its parent already did
        _owners.append(weakref.ref(loss))


def loss_owned_state(loss: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of ``loss.state_dict()`` that belong to the loss itself, not to the model it wraps, nor to what
    the loss rebuilds instead of checkpointing (its ``not_checkpointed`` prefixes, e.g. a frozen guide model)."""
    skipped = ("model.", *getattr(loss, "not_checkpointed", ()))
    return {name: tensor for name, tensor in loss.state_dict().items() if not name.startswith(skipped)}


def trained_own_parameters(loss: nn.Module) -> list[nn.Parameter]:
    """The parameters the loss itself trains (its heads), not the model's and not frozen ones such as a momentum
    encoder's."""
    return [p for name, p in loss.named_parameters() if not name.startswith("model.") and p.requires_grad]


def unwrap_model(model: Any) -> Any:
    # DDP (``.module``) and torch.compile (``._orig_mod``) wrap the model the loss holds.
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


def _trained_owners(model: Any, optimizer: Any) -> list[nn.Module]:
    """The registered losses that this run trains: same model, and their own parameters are being optimised."""
    optimised = {id(p) for group in getattr(optimizer, "param_groups", []) for p in group["params"]}
    owners = []
    for ref in _owners:
        loss = ref()
        if loss is None or unwrap_model(loss.model) is not unwrap_model(model):
            continue
        # Only trained parameters tell: a momentum encoder (no gradient) is never in the optimizer.
        own_parameters = trained_own_parameters(loss)
        if not own_parameters or any(id(p) in optimised for p in own_parameters):
            owners.append(loss)
    return owners


def save_loss_state(losses: list[nn.Module], folder: str, token: str = "") -> None:
    """Write the own tensors of ``losses`` to ``folder/loss_state.safetensors`` (write-then-rename); ``token`` ties
    the file to the checkpoint whose trainer_state.json records it."""
    tensors = {
        # A copy each: safetensors refuses tensors that share memory (an LM head's tied decoder bias).
        f"{index}.{name}": tensor.detach().cpu().clone()
        for index, loss in enumerate(losses)
        for name, tensor in loss_owned_state(loss).items()
    }
    metadata = {"losses": json.dumps([type(loss).__name__ for loss in losses]), "token": token}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOSS_STATE_FILE)
    save_file(tensors, f"{path}.tmp", metadata=metadata)
    os.replace(f"{path}.tmp", path)


def saved_token(folder: str) -> str | None:
    """The token of ``folder``'s loss state, None where there is no loss state."""
    path = os.path.join(folder, LOSS_STATE_FILE)
    if not os.path.isfile(path):
        return None
    with safe_open(path, framework="pt") as handle:
        return (handle.metadata() or {}).get("token", "")


def load_loss_state(losses: list[nn.Module], folder: str) -> None:
    """Restore the own tensors of ``losses`` from ``folder/loss_state.safetensors``, exactly."""
    path = os.path.join(folder, LOSS_STATE_FILE)
    if not os.path.isfile(path):
        names = ", ".join(type(loss).__name__ for loss in losses)
        raise FileNotFoundError(
            f"Cannot resume from {folder}: it holds no {LOSS_STATE_FILE}, so the parameters that {names} owns "
            "(e.g. SimCSE's training-only MLP head) would restart from a random initialisation. The checkpoint was "
            "written without an st_simcse loss imported (or its run was killed while saving it). Resume from a "
            "checkpoint that has the file, or start the run afresh."
        )
    saved = load_file(path)
    for index, loss in enumerate(losses):
        own = loss_owned_state(loss)
        state = {name: saved.get(f"{index}.{name}") for name in own}
        missing = [name for name, tensor in state.items() if tensor is None]
        if missing:
            raise ValueError(
                f"{path} does not match the loss being trained: {type(loss).__name__} has no saved {missing}. "
                "Resume with the same loss configuration (e.g. the same mlp_head setting) as the checkpointed run."
            )
        for name, tensor in own.items():
            if name in getattr(loss, "compared_on_resume", ()):
                # A fingerprint of something rebuilt on resume (a guide model): it must be what the run had.
                if not torch.equal(tensor.detach().cpu(), state[name]):
                    raise ValueError(
                        f"Cannot resume from {folder}: {type(loss).__name__}'s {name.removesuffix('_fingerprint')} "
                        "is not the one the run was trained with (its weights differ). Build the loss from the same "
                        "start model as the run you resume."
                    )
                continue
            tensor.data.copy_(state[name])


class LossStateCallback(TrainerCallback, ExportableState):
    """Saves the tensors that st_simcse losses own into each Trainer checkpoint and restores them on resume; and, in a
    Trainer that trains an st_simcse loss, refuses a learning-rate schedule that is 0 at every step (model.fit's for a
    corpus smaller than one batch, see :func:`refuse_schedule_that_trains_nothing`).

    It finds the losses itself: every st_simcse loss with tensors of its own registers at construction, and the
    callback takes those that hold the Trainer's model and whose parameters the optimizer updates. Importing
    ``st_simcse`` adds this callback to transformers' default callbacks; passing it explicitly
    (``callbacks=[LossStateCallback()]``) is harmless.

    When a fresh run starts (step 0), the losses' random heads (the MLP head, a randomly initialised LM head) are drawn
    again from the training arguments' ``seed``, so two runs with one seed train identical weights, heads included,
    without seeding anything before the loss is built (``seed_heads=False`` keeps the heads as the loss built them).

    The loss state is written when a step's checkpoint is due (``on_step_end`` / ``on_epoch_end`` with
    ``should_save``), before the Trainer saves that checkpoint and deletes the older ones, so no moment leaves the
    only checkpoint without it. The Trainer tells a callback the step it resumes at, not the checkpoint folder it
    resumes from; so each checkpoint's ``trainer_state.json`` records (as this callback's ``ExportableState``) where
    its loss state was written and a token that the loss state file carries too. A resume finds the loss state there
    or in the new run's ``output_dir``, and takes it only where the token matches: never another run's.
    """

    def __init__(self, seed_heads: bool = True) -> None:
        self.output_dir: str | None = None
        self.token: str | None = None  # the token of the loss state written for the checkpoint being saved
        # Whether a fresh run draws the losses' random heads from the training arguments' seed (see on_train_begin).
        self.seed_heads = seed_heads
        # Set by a trainer that stages each checkpoint and writes the loss state into it itself
        # (st_simcse.training.checkpoints.AtomicCheckpointTrainer): then nothing is written from the step events.
        self.staged = False

    def state(self) -> dict:
        return {"args": {}, "attributes": {"output_dir": self.output_dir, "token": self.token}}

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.output_dir = os.path.abspath(args.output_dir)
        if state.global_step == 0:
            if _trains_with_simcse_loss(model):
                schedule, loader = kwargs.get("lr_scheduler"), kwargs.get("train_dataloader")
                refuse_schedule_that_trains_nothing(args, state, schedule, loader)
            if self.seed_heads:
                # A head drawn when the loss was built depends on everything the process drew before it; drawn
                # again here from the Trainer's seed, two runs with one seed train the same heads.
                for index, loss in enumerate(_trained_owners(model, optimizer)):
                    if hasattr(loss, "initialise_heads"):
                        loss.initialise_heads(torch.Generator().manual_seed(args.seed + index))
            return  # a fresh run: nothing to restore
        losses = _trained_owners(model, optimizer)
        if losses:
            folder = resumed_checkpoint(args, state)
            load_loss_state(losses, folder)
            logger.info(f"Restored the loss-owned parameters of {len(losses)} loss(es) from {folder}")

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if control.should_save and not self.staged:
            self._save(args, state, model, optimizer)

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if control.should_save and not self.staged:
            self._save(args, state, model, optimizer)

    def on_save(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.staged:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isfile(os.path.join(folder, LOSS_STATE_FILE)) or not self._save(args, state, model, optimizer):
            return
        # A save that no step or epoch end announced: its trainer_state.json was written with the previous token.
        path = os.path.join(folder, "trainer_state.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                saved = json.load(handle)
            saved.setdefault("stateful_callbacks", {})[type(self).__name__] = self.state()
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(saved, handle, indent=2, sort_keys=True)

    def save_into(self, args, state, model, optimizer, folder: str) -> None:
        """Write the loss state of the checkpoint being staged in ``folder`` (renamed to
        ``output_dir/checkpoint-STEP`` once complete, where a resume looks for it)."""
        self.output_dir = os.path.abspath(args.output_dir)
        self._save(args, state, model, optimizer, folder)

    def _save(self, args, state, model, optimizer, folder: str | None = None) -> bool:
        """Write the loss state of this step's checkpoint under a new token; False where there is none to write."""
        losses = _trained_owners(model, optimizer)
        if not losses or not state.is_world_process_zero:
            return False
        self.token = f"{uuid.uuid4().hex}-{state.global_step}"
        folder = folder or os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        save_loss_state(losses, folder, self.token)
        return True


def resumed_checkpoint(args: Any, state: Any) -> str:
    """The folder whose loss state belongs to the checkpoint a run resumes from: where that checkpoint's
    trainer_state.json says it was written, else ``output_dir/checkpoint-STEP``; a loss state whose token differs
    (another run's) is never taken. Raises ``FileNotFoundError`` naming the folders looked in."""
    name = f"checkpoint-{state.global_step}"
    recorded = (state.stateful_callbacks or {}).get(LossStateCallback.__name__) or {}
    recorded = (recorded[-1] if isinstance(recorded, list) else recorded).get("attributes", {})
    written_in, token = recorded.get("output_dir"), recorded.get("token")
    folders = (written_in, os.path.abspath(args.output_dir))
    candidates = list(dict.fromkeys(os.path.join(folder, name) for folder in folders if folder))
    for folder in candidates:
        found = saved_token(folder)
        if found is not None and (token is None or found == token):  # None: recorded before tokens existed
            return folder
    raise FileNotFoundError(
        f"Cannot resume at step {state.global_step}: the loss's own parameters (e.g. SimCSE's MLP head) of this "
        f"checkpoint are in none of {', '.join(candidates)} (no {LOSS_STATE_FILE}, or one of another run). The "
        "checkpoint was written without an st_simcse loss imported, or moved away from where it was written: put it "
        f"back, or copy it into output_dir ({args.output_dir}) as {name}."
    )


def install_default_callback() -> None:
    """Add :class:`LossStateCallback` to transformers' default callbacks (once), so that every Trainer, including
    the one ``model.fit`` builds, checkpoints loss-owned parameters without a user step. This is a process-wide
    change, made by importing ``st_simcse.losses`` (any st_simcse loss); it is the one way that needs no user step
    (model.fit takes no callbacks). In a Trainer that trains no st_simcse loss the callback does nothing: it saves no
    file, loads nothing and checks nothing (tested)."""
    from transformers import trainer as hf_trainer

    defaults = getattr(hf_trainer, "DEFAULT_CALLBACKS", None)
    if not isinstance(defaults, list):
        logger.warning(
            "st_simcse could not register LossStateCallback with this transformers version: pass "
            "callbacks=[st_simcse.LossStateCallback()] to SentenceTransformerTrainer so that resuming restores the "
            "loss's MLP head."
        )
        return
    if LossStateCallback not in defaults:
        defaults.append(LossStateCallback)
