"""What a user installs is what we test: the sdist and the wheel hold the whole package, the version and the console
scripts are the metadata's, and CI's wheel stage (``ST_SIMCSE_INSTALLED_WHEEL=1``, see ``.ci/run``) imports the
package from site-packages, not from the checkout.

The builds here run setuptools' own backend on a copy of the tree in a temporary folder: nothing is written into
the checkout and nothing is downloaded (the ``test`` extra brings setuptools)."""

from __future__ import annotations

import configparser
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

import st_simcse

DISTRIBUTION = "st-simcse"
# What the sdist ships beside the package: a user of a release can run the recipes, the benchmarks and the tests.
SDIST_ROOTS = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "CONTRIBUTING.md", "MANIFEST.in")
SDIST_FOLDERS = ("st_simcse", "recipes", "benchmarks", "tests", "docs", ".ci")
IN_WHEEL_STAGE = os.environ.get("ST_SIMCSE_INSTALLED_WHEEL") == "1"
wheel_stage_only = pytest.mark.skipif(
    not IN_WHEEL_STAGE,
    reason=f"runs in CI's wheel stage (ST_SIMCSE_INSTALLED_WHEEL=1); here st_simcse comes from {st_simcse.__file__}",
)


def files_under(root: Path, folder: str) -> set[str]:
    """Every file of ``root/folder`` as a path relative to ``root``, bytecode caches left out."""
    return {
        path.relative_to(root).as_posix()
        for path in (root / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def build(kind: str, source: Path, out: Path) -> Path:
    """Build an sdist or a wheel of ``source`` into ``out`` with the installed setuptools (no isolation, offline)."""
    script = (
        "import sys\nfrom setuptools import build_meta\n"
        "print(getattr(build_meta, 'build_' + sys.argv[1])(sys.argv[2]))"
    )
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", script, kind, str(out)], cwd=source, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The sdist of a copy of the tree, and the wheel built from that unpacked sdist, as ``python -m build`` does."""
    root = tmp_path_factory.mktemp("packaging")
    tree = root / "tree"
    tree.mkdir()
    for name in SDIST_ROOTS:
        shutil.copy2(REPO / name, tree / name)
    for folder in SDIST_FOLDERS:
        shutil.copytree(REPO / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    sdist = build("sdist", tree, root / "dist")
    with tarfile.open(sdist) as archive:
        archive.extractall(root / "unpacked", filter="data")
    wheel = build("wheel", root / "unpacked" / sdist.name.removesuffix(".tar.gz"), root / "dist")
    return {"tree": tree, "sdist": sdist, "wheel": wheel}


def test_the_wheel_holds_every_file_of_the_package(built):
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = set(wheel.namelist())
    package = {name for name in names if ".dist-info/" not in name}
    expected = files_under(REPO, "st_simcse")
    assert {"st_simcse/py.typed", "st_simcse/losses/__init__.py"} <= expected
    assert package == expected, f"missing: {sorted(expected - package)}, extra: {sorted(package - expected)}"
    dist_info = {name.split("/", 1)[1] for name in names if ".dist-info/" in name}
    assert {"METADATA", "RECORD", "entry_points.txt", "licenses/LICENSE"} <= dist_info


def test_the_sdist_holds_the_project(built):
    with tarfile.open(built["sdist"]) as archive:
        top = built["sdist"].name.removesuffix(".tar.gz")
        names = {name.removeprefix(f"{top}/") for name in archive.getnames()}
    expected = set(SDIST_ROOTS) | set().union(*(files_under(built["tree"], folder) for folder in SDIST_FOLDERS))
    assert {
        "recipes/unsup_wiki.py",
        "recipes/testbed.py",
        "tests/conftest.py",
        "docs/install.md",
        ".ci/run",
    } <= expected
    assert expected <= names, f"missing from the sdist: {sorted(expected - names)}"


def test_the_version_is_the_metadata_version():
    assert st_simcse.__version__ == importlib.metadata.version(DISTRIBUTION)


def test_console_scripts_point_at_functions(built):
    entry_points = configparser.ConfigParser(delimiters=("=",))
    entry_points.optionxform = str  # script names as written, not lower-cased
    with zipfile.ZipFile(built["wheel"]) as wheel:
        name = next(name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt"))
        entry_points.read_string(wheel.read(name).decode())
    scripts = dict(entry_points["console_scripts"])
    assert "st-simcse-evaluate" in scripts
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), f"{name} -> {target}"


@wheel_stage_only
def test_st_simcse_is_imported_from_the_installed_wheel():
    origin = Path(st_simcse.__file__).resolve()
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert origin.is_relative_to(site_packages), f"st_simcse imported from {origin}, not from {site_packages}"
    assert not origin.is_relative_to(REPO), f"st_simcse imported from the checkout: {origin}"
    direct_url = importlib.metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    assert direct_url is None or not json.loads(direct_url).get("dir_info", {}).get("editable"), direct_url


@wheel_stage_only
def test_the_installed_files_are_the_source_tree():
    installed = {path.as_posix() for path in importlib.metadata.files(DISTRIBUTION) or []}
    package = {name for name in installed if name.startswith("st_simcse/") and "__pycache__" not in name}
    expected = files_under(REPO, "st_simcse")
    assert package == expected, f"missing: {sorted(expected - package)}, extra: {sorted(package - expected)}"


@wheel_stage_only
def test_the_installed_console_script_runs():
    script = Path(sysconfig.get_path("scripts")) / "st-simcse-evaluate"
    assert script.is_file(), f"{script} was not installed"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: st-simcse-evaluate"), done.stdout[:500]
