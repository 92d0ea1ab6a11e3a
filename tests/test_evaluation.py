from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, sentences
from scipy.stats import spearmanr

from st_simcse import AlignmentUniformityEvaluator, load_sts_tasks, sts_evaluator
from st_simcse.evaluation import STS_YEAR_SUBSETS, STSData, alignment_uniformity


def _write_pairs(folder, subset, pairs, scores):
    (folder / f"STS.input.{subset}.txt").write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    (folder / f"STS.gs.{subset}.txt").write_text("".join(f"{s}\n" for s in scores), encoding="utf-8")


def make_senteval(root, seed=0):
    """A SentEval-layout folder with every file the 7 tasks read, 6 pairs per file."""
    rng = np.random.default_rng(seed)
    texts = sentences(1000, seed=seed)
    counter = iter(range(0, 1000, 2))

    def pairs(n):
        return [(texts[i], texts[i + 1]) for i in (next(counter) for _ in range(n))]

    for year, subsets in STS_YEAR_SUBSETS.items():
        folder = root / "STS" / f"{year}-en-test"
        folder.mkdir(parents=True)
        for subset in subsets:
            _write_pairs(folder, subset, pairs(6), [f"{x:.2f}" for x in rng.uniform(0, 5, 6)])
    # STS13's licensed SMT subset: SentEval has only its gold file; it must not be read even if inputs appear.
    _write_pairs(root / "STS" / "STS13-en-test", "SMT", pairs(6), ["1.0"] * 6)
    # Unscored lines (empty gold) in STS15 and STS16 are skipped.
    folder = root / "STS" / "STS15-en-test"
    _write_pairs(folder, "belief", pairs(6), ["1.0", "", "2.5", "", "4.0", "3.0"])
    stsb = root / "STS" / "STSBenchmark"
    stsb.mkdir()
    for split in ("train", "dev", "test"):
        rows = [
            f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s:.3f}\t{a}\t{b}"
            for i, ((a, b), s) in enumerate(zip(pairs(8), rng.uniform(0, 5, 8)))
        ]
        (stsb / f"sts-{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    sick = root / "SICK"
    sick.mkdir()
    for name in ("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt"):
        rows = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
        rows += [
            f"{i}\t{a}\t{b}\t{s:.1f}\tNEUTRAL" for i, ((a, b), s) in enumerate(zip(pairs(8), rng.uniform(1, 5, 8)))
        ]
        (sick / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def _cosine(model, first, second):
    a = model.encode(first, convert_to_tensor=True)
    b = model.encode(second, convert_to_tensor=True)
    return torch.nn.functional.cosine_similarity(a, b).numpy()


def test_all_setting_is_one_spearman_over_the_concatenation(tmp_path, tiny_model):
    root = make_senteval(tmp_path)
    evaluator = sts_evaluator(str(root), "test")
    results = evaluator(tiny_model)

    # By hand: read the STS12 files ourselves, one Spearman over all subsets concatenated.
    folder = root / "STS" / "STS12-en-test"
    firsts, seconds, golds, per_subset = [], [], [], []
    for subset in STS_YEAR_SUBSETS["STS12"]:
        pairs = [line.split("\t") for line in (folder / f"STS.input.{subset}.txt").read_text().splitlines()]
        gold = [float(x) for x in (folder / f"STS.gs.{subset}.txt").read_text().splitlines()]
        cos = _cosine(tiny_model, [p[0] for p in pairs], [p[1] for p in pairs])
        per_subset.append(spearmanr(gold, cos).statistic)
        firsts += [p[0] for p in pairs]
        seconds += [p[1] for p in pairs]
        golds += gold
    expected = spearmanr(golds, _cosine(tiny_model, firsts, seconds)).statistic
    assert results["STS12_spearman_cosine"] == pytest.approx(expected, abs=1e-6)
    assert abs(results["STS12_spearman_cosine"] - np.mean(per_subset)) > 1e-3

    scores = [
        results[f"{task}_spearman_cosine"] for task in ("STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R")
    ]
    assert results["sts_test_avg"] == pytest.approx(sum(scores) / 7, abs=1e-12)
    table = evaluator.table(results)
    assert list(table) == ["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R", "Avg."]
    assert table["Avg."] == round(100 * results["sts_test_avg"], 2)


def test_unscored_lines_skipped_and_sts13_smt_ignored(tmp_path):
    root = make_senteval(tmp_path)
    tasks = {task.name: task for task in load_sts_tasks(str(root), "test")}
    assert len(tasks["STS15"]) == 5 * 6 - 2
    assert len(tasks["STS13"]) == 3 * 6  # FNWN, headlines, OnWN; the SMT files are not read
    assert len(tasks["STS12"]) == 5 * 6
    assert len(tasks["STS-B"]) == 8 and len(tasks["SICK-R"]) == 8
    dev = load_sts_tasks(str(root), "dev")
    assert [task.name for task in dev] == ["STS-B", "SICK-R"]


def test_missing_task_folder(tmp_path):
    root = make_senteval(tmp_path)
    for path in sorted((root / "STS" / "STS14-en-test").iterdir()):
        path.unlink()
    (root / "STS" / "STS14-en-test").rmdir()
    with pytest.raises(FileNotFoundError, match="Missing task folder .*STS14-en-test.*data/downstream"):
        load_sts_tasks(str(root), "test")


def test_gold_file_with_wrong_line_count(tmp_path):
    root = make_senteval(tmp_path)
    gold = root / "STS" / "STS16-en-test" / "STS.gs.plagiarism.txt"
    gold.write_text(gold.read_text() + "3.0\n")
    with pytest.raises(ValueError, match=r"STS.gs.plagiarism.txt has 7 lines but .*STS.input.plagiarism.txt has 6"):
        load_sts_tasks(str(root), "test")


def test_non_numeric_score(tmp_path):
    root = make_senteval(tmp_path)
    gold = root / "STS" / "STS12-en-test" / "STS.gs.MSRvid.txt"
    lines = gold.read_text().splitlines()
    lines[3] = "four"
    gold.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"STS.gs.MSRvid.txt, line 4: gold score 'four' is not a number"):
        load_sts_tasks(str(root), "test")


def test_alignment_uniformity_by_hand():
    # Three unit vectors at 0, 90 and 180 degrees; positive pairs (0, 1) with score 5 and (0, 2) with score 1.
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [-1.0, 0.0]}
    data = STSData("toy", ["a", "a"], ["b", "c"], [5.0, 1.0])
    evaluator = AlignmentUniformityEvaluator(data, threshold=4.0)

    class Lookup:
        def lookup(self, items):
            return np.array([vectors[item] for item in items], dtype=np.float32)

        def filled(self, model, items):
            from contextlib import nullcontext

            return nullcontext()

    evaluator.cache = Lookup()
    results = evaluator(
        model=type("M", (), {"model_card_data": type("C", (), {"set_evaluation_metrics": lambda *a: None})()})()
    )
    # alignment: only (a, b) has score > 4; |a - b|^2 = 2.
    assert results["toy_alignment"] == pytest.approx(2.0)
    # uniformity: pairs (a,b), (a,c), (b,c) with squared distances 2, 4, 2.
    expected = math.log((math.exp(-4) + math.exp(-8) + math.exp(-4)) / 3)
    assert results["toy_uniformity"] == pytest.approx(expected)
    assert evaluator.history == [(-1, pytest.approx(2.0), pytest.approx(expected))]


