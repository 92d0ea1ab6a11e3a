from __future__ import annotations

import json
import math
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
import recipe_process
import torch
from conftest import sentences
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer

from st_simcse import AlignmentUniformityEvaluator, evaluate, load_sts_tasks, sts_evaluator
from st_simcse.console import run_cli
from st_simcse.evaluation import command
from st_simcse.evaluation.evaluators import alignment_uniformity
from st_simcse.evaluation.plots import alignment_uniformity_figure, plot_alignment_uniformity
from st_simcse.evaluation.sts import STS_YEAR_SUBSETS, STSData


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
        arguments = [splade_tiny, "--senteval-dir", senteval_dir, *pooler, "--output", str(out)]
        # `python -m st_simcse.evaluate ...`, in a process forked from one that imported the libraries once.
        # Not the checkout: `-m` puts the working directory on sys.path (the wheel's test must import the wheel).
        completed = recipe_process.run("-m st_simcse.evaluate", *arguments, cwd=tmp_path)
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
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 2
    assert "is a saved SentenceTransformer, which pools with its own modules" in completed.stderr
    assert "Traceback" not in completed.stderr


def _write_scored_pairs(path, count: int = 40, seed: int = 3) -> tuple[list[str], list[str], list[float]]:
    """A csv of ``count`` random scored pairs; returns its columns."""
    texts = sentences(2 * count, seed=seed)
    scores = [round(float(x), 2) for x in np.random.default_rng(seed).uniform(0, 5, count)]
    rows = ["sentence1,sentence2,score", *(f"{a},{b},{s}" for a, b, s in zip(texts[::2], texts[1::2], scores))]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return texts[::2], texts[1::2], scores


@pytest.fixture
def splade_folder(splade_tiny, tmp_path) -> str:
    """A recipe-like saved model. splade-tiny's cosines spread out (a random BERT's are all near 1, so their order
    would be decided by rounding, which batching changes)."""
    from st_simcse import build_model

    build_model(splade_tiny, pooling="cls", max_seq_length=32).save(str(tmp_path / "saved"))
    return str(tmp_path / "saved")


def test_cli_scores_a_test_file_alone(tmp_path, splade_folder, capsys, hub_unreachable):
    """No --senteval-dir and the hub out of reach: only the pairs are scored, as scipy scores the model's cosines."""
    folder = splade_folder
    first, second, scores = _write_scored_pairs(tmp_path / "pairs.csv")
    out = tmp_path / "result.json"
    run_cli(evaluate.main, [str(folder), "--test-file", str(tmp_path / "pairs.csv"), "--output", str(out)])
    printed = capsys.readouterr().out

    embeddings = SentenceTransformer(str(folder), device="cpu").encode([*first, *second])  # sentences of <= 8 words
    a, b = embeddings[: len(first)], embeddings[len(first) :]
    cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    expected = spearmanr(cosines, scores).statistic
    payload = json.loads(out.read_text())
    assert payload["metrics"]["test_spearman_cosine"] == pytest.approx(expected, abs=1e-6)
    assert (payload["test_file"]["path"], payload["test_file"]["pairs"]) == (str(tmp_path / "pairs.csv"), 40)
    assert payload["test_file"]["spearman"] == pytest.approx(100 * expected, abs=0.006)  # x 100, 2 decimals
    assert "table" not in payload  # the STS tasks did not run
    caption = f"(model's own pooling) on the 40 pairs of --test-file {tmp_path / 'pairs.csv'}, Spearman x 100 of the"
    assert caption in printed and f"cosine: {100 * expected:.2f}" in printed, printed


