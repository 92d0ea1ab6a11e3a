"""Supervised SimCSE (Gao, Yao & Chen 2021, section 4), trained with sentence-transformers' ``model.fit``.

NLI triplets (premise, entailment, contradiction): the entailment is the positive, the contradiction a hard
negative, and all other positives and hard negatives of the batch are negatives too. A csv with only
``sent0,sent1`` trains on the positive pairs alone, as the reference code does. The MLP over [CLS] is kept at test
time, as in the paper, so it is a built-in Dense(tanh) module of the saved model. ``--quick`` runs a short offline
version on a small SNLI triplet set:

    python recipes/sup_nli.py --quick

Outputs go to --output-dir (default output/sup-simcse/): the best model, metrics.json, dev_curve.png,
align_uniform.png, checkpoints/, arguments.json and run.log.
"""

from __future__ import annotations

import argparse

import testbed
from transformers import set_seed

from st_simcse import SimCSELoss, TripletDataset, build_model, resolve_training_file
from st_simcse.cli import (
    build_parser,
    check_corpus_size,
    checked_training_run,
    knob,
    launched_on_several_devices,
    parse_recipe_arguments,
    run_main,
)
from st_simcse.reports import log_to_file, report_finished, report_results
from st_simcse.seeds import run_seeds
from st_simcse.training import train_and_evaluate

# The paper's supervised BERT-base setting (its Appendix A and run_sup_example.sh); `--help` says what each does.
KNOBS = [
    knob("model", "bert-base-uncased"),
    knob("train_file", "nli_for_simcse.csv", "csv with sent0,sent1,hard_neg (or sent0,sent1) and a header"),
    knob("senteval_dir", None, type=str),
    knob("dev_file", None),
    knob("test_file", None),
    knob("sts_test", True),
    knob("pooling", "cls"),
    knob(
        "mlp",
        True,
        "an MLP (Dense + tanh) over the pooled embedding, kept in the saved model (a sentence-transformers start "
        "model gets one only when asked, before its Normalize)",
    ),
    knob("temperature", 0.05),
    knob("hard_negative_weight", 0.0, "log-weight added to each anchor's own hard-negative logit; 0 is alpha = 1"),
    knob("dropout", 0.1),
    knob("max_seq_length", 32),
    knob("batch_size", 512),
    knob("lr", 5e-5),
    knob("scheduler", "WarmupLinear"),
    knob("warmup_steps", 0),
    knob("weight_decay", 0.0),
    knob("max_grad_norm", 1.0),
    knob("amp", "auto"),
    knob("attention", "auto"),
    knob("compile", False),
    knob("compile_mode", "default"),
    knob("training_path", "auto"),
    knob("epochs", 3),
    knob("max_steps", None),
    knob("eval_steps", 125),
    knob("eval_batch_size", 128),
    knob("seed", 42),
    knob("seeds", None),
    knob("keep_checkpoints", False),
    knob("output_dir", "output/sup-simcse"),
]
# The offline testbed (--quick): 6k SNLI triplets, so smaller batches (more steps).
QUICK = {
    "model": testbed.MODEL,
    "train_file": testbed.NLI_TRAIN_FILE,
    "senteval_dir": testbed.SENTEVAL,
    "batch_size": 128,
    "eval_steps": 25,
}
# The tiny testbed encoder's higher learning rate (not applied to another --model).
QUICK_MODEL = {"lr": 3e-4}
# A sentence-transformers start model is trained as it is: no MLP added unless --mlp asks for one.
SENTENCE_TRANSFORMER_DEFAULTS = {"mlp": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser(__doc__, KNOBS)
    defaults = {"sentence_transformer_defaults": SENTENCE_TRANSFORMER_DEFAULTS, "quick_model_settings": QUICK_MODEL}
    return parse_recipe_arguments(parser, KNOBS, QUICK, argv, **defaults)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.seeds:
        return run_seeds(train, checked_training_run, args)
    return train(args)


def train(args: argparse.Namespace) -> dict:
    # 1. Check every input before loading the model, and write nothing for a run that is already finished.
    run = checked_training_run(args)
    if run.resume and run.finished:
        return report_finished(run)
    dataset = TripletDataset.from_nli_csv(resolve_training_file(args.train_file))
    check_corpus_size(len(dataset), args)
    run.claim()  # one folder, one run: held until this process ends; another run there is refused
    log_path = log_to_file(args.output_dir)
    kind = "triplets" if isinstance(dataset, TripletDataset) else "pairs (no hard negatives)"
    print(f"{len(dataset)} training {kind}")

    # 2. Encoder + [CLS] pooling + the MLP as a built-in Dense(tanh) module, which the saved model keeps (a
    #    sentence-transformers start model keeps its own modules).
    set_seed(args.seed)
    model = build_model(
        args.model,
        pooling=args.pooling,
        max_seq_length=args.max_seq_length,
        mlp_in_model=args.mlp,
        dropout=args.dropout,
        attention=args.attention,
        compile=args.compile,
        compile_mode=args.compile_mode,
    )
    # Under torchrun every device's anchors also see the other devices' positives and hard negatives.
    loss = SimCSELoss(
        model,
        temperature=args.temperature,
        hard_negative_weight=args.hard_negative_weight,
        gather_across_devices=launched_on_several_devices(),
    )

    # 3. Train, keep the best STS-B dev checkpoint, evaluate it on the 7 STS tasks.
    metrics = train_and_evaluate(model, loss, dataset, run)
    if metrics:
        report_results(metrics, run, log_path)
    return metrics


if __name__ == "__main__":
    run_main(main)
