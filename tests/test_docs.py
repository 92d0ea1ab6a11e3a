"""Every Python and shell block of README.md and docs/*.md runs on the testbed, so no example can rot.

Each block runs as written, in a fresh temporary working directory, after these substitutions (the hub and the
paper's full-size data are out of reach offline, and a test cannot train for an hour):

- model names: ``bert-base-uncased`` -> ``../shared/models/splade-tiny``; ``sentence-transformers/all-MiniLM-L6-v2``
  -> ``../shared/models/all-MiniLM-L6-v2``; the paper's released ``princeton-nlp/(un)sup-simcse-bert-base-uncased``
  -> tiny random BERT checkpoints in their layout (with a pooler); ``MODEL`` in a command -> splade-tiny;
- data: ``wiki1m_for_simcse.txt`` -> the first 256 lines of ``train_40k.txt``; ``SentEval/data/downstream`` and
  ``DIR`` -> ``../shared/data/senteval``; the users' files of the examples (``corpus.jsonl.gz`` and
  ``my_corpus.jsonl.gz``: 256 captions with a ``body`` field; ``my_pairs.csv``, ``dev_pairs.csv``,
  ``test_pairs.csv``, ``my_dev_pairs.csv``: 100 STS-B dev pairs; ``pairs.jsonl`` and ``my_pairs.jsonl``: 300 SNLI
  (premise, entailment) pairs with ``question`` and ``answer`` fields) are written beside the block;
- step counts: a recipe command gets ``--max-steps 4 --eval-steps 2`` (and ``--batch-size 32`` where it gives none)
  and, unless it asks for ``--sts-test``, ``--no-sts-test`` (the final 7-task table is tested in test_recipes.py);
  ``--seeds A B C ...`` runs its first two seeds; ``torchrun --nproc_per_node 4`` runs 2 processes, with ``--quick``;
- a command that an earlier block already ran, the same after these substitutions (the README's main job is the
  first line of the recipes page), passed there and is not run twice;
- the set-up steps of the README's two commands (venv, pip install) and its test command are what CI's ``.ci/run``
  does; the rest of those commands runs here.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import recipe_process
import torch
from conftest import REPO, SENTEVAL, SHARED, SPLADE_TINY, TRAIN_40K
from transformers import AutoTokenizer, BertConfig, BertModel

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SET_UP = ("python3 -m venv", ". .venv/bin/activate", "pip install", "python -m pytest")
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> list:
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append(pytest.param(match.group(1), match.group(2), id=f"{document.name}:{line}"))
    return found


def test_readme_is_a_front_door_to_the_docs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    links = re.findall(r"\]\(((?:docs/)?[\w.-]+\.md)\)", readme)
    pages = {page.name for page in (REPO / "docs").glob("*.md")}
    assert pages <= {Path(link).name for link in links}, "a docs page the README does not link"
    assert all((REPO / link).is_file() for link in links), "a link to a missing page"
    fenced = re.compile(r"^```(python|bash)$", re.MULTILINE)
    with_blocks = {document.name for document in DOCUMENTS if fenced.search(document.read_text(encoding="utf-8"))}
    assert with_blocks == {param.id.split(":")[0] for param in blocks()}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """The stand-ins of the substitutions (see the module docstring), written once."""
    for path in (SPLADE_TINY, SENTEVAL, TRAIN_40K, SHARED / "models" / "all-MiniLM-L6-v2"):
        if not path.exists():
            pytest.skip(f"needs {path} (the shared offline testbed beside the checkout), which is absent here")
    folder = tmp_path_factory.mktemp("docs-data")
    lines = TRAIN_40K.read_text(encoding="utf-8").splitlines()[:256]
    (folder / "wiki.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    captions = (SHARED / "data" / "unsup" / "captions.txt").read_text(encoding="utf-8").splitlines()[:256]
    with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"id": i, "body": text}) + "\n" for i, text in enumerate(captions))
    rows = [line.split("\t")[4:7] for line in (SENTEVAL / "STS" / "STSBenchmark" / "sts-dev.csv").open()][:100]
    with open(folder / "pairs.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("sentence1", "sentence2", "score"), *((a, b, s) for s, a, b in rows)])
    for name in ("sup-simcse-bert-tiny", "unsup-simcse-bert-tiny"):  # the released models' layout, with a pooler
        torch.manual_seed(0)
        config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=512)  # fmt: skip
        BertModel(config).save_pretrained(folder / name)
        AutoTokenizer.from_pretrained(str(SPLADE_TINY)).save_pretrained(folder / name)
    with open(SHARED / "data" / "nli" / "snli_triplets.csv", newline="", encoding="utf-8") as handle:
        labelled = list(csv.DictReader(handle))[:300]
    with open(folder / "pairs.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"question": row["sent0"], "answer": row["sent1"]}) + "\n" for row in labelled)
    minilm = str(SHARED / "models" / "all-MiniLM-L6-v2")
    return {
        "my_pairs.jsonl": str(folder / "pairs.jsonl"),
        "pairs.jsonl": str(folder / "pairs.jsonl"),
        "princeton-nlp/sup-simcse-bert-base-uncased": str(folder / "sup-simcse-bert-tiny"),
        "princeton-nlp/unsup-simcse-bert-base-uncased": str(folder / "unsup-simcse-bert-tiny"),
        "sentence-transformers/all-MiniLM-L6-v2": minilm,
        "bert-base-uncased": str(SPLADE_TINY),
        "SentEval/data/downstream": str(SENTEVAL),
        "wiki1m_for_simcse.txt": str(folder / "wiki.txt"),
        "my_corpus.jsonl.gz": str(folder / "corpus.jsonl.gz"),
        "corpus.jsonl.gz": str(folder / "corpus.jsonl.gz"),
        "my_dev_pairs.csv": str(folder / "pairs.csv"),
        "my_pairs.csv": str(folder / "pairs.csv"),
        "dev_pairs.csv": str(folder / "pairs.csv"),
        "test_pairs.csv": str(folder / "pairs.csv"),
    }


def substituted(code: str, files: dict[str, str]) -> str:
    for name in sorted(files, key=len, reverse=True):  # the longer name first: my_corpus.jsonl.gz before corpus...
        code = re.sub(rf"(?<![\w/.-]){re.escape(name)}(?![\w/.-])", files[name], code)
    return code


def commands(code: str) -> list[list[str]]:
    """The block's commands, one per line (backslash continuations joined), ``&&`` chains split, set-up left out."""
    joined = code.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        for part in filter(None, (piece.strip() for piece in line.split("&&"))):
            if not part.startswith(SET_UP):
                found.append(shlex.split(part))
    return found


