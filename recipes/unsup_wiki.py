"""Unsupervised SimCSE (Gao, Yao & Chen 2021, section 3), trained with sentence-transformers' ``model.fit``.

Each Wikipedia sentence is paired with itself; the two copies pass the encoder with different dropout masks,
which makes the positive pair, and the other sentences of the batch are the negatives. The defaults are the
paper's BERT-base run; ``--quick`` runs the same pipeline offline on the small testbed in a few minutes on CPU:

    python recipes/unsup_wiki.py --quick
"""

from __future__ import annotations

import argparse
import sys

from transformers import set_seed

from st_simcse import DuplicateInputDataset, SimCSELoss, build_model, resolve_training_file
from st_simcse.cli import (
    SHARED,
    TESTBED_MODEL,
    TESTBED_SENTEVAL,
    add_common_arguments,
    checked_training_run,
    launched_on_several_devices,
    parse_recipe_arguments,
    report_finished,
)
from st_simcse.training import train_and_evaluate

# The paper's unsupervised BERT-base setting (its Appendix A and run_unsup_example.sh). Not set here, because they
# are the recipe's fixed choices: no warmup, weight decay 0, linear decay, max_grad_norm 1, fp16 autocast on a GPU.
PAPER = {
    "model": "bert-base-uncased",
    "train_file": "wiki1m_for_simcse.txt",
    "batch_size": 64,
    "lr": 3e-5,
    "epochs": 1,
    "mlp": "[CLS] with an MLP used in training only",
    "output_dir": "output/unsup-simcse",
}
# The offline testbed: the tiny encoder needs a 10x higher learning rate than bert-base.
QUICK = {
    "model": TESTBED_MODEL,
    "train_file": str(SHARED / "data" / "unsup" / "train_40k.txt"),
    "senteval_dir": TESTBED_SENTEVAL,
    "lr": 3e-4,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, PAPER)
    return parse_recipe_arguments(parser, argv, QUICK)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)

    # 1. Check every input before loading the model.
    run = checked_training_run(args, loss_owns_state=not args.no_mlp)
    if run.resume and run.finished:
        return report_finished(run)
    dataset = DuplicateInputDataset.from_text_file(resolve_training_file(args.train_file))
    print(f"{len(dataset)} training sentences ({dataset.skipped_blank_lines} blank lines skipped)")

    # 2. Encoder: [CLS] pooling; the MLP lives in the loss, so the saved model is the encoder + pooling only.
    set_seed(args.seed)
    model = build_model(args.model, pooling=args.pooling, max_seq_length=args.max_seq_length, dropout=args.dropout)
    # Under torchrun every device's anchors also see the other devices' positives (see README, multi-GPU).
    loss = SimCSELoss(
        model,
        temperature=args.temperature,
        mlp_head=not args.no_mlp,
        gather_across_devices=launched_on_several_devices(),
    )

    # 3. Train, keep the best STS-B dev checkpoint, evaluate it on the 7 STS tasks.
    return train_and_evaluate(model, loss, dataset, run)


if __name__ == "__main__":
    main(sys.argv[1:])
