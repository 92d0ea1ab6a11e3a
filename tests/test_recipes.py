"""The recipes end to end on the offline testbed (a few dozen steps), resume, and bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
from conftest import FINISHED_UNSUP, REPO, run_recipe
from sentence_transformers import SentenceTransformer
from transformers.utils import is_flash_attn_2_available

OUTPUTS = (
    "metrics.json",
    "dev_curve.png",
    "align_uniform.png",
    "dev_history.json",
    "modules.json",
    "arguments.json",
    "run.log",
)


def file_digests(folder) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_complete_run(output_dir, built_in_only=True):
    for name in OUTPUTS:
        assert (output_dir / name).is_file(), f"missing {name}"
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert set(metrics["test"]) == {"STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R", "Avg."}
    modules = json.loads((output_dir / "modules.json").read_text())
    assert all(module["type"].startswith("sentence_transformers.") for module in modules)
    model = SentenceTransformer(str(output_dir))  # plain loading: no trust_remote_code, built-in modules only
    assert model.max_seq_length == 512  # whole sentences, not the training length of 32
    assert model.encode(["a man plays a guitar", "a dog runs"]).shape[0] == 2
    return metrics, model


@pytest.mark.xdist_group("finished-unsup")  # one worker runs the shared run, the others never wait
@pytest.mark.slow
def test_unsup_recipe_end_to_end(finished_unsup_run, splade_tiny):
    """The session's shared run (conftest.FINISHED_UNSUP: --quick, 30 steps, the dev set every 10)."""
    out, result = finished_unsup_run.output_dir, finished_unsup_run
    assert result.returncode == 0, result.stderr[-3000:]
    metrics, model = assert_complete_run(out)
    assert [entry["steps"] for entry in metrics["dev_history"]] == [0, 10, 20, 30]  # 0: the untrained model
    assert metrics["untrained_dev"] < metrics["best_dev"]
    assert metrics["arguments"]["lr"] == 3e-4 and metrics["arguments"]["model"] == splade_tiny
    assert len(model) == 2  # Transformer + Pooling: the training-only MLP head is not in the saved model
    # What a person reads: one line per evaluation, the captioned table, where everything went; the libraries'
    # detail (the load report, the evaluators' per-task lines) is in run.log.
    assert [line.split(":")[0] for line in result.stdout.splitlines() if "STS-B dev Spearman" in line] == [
        "step 0 (untrained)",
        "step 10",
        "step 20",
        "step 30",
    ]
    assert "STS test, Spearman x 100 (SentEval protocol), of the best model (step 30, STS-B dev" in result.stdout
    assert (
        "Avg." in result.stdout
        and str(out / "run.log") in result.stdout
        and str(out / "metrics.json") in (result.stdout)
    )
    assert "LOAD REPORT" not in result.stdout + result.stderr and "pin_memory" not in result.stderr
    # Output to a pipe (a scheduler's log): whole progress lines, no carriage-return redraws of a bar.
    assert "\r" not in result.stdout + result.stderr and "step 30/30 (100%)" in result.stderr
    # A finished run keeps no checkpoints (nothing to resume) and gives its folder up.
    assert not (out / "checkpoints").exists() and not (out / "run.lock").exists()
    assert "LOAD REPORT" in (out / "run.log").read_text()
    # The Trainer's metrics dicts (each evaluation's, the final train_runtime) go to run.log, not the console.
    assert "eval_sts_dev_avg" not in result.stdout + result.stderr and "train_runtime" not in result.stderr
    assert "eval_sts_dev_avg" in (out / "run.log").read_text() and "train_runtime" in (out / "run.log").read_text()

    # A finished run is never touched again: --resume says so and changes nothing; a plain rerun is refused.
    before = file_digests(out)
    arguments = [*FINISHED_UNSUP, "--output-dir", str(out)]
    resumed = run_recipe("unsup_wiki.py", *arguments, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "holds a finished run: nothing to resume, nothing changed" in resumed.stdout
    assert "Loading weights" not in resumed.stderr  # it stopped before loading a model
    rerun = run_recipe("unsup_wiki.py", *arguments)
    assert rerun.returncode != 0 and "already holds a finished run" in rerun.stderr
    assert file_digests(out) == before


@pytest.mark.slow
def test_sup_recipe_end_to_end(tmp_path, splade_tiny, senteval_dir, nli_triplets):
    out = tmp_path / "sup"
    result = run_recipe("sup_nli.py", "--quick", "--max-steps", "4", "--eval-steps", "2", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics, model = assert_complete_run(out)
    assert len(model) == 3 and type(model[2]).__name__ == "Dense"  # the MLP is kept at test time


@pytest.mark.slow
def test_sup_recipe_accepts_positive_pairs(tmp_path, splade_tiny, senteval_dir, nli_triplets):
    """A two-column sent0,sent1 csv (positives without hard negatives) trains, as in the reference code."""
    pairs = tmp_path / "pairs.csv"
    with open(nli_triplets, newline="", encoding="utf-8") as source, open(pairs, "w", newline="") as target:
        rows = list(csv.reader(source))[:401]
        csv.writer(target).writerows(row[:2] for row in rows)
    assert pairs.read_text().splitlines()[0] == "sent0,sent1"
    out = tmp_path / "sup-pairs"
    arguments = ["--quick", "--train-file", str(pairs), "--max-steps", "4", "--eval-steps", "2", "--batch-size", "32"]
    result = run_recipe("sup_nli.py", *arguments, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "400 training pairs (no hard negatives)" in result.stdout
    metrics, _ = assert_complete_run(out)
    assert [entry["steps"] for entry in metrics["dev_history"]] == [0, 2, 4]


@pytest.mark.slow
def test_resume_after_kill(tmp_path, splade_tiny, senteval_dir, train_40k):
    out = tmp_path / "resume"
    arguments = ["--quick", "--max-steps", "60", "--eval-steps", "10", "--batch-size", "16", "--keep-checkpoints"]
    arguments += ["--output-dir", str(out)]
    command = [sys.executable, str(REPO / "recipes" / "unsup_wiki.py"), *arguments]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_checkpoint = out / "checkpoints" / "checkpoint-10" / "trainer_state.json"
    deadline = time.time() + 300
    while not first_checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # let the checkpoint finish writing its files
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first_checkpoint.exists(), "the run never reached its first checkpoint"
    assert not (out / "metrics.json").exists(), "the run finished before it was killed; the test proves nothing"
    killed_at = max(
        int(name.split("-")[1]) for name in os.listdir(out / "checkpoints") if name.startswith("checkpoint-")
    )

    # Without --resume, the started run is protected; a resume with other options is refused before it writes.
    before = file_digests(out)
    refused = run_recipe("unsup_wiki.py", *arguments)
    assert refused.returncode == 2 and "already holds a started run" in refused.stderr
    assert "pass --resume" in refused.stderr and one_error_line(refused.stderr)
    changed = run_recipe("unsup_wiki.py", *arguments, "--lr", "1e-4", "--resume")
    assert changed.returncode == 2 and one_error_line(changed.stderr)
    assert "changes options of the run" in changed.stderr and "lr: 0.0003 -> 0.0001" in changed.stderr
    assert file_digests(out) == before

    resumed = run_recipe("unsup_wiki.py", *arguments, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {out / 'checkpoints'}/checkpoint-{killed_at}" in resumed.stdout
    metrics, _ = assert_complete_run(out)
    assert metrics["resumed_from_step"] == killed_at
    steps = [entry["steps"] for entry in metrics["dev_history"]]
    assert steps == list(range(0, 61, 10))  # each evaluation once, the untrained model's (step 0) first
    state = json.loads((out / "checkpoints" / "checkpoint-60" / "trainer_state.json").read_text())
    assert state["global_step"] == 60


@pytest.mark.xdist_group("finished-unsup")  # one worker runs the shared run, the others never wait
@pytest.mark.slow
def test_seed_controls_the_run(finished_unsup_run, rerun_from_config):
    """Same seed, same metrics (CPU): the shared run and the same run again, from its arguments.json, at its seed 42.
    (Another seed, other metrics: the multi-seed test below.)"""

    def metrics_of(run) -> dict:
        assert run.returncode == 0, run.stderr[-3000:]
        metrics = json.loads((run.output_dir / "metrics.json").read_text())
        assert metrics["arguments"]["seed"] == 42
        return {"test": metrics["test"], "dev": [entry["sts_dev_avg"] for entry in metrics["dev_history"]]}

    assert metrics_of(finished_unsup_run) == metrics_of(rerun_from_config)


sys.path.insert(0, str(REPO / "recipes"))
import sup_nli  # noqa: E402
import unsup_wiki  # noqa: E402
from conftest import fails_before_loading  # noqa: E402


def test_missing_train_file(tmp_path, monkeypatch, capsys, senteval_dir):
    arguments = ["--quick", "--train-file", str(tmp_path / "nope.txt")]
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, "Training file not found", tmp_path / "o")


def test_empty_train_file(tmp_path, monkeypatch, capsys, senteval_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    arguments = ["--quick", "--train-file", str(empty)]
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, "holds no sentences", tmp_path / "o")


def test_csv_without_columns(tmp_path, monkeypatch, capsys, senteval_dir):
    bad = tmp_path / "nli.csv"
    bad.write_text("premise,hypothesis,label\na,b,entailment\n")
    message = "none of them sentence-transformers' (anchor, positive[, negative]) or the paper's (sent0, sent1"
    fails_before_loading(monkeypatch, capsys, sup_nli, ["--quick", "--train-file", str(bad)], message, tmp_path / "o")


def test_senteval_dir_without_tasks(tmp_path, monkeypatch, capsys, train_40k):
    (tmp_path / "senteval" / "STS").mkdir(parents=True)
    arguments = ["--quick", "--senteval-dir", str(tmp_path / "senteval")]
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, "Missing task folder", tmp_path / "o")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "./no-such-model"], "--model ./no-such-model: no such folder"),
        (["--temperature", "0"], "--temperature must be a positive number"),
        (["--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--lr", "nan"], "--lr must be a finite number, got nan"),
        (["--weight-decay=-inf"], "--weight-decay must be a finite number, got -inf"),
        (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
        (["--batch-size", "1"], "--batch-size must be at least 2"),
        (["--loss", "mnrl", "--mlm-weight", "0.1"], "--mlm-weight 0.1 needs --loss simcse"),
        (["--mlm-probability", "0"], "--mlm-probability must be in (0, 1)"),
        (["--loss", "esimcse", "--momentum", "1"], "--momentum must be in [0, 1)"),
        (["--augmentation", "crop", "--augmentation-rate", "1.2"], "needs a fraction in [0, 1)"),
        (["--augmentation", "crop", "--shared-dropout-mask"], "--shared-dropout-mask (the paper's 'fixed 0.1'"),
        (["--seeds", "1", "1"], "--seeds lists a seed twice"),
        (["--compile-mode", "reduce-overhead"], "--compile-mode reduce-overhead compiles nothing without --compile"),
        pytest.param(
            ["--attention", "flash_attention_2"],
            "--attention flash_attention_2 needs the flash-attn package and a CUDA GPU",
            marks=pytest.mark.skipif(is_flash_attn_2_available(), reason="flash attention is usable here"),
        ),
    ],
)
def test_bad_values_fail_at_once(tmp_path, monkeypatch, capsys, senteval_dir, train_40k, arguments, message):
    fails_before_loading(monkeypatch, capsys, unsup_wiki, ["--quick", *arguments], message, tmp_path / "o")


