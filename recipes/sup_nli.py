"""Supervised SimCSE (Gao, Yao & Chen 2021, section 4), trained with sentence-transformers' ``model.fit``.

NLI triplets (premise, entailment, contradiction): the entailment is the positive, the contradiction a hard
negative, and all other positives and hard negatives of the batch are negatives too. A csv with only
``sent0,sent1`` trains on the positive pairs alone, as the reference code does. The MLP over [CLS] is kept at test
time, as in the paper, so it is a built-in Dense(tanh) module of the saved model. ``--quick`` runs a short offline
version on a small SNLI triplet set:

    python recipes/sup_nli.py --quick

Your own labelled pairs or triplets, in any format (a table, compressed or not, a datasets folder, a hub dataset:
--help lists the formats), with any column names, and hard negatives mined with the start model where you have only
pairs:

    python recipes/sup_nli.py --model sentence-transformers/all-MiniLM-L6-v2 --train-file pairs.jsonl \
        --columns question,answer --mine-hard-negatives --dev-file dev_pairs.csv --test-file test_pairs.csv

Watch it in TensorBoard (--report-to tensorboard), publish it (--push-to-hub), rerun it (--config OUT/arguments.json
--output-dir NEW). Outputs go to --output-dir (default output/sup-simcse/): the best model and its card,
metrics.json, dev_curve.png, align_uniform.png, checkpoints/, arguments.json and run.log.
"""

from __future__ import annotations

import argparse
import json
import os

import testbed

# Only what parses and checks the options is imported here; the libraries that train (torch, transformers,
# sentence-transformers) are imported where they are used, after every check: a refused run ends in well under 2 s.
from st_simcse.console import column_names
from st_simcse.data.formats import describe_sources
from st_simcse.training.checks import check_corpus_size, checked_training_run
from st_simcse.training.command import launched_on_several_devices, run_main
from st_simcse.training.options import TRACKING_KNOBS, knob, parse_recipe_arguments
from st_simcse.training.run import TrainingRun, write_json
from st_simcse.training.seeds import run_seeds