def shortened(command: list[str], files: dict[str, str], output_dir: Path) -> list[str]:
    command = [{"MODEL": str(SPLADE_TINY), "DIR": str(SENTEVAL)}.get(word, word) for word in command]
    if command[0] == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *command[3:], "--quick"]
    elif command[0] == "python":
        command = [sys.executable, *command[1:]]
    if "--seeds" in command:
        first = command.index("--seeds") + 1
        last = next((i for i in range(first, len(command)) if command[i].startswith("--")), len(command))
        command = [*command[: first + 2], *command[last:]]
    recipe = next((word for word in command if word.startswith("recipes/")), None)
    if recipe:
        command[command.index(recipe)] = str(REPO / recipe)
        command += ["--max-steps", "4", "--eval-steps", "2"]
        if "--sts-test" not in command:  # the final 7-task table has its own tests (test_recipes.py); minutes here
            command += ["--no-sts-test"]
        if "--batch-size" not in command:
            command += ["--batch-size", "32"]
        if "--output-dir" not in command:
            command += ["--output-dir", str(output_dir)]
    return command


ALREADY_RAN: set[tuple[str, ...]] = set()  # the commands, as written after the file substitutions, run so far


@pytest.mark.slow
@pytest.mark.parametrize(("language", "code"), blocks())
def test_block_runs(language, code, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = substituted(code, files)
    if language == "python":
        exec(compile(code, "<docs block>", "exec"), {"__name__": "__docs__"})
        return
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "PYTHONPATH": str(REPO)}  # offline, as here
    for index, command in enumerate(commands(code)):
        if tuple(command) in ALREADY_RAN:
            continue
        ALREADY_RAN.add(tuple(command))
        command = shortened(command, files, tmp_path / f"run-{index}")
        if command[0] == sys.executable and command[1].endswith(".py") and "recipes" in command[1]:
            result = recipe_process.run(command[1], *command[2:], cwd=tmp_path, env=env)  # the imports shared
        elif command[:3] == [sys.executable, "-m", "st_simcse.evaluate"]:
            result = recipe_process.run("-m st_simcse.evaluate", *command[3:], cwd=tmp_path, env=env)
        else:
            result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{shlex.join(command)}\n{result.stderr[-3000:]}"
