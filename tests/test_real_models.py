"""Every user-facing path on a real sentence-transformers model (all-MiniLM-L6-v2: mean pooling + Normalize, as most
sentence-transformers models) as on the testbed encoder (splade-tiny, a transformers checkpoint given [CLS] pooling):
the evaluation command, and both recipes on every training path, with --seeds, resume, mining, model selection and
the final report."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from conftest import MINILM, SENTEVAL, SPLADE_TINY, TRAIN_40K, run_recipe
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer

from st_simcse.console import run_cli
from st_simcse.evaluation import command

MODELS = {"splade-tiny": SPLADE_TINY, "all-MiniLM-L6-v2": MINILM}
# What each start model saves as: splade-tiny gets the paper's [CLS] pooling; MiniLM keeps its own modules.
MODULES = {"splade-tiny": ["Transformer", "Pooling"], "all-MiniLM-L6-v2": ["Transformer", "Pooling", "Normalize"]}


def model_path(name: str) -> str:
    if not MODELS[name].exists():
        pytest.skip(f"needs {MODELS[name]} (the shared offline testbed beside the checkout), which is absent here")
    return str(MODELS[name])


def independent_spearman(model_path_or_folder: str, pairs: str) -> float:
    """Spearman x 100 of the cosine of SentenceTransformer(path)'s own embeddings, computed with scipy."""
    with open(pairs, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    model = SentenceTransformer(model_path_or_folder, device="cpu")
    first, second = (
        model.encode([row[column] for row in rows], convert_to_tensor=True, normalize_embeddings=True)
        for column in ("sentence1", "sentence2")
    )
    return 100 * spearmanr((first * second).sum(1).tolist(), [float(row["score"]) for row in rows]).statistic


@pytest.mark.parametrize("name", MODELS)
def test_the_evaluation_command_scores_the_model_as_sentence_transformers_encodes_it(name, capsys, sts_pairs_file):
    """A mean-pooled sentence-transformers model is evaluated with its own modules (the command refused it before).
    The 7 STS test tasks go through the same evaluators (tests/test_evaluation.py, on splade-tiny; the 7-task average
    of all-MiniLM-L6-v2, 2 x 143 s on one core, is measured by benchmarks/real_model_evaluation.py)."""
    path = model_path(name)
    pooling = [] if name == "all-MiniLM-L6-v2" else ["--pooling", "cls"]
    payload = run_cli(command.main, [path, *pooling, "--test-file", sts_pairs_file])
    reference = SentenceTransformer(path, device="cpu") if name == "all-MiniLM-L6-v2" else None
    if reference is not None:
        assert payload["pooling"] == "model's own"
        assert payload["test_file"]["spearman"] == pytest.approx(independent_spearman(path, sts_pairs_file), abs=0.01)
        # its own mode is accepted too, and changes nothing
        again = run_cli(command.main, [path, "--pooling", "mean", "--test-file", sts_pairs_file])
        assert again["test_file"] == payload["test_file"]
    assert "Spearman x 100 of the cosine" in capsys.readouterr().out


def pairs_file(folder, count: int) -> str:
    """``count`` SNLI (premise, entailment) pairs in the paper's sent0,sent1 columns."""
    from conftest import NLI_TRIPLETS

    with open(NLI_TRIPLETS, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1 : count + 1]
    path = folder / "pairs.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("sent0", "sent1"), *(row[:2] for row in rows)])
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_both_recipes_on_every_training_path(name, tmp_path, sts_pairs_file):
    path = model_path(name)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(TRAIN_40K.open(encoding="utf-8").readlines()[:64]), encoding="utf-8")
    common = ["--model", path, "--dev-file", sts_pairs_file, "--test-file", sts_pairs_file]
    common += ["--batch-size", "8", "--max-steps", "2", "--eval-steps", "1"]
    # The paper's 7-task table ends splade-tiny's Trainer run; all-MiniLM-L6-v2's would take 2 x 143 s on a core
    # (benchmarks/real_model_evaluation.py shows the command's table of it equal to its own encoding's).
    no_table = ["--no-sts-test"]
    table = ["--senteval-dir", str(SENTEVAL)] if name == "splade-tiny" else no_table
    offline = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"}

    # Unsupervised, the Trainer path, two seeds: the best seed's model at the output folder itself.
    seeds = tmp_path / "seeds"
    options = ["--train-file", str(corpus), "--training-path", "trainer", "--keep-checkpoints", *table]
    result = run_recipe(
        "unsup_wiki.py", *common, *options, "--seeds", "1", "2", "--output-dir", str(seeds), env=offline
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((seeds / "seeds.json").read_text())
    best = summary["best_seed"]
    kept = SentenceTransformer(str(seeds), device="cpu")
    assert [type(module).__name__ for module in kept] == MODULES[name]
    seed_model = SentenceTransformer(str(seeds / f"seed-{best}"), device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), seed_model.state_dict().values()))
    card = (seeds / "README.md").read_text(encoding="utf-8")
    spread = "7-task STS test average" if name == "splade-tiny" else "test pairs Spearman"
    assert f"This is the best of 2 seeds (1, 2) on dev: seed {best}" in card and f"Over the seeds, {spread}: " in card
    metrics = json.loads((seeds / f"seed-{best}" / "metrics.json").read_text())
    assert metrics["training_path"] == "trainer" and metrics["model_modules"] == MODULES[name]
    # With SentEval data, the user's test pairs come with the paper's 7-task table, not instead of it.
    assert metrics["test_file"]["pairs"] == 100
    assert metrics["test"] is None if name != "splade-tiny" else set(metrics["test"]) >= {"STS12", "Avg."}

    # Resume: the best seed's run, its report lost, continues from its last checkpoint and reports again.
    (seeds / f"seed-{best}" / "metrics.json").unlink()
    resumed = run_recipe("unsup_wiki.py", "--output-dir", str(seeds), "--resume", env=offline)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {seeds / f'seed-{best}' / 'checkpoints'}/checkpoint-2" in resumed.stdout
    assert json.loads((seeds / f"seed-{best}" / "metrics.json").read_text())["resumed_from_step"] == 2

    # Unsupervised, streamed.
    stream = tmp_path / "stream"
    options = ["--train-file", str(corpus), "--streaming", "--keep-checkpoints", *no_table]
    result = run_recipe("unsup_wiki.py", *common, *options, "--output-dir", str(stream), env=offline)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((stream / "metrics.json").read_text())
    assert metrics["training_path"] == "streaming"
    assert [entry["steps"] for entry in metrics["dev_history"]] == [0, 1, 2]
    # The stream trained the model: its last checkpoint's weights moved away from the start model's.
    start = SentenceTransformer(path, device="cpu")[0].auto_model.state_dict()
    trained = SentenceTransformer(str(stream / "checkpoints" / "checkpoint-2"), device="cpu")[0].auto_model
    moved = [key for key, tensor in trained.state_dict().items() if not torch.equal(tensor, start[key])]
    assert "encoder.layer.0.attention.self.query.weight" in moved
    assert metrics["test_file"]["spearman"] == pytest.approx(
        independent_spearman(str(stream), sts_pairs_file), abs=0.01
    )

    # Supervised, pairs with hard negatives mined by the start model.
    mined = tmp_path / "mined"
    options = ["--train-file", pairs_file(tmp_path, 200), "--mine-hard-negatives", *no_table]
    result = run_recipe("sup_nli.py", *common, *options, "--output-dir", str(mined), env=offline)
    assert result.returncode == 0, result.stderr[-3000:]
    mining = json.loads((mined / "mining.json").read_text())
    assert mining["pairs"] == 200 and mining["triplets"] > 0 and "200 training pairs" in result.stdout
    modules = [type(module).__name__ for module in SentenceTransformer(str(mined), device="cpu")]
    # The paper's MLP is kept by the supervised model built from a checkpoint; a sentence-transformers model is
    # trained as it is.
    assert modules == (MODULES[name] + ["Dense"] if name == "splade-tiny" else MODULES[name])