# The paper's supervised BERT-base setting (its Appendix A and run_sup_example.sh); `--help` says what each does.
KNOBS = [
    knob("model", "bert-base-uncased"),
    knob(
        "train_file",
        "nli_for_simcse.csv",
        f"labelled pairs or triplets: {describe_sources(tabular_only=True)}; columns anchor,positive[,negative] or "
        "sent0,sent1[,hard_neg], else --columns",
    ),
    knob("train_split", "train"),
    knob("train_subset", None, "the subset (configuration) of a hub dataset, e.g. triplet of all-nli", type=str),
    knob(
        "columns",
        None,
        "the anchor, positive and (optional) hard-negative columns of --train-file, e.g. question,answer",
        type=str,
    ),
    knob(
        "mine_hard_negatives",
        False,
        "mine one hard negative per pair with the start model before training (sentence-transformers' "
        "mine_hard_negatives); pairs without one are dropped",
    ),
    knob(
        "mining_relative_margin",
        0.05,
        "--mine-hard-negatives: a candidate must stay this fraction of the positive's similarity below it (0.05: "
        "5 %%), so that paraphrases of the positive (false negatives) are not mined",
    ),
    knob("mining_range_max", 100, "--mine-hard-negatives: the most similar candidates looked at per anchor"),
    knob("senteval_dir", None, type=str),
    knob("dev_file", None),
    knob("dev_columns", None),
    knob("test_file", None),
    knob("test_columns", None),
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
    # Watching and publishing the run: --report-to, --run-name, --logging-steps, --push-to-hub, --hub-model-id,
    # --hub-private (st_simcse.training.options.TRACKING_KNOBS, the same in both recipes).
    *TRACKING_KNOBS,
]
# The offline testbed (--quick): 6k SNLI triplets, so smaller batches (more steps).
QUICK = {
    "model": testbed.MODEL,
    "train_file": testbed.NLI_TRAIN_FILE,
    "senteval_dir": testbed.SENTEVAL,
    "batch_size": 128,
    "eval_steps": 25,
}
# What --mine-hard-negatives keeps in the output folder: the triplets, and how they were mined.
MINED_FILE = "mined_triplets.parquet"
MINING_FILE = "mining.json"
# The tiny testbed encoder's higher learning rate (not applied to another --model).
QUICK_MODEL = {"lr": 3e-4}
# A sentence-transformers start model is trained as it is: no MLP added unless --mlp asks for one.
SENTENCE_TRANSFORMER_DEFAULTS = {"mlp": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = {"sentence_transformer_defaults": SENTENCE_TRANSFORMER_DEFAULTS, "quick_model_settings": QUICK_MODEL}
    return parse_recipe_arguments(__doc__, KNOBS, argv, quick=QUICK, **defaults)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.seeds:
        return run_seeds(train, check, args)
    return train(args)


def columns(args: argparse.Namespace) -> list[str] | None:
    """--columns: the anchor, the positive and optionally the hard-negative column."""
    roles = "the anchor, the positive and optionally the hard-negative column"
    return column_names(args.columns, "--columns", (2, 3), "question,answer", roles)


def check(args: argparse.Namespace) -> TrainingRun:
    """This recipe's own options, then what both recipes share, before any model loads."""
    columns(args)
    if not 0 <= args.mining_relative_margin < 1:
        raise ValueError(f"--mining-relative-margin must be in [0, 1), got {args.mining_relative_margin}.")
    if args.mining_range_max < 1:
        raise ValueError(f"--mining-range-max must be at least 1, got {args.mining_range_max}.")
    return checked_training_run(args)


# Where more than this share of the rows have an anchor equal to their positive, the file is not labelled pairs.
MOST_ROWS = 0.5


def training_data(args: argparse.Namespace):
    """The labelled pairs or triplets, checked (columns, empty cells, rows that are not pairs, at least one batch)
    and reported on before any model loads: ``dataset.report`` holds the lines to print, ``dataset.record`` what
    metrics.json records."""
    from st_simcse import TripletDataset, load_labelled
    from st_simcse.data.report import labelled_report

    dataset = load_labelled(args.train_file, columns(args), split=args.train_split, subset=args.train_subset)
    if args.mine_hard_negatives and isinstance(dataset, TripletDataset):
        raise ValueError(
            f"{args.train_file} already has hard negatives; drop --mine-hard-negatives to train on them, or mine "
            "instead with --columns ANCHOR,POSITIVE."
        )
    report = labelled_report(dataset.table, args.train_file)
    if report.anchor_is_positive > MOST_ROWS * report.rows:
        raise ValueError(
            f"{args.train_file}: the anchor equals the positive in {report.anchor_is_positive} of {report.rows} "
            "rows, so this is not labelled pairs: supervised SimCSE would learn nothing from them. Check --columns "
            "(two different columns), or train unsupervised SimCSE on the sentences with recipes/unsup_wiki.py."
        )
    check_corpus_size(len(dataset), args)
    pairs = "" if isinstance(dataset, TripletDataset) else " (mining a hard negative for each with the start model)"
    lines = report.lines(pairs if args.mine_hard_negatives else "" if pairs == "" else " (no hard negatives)")
    if report.anchor_is_positive:
        lines.append(
            f"warning: in {report.anchor_is_positive} rows the anchor equals the positive: those rows teach nothing "
            "(check --columns, or drop them)"
        )
    dataset.report, dataset.record = lines, {"source": args.train_file, "report": report.as_dict()}
    return dataset


def mining_model(model, args: argparse.Namespace):
    """The start model as it judges similarity: without the MLP this recipe adds (random until trained)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    if not args.mlp:
        return model
    added = [module for module in model if isinstance(module, Dense)][-1]
    return SentenceTransformer(modules=[module for module in model if module is not added], device=str(model.device))


def mined(dataset, model, args: argparse.Namespace):
    """The pairs with one hard negative each, mined with the start model; kept in the output folder, so that a
    resumed run trains on the same triplets without mining again."""
    from datasets import Dataset

    from st_simcse import TripletDataset, mine_hard_negatives

    saved = os.path.join(args.output_dir, MINED_FILE)
    if args.resume and os.path.isfile(saved):
        triplets = TripletDataset(Dataset.from_parquet(saved))
        triplets.mining = saved_mining(args.output_dir)
        return triplets
    triplets = mine_hard_negatives(
        dataset,
        mining_model(model, args),
        relative_margin=args.mining_relative_margin,
        range_max=args.mining_range_max,
        batch_size=args.eval_batch_size,
    )
    # mining.json first, the triplets last and whole (written beside, then renamed): a resume finds both or neither.
    write_json(os.path.join(args.output_dir, MINING_FILE), triplets.mining)
    triplets.to_hf_dataset().to_parquet(f"{saved}.tmp")
    os.replace(f"{saved}.tmp", saved)
    return triplets


def saved_mining(output_dir: str) -> dict:
    with open(os.path.join(output_dir, MINING_FILE), encoding="utf-8") as handle:
        return json.load(handle)


def train(args: argparse.Namespace) -> dict:
    # 1. Check every input before loading the model, and write nothing for a run that is already finished. The data
    #    is read and reported on (rows, exact repeats, rows that are not pairs) before the model loads.
    run = check(args)
    from transformers import set_seed

    from st_simcse import SimCSELoss, build_model
    from st_simcse.data.mining import describe_mining
    from st_simcse.training.loop import train_and_evaluate
    from st_simcse.training.reports import log_to_file, report_finished, report_results

    if run.resume and run.finished:
        return report_finished(run)
    dataset = training_data(args)
    run.training_data = dataset.record
    run.claim()  # one folder, one run: held until this process ends; another run there is refused
    log_path = log_to_file(args.output_dir)
    print("\n".join(dataset.report))

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
    if args.mine_hard_negatives:
        dataset = mined(dataset, model, args)
        print(describe_mining(dataset.mining))
        run.training_data["mining"] = dataset.mining
    run.training_data.update(kind=type(dataset).__name__, examples=len(dataset))
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
