"""Unsupervised SimCSE (Gao, Yao & Chen 2021, section 3), trained with sentence-transformers' ``model.fit``.

Each Wikipedia sentence is paired with itself; the two copies pass the encoder with different dropout masks,
which makes the positive pair, and the other sentences of the batch are the negatives. The defaults are the
paper's BERT-base run; ``--quick`` runs the same pipeline offline on the small testbed in a few minutes on CPU:

    python recipes/unsup_wiki.py --quick
    python recipes/unsup_wiki.py --quick --seeds 42 43 44            # mean +- std over seeds
    python recipes/unsup_wiki.py --quick --mlm-weight 0.1            # + the MLM auxiliary objective
    python recipes/unsup_wiki.py --quick --loss esimcse              # ESimCSE: word repetition + momentum queue
    python recipes/unsup_wiki.py --quick --augmentation crop --augmentation-rate 0.2   # paper Table 1

Your own corpus, start model and yardstick (domain adaptation): any corpus (a text file, a table, compressed or not,
a datasets folder, a hub dataset: --help lists the formats), any start model (a sentence-transformers model is trained
as it is), your own scored pairs for model selection and the final report:

    python recipes/unsup_wiki.py --model sentence-transformers/all-MiniLM-L6-v2 --train-file corpus.jsonl.gz \
        --text-column body --dev-file dev_pairs.csv --test-file test_pairs.csv

Watch it in TensorBoard (--report-to tensorboard), publish it (--push-to-hub), rerun it (--config OUT/arguments.json
--output-dir NEW). Outputs go to --output-dir (default output/unsup-simcse/, about 70 MB with its checkpoints): the
best model and its card, metrics.json, dev_curve.png, align_uniform.png, checkpoints/, arguments.json and run.log.
"""

from __future__ import annotations

import argparse

import testbed

# Only what parses and checks the options is imported here; the libraries that train (torch, transformers,
# sentence-transformers) are imported where they are used, after every check: a refused run ends in well under 2 s.
from st_simcse.data.augmentation import AUGMENTATIONS, make_augmentation
from st_simcse.data.formats import describe_sources
from st_simcse.training.checks import check_corpus_size, checked_training_run
from st_simcse.training.command import launched_on_several_devices, run_main
from st_simcse.training.options import TRACKING_KNOBS, knob, parse_recipe_arguments
from st_simcse.training.run import TrainingRun
from st_simcse.training.seeds import run_seeds

