"""The data formats st_simcse reads, in one table: which file suffix is read by which ``datasets`` builder, with what
options, and how each kind of file begins (so a file whose content is not what its suffix says is named as such).

Everything that lists formats takes the list from here: the readers (:mod:`st_simcse.data.readers`), the recipes'
and the evaluation command's help texts, the error messages, and the format table of ``docs/data.md``
(``tests/test_formats.py`` checks it). Adding a format is one row of ``FORMATS`` (and its test). Nothing here
imports a heavy library: the recipes check paths and suffixes with it before anything loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DataFormat:
    """One file format: its name as users say it, its suffix, the ``datasets`` builder that reads it and the
    builder's options. ``tabular``: it has named columns (``--text-column`` / ``--columns`` pick them);
    ``compressible``: it may also come compressed (``.jsonl.gz``)."""

    name: str
    suffix: str
    builder: str
    options: dict[str, Any] = field(default_factory=dict)
    tabular: bool = True
    compressible: bool = True


FORMATS: tuple[DataFormat, ...] = (
    # utf-8-sig: a byte-order mark, which some editors write, is not part of the first sentence.
    DataFormat("text", ".txt", "text", {"encoding": "utf-8-sig"}, tabular=False),
    # keep_default_na=False: a sentence reading "NA" or "null" is text, not a missing value (an empty cell still is).
    DataFormat("csv", ".csv", "csv", {"keep_default_na": False}),
    # tsv has no quoting (csv.QUOTE_NONE): a quote is part of the sentence.
    DataFormat("tsv", ".tsv", "csv", {"sep": "\t", "quoting": 3, "keep_default_na": False}),
    DataFormat("jsonl", ".jsonl", "json"),
    DataFormat("json", ".json", "json"),
    DataFormat("parquet", ".parquet", "parquet"),
    # What datasets writes (Dataset.save_to_disk's data-*.arrow, its cache files): Arrow's streaming format.
    DataFormat("arrow", ".arrow", "arrow", compressible=False),
)
BY_SUFFIX = {data_format.suffix: data_format for data_format in FORMATS}
PLAIN_TEXT = BY_SUFFIX[".txt"]
# Compression suffix -> what the file then begins with (its magic bytes' name).
COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd"}
# Every suffix of a data file: a missing name ending in one of them is a local file, never a hub repository.
DATA_FILE_SUFFIXES = tuple(BY_SUFFIX) + tuple(COMPRESSIONS)

# How each kind of file begins: what a suffix promises.
MAGIC = {b"PAR1": "Parquet", b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
SUFFIX_OF = {"Parquet": ".parquet", "gzip": ".gz", "bzip2": ".bz2", "xz": ".xz", "zstd": ".zst"}


def names(tabular_only: bool = False) -> str:
    """The format names as a list for a sentence: ``"csv, tsv, jsonl, json, parquet, arrow"``."""
    return ", ".join(f.name for f in FORMATS if f.tabular or not tabular_only)


def compression_suffixes() -> str:
    return " ".join(COMPRESSIONS)


def describe_sources(tabular_only: bool = False) -> str:
    """Every form of data source, for help texts and errors."""
    compressed = f"also compressed: {compression_suffixes()}"
    if tabular_only:
        return f"{names(tabular_only=True)} ({compressed}), a datasets save_to_disk folder or a hub dataset"
    return (
        f"a text file (one per line), {names(tabular_only=True)} ({compressed}), a datasets save_to_disk folder or a "
        "hub dataset"
    )


def format_of(path: str) -> tuple[DataFormat, str | None]:
    """The format of the file ``path`` by its suffix (after any compression suffix), and its compression suffix
    (None: uncompressed). Unknown suffixes are plain text, one row per line."""
    stem, compression = os.path.splitext(os.fspath(path).lower())
    if compression not in COMPRESSIONS:
        stem, compression = os.fspath(path).lower(), None
    return BY_SUFFIX.get(os.path.splitext(stem)[1], PLAIN_TEXT), compression


def is_plain_text(source: str) -> bool:
    """Whether ``source`` is a file read as plain text, one row per line."""
    return os.path.isfile(source) and format_of(source)[0].builder == "text"


def has_header_line(source: str) -> bool:
    """Whether ``source`` is a file whose first line names the columns (csv, tsv)."""
    return os.path.isfile(source) and format_of(source)[0].builder == "csv"


def check_content_matches_suffix(path: str) -> None:
    """Raise a ``ValueError`` where the first bytes of ``path`` say it is another kind of file than its suffix says
    (a JSON-lines file named .csv, a Parquet file named .csv, an uncompressed file named .gz, ...): datasets would
    read it as something else and fail far from the cause, or not at all."""
    data_format, compression = format_of(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    kind = next((name for magic, name in MAGIC.items() if head.startswith(magic)), None)
    if compression is not None:
        expected = COMPRESSIONS[compression]
        if kind != expected:
            raise ValueError(
                f"{path}: named {compression} but not {expected}-compressed (it starts with {head[:4]!r}). Rename it "
                "to what it is."
            )
        if not data_format.compressible:
            raise ValueError(f"{path}: {data_format.name} files are read uncompressed; decompress it first.")
        return
    suffix = os.path.splitext(path.lower())[1]
    if kind is not None and not (kind == "Parquet" and data_format.builder == "parquet"):
        named = f"named {suffix}" if suffix else "without a suffix"
        raise ValueError(f"{path}: a {kind} file {named}; rename it to end in {SUFFIX_OF[kind]}.")
    if data_format.builder == "parquet" and kind != "Parquet":
        raise ValueError(f"{path}: named .parquet but not a Parquet file (it starts with {head[:4]!r}).")
    if data_format.builder == "csv" and head.lstrip()[:1] in (b"{", b"["):
        raise ValueError(
            f"{path}: named {suffix} but its text starts with '{head.lstrip()[:1].decode()}', as JSON does. If it is "
            "JSON lines (one object per line), rename it to end in .jsonl (.json for one JSON document)."
        )
