from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

# datasets' cache (the Arrow copies of the corpora tests read) in a folder of this session, not the user's cache.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="st-simcse-datasets-"))
# The tests do not depend on the caller's environment: the Hugging Face libraries' offline switches are cleared here
# (the recipes' subprocesses inherit that), and a test that needs one sets it itself.
for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(variable, None)
# Under pytest-xdist each worker is one process on one core: one thread each (the recipes' subprocesses inherit it),
# else two workers' OpenMP threads spin against each other on 2 cores.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

if XDIST_WORKER:
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SPLADE_TINY = SHARED / "models" / "splade-tiny"
SENTEVAL = SHARED / "data" / "senteval"
TRAIN_40K = SHARED / "data" / "unsup" / "train_40k.txt"
NLI_TRIPLETS = SHARED / "data" / "nli" / "snli_triplets.csv"

WORDS = (
    "a the man woman dog cat is are plays playing guitar piano runs running sits on in park street red blue big small "
    "car drives eats food child children two three people walk walking water beach sun bright dark house"
).split()


# For a test that runs a recipe with --quick, whose model and data are the shared testbed's (checked before anything
# else the test is about).
needs_testbed = pytest.mark.skipif(
    not all(path.exists() for path in (SPLADE_TINY, SENTEVAL, TRAIN_40K, NLI_TRIPLETS)),
    reason=f"needs {SHARED} (the shared offline testbed beside the checkout, what --quick runs on), absent here",
)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the shared offline testbed beside the checkout), which is absent here")
    return path


@pytest.fixture(scope="session")
def splade_tiny() -> str:
    return str(_require(SPLADE_TINY))


@pytest.fixture(scope="session")
def senteval_dir() -> str:
    return str(_require(SENTEVAL))


@pytest.fixture(scope="session")
def train_40k() -> str:
    return str(_require(TRAIN_40K))


@pytest.fixture(scope="session")
def nli_triplets() -> str:
    return str(_require(NLI_TRIPLETS))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    """A randomly initialised 2-layer BERT (hidden 32) with a small WordPiece vocabulary, saved to a temp dir."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]]
    vocab += list("abcdefghijklmnopqrstuvwxyz.,")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=64)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def tiny_model(tiny_bert_dir):
    from st_simcse import build_model

    torch.manual_seed(0)
    return build_model(tiny_bert_dir, pooling="cls", max_seq_length=32)


def sentences(count: int, seed: int = 0) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        length = int(torch.randint(3, 9, (1,), generator=generator))
        out.append(" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (length,), generator=generator)))
    return out


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_recipe(
    recipe: str, *arguments: str, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python recipes/RECIPE ARGUMENTS`` in a process of its own, from the repository root (``env``: its
    environment), forked from a server that imported the heavy libraries once (tests/recipe_process.py)."""
    import recipe_process

    return recipe_process.run(REPO / "recipes" / recipe, *arguments, cwd=REPO, env=env, timeout=timeout)


def record_model_builds(monkeypatch) -> list:
    """Every way st_simcse builds or loads a model, replaced by a recorder: the list of the calls made."""
    import st_simcse
    from st_simcse.models import build, released

    built: list = []
    for module, name in (
        (st_simcse, "build_model"),
        (build, "build_model"),
        (st_simcse, "load_simcse_model"),
        (released, "load_simcse_model"),
        (released, "reference_pooler_model"),
    ):
        monkeypatch.setattr(module, name, lambda *args, **kwargs: built.append(args))
    return built


def fails_before_loading(
    monkeypatch, capsys, recipe, arguments: list[str], message: str, output_dir, seconds: float | None = None
) -> str:
    """Run the recipe in this process with a model builder that records every call: a user error must end the
    run with one ``error:`` line (no traceback) and exit code 2, before any model is built and before anything is
    written, within ``seconds`` where given. Returns the error line."""
    import time

    from st_simcse.training.command import run_main

    built = record_model_builds(monkeypatch)
    monkeypatch.setattr(sys, "argv", [recipe.__file__, *arguments, "--output-dir", str(output_dir)])
    existed = output_dir.exists()
    before = sorted(output_dir.rglob("*")) if existed else None
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        run_main(recipe.main)
    elapsed = time.perf_counter() - started
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr and message in stderr, stderr
    assert built == [], "the model was built"
    if existed:
        assert sorted(output_dir.rglob("*")) == before, "the failed run changed its output folder"
    else:
        assert not output_dir.exists(), "the failed run wrote its output folder"
    if seconds is not None:
        assert elapsed < seconds, f"the error took {elapsed:.1f} s"
    return stderr