# The paper's unsupervised BERT-base setting (its Appendix A and run_unsup_example.sh); `--help` says what each does.
KNOBS = [
    knob("model", "bert-base-uncased"),
    knob(
        "train_file",
        "wiki1m_for_simcse.txt",
        f"training sentences: {describe_sources()} (the paper's file by its name)",
    ),
    knob("text_column", None),
    knob("train_split", "train"),
    knob(
        "duplicates",
        "drop",
        "exact repeats of a sentence in the corpus: drop (each sentence trains once, so no two copies of it are each "
        "other's in-batch negatives) or keep them all",
        choices=("drop", "keep"),
    ),
    knob("senteval_dir", None, type=str),
    knob("dev_file", None),
    knob("dev_columns", None),
    knob("test_file", None),
    knob("test_columns", None),
    knob("sts_test", True),
    knob(
        "loss",
        "simcse",
        "simcse: SimCSELoss; esimcse: ESimCSELoss (momentum encoder + queue of negatives; brings "
        "--augmentation word_repetition); mnrl: sentence-transformers' MultipleNegativesRankingLoss with the same "
        "temperature and no MLP, for comparison",
        choices=("simcse", "esimcse", "mnrl"),
    ),
    knob(
        "augmentation",
        "none",
        "discrete augmentation of the positive copy (paper Table 1; ESimCSE: word_repetition); none: dropout "
        "alone makes the positive",
        choices=("none", *AUGMENTATIONS),
    ),
    knob(
        "augmentation_rate",
        None,
        "fraction cropped / deleted (crop, word_deletion: 0.1) or ESimCSE's repetition rate (0.32)",
        type=float,
    ),
    knob("mlm_weight", 0.0, "weight of the masked-LM auxiliary objective (the paper's appendix: 0.1); 0 is off"),
    knob("mlm_probability", 0.15, "share of tokens masked for the MLM objective (80/10/10 as BERT)"),
    knob("momentum", 0.995, "esimcse: momentum of the moving-average encoder that fills the queue"),
    knob("queue_size", 160, "esimcse: earlier sentences queued as extra negatives (2.5 x the batch size)"),
    knob("pooling", "cls"),
    knob("mlp", True, "train with the MLP over the pooled embedding; it is dropped from the saved model"),
    knob(
        "distillation_weight",
        0.0,
        "GuidedSimCSELoss: weight of the distillation of a frozen copy of the start model's in-batch similarities "
        "(keeps what a trained start model knows); 0 is plain SimCSE",
    ),
    knob("distillation_temperature", 0.05, "GuidedSimCSELoss: temperature of the distilled similarity distributions"),
    knob(
        "false_negative_threshold",
        None,
        "GuidedSimCSELoss: in-batch negatives that the frozen start model places closer than this cosine to the "
        "anchor are left out; unset: none",
        type=float,
    ),
    knob("temperature", 0.05),
    knob("dropout", 0.1),  # the noise that makes the positive pair
    knob(
        "shared_dropout_mask",
        False,
        "ablation: both copies share one dropout mask (paper Table 3's 'fixed 0.1'); training collapses",
    ),
    knob("max_seq_length", 32),
    knob("batch_size", 64),
    knob("lr", 3e-5),
    knob("scheduler", "WarmupLinear"),
    knob("warmup_steps", 0),
    knob("weight_decay", 0.0),
    knob("max_grad_norm", 1.0),
    knob("amp", "auto"),
    knob("attention", "auto"),
    knob("compile", False),
    knob("compile_mode", "default"),
    knob(
        "tokenize_once",
        True,
        "tokenize each sentence once and let SimCSELoss embed it twice (same training; "
        "model.fit's collator would otherwise tokenize both copies; ignored with --loss mnrl)",
    ),
    knob("training_path", "auto"),
    knob("streaming", False),
    knob("epochs", 1),
    knob("max_steps", None),
    knob("eval_steps", 125),
    knob("eval_batch_size", 128),
    knob("seed", 42),
    knob("seeds", None),
    knob("keep_checkpoints", False),
    knob("output_dir", "output/unsup-simcse"),
    # Watching and publishing the run: --report-to, --run-name, --logging-steps, --push-to-hub, --hub-model-id,
    # --hub-private (st_simcse.training.options.TRACKING_KNOBS, the same in both recipes).
    *TRACKING_KNOBS,
]
# The offline testbed (--quick): its model, data and SentEval folder.
QUICK = {"model": testbed.MODEL, "train_file": testbed.UNSUP_TRAIN_FILE, "senteval_dir": testbed.SENTEVAL}
# The tiny testbed encoder needs a 10x higher learning rate than bert-base (not applied to another --model).
QUICK_MODEL = {"lr": 3e-4}


# What choosing ESimCSE brings (ESimCSE's own settings); an explicit option still wins.
PRESETS = {"loss": {"esimcse": {"augmentation": "word_repetition"}}}
# A sentence-transformers start model (a trained sentence model) gets the setting of the domain-adaptation study
# (docs/results.md): GuidedSimCSELoss, guided by a frozen copy of itself, without the MLP head (for plain SimCSE; the
# other losses keep their own). A transformers checkpoint keeps the paper's setting. Explicit options still win.
GUIDED_DISTILLATION_WEIGHT = 10.0
SENTENCE_TRANSFORMER_DEFAULTS = {
    "mlp": False,
    "distillation_weight": lambda args: GUIDED_DISTILLATION_WEIGHT if guidable(args) else 0.0,
}