def test_help_explains_paper_values():
    result = run_recipe("unsup_wiki.py", "--help")
    assert result.returncode == 0
    text_of_help = " ".join(result.stdout.split())  # argparse wraps lines
    for text in (
        "--temperature",
        "paper: 0.05",
        "--batch-size",
        "paper: 64",
        "paper: 3e-05",
        "--resume",
        "--quick",
        "--dropout",
    ):
        assert text in text_of_help
    result = run_recipe("sup_nli.py", "--help")
    assert "paper: 512" in result.stdout and "--hard-negative-weight" in result.stdout


def test_esimcse_brings_word_repetition_unless_told_otherwise():
    assert unsup_wiki.parse_args(["--loss", "esimcse"]).augmentation == "word_repetition"
    assert unsup_wiki.parse_args(["--loss", "esimcse", "--augmentation", "none"]).augmentation == "none"
    assert unsup_wiki.parse_args(["--quick"]).augmentation == "none"


def test_recipe_builds_each_method(splade_tiny):
    from st_simcse import ESimCSELoss, SimCSELoss
    from st_simcse.data.augmentation import Crop, WordRepetition

    def built(*arguments):
        args = unsup_wiki.parse_args(["--quick", *arguments])
        return unsup_wiki.build_model_and_loss(args)[1], args

    loss, _ = built("--mlm-weight", "0.1")
    assert isinstance(loss, SimCSELoss) and loss.mlm_weight == 0.1 and loss.mlm_head_source == "checkpoint"
    loss, args = built("--loss", "esimcse")
    assert isinstance(loss, ESimCSELoss) and (loss.momentum, loss.queue_size) == (0.995, 160)
    assert unsup_wiki.training_data(args).augmentation == WordRepetition(0.32)
    loss, args = built("--shared-dropout-mask")
    assert loss.shared_dropout_mask
    args = unsup_wiki.parse_args(["--quick", "--augmentation", "crop", "--augmentation-rate", "0.2"])
    data = unsup_wiki.training_data(args)
    assert data.augmentation == Crop(0.2) and len(data[0].texts) == 2  # (sentence, cropped sentence)


