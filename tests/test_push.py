"""--push-to-hub as far as a machine without a hub allows: every check before training (the repository id, a token, the
hub in reach, offline mode), the exact call of sentence-transformers' push_to_hub with what it uploads, and a push that
fails after training (the model kept, the command to push it by hand)."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO, fails_before_loading, needs_testbed
from sentence_transformers import SentenceTransformer

from st_simcse.training.loop import publish
from st_simcse.training.run import PushFailed

sys.path.insert(0, str(REPO / "recipes"))
import unsup_wiki  # noqa: E402


@pytest.fixture
def a_token(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token of the machine's user
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")


@needs_testbed
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--push-to-hub", "--hub-model-id", "me/bad name!"], "is not a valid hub repository id"),
        (["--hub-model-id", "me/model"], "--hub-model-id and --hub-private say how to push: add --push-to-hub"),
        (["--push-to-hub", "--hub-model-id", "me/model"], "the Hugging Face hub cannot be reached from this machine"),
    ],
)
def test_push_checks_before_training(tmp_path, monkeypatch, capsys, a_token, hub_unreachable, arguments, message):
    fails_before_loading(monkeypatch, capsys, unsup_wiki, ["--quick", *arguments], message, tmp_path / "o")


@needs_testbed
def test_push_needs_a_token_and_the_hub(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    arguments = ["--quick", "--push-to-hub", "--hub-model-id", "me/model"]
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, "needs a Hugging Face token", tmp_path / "o")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fails_before_loading(monkeypatch, capsys, unsup_wiki, arguments, "HF_HUB_OFFLINE=1 is set", tmp_path / "o")


def finished_folder(tmp_path, tiny_model):
    """What a finished run leaves: the model and its card, and the run's own files."""
    folder = tmp_path / "out"
    tiny_model.save(str(folder))
    for name in ("metrics.json", "arguments.json", "dev_curve.png", "run.log"):
        (folder / name).write_text("{}")
    (folder / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-4" / "optimizer.pt").write_bytes(b"big")
    return folder


def test_the_push_is_sentence_transformers_push_of_the_model_and_its_card(tmp_path, monkeypatch, tiny_model):
    folder = finished_folder(tmp_path, tiny_model)
    calls = []

    def push_to_hub(self, repo_id, **options):
        uploaded = sorted(path.name for path in __import__("pathlib").Path(options["local_model_path"]).iterdir())
        calls.append((repo_id, options["private"], options["exist_ok"], uploaded))
        return f"https://huggingface.co/{repo_id}/commit/abc"

    monkeypatch.setattr(SentenceTransformer, "push_to_hub", push_to_hub)
    publish(tiny_model, str(folder), {"hub_model_id": "me/simcse-model", "hub_private": True})
    ((repo_id, private, exist_ok, uploaded),) = calls
    assert (repo_id, private, exist_ok) == ("me/simcse-model", True, True)
    assert {"README.md", "modules.json", "model.safetensors", "metrics.json", "dev_curve.png"} <= set(uploaded)
    assert not {"checkpoints", "run.log"} & set(uploaded)  # how the run went stays local
    publish(tiny_model, str(folder), {"hub_model_id": None})
    assert calls[-1][0] == "out"  # no --hub-model-id: the output folder's name, in the token's own namespace


def test_a_push_that_fails_keeps_the_model_and_says_how_to_push_it(tmp_path, monkeypatch, capsys, tiny_model):
    from st_simcse.training.command import run_main

    folder = finished_folder(tmp_path, tiny_model)

    def refused(self, repo_id, **options):
        raise RuntimeError("401 Client Error: Unauthorized\nInvalid credentials")

    monkeypatch.setattr(SentenceTransformer, "push_to_hub", refused)
    monkeypatch.setattr(sys, "argv", ["recipe.py"])
    with pytest.raises(SystemExit) as exited:
        run_main(lambda argv: publish(tiny_model, str(folder), {"hub_model_id": "me/model"}))
    assert exited.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: the push to the hub failed: RuntimeError: 401 Client Error: Unauthorized Invalid")
    assert f"The model is kept in {folder}" in line and "push_to_hub('me/model', exist_ok=True" in line
    assert (folder / "model.safetensors").is_file()
    assert isinstance(PushFailed(str(folder), "me/model", "x").line(), str)