# A run resumed from an older version's arguments.json, which has no --duplicates, keeps its repeats, as it did.
OLDER_RUNS = {"duplicates": "keep"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_recipe_arguments(
        __doc__,
        KNOBS,
        argv,
        quick=QUICK,
        presets=PRESETS,
        sentence_transformer_defaults=SENTENCE_TRANSFORMER_DEFAULTS,
        quick_model_settings=QUICK_MODEL,
        older_runs=OLDER_RUNS,
    )


def training_data(args: argparse.Namespace):
    """Every sentence paired with itself (its positive augmented with --augmentation); without augmentation and
    with --tokenize-once the loss makes the copy after tokenization. Exact repeats are counted and, with
    --duplicates drop, dropped; ``dataset.report`` holds the lines to print, ``dataset.record`` what metrics.json
    records. A corpus smaller than one batch is refused."""
    from st_simcse import DuplicateInputDataset, load_corpus
    from st_simcse.data.report import corpus_report

    corpus = load_corpus(args.train_file, args.text_column, split=args.train_split, streaming=args.streaming)
    record = {"source": args.train_file, "duplicates": args.duplicates}
    if corpus.streaming:
        lines = [corpus.describe()]
        if args.duplicates == "drop":
            lines.append(
                "a stream is not read ahead: repeats are dropped from each batch as it comes"
                if not launched_on_several_devices()
                else "a stream under torchrun: repeats are not dropped (every device's batch must keep its size); "
                "de-duplicate the corpus first"
            )
    else:
        corpus, report = corpus_report(corpus, drop=args.duplicates == "drop")
        lines = report.lines()
        record.update(examples=len(corpus.dataset), report=report.as_dict())
        check_corpus_size(len(corpus.dataset), args)
    augmentation = make_augmentation(args.augmentation, args.augmentation_rate)
    once = args.tokenize_once and args.loss != "mnrl" and augmentation is None
    dataset = DuplicateInputDataset.from_corpus(
        corpus, duplicate_in_loss=once, augmentation=augmentation, seed=args.seed
    )
    dataset.report, dataset.record = lines, record
    return dataset


def build_model_and_loss(args: argparse.Namespace):
    """Encoder with [CLS] pooling (a sentence-transformers model keeps its own modules); the MLP lives in the loss, so
    the saved model is the encoder + pooling only."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import set_seed

    from st_simcse import ESimCSELoss, GuidedSimCSELoss, SimCSELoss, build_model

    set_seed(args.seed)
    model = build_model(
        args.model,
        pooling=args.pooling,
        max_seq_length=args.max_seq_length,
        dropout=args.dropout,
        attention=args.attention,
        compile=args.compile,
        compile_mode=args.compile_mode,
    )
    # Under torchrun every device's anchors also see the other devices' positives (see README, multi-GPU).
    several_devices = launched_on_several_devices()
    if args.loss == "mnrl":
        return model, MultipleNegativesRankingLoss(
            model, scale=1 / args.temperature, gather_across_devices=several_devices
        )
    if args.loss == "esimcse":
        return model, ESimCSELoss(
            model,
            temperature=args.temperature,
            momentum=args.momentum,
            queue_size=args.queue_size,
            mlp_head=args.mlp,
            gather_across_devices=several_devices,
        )
    if guided(args):
        # The guide is a frozen copy of the start model as loaded here: a resumed run rebuilds the same one.
        return model, GuidedSimCSELoss(
            model,
            temperature=args.temperature,
            mlp_head=args.mlp,
            gather_across_devices=several_devices,
            distillation_weight=args.distillation_weight,
            distillation_temperature=args.distillation_temperature,
            false_negative_threshold=args.false_negative_threshold,
        )
    loss = SimCSELoss(
        model,
        temperature=args.temperature,
        mlp_head=args.mlp,
        gather_across_devices=several_devices,
        mlm_weight=args.mlm_weight,
        mlm_probability=args.mlm_probability,
        shared_dropout_mask=args.shared_dropout_mask,
    )
    return model, loss


def guidable(args: argparse.Namespace) -> bool:
    """Whether GuidedSimCSELoss can train this run: plain SimCSE, without the MLM objective or the shared mask."""
    return args.loss == "simcse" and args.mlm_weight == 0 and not args.shared_dropout_mask


def guided(args: argparse.Namespace) -> bool:
    """Whether the run trains GuidedSimCSELoss (distillation or false-negative removal asked for)."""
    return args.distillation_weight > 0 or args.false_negative_threshold is not None


def check(args: argparse.Namespace) -> TrainingRun:
    """Every input checked before any model loads: this recipe's own options (the paper's variants), then what both
    recipes share; the loss's own state (MLP or LM head, ESimCSE's momentum encoder and queue, the guide's
    fingerprint) must be in a checkpoint that is resumed."""
    check_methods(args)
    heads = args.mlp or args.mlm_weight > 0 or guided(args)
    owns_state = args.loss == "esimcse" or (args.loss == "simcse" and heads)
    return checked_training_run(args, loss_owns_state=owns_state)


def check_methods(args: argparse.Namespace) -> None:
    """The options of the paper's variants: MLM, augmentations, ESimCSE, GuidedSimCSELoss, the dropout ablation."""

    def require(condition: bool, message: str) -> None:
        if not condition:
            raise ValueError(message)

    require(args.mlm_weight >= 0, f"--mlm-weight must be 0 (off) or more, got {args.mlm_weight}.")
    require(0 < args.mlm_probability < 1, f"--mlm-probability must be in (0, 1), got {args.mlm_probability}.")
    require(
        args.mlm_weight == 0 or args.loss == "simcse",
        f"--mlm-weight {args.mlm_weight} needs --loss simcse (got --loss {args.loss}).",
    )
    require(0 <= args.momentum < 1, f"--momentum must be in [0, 1) (ESimCSE's is 0.995), got {args.momentum}.")
    require(args.queue_size >= 0, f"--queue-size must be 0 or more, got {args.queue_size}.")
    try:
        make_augmentation(args.augmentation, args.augmentation_rate)
    except ValueError as error:
        raise ValueError(f"--augmentation {args.augmentation} --augmentation-rate: {error}") from None
    threshold = args.false_negative_threshold
    require(
        args.distillation_weight >= 0,
        f"--distillation-weight must be 0 (off) or more, got {args.distillation_weight}.",
    )
    require(
        args.distillation_temperature > 0,
        f"--distillation-temperature must be positive, got {args.distillation_temperature}.",
    )
    require(
        threshold is None or -1 < threshold <= 1,
        f"--false-negative-threshold must be a cosine in (-1, 1], got {threshold}.",
    )
    require(
        (args.distillation_weight == 0 and threshold is None) or guidable(args),
        "--distillation-weight and --false-negative-threshold (GuidedSimCSELoss) need --loss simcse, without "
        "--mlm-weight and --shared-dropout-mask.",
    )
    require(
        not args.shared_dropout_mask or (args.loss == "simcse" and args.augmentation == "none"),
        "--shared-dropout-mask (the paper's 'fixed 0.1' ablation) needs --loss simcse and --augmentation none: one "
        "dropout mask is shared by two copies of the same sentence.",
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.seeds:
        return run_seeds(train, check, args)
    return train(args)


def train(args: argparse.Namespace) -> dict:
    # 1. Check every input before loading the model, and write nothing for a run that is already finished. The corpus
    #    is read and reported on (its size, blank lines, exact repeats) before the model loads.
    run = check(args)
    from st_simcse.training.loop import train_and_evaluate
    from st_simcse.training.reports import log_to_file, report_finished, report_results

    if run.resume and run.finished:
        return report_finished(run)
    dataset = training_data(args)
    run.training_data = dataset.record
    run.drop_repeats_in_batches = dataset.streaming and args.duplicates == "drop" and not launched_on_several_devices()
    run.claim()  # one folder, one run: held until this process ends; another run there is refused
    log_path = log_to_file(args.output_dir)
    print("\n".join(dataset.report))

    # 2. The encoder and the loss.
    model, loss = build_model_and_loss(args)

    # 3. Train, keep the best STS-B dev checkpoint, evaluate it on the 7 STS tasks.
    metrics = train_and_evaluate(model, loss, dataset, run)
    if metrics:
        report_results(metrics, run, log_path)
    return metrics


if __name__ == "__main__":
    run_main(main)