@pytest.mark.slow
def test_seeds_report_mean_and_std_and_keep_the_best_model(tmp_path, splade_tiny, senteval_dir, train_40k):
    out = tmp_path / "seeds"
    arguments = ["--quick", "--loss", "esimcse", "--max-steps", "6", "--eval-steps", "3", "--batch-size", "16"]
    result = run_recipe("unsup_wiki.py", *arguments, "--seeds", "1", "2", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "seeds.json").read_text())
    runs = {seed: json.loads((out / f"seed-{seed}" / "metrics.json").read_text()) for seed in (1, 2)}
    assert summary["seeds"] == [1, 2] and runs[1]["arguments"]["seed"] == 1
    assert runs[1]["test"] != runs[2]["test"]  # another seed, other metrics
    first, other = ([entry["sts_dev_avg"] for entry in runs[seed]["dev_history"]] for seed in (1, 2))
    assert first[0] == other[0] and first[1:] != other[1:]  # the same untrained model, then other training
    for column in ("STS-B", "Avg."):
        values = [runs[1]["test"][column], runs[2]["test"][column]]
        assert summary["mean"][column] == pytest.approx(sum(values) / 2, abs=0.006)
        assert summary["std"][column] == pytest.approx(abs(values[0] - values[1]) / 2**0.5, abs=0.006)
    best = max((1, 2), key=lambda seed: runs[seed]["best_dev"])
    assert summary["best_seed"] == best and f"Best seed on dev: {best}" in result.stdout
    assert (out / f"seed-{best}" / "modules.json").is_file()
    pruned = out / f"seed-{3 - best}"
    assert not (pruned / "modules.json").exists() and not (pruned / "checkpoints").exists()
    assert (pruned / "metrics.json").is_file() and (pruned / "run.log").is_file()


