"""The practitioner's path through the recipe, end to end (slow lane): a sentence-transformers start model on a
jsonl corpus judged on the user's own pairs, and the untrained model kept when training does not help. (The Trainer and
streaming paths, on both test models: tests/test_real_models.py.)"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import run_recipe
from sentence_transformers import SentenceTransformer


def write_pairs(senteval_dir, path, start: int, stop: int):
    """Rows ``start:stop`` of STS-B dev as a user's scored-pairs csv (scores 0-5)."""
    with open(Path(senteval_dir) / "STS" / "STSBenchmark" / "sts-dev.csv", encoding="utf-8") as source:
        rows = [line.rstrip("\n").split("\t")[4:7] for line in source][start:stop]
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([("sentence1", "sentence2", "score"), *((a, b, s) for s, a, b in rows)])
    return path


def spearman_on(model, path) -> float:
    """Spearman x 100 of the cosine on a scored-pairs csv, computed with scipy from the model's embeddings."""
    from scipy.stats import spearmanr

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    first = model.encode([row["sentence1"] for row in rows], convert_to_tensor=True, normalize_embeddings=True)
    second = model.encode([row["sentence2"] for row in rows], convert_to_tensor=True, normalize_embeddings=True)
    cosines = (first * second).sum(dim=1).tolist()
    return round(100 * spearmanr(cosines, [float(row["score"]) for row in rows]).statistic, 2)


@pytest.mark.slow
def test_domain_adaptation_workflow(tmp_path, senteval_dir):
    """A sentence-transformers start model, a jsonl corpus with a text column, the user's dev and test pairs, and no
    SentEval data on an offline machine: the run keeps the model's modules, records them, and finishes."""
    from conftest import SHARED

    minilm = SHARED / "models" / "all-MiniLM-L6-v2"
    captions = SHARED / "data" / "unsup" / "captions.txt"
    if not minilm.exists() or not captions.exists():
        pytest.skip(f"needs {minilm} and {captions}")
    corpus = tmp_path / "corpus.jsonl"
    with open(captions, encoding="utf-8") as source, open(corpus, "w") as target:
        for index, line in zip(range(200), source):
            target.write(json.dumps({"id": index, "body": line.strip(), "lang": "en"}) + "\n")
    dev, test = (
        write_pairs(senteval_dir, tmp_path / "dev.csv", 0, 100),
        write_pairs(senteval_dir, tmp_path / "test.csv", 100, 200),
    )
    out = tmp_path / "adapted"
    offline = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"}  # the hub out of reach, as here
    arguments = ["--model", str(minilm), "--train-file", str(corpus), "--text-column", "body"]
    arguments += ["--dev-file", str(dev), "--test-file", str(test)]
    arguments += ["--max-steps", "6", "--eval-steps", "3", "--batch-size", "16"]
    result = run_recipe("unsup_wiki.py", *arguments, "--output-dir", str(out), env=offline)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "200 training sentences (0 empty values skipped)" in result.stdout
    assert "No 7-task STS table: the hub is out of reach; pass --senteval-dir DIR to add it." in result.stdout
    assert f"{test}: Spearman x 100 of the best model" in result.stdout
    modules = [module["type"] for module in json.loads((out / "modules.json").read_text())]
    assert [name.rsplit(".", 1)[1] for name in modules] == ["Transformer", "Pooling", "Normalize"]
    assert all(name.startswith("sentence_transformers.") for name in modules)  # built-in modules only
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arguments"]["pooling"] == metrics["pooling"] == "mean"
    assert metrics["model_modules"] == ["Transformer", "Pooling", "Normalize"] and metrics["max_seq_length"] == 256
    assert metrics["test"] is None and metrics["dev_set"] == "dev (dev.csv)"
    saved = SentenceTransformer(str(out))
    assert saved.max_seq_length == 256  # the length the start model serves with
    # The report is the saved model's score on the test pairs, not on the dev pairs (recomputed here).
    assert metrics["test_file"]["file"] == str(test) and metrics["test_file"]["pairs"] == 100
    assert metrics["test_file"]["spearman"] == pytest.approx(spearman_on(saved, test), abs=0.01)
    assert metrics["test_file"]["spearman"] != pytest.approx(spearman_on(saved, dev), abs=0.01)


@pytest.mark.slow
def test_untrained_model_is_kept_when_no_checkpoint_beats_it(tmp_path, splade_tiny, senteval_dir, train_40k):
    out = tmp_path / "worse"
    arguments = [
        "--quick",
        "--max-steps",
        "6",
        "--eval-steps",
        "3",
        "--batch-size",
        "16",
        "--lr",
        "0.05",
        "--no-sts-test",
    ]
    result = run_recipe("unsup_wiki.py", *arguments, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_step"] == 0 and metrics["best_trained_dev"] < metrics["untrained_dev"]
    assert "No checkpoint beat the untrained model on STS-B dev" in result.stdout
    # ... and its model card says so too.
    assert "**The saved weights are the untrained start model's.**" in (out / "README.md").read_text(encoding="utf-8")
    untrained = SentenceTransformer(splade_tiny)  # mean pooling, but the encoder's weights tell: the same
    saved = SentenceTransformer(str(out))
    for name, tensor in untrained[0].auto_model.state_dict().items():
        if not name.startswith("pooler."):  # not in the checkpoint: random on every load, and never used
            assert torch.equal(tensor, saved[0].auto_model.state_dict()[name]), name
