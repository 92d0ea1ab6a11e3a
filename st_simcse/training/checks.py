"""The checks of a recipe's run that need no model: every value, the paths (start model, training data, dev and test
pairs, SentEval folder, output folder), the trackers and the hub push asked for, and, for a resume, the run it
continues. They run before any heavy library loads, so a refusal takes well under 2 seconds and writes nothing.
A recipe checks its own options itself, then calls :func:`checked_training_run`."""

from __future__ import annotations

import argparse
import math
import os

from st_simcse.data.readers import check_data_source
from st_simcse.evaluation.pairs import pair_columns
from st_simcse.hub import check_model_source
from st_simcse.models.settings import describe_start_model, model_is_describable
from st_simcse.training.reporting import check_reporting
from st_simcse.training.run import StartedRunError, TrainingRun


def check_arguments(args: argparse.Namespace) -> None:
    """Values that would only fail after the model is loaded (or waste a hub timeout), checked up front."""

    def require(condition: bool, message: str) -> None:
        if not condition:
            raise ValueError(message)

    for name, value in vars(args).items():  # inf and nan pass every comparison below that they should fail
        require(
            not isinstance(value, float) or math.isfinite(value),
            f"--{name.replace('_', '-')} must be a finite number, got {value}.",
        )
    require(
        args.batch_size >= 2,
        f"--batch-size must be at least 2 (the rest of the batch are the negatives), got {args.batch_size}.",
    )
    require(
        math.isfinite(args.temperature) and args.temperature > 0,
        f"--temperature must be a positive number (the paper's is 0.05), got {args.temperature}.",
    )
    require(0.0 <= args.dropout < 1.0, f"--dropout must be in [0, 1) (the paper's is 0.1), got {args.dropout}.")
    require(args.lr > 0, f"--lr must be positive, got {args.lr}.")
    require(args.epochs >= 1, f"--epochs must be at least 1, got {args.epochs}.")
    require(args.max_steps is None or args.max_steps >= 1, f"--max-steps must be positive, got {args.max_steps}.")
    require(args.max_seq_length >= 2, f"--max-seq-length must be at least 2, got {args.max_seq_length}.")
    require(args.eval_steps >= 1, f"--eval-steps must be positive, got {args.eval_steps}.")
    require(args.eval_batch_size >= 1, f"--eval-batch-size must be positive, got {args.eval_batch_size}.")
    require(args.warmup_steps >= 0, f"--warmup-steps must be 0 or more, got {args.warmup_steps}.")
    require(args.weight_decay >= 0, f"--weight-decay must be 0 or more, got {args.weight_decay}.")
    require(args.max_grad_norm > 0, f"--max-grad-norm must be positive, got {args.max_grad_norm}.")
    if args.attention == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        require(
            is_flash_attn_2_available(),
            "--attention flash_attention_2 needs the flash-attn package and a CUDA GPU, and this machine lacks one "
            "of them; use --attention auto (SDPA).",
        )
    require(
        args.compile or args.compile_mode == "default",
        f"--compile-mode {args.compile_mode} compiles nothing without --compile; add --compile.",
    )
    check_model_source(args.model)
    check_data_source(args.train_file, "Training file")
    for option in ("dev", "test"):
        if getattr(args, f"{option}_columns", None) and not getattr(args, f"{option}_file"):
            raise ValueError(f"--{option}-columns names the columns of --{option}-file: pass --{option}-file too.")
        pair_columns(getattr(args, f"{option}_columns", None), f"--{option}-columns")
    check_reporting(args)


def checked_training_run(args: argparse.Namespace, loss_owns_state: bool = False) -> TrainingRun:
    """The run the parsed options describe, checked (values, paths, output folder, and for a resume the checkpoint
    it continues from) before any model is loaded. ``loss_owns_state``: the loss has parameters of its own (the
    MLP head), which the resumed checkpoint must carry."""
    check_arguments(args)
    run = TrainingRun(
        output_dir=args.output_dir,
        senteval_dir=args.senteval_dir,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        scheduler=args.scheduler,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        amp=args.amp,
        eval_steps=args.eval_steps,
        eval_batch_size=args.eval_batch_size,
        seed=args.seed,
        resume=args.resume,
        dev_file=args.dev_file,
        test_file=args.test_file,
        training_path=args.training_path,
        streaming=getattr(args, "streaming", False),
        sts_test=args.sts_test,
        keep_checkpoints=args.keep_checkpoints,
        dev_columns=pair_columns(args.dev_columns, "--dev-columns"),
        test_columns=pair_columns(args.test_columns, "--test-columns"),
        serving_max_seq_length=describe_start_model(args.model).max_seq_length
        if model_is_describable(args.model)
        else None,
        arguments=vars(args).copy(),
    )
    try:
        run.check_before_loading(loss_owns_state)
    except StartedRunError as error:
        raise ValueError(f"{error} To resume it, pass --resume.") from None
    return run


def check_corpus_size(size: int | None, args: argparse.Namespace) -> None:
    """A corpus smaller than one batch trains nothing: model.fit sizes its schedule as ``size // batch_size`` steps,
    0, so its learning rate is 0 throughout. Refused before the model loads."""
    batch = args.batch_size * int(os.environ.get("WORLD_SIZE", "1"))
    if size is not None and size < batch:
        raise ValueError(
            f"The corpus {args.train_file} has {size} training example(s), fewer than one batch (--batch-size "
            f"{args.batch_size}{' per device' if batch != args.batch_size else ''}), so there is nothing to train on. "
            f"Give a corpus of at least {batch} examples, or a --batch-size of at most {size}."
        )