def one_error_line(stderr: str) -> bool:
    """A refusal's whole stderr: one ``error:`` line, no traceback."""
    return stderr.startswith("error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr


def terminal_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def interrupt_after_checkpoint(command: list[str], checkpoint, env=None) -> subprocess.CompletedProcess:
    """Start ``command``, press Ctrl-C (SIGINT) once ``checkpoint`` is complete, and wait for it to stop. The child
    gets SIGINT as a terminal gives it (default handling, not blocked), whatever this test process inherited."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=terminal_sigint,
    )
    deadline = time.time() + 300
    while not (checkpoint / "trainer_state.json").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # let the checkpoint finish writing its files
    assert process.poll() is None, "the run ended before it could be interrupted; the test proves nothing"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_ctrl_c_names_the_resume_command_and_it_resumes_the_whole_run(tmp_path, splade_tiny, senteval_dir, train_40k):
    out = tmp_path / "interrupted"
    arguments = ["--quick", "--max-steps", "60", "--eval-steps", "10", "--batch-size", "16", "--seed", "7"]
    command = [sys.executable, str(REPO / "recipes" / "unsup_wiki.py"), *arguments, "--output-dir", str(out)]
    stopped = interrupt_after_checkpoint(command, out / "checkpoints" / "checkpoint-10")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr and not (out / "metrics.json").exists()
    last = stopped.stderr.strip().split("\n")[-1]  # the last line (a progress bar's redraws are split by \r)
    assert stopped.stderr.count("interrupted; the last checkpoint") == 1 and "KeyboardInterrupt" not in stopped.stderr
    assert last.startswith(f"interrupted; the last checkpoint is {out / 'checkpoints'}/checkpoint-"), last
    resume = last.split("Resume with: ")[1]
    assert resume == f"python {REPO / 'recipes' / 'unsup_wiki.py'} --output-dir {out} --resume"
    step = int(last.split("checkpoint-")[1].split(".")[0])
    before = json.loads((out / "dev_history.json").read_text())["train_seconds"][str(step)]

    # --resume reads the run's options back, but one given explicitly that differs is refused; nothing changes.
    digests = file_digests(out)
    changed = run_recipe("unsup_wiki.py", "--output-dir", str(out), "--resume", "--batch-size", "32")
    assert changed.returncode == 2 and "batch_size: 16 -> 32" in changed.stderr and one_error_line(changed.stderr)
    assert file_digests(out) == digests

    # The printed command, as it is: the run's own options come back from its arguments.json.
    resumed = subprocess.run([sys.executable, *shlex.split(resume)[1:]], cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics, _ = assert_complete_run(out)
    assert metrics["resumed_from_step"] == step and metrics["arguments"]["seed"] == 7
    assert [entry["steps"] for entry in metrics["dev_history"]] == list(range(0, 61, 10))
    # The whole run's training time, not only the resumed part (the Trainer's own train_runtime, in run.log).
    resumed_part = float(re.findall(r"'train_runtime': '?([0-9.]+)", (out / "run.log").read_text())[-1])
    assert metrics["train_seconds"] >= before + resumed_part - 0.5 and before > 0.5
    # An option given explicitly that differs is still refused.
    changed = run_recipe("unsup_wiki.py", "--output-dir", str(out), "--resume", "--lr", "0.1")
    assert "holds a finished run" in changed.stdout  # finished: nothing to resume, nothing changed


def test_a_sentence_transformer_start_model_gets_the_studys_setting(splade_tiny):
    """A trained sentence model is continued with GuidedSimCSELoss, no MLP (the domain study's setting); a
    transformers checkpoint keeps the paper's SimCSE; explicit options and the other losses keep theirs."""
    from conftest import SHARED

    from st_simcse import GuidedSimCSELoss, SimCSELoss

    minilm = SHARED / "models" / "all-MiniLM-L6-v2"
    if not minilm.exists():
        pytest.skip(f"needs {minilm}")
    args = unsup_wiki.parse_args(["--model", str(minilm)])
    assert (args.mlp, args.distillation_weight) == (False, unsup_wiki.GUIDED_DISTILLATION_WEIGHT)
    loss = unsup_wiki.build_model_and_loss(args)[1]
    assert type(loss) is GuidedSimCSELoss and loss.distillation_weight == unsup_wiki.GUIDED_DISTILLATION_WEIGHT
    assert unsup_wiki.parse_args(["--model", str(minilm), "--loss", "esimcse"]).distillation_weight == 0.0
    plain = unsup_wiki.parse_args(["--model", str(minilm), "--distillation-weight", "0", "--mlp"])
    assert type(unsup_wiki.build_model_and_loss(plain)[1]) is SimCSELoss
    paper = unsup_wiki.parse_args(["--quick"])
    assert (paper.mlp, paper.distillation_weight, paper.false_negative_threshold) == (True, 0.0, None)
