"""The house shows its layers (CONTRIBUTING.md): imports point one way, the checks import no heavy library, no file is
over 400 lines, every module says what it is for, and every private hook of the libraries is listed."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "st_simcse"
MODULES = sorted(PACKAGE.rglob("*.py"))
# Layer -> the layers (of st_simcse) it may import. "base" is st_simcse/hub.py, console.py and __init__.py.
ALLOWED = {
    "base": {"base", "data"},  # hub.py reads the format table's suffixes (data/formats.py, which imports nothing)
    "losses": {"losses"},
    "data": {"data", "base"},
    "models": {"models", "base"},
    "evaluation": {"evaluation", "data", "models", "base"},
    "training": {"training", "evaluation", "data", "models", "losses", "base"},
    "facade": {"evaluation", "data", "models", "losses", "base"},
}
# What the command-line checks import: nothing heavy at their top, so that a refusal takes well under 2 s.
LIGHT = [
    "st_simcse",
    "st_simcse.hub",
    "st_simcse.console",
    "st_simcse.data.formats",
    "st_simcse.data.readers",
    "st_simcse.models.settings",
    "st_simcse.evaluation.sts",
    "st_simcse.evaluation.pairs",
    "st_simcse.evaluation.command",
    "st_simcse.training.options",
    "st_simcse.training.checks",
    "st_simcse.training.reporting",
    "st_simcse.training.run",
    "st_simcse.training.lock",
    "st_simcse.training.command",
    "st_simcse.training.signals",
    "st_simcse.training.seeds",
    "st_simcse.data.augmentation",
]
HEAVY = ("torch", "transformers", "sentence_transformers", "datasets", "pyarrow", "numpy", "scipy", "matplotlib")


def layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    if parts == ("__init__.py",):
        return "facade"  # the public names, loaded lazily from every layer but training
    if parts == ("evaluate.py",):
        return "evaluation"  # `python -m st_simcse.evaluate`, the evaluation command at its documented path
    return parts[0] if len(parts) > 1 else "base"


def imported_layers(path: Path) -> set[str]:
    """The st_simcse layers ``path`` imports (at its top or inside functions: the layering holds for both)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "st_simcse" and len(parts) > 1:
                target = PACKAGE.joinpath(*parts[1:])
                if target.is_dir() or target.with_suffix(".py").is_file():
                    found.add(parts[1] if target.is_dir() or len(parts) > 2 else "base")
            if parts[0] in ("testbed", "unsup_wiki", "sup_nli"):
                found.add("recipes")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(REPO)))
def test_imports_point_one_way_and_modules_say_what_they_are_for(path):
    own = layer(path)
    assert imported_layers(path) <= ALLOWED[own], f"{path} imports {imported_layers(path) - ALLOWED[own]}"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree)
    assert docstring and len(docstring) > 60, f"{path} has no docstring saying what it is for"
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 400, f"{path} is over 400 lines"


def test_the_recipes_and_benchmarks_stay_under_400_lines():
    for path in [*REPO.glob("recipes/*.py"), *REPO.glob("benchmarks/*.py"), *REPO.glob("tests/*.py")]:
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 400, f"{path} is over 400 lines"


def test_the_checks_import_no_heavy_library(tmp_path):
    code = (
        f"import importlib, sys\nfor name in {LIGHT!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"the light modules import {result.stdout.strip()}"


def private_hooks() -> set[str]:
    """The names in st_simcse/ that are not the libraries' public API: private attributes of other objects than our
    own, and the internal module-level names and modules we reach into."""
    found, overridden = set(), set()
    internal_modules = ("fit_mixin", "merged_forward", "adaptive_layer", "matryoshka")
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                owner = node.value
                own = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                own = own or (isinstance(owner, ast.Call) and getattr(owner.func, "id", "") == "super")
                if node.attr.startswith("_") and not node.attr.startswith("__") and not own:
                    found.add(node.attr)
                if node.attr in ("DEFAULT_CALLBACKS", "DEFAULT_PROGRESS_CALLBACK"):
                    found.add(node.attr)
                if own and isinstance(owner, ast.Call) and re.fullmatch(r"_[a-z]\w*", node.attr):
                    overridden.add(node.attr)  # super()._name: maybe a private method of a library's class
            if isinstance(node, ast.ImportFrom) and node.module:
                if any(part in internal_modules for part in node.module.split(".")):
                    found.update(alias.name for alias in node.names if not public_loss(alias.name))
            if isinstance(node, ast.Constant) and node.value == "_instances":
                found.add("_instances")
    ours = {"_PUBLIC", "_requests", "_held_locks", "_whole_lines", "_loss_state_callbacks", "_staging_root"}
    ours |= {name for name in found if name.startswith(("_check", "_build", "_read", "_load", "_clean", "_first"))}
    return (found - ours - own_private_names()) | {name for name in overridden if library_method(name)}


def library_method(name: str) -> bool:
    """Whether ``name`` is a method of a library class that st_simcse subclasses (not one of our own bases)."""
    from sentence_transformers import SentenceTransformerTrainer
    from torch import nn

    return any(hasattr(base, name) for base in (SentenceTransformerTrainer, nn.Module))


def public_loss(name: str) -> bool:
    """A name sentence-transformers exports from its losses package (its public API, whatever module it lives in)."""
    from sentence_transformers.sentence_transformer import losses

    return hasattr(losses, name)


def own_private_names() -> set[str]:
    """Private names that st_simcse itself defines (functions, methods, attributes set on self)."""
    names = set()
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith("_"):
                names.add(node.name)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and node.attr.startswith("_"):
                names.add(node.attr)
    return names


def test_every_private_hook_is_listed_in_the_contributors_page():
    page = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    table = page.split("## Private hooks", 1)[1]
    listed = set(re.findall(r"`[^`]*?\.?(_?[A-Za-z_]\w*)`", table))
    missing = sorted(name for name in private_hooks() if name not in listed)
    assert not missing, f"private names used but not listed in CONTRIBUTING.md: {missing}"
    for name in ("_save_checkpoint", "_get_output_dir", "DEFAULT_CALLBACKS", "embed_columns"):
        assert name in private_hooks(), f"{name} is listed but no longer used: update the table"
