"""Watch, publish and rerun a run the way Hugging Face users do: --report-to through transformers' own integrations
(read back with each tracker's own reader), a model card that tells the truth, --push-to-hub (its checks and the exact
call; no hub is in reach here), --config (a run's arguments.json reruns it)."""

from __future__ import annotations

import glob
import json
import struct
import sys

import pytest
import yaml
from conftest import REPO, fails_before_loading, installed_trackers, needs_testbed

sys.path.insert(0, str(REPO / "recipes"))
import unsup_wiki  # noqa: E402

TASKS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R")


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def wandb_history(folder) -> dict[str, list[tuple[int, float]]]:
    """The history records of W&B's offline run file (a LevelDB-style log of wandb's own protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data = open(glob.glob(f"{folder}/wandb/offline-run-*/run-*.wandb")[0], "rb").read()
    position, payloads, pending = 7, [], b""  # after the file's header: blocks of 32 KiB, records of 7-byte heads
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        payload, position = data[position + 7 : position + 7 + length], position + 7 + length
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            payloads.append(pending)
    history: dict[str, list[tuple[int, float]]] = {}
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            items = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
            }
            for key, value in items.items():
                history.setdefault(key, []).append((int(items["train/global_step"]), value))
    return history


@pytest.mark.xdist_group("finished-unsup")  # one worker runs the shared run, the others never wait
@pytest.mark.slow
@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow", "wandb"])
def test_the_run_streams_to_the_trackers(rerun_from_config, tracker, monkeypatch):
    if tracker not in installed_trackers():
        pytest.skip(f"the {tracker} package is not installed here")
    run = rerun_from_config
    assert run.returncode == 0, run.stderr[-3000:]
    if tracker == "tensorboard":
        series = tensorboard_scalars(run.output_dir / "runs" / "run")
    elif tracker == "mlflow":
        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        client = MlflowClient(tracking_uri=(run.output_dir.parent / "mlruns").as_uri())
        (mlflow_run,) = client.search_runs(client.search_experiments()[0].experiment_id)
        keys = mlflow_run.data.metrics
        series = {
            key.replace("eval_", "eval/").replace("test_", "test/", 1) if key.startswith(("eval_", "test_")) else
            f"train/{key}": [(m.step, m.value) for m in client.get_metric_history(mlflow_run.info.run_id, key)]
            for key in keys
        }  # fmt: skip
    else:
        series = wandb_history(run.output_dir.parent)
    steps = {key: [step for step, _ in values] for key, values in series.items()}
    assert steps["eval/sts_dev_avg"] == [0, 10, 20, 30]  # the untrained model's at 0, then every --eval-steps
    assert steps["eval/STS-B_alignment"] == steps["eval/STS-B_uniformity"] == [0, 10, 20, 30]
    assert steps["train/loss"] == steps["train/learning_rate"] == steps["train/seconds_per_step"] == [10, 20, 30]
    metrics = json.loads((run.output_dir / "metrics.json").read_text())
    final = {key: values[-1][1] for key, values in series.items()}
    for task in TASKS:
        assert final[f"test/{task}"] == pytest.approx(metrics["test"][task])
    assert final["test/avg"] == pytest.approx(metrics["test"]["Avg."])
    assert final["test/file_spearman"] == pytest.approx(metrics["test_file"]["spearman"])
    dev = [entry["sts_dev_avg"] for entry in metrics["dev_history"]]
    assert [value for _, value in series["eval/sts_dev_avg"]] == pytest.approx(dev)


@pytest.mark.xdist_group("finished-unsup")  # one worker runs the shared run, the others never wait
@pytest.mark.slow
def test_a_run_reruns_from_its_arguments_json(finished_unsup_run, rerun_from_config):
    """--config OUT/arguments.json --output-dir NEW: the same options, the same dev history at the same seed."""
    original, rerun = (json.loads((run.output_dir / "arguments.json").read_text()) for run in
                       (finished_unsup_run, rerun_from_config))  # fmt: skip
    changed = {key for key in original if original[key] != rerun.get(key)}
    assert changed == {"output_dir", "report_to", "config"}
    histories = [json.loads((run.output_dir / "metrics.json").read_text())["dev_history"] for run in
                 (finished_unsup_run, rerun_from_config)]  # fmt: skip
    assert histories[0] == histories[1]


@needs_testbed
def test_a_tracker_whose_package_is_missing_is_refused_naming_it(tmp_path, monkeypatch, capsys):
    from st_simcse.training import reporting

    monkeypatch.setattr(reporting, "installed", lambda name: name != "comet_ml")
    arguments = ["--quick", "--report-to", "tensorboard,comet_ml"]
    message = "comet_ml needs its package, which is not installed: pip install comet-ml"
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, message, tmp_path / "o")


def test_the_trackers_are_transformers_own():
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    from st_simcse.training.reporting import available_integrations

    assert set(available_integrations()) == set(INTEGRATION_TO_CALLBACK)


@needs_testbed
def test_a_tracker_newer_than_the_installed_transformers_is_refused(monkeypatch, capsys, tmp_path):
    from st_simcse.training import reporting

    monkeypatch.setenv("KUBEFLOW_TRAINER_SERVER_URL", "http://localhost:1")
    monkeypatch.setattr(reporting, "installed_transformers", lambda: "5.1.0")
    assert "kubeflow" not in reporting.available_integrations() and "wandb" in reporting.available_integrations()
    message = "kubeflow came in transformers 5.4, and 5.1.0 is installed: pip install -U 'transformers>=5.4'"
    fails_before_loading(monkeypatch, capsys, unsup_wiki, ["--quick", "--report-to", "kubeflow"], message, tmp_path)


def test_a_config_file_sets_options_and_the_command_line_wins(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"lr": 1e-4, "max-steps": 7, "loss": "esimcse", "quick": True}))
    args = unsup_wiki.parse_args(["--config", str(config), "--max-steps", "9"])
    assert (args.lr, args.max_steps, args.loss, args.quick) == (1e-4, 9, "esimcse", True)
    assert args.augmentation == "word_repetition"  # the preset --loss esimcse brings, as on the command line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"lr": 1e-4, "learning_rate": 3, "bogus": 1}, "unknown option(s) bogus, learning_rate"),
        ({"loss": "simcse2"}, "--config"),
        ({"max_steps": "many"}, "invalid int value: 'many'"),
        ({"mlp": "false"}, "mlp takes true or false, got 'false'"),
        ({"max_steps": False}, "max_steps takes one value, got False"),
    ],
)
def test_a_bad_config_is_one_line(tmp_path, monkeypatch, capsys, train_40k, content, message):
    config = tmp_path / "run.json"
    config.write_text(json.dumps(content))
    arguments = ["--quick", "--config", str(config)]
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, message, tmp_path / "o")


@pytest.mark.xdist_group("finished-unsup")  # one worker runs the shared run, the others never wait
@pytest.mark.slow
def test_the_card_tells_the_truth(finished_unsup_run, sts_pairs_file):
    card = (finished_unsup_run.output_dir / "README.md").read_text(encoding="utf-8")
    metrics = json.loads((finished_unsup_run.output_dir / "metrics.json").read_text())
    front = yaml.safe_load(card.split("---")[1])
    results = {
        (result["dataset"]["type"], metric["type"]): metric["value"]
        for result in front["model-index"][0]["results"]
        for metric in result["metrics"]
    }
    for task in TASKS:  # the 7 STS test tasks, each under its own name, and their average
        assert 100 * results[(task, "spearman_cosine")] == pytest.approx(metrics["test"][task], abs=0.006)
    assert 100 * results[("sts_test", "avg")] == pytest.approx(metrics["test"]["Avg."], abs=0.006)
    assert 100 * results[("sts_pairs.csv", "spearman_cosine")] == pytest.approx(
        metrics["test_file"]["spearman"], abs=0.006
    )
    assert 100 * results[("sts_dev", "avg")] == pytest.approx(metrics["best_dev"], abs=0.006)  # the kept model's
    assert "trained on the train_40k.txt dataset" in card and "Size: 40,000 training samples" in card
    assert "SimCSELoss" in card and '"temperature": 0.05' in card and '"mlp_head": true' in card
    assert "The saved weights are the untrained start model's" not in card  # it was trained (best step 30)
