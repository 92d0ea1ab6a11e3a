"""Supervised SimCSE (Gao, Yao & Chen 2021, section 4), trained with sentence-transformers' ``model.fit``.

NLI triplets (premise, entailment, contradiction): the entailment is the positive, the contradiction a hard
negative, and all other positives and hard negatives of the batch are negatives too. A csv with only
``sent0,sent1`` trains on the positive pairs alone, as the reference code does. The MLP over [CLS] is kept
at test time, as in the paper, so it is a built-in Dense(tanh) module of the saved model. ``--quick`` runs a
short offline version on a small SNLI triplet set:

    python recipes/sup_nli.py --quick
"""

from __future__ import annotations

import argparse
import sys

from transformers import set_seed

from st_simcse import SimCSELoss, TripletDataset, build_model, resolve_training_file
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

# The paper's supervised BERT-base setting (its Appendix A and run_sup_example.sh).
PAPER = {
    "model": "bert-base-uncased",
    "train_file": "nli_for_simcse.csv",
    "batch_size": 512,
    "lr": 5e-5,
    "epochs": 3,
    "mlp": "[CLS] with an MLP, kept at test time",
    "output_dir": "output/sup-simcse",
}
# The offline testbed: 6k SNLI triplets, so smaller batches (more steps) and the tiny model's higher rate.
QUICK = {
    "model": TESTBED_MODEL,
    "train_file": str(SHARED / "data" / "nli" / "snli_triplets.csv"),
    "senteval_dir": TESTBED_SENTEVAL,
    "batch_size": 128,
    "lr": 3e-4,
    "eval_steps": 25,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, PAPER)
    parser.add_argument(
        "--hard-negative-weight",
        type=float,
        default=0.0,
        help="log-weight added to each anchor's own hard-negative logit; 0 means alpha = 1 (paper: 0)",
    )
    return parse_recipe_arguments(parser, argv, QUICK)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)

    # 1. Check every input before loading the model.
    run = checked_training_run(args)
    if run.resume and run.finished:
        return report_finished(run)
    dataset = TripletDataset.from_nli_csv(resolve_training_file(args.train_file))
    kind = "triplets" if isinstance(dataset, TripletDataset) else "pairs (no hard negatives)"
    print(f"{len(dataset)} training {kind}")

    # 2. Encoder + [CLS] pooling + the MLP as a built-in Dense(tanh) module, which the saved model keeps.
    set_seed(args.seed)
    model = build_model(
        args.model,
        pooling=args.pooling,
        max_seq_length=args.max_seq_length,
        mlp_in_model=not args.no_mlp,
        dropout=args.dropout,
    )
    # Under torchrun every device's anchors also see the other devices' positives and hard negatives.
    loss = SimCSELoss(
        model,
        temperature=args.temperature,
        hard_negative_weight=args.hard_negative_weight,
        gather_across_devices=launched_on_several_devices(),
    )

    # 3. Train, keep the best STS-B dev checkpoint, evaluate it on the 7 STS tasks.
    return train_and_evaluate(model, loss, dataset, run)


if __name__ == "__main__":
    main(sys.argv[1:])