@pytest.fixture
def hub_unreachable(monkeypatch):
    """The Hugging Face hub out of reach, as on an offline machine: its endpoint is a local port nothing listens on."""
    from st_simcse.hub import hub_reachable

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub_reachable.cache_clear()
    yield
    hub_reachable.cache_clear()


MINILM = SHARED / "models" / "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def minilm() -> str:
    return str(_require(MINILM))


@pytest.fixture(scope="session")
def sts_pairs_file(tmp_path_factory, senteval_dir) -> str:
    """100 STS-B dev pairs as a user's scored-pairs csv (sentence1, sentence2, score)."""
    import csv

    path = tmp_path_factory.mktemp("pairs") / "sts_pairs.csv"
    with open(Path(senteval_dir) / "STS" / "STSBenchmark" / "sts-dev.csv", encoding="utf-8") as source:
        rows = [line.rstrip("\n").split("\t")[4:7] for line in source][:100]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("sentence1", "sentence2", "score"), *((a, b, s) for s, a, b in rows)])
    return str(path)


def shared_folder(tmp_path_factory, name: str) -> Path:
    """A folder of this test session that every pytest-xdist worker sees (each worker's own temp folder is a
    subfolder of the session's)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if XDIST_WORKER else base) / name


def finished_run(
    tmp_path_factory, name: str, recipe: str, *arguments: str, env: dict[str, str] | None = None
) -> SimpleNamespace:
    """``recipe`` run once per test session with ``arguments`` into its own folder (the first worker to ask runs it,
    the others wait for it): ``.output_dir`` and the ``.returncode``, ``.stdout`` and ``.stderr`` of the run."""
    import json

    from filelock import FileLock

    folder = shared_folder(tmp_path_factory, name)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "result.json"
    with FileLock(str(folder / "run.lock")):
        if not record.is_file():
            result = run_recipe(recipe, *arguments, "--output-dir", str(folder / "run"), env=env)
            outcome = {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
            record.write_text(json.dumps(outcome), encoding="utf-8")
    return SimpleNamespace(output_dir=folder / "run", **json.loads(record.read_text(encoding="utf-8")))


# The shared --quick run of the unsupervised recipe: 30 steps, the dev set every 10, the paper's 7-task table and the
# user's own test pairs at the end. The tests of a finished run's outputs read it; none of them changes it.
FINISHED_UNSUP = ("--quick", "--max-steps", "30", "--eval-steps", "10")


@pytest.fixture(scope="session")
def finished_unsup_run(tmp_path_factory, splade_tiny, senteval_dir, train_40k, sts_pairs_file) -> SimpleNamespace:
    arguments = (*FINISHED_UNSUP, "--test-file", sts_pairs_file)
    return finished_run(tmp_path_factory, "finished-unsup", "unsup_wiki.py", *arguments)


def installed_trackers() -> list[str]:
    """The trackers of --report-to whose packages this environment has, of those that run without a network."""
    import importlib.util

    return [name for name in ("tensorboard", "mlflow", "wandb") if importlib.util.find_spec(name) is not None]


@pytest.fixture(scope="session")
def rerun_from_config(tmp_path_factory, finished_unsup_run) -> SimpleNamespace:
    """The shared run again, from its own arguments.json (--config), into another folder, streaming to every tracker
    installed here that runs offline: TensorBoard's event files, MLflow's local file store, W&B's offline mode."""
    folder = shared_folder(tmp_path_factory, "rerun")
    folder.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": (folder / "mlruns").as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow 3 keeps its file store behind this switch
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(folder),
        "WANDB_SILENT": "true",
    }
    trackers = ",".join(installed_trackers()) or "none"
    config = str(finished_unsup_run.output_dir / "arguments.json")
    return finished_run(
        tmp_path_factory, "rerun", "unsup_wiki.py", "--config", config, "--report-to", trackers, env=environment
    )


def pytest_collection_modifyitems(config, items):
    """The slow tests first, the fast ones after (in their own order otherwise): under pytest-xdist the long runs
    start at once and the short tests fill in around them, so that both workers end together."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