def test_cli_reports_the_sts_tasks_and_a_test_file(tmp_path, splade_folder, capsys):
    folder = splade_folder
    root = make_senteval(tmp_path / "senteval")
    _write_scored_pairs(tmp_path / "pairs.csv")
    arguments = [str(folder), "--senteval-dir", str(root), "--test-file", str(tmp_path / "pairs.csv")]
    payload = run_cli(evaluate.main, arguments)
    printed = capsys.readouterr().out
    assert "on the 7 STS test tasks" in printed and "pairs of --test-file" in printed
    sts = sts_evaluator(str(root), "test")(SentenceTransformer(folder, device="cpu"))
    assert payload["table"] == sts_evaluator(str(root), "test").table(sts)
    assert payload["test_file"]["pairs"] == 40 and "test_spearman_cosine" in payload["metrics"]
    assert payload["metrics"]["sts_test_avg"] == pytest.approx(sts["sts_test_avg"], abs=1e-6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sentence1,sentence2,score\n", "has a header line ('sentence1,sentence2,score') but no pairs"),
        ("sentence1;sentence2;score\na;b;1\nc;d;2\n", "its lines look separated by ';'"),
        ("sentence1,sentence2,score\na,b,high\nc,d,1\n", "row 1: score 'high' is not a number"),
    ],
)
def test_cli_bad_test_file_fails_before_the_model_loads(tmp_path, monkeypatch, capsys, tiny_model, content, message):
    tiny_model.save(str(tmp_path / "saved"))
    (tmp_path / "pairs.csv").write_text(content)
    built = []
    monkeypatch.setattr(command, "load_model", lambda *args, **kwargs: built.append(args))
    capsys.readouterr()  # the fixture's and the save's progress bars
    with pytest.raises(SystemExit) as exited:
        run_cli(evaluate.main, [str(tmp_path / "saved"), "--test-file", str(tmp_path / "pairs.csv")])
    stderr = capsys.readouterr().err
    assert exited.value.code == 2 and built == []
    assert stderr.startswith("error: --test-file ") and stderr.count("\n") == 1 and message in stderr, stderr
    assert "Traceback" not in stderr


# A run's values often span a tiny range: matplotlib's defaults label such axes "-0.00012 ... + -3.7".
TINY_RANGE = [(step, 0.2601 - step * 1e-6, -3.70012 + step * 1.5e-7) for step in range(0, 875, 125)]
REALISTIC = [(step, 0.26 - step * 8e-5, -3.69 - step * 4e-5) for step in range(0, 875, 125)]


@pytest.mark.parametrize("points", [REALISTIC, TINY_RANGE, REALISTIC[:1]], ids=["realistic", "tiny", "one"])
def test_alignment_uniformity_plot_has_plain_readable_ticks(tmp_path, points):
    figure = alignment_uniformity_figure(points)
    try:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        axes = figure.axes[0]
        for axis in (axes.xaxis, axes.yaxis):
            assert axis.get_offset_text().get_text() == ""  # no "+ -3.7" or "1e-5" beside the axis
            low, high = sorted(axis.get_view_interval())
            coordinate = 0 if axis is axes.xaxis else 1
            ticks = [
                label
                for label in axis.get_ticklabels()
                if label.get_visible() and label.get_text() and low <= label.get_position()[coordinate] <= high
            ]
            assert 2 <= len(ticks) <= 6
            texts = [label.get_text().replace("\N{MINUS SIGN}", "-") for label in ticks]
            assert len(set(texts)) == len(texts) and not any("e" in text for text in texts), texts
            for label, text in zip(ticks, texts):  # each label is its tick's own value, written out
                position = label.get_position()[coordinate]
                decimals = len(text.split(".")[1]) if "." in text else 0
                assert float(text) == pytest.approx(position, abs=0.6 * 10**-decimals)
            boxes = [label.get_window_extent(renderer) for label in ticks]
            assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]), texts
        inside = figure.bbox
        for text in axes.texts:  # the step labels
            box = text.get_window_extent(renderer)
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
    finally:
        plt.close(figure)
    plot_alignment_uniformity(points, str(tmp_path / "align_uniform.png"))
    assert (tmp_path / "align_uniform.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