def test_alignment_uniformity_function_normalises():
    first = torch.tensor([[3.0, 0.0]])
    second = torch.tensor([[0.0, 0.5]])
    alignment, uniformity = alignment_uniformity(first, second, torch.cat([first, second]))
    assert alignment == pytest.approx(2.0)
    assert uniformity == pytest.approx(-4.0)


def test_shared_senteval_pair_counts(senteval_dir):
    counts = {task.name: len(task) for task in load_sts_tasks(senteval_dir, "test")}
    assert counts == {
        "STS12": 3108,
        "STS13": 1500,
        "STS14": 3750,
        "STS15": 3000,
        "STS16": 1186,
        "STS-B": 1379,
        "SICK-R": 4927,
    }
    assert [len(task) for task in load_sts_tasks(senteval_dir, "dev")] == [1500, 500]


@pytest.mark.slow
def test_cli_on_splade_tiny_reproduces_senteval_and_is_deterministic(tmp_path, splade_tiny, senteval_dir):
    """The untrained testbed's [CLS] numbers, measured with SentEval (shared README): STS-B 57.66, avg 57.19."""
    tables = []
    # The sentence-transformers Pooling("cls") and the reference evaluation's cls_before_pooler are the same pooler.
    for run, pooler in enumerate((["--pooling", "cls"], ["--pooler", "cls_before_pooler"])):
        out = tmp_path / f"run{run}.json"
        command = [
            sys.executable,
            "-m",
            "st_simcse.evaluate",
            splade_tiny,
            "--senteval-dir",
            senteval_dir,
            *pooler,
            "--output",
            str(out),
        ]
        completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert "STS12" in completed.stdout and "Avg." in completed.stdout
        caption = "on the 7 STS test tasks, Spearman x 100 of the cosine (SentEval protocol):"
        assert caption in completed.stdout, completed.stdout
        assert "LOAD REPORT" not in completed.stdout + completed.stderr  # the expected report stays quiet
        tables.append(json.loads(out.read_text())["table"])
    assert tables[0] == tables[1]
    assert tables[0]["STS-B"] == pytest.approx(57.66, abs=0.02)
    assert tables[0]["Avg."] == pytest.approx(57.19, abs=0.02)


def test_cli_refuses_a_pooling_for_a_saved_model(tmp_path, tiny_model, senteval_dir):
    tiny_model.save(str(tmp_path / "saved"))
    command = [sys.executable, "-m", "st_simcse.evaluate", str(tmp_path / "saved"), "--pooling", "mean"]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 2
    assert "is a saved SentenceTransformer, which pools with its own modules" in completed.stderr
    assert "Traceback" not in completed.stderr
