"""Reading a data source of any form (:mod:`st_simcse.data.formats`) through ``datasets`` (memory-mapped Arrow,
cached): a data file, a ``save_to_disk`` folder, or a hub dataset. Used by the corpus, labelled-data and
scored-pairs readers. A source that cannot be read raises one ``ValueError`` or ``FileNotFoundError`` saying what is
wrong and where: a malformed json, jsonl, csv or tsv file is named with the file's own line number of its first bad
line (found on the error path, by reading the file line by line), not pyarrow's row inside a read block.

``datasets`` is imported inside the functions: the recipes check paths with :func:`check_data_source` before any
heavy library loads.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from st_simcse.data.formats import (
    check_content_matches_suffix,
    describe_sources,
    format_of,
)
from st_simcse.hub import check_hub_name, looks_like_local_path

# The paper's training files, published with its code on the Hugging Face hub, which a recipe may name alone.
SIMCSE_HUB_REPO = "princeton-nlp/datasets-for-simcse"
SIMCSE_HUB_FILES = ("wiki1m_for_simcse.txt", "nli_for_simcse.csv")
PROGRESS_BYTES = 50_000_000
STREAM_CHUNK_BYTES = 1 << 20
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}  # .zst: the zstandard package


def check_data_source(source: str, what: str = "Training file") -> None:
    """What can be checked of a data source without reading it: a path must exist (a file or a folder), and a
    file's first bytes must be what its suffix says. A hub name passes (its reading checks the hub)."""
    source = os.fspath(source)
    if source in SIMCSE_HUB_FILES and not os.path.exists(source):
        check_hub_name(source, what)  # downloaded from the paper's hub dataset
    elif os.path.isfile(source):
        check_content_matches_suffix(source)
    elif not os.path.isdir(source) and looks_like_local_path(source):
        raise FileNotFoundError(f"{what} not found: {source!r}. Pass an existing source: {describe_sources()}.")


def read_dataset(source: str, split: str = "train", streaming: bool = False, what: str = "Training file", subset=None):
    """The rows of ``source`` as a ``datasets.Dataset`` (``IterableDataset`` with ``streaming``): a data file (by
    its suffix, after any compression suffix; unknown suffixes are plain text, one row ``text`` per line), a
    ``save_to_disk`` folder, or a hub dataset (``split``, and ``subset``: its configuration, e.g. ``"triplet"`` of
    sentence-transformers/all-nli). ``what`` names the source in errors. Reading a file of more than
    ``PROGRESS_BYTES`` shows datasets' progress bars; a smaller one is read in about a second, silently."""
    source = os.fspath(source)
    check_data_source(source, what)
    with progress_bars(not os.path.isfile(source) or os.path.getsize(source) > PROGRESS_BYTES):
        if os.path.isdir(source):
            dataset = _saved_dataset(source, split)
            return dataset.to_iterable_dataset() if streaming else dataset
        if os.path.isfile(source):
            return _data_file(source, streaming)
        return _hub_dataset(source, split, streaming, what, subset)


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """datasets' progress bars on or off inside the block, as they were outside it."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was_enabled else datasets.disable_progress_bars)()


@contextmanager
def datasets_quiet() -> Iterator[None]:
    """datasets logs a failed read ("Failed to load JSON from file ...") before it raises; the error we raise says
    it better, in one line, so that log line is held back."""
    from datasets.utils import logging as datasets_logging

    level = datasets_logging.get_verbosity()
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)
    try:
        yield
    finally:
        datasets_logging.set_verbosity(level)


def _data_file(path: str, streaming: bool):
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    data_format, compression = format_of(path)
    options = data_format.options
    if streaming and data_format.builder == "text":
        # A stream holds one chunk of the file at a time: 1 MB instead of datasets' 10 MB keeps its memory flat.
        options = {**options, "chunksize": STREAM_CHUNK_BYTES}
    try:
        with datasets_quiet():
            return load_dataset(
                data_format.builder, data_files=os.path.abspath(path), split="train", streaming=streaming, **options
            )
    except (DatasetGenerationError, OSError, ValueError, EOFError, UnicodeDecodeError) as error:
        raise ValueError(unreadable_file_message(path, error)) from None


def unreadable_file_message(path: str, error: BaseException) -> str:
    """One line on why ``path`` could not be read: its first bad line where the file can be read line by line."""
    data_format, compression = format_of(path)
    builder = data_format.builder
    cause = error.__cause__ or error
    if isinstance(cause, UnicodeDecodeError):
        located = _first_line_not_utf8(path, compression)
        if located:
            return located
    if isinstance(cause, (OSError, EOFError, lzma.LZMAError)) or type(cause).__name__ == "ZstdError":
        return (
            f"{path}: not a readable {compression or builder} file ({type(cause).__name__}: {cause}). Check that the "
            "file is complete and that its suffix says how it is compressed (.gz, .bz2, .xz, .zst)."
        )
    if "corresponds to no data" in str(cause):  # datasets' words for a file without a single row
        return f"{path}: no rows (an empty file, or a header line alone); it needs some."
    located = None
    try:
        if builder == "json":
            located = first_bad_json_line(path, compression, str(cause))
        elif builder == "csv":
            located = first_bad_csv_line(path, compression, data_format.options.get("sep", ","))
    except (OSError, EOFError, ValueError, lzma.LZMAError, csv.Error):
        located = None
    if located:
        return located
    reason = " ".join(str(cause).split())  # one line, whatever the library wrote
    return f"{path}: could not be read as {data_format.name} ({type(cause).__name__}: {reason})."


def open_text(path: str, compression: str | None, errors: str = "strict") -> IO[str]:
    """``path`` as UTF-8 text, decompressed (a byte-order mark at the start is not part of the text)."""
    if compression == ".zst":
        import io

        import zstandard

        return io.TextIOWrapper(zstandard.open(path, "rb"), encoding="utf-8-sig", errors=errors)
    opener = OPENERS.get(compression or "", open)
    return opener(path, "rt", encoding="utf-8-sig", errors=errors)


def _first_line_not_utf8(path: str, compression: str | None) -> str | None:
    opener = OPENERS.get(compression or "", open)
    if compression == ".zst":
        import zstandard

        handle: Any = zstandard.open(path, "rb")
    else:
        handle = opener(path, "rb")
    with handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return (
                    f"{path}, line {line_number}: not valid UTF-8 ({error.reason} at byte {error.start}). Is it a "
                    "text file? Re-encode it as UTF-8, e.g. with `iconv -f latin1 -t utf-8`."
                )
    return None


def first_bad_json_line(path: str, compression: str | None, reason: str) -> str | None:
    """The first line of a JSON-lines file that is not a JSON object, or whose field changes type (pyarrow's
    "Column(/x) changed from string to number"); for a file that is one JSON document, where it breaks. Read line by
    line (a line ends at "\n" only: JSON strings may hold U+2028 and its kin raw)."""
    with open_text(path, compression) as handle:
        first = next((line for line in handle if line.strip()), "")
        second = next((line for line in handle if line.strip()), "")
    one_document = first.lstrip().startswith("[") or (first.strip().startswith("{") and not (
        first.strip().endswith("}") and second.strip().startswith("{")))  # fmt: skip
    if one_document:
        with open_text(path, compression) as handle:
            try:
                json.load(handle)
            except json.JSONDecodeError as error:
                return f"{path}, line {error.lineno}: not valid JSON ({error.msg}, column {error.colno})."
        return None
    changed = re.search(r"Column\((/[^)]*)\) changed from (\w+) to (\w+)", reason)
    field = changed.group(1).strip("/").split("/")[0] if changed else None
    first_type: str | None = None
    with open_text(path, compression) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as error:
                return (
                    f"{path}, line {line_number}: not valid JSON ({error.msg}, column {error.colno}); a JSON-lines "
                    "file holds one JSON object per line."
                )
            if not isinstance(record, dict):
                kind = type(record).__name__
                return f"{path}, line {line_number}: a JSON {kind}, not an object; every line must be one."
            if field is not None and record.get(field) is not None:
                kind = _json_type(record[field])
                first_type = first_type or kind
                if kind != first_type:
                    return (
                        f"{path}, line {line_number}: field {field!r} holds a {kind}, where the lines above hold a "
                        f"{first_type}; give every line the same type."
                    )
    return None


def mixed_types_message(source: str, field: str) -> str:
    """One line for a JSON field whose type changes from record to record (datasets reads it as a Json column)."""
    data_format, compression = format_of(source)
    if os.path.isfile(source) and data_format.builder == "json":
        located = first_bad_json_line(source, compression, f"Column(/{field}) changed from a to b")
        if located:
            return located
    return f"{source}: field {field!r} holds values of several types; give every record the same type (text)."


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def first_bad_csv_line(path: str, compression: str | None, separator: str) -> str | None:
    """The first record of a csv or tsv file with more fields than its header line (what pandas refuses)."""
    quoting = csv.QUOTE_NONE if separator == "\t" else csv.QUOTE_MINIMAL
    with open_text(path, compression) as handle:
        reader = csv.reader(handle, delimiter=separator, quoting=quoting)
        try:
            header = next(reader, None)
            for record in reader if header is not None else ():
                if len(record) > len(header):
                    tabs = separator == "\t"
                    fields = f"{len(record)} {'tab-separated ' if tabs else ''}fields"
                    quotes = "" if tabs else " A field that holds the separator needs double quotes."
                    return (
                        f"{path}, line {reader.line_num}: {fields} where the header line has {len(header)} "
                        f"({', '.join(header)}).{quotes}"
                    )
        except csv.Error as error:  # an unbalanced quote swallows the lines after it
            return f"{path}, line {reader.line_num}: {error}; a quote opened there is not closed."
    return None


def _saved_dataset(folder: str, split: str):
    from datasets import DatasetDict, load_from_disk

    if not any(os.path.isfile(os.path.join(folder, name)) for name in ("state.json", "dataset_dict.json")):
        raise ValueError(
            f"{folder} is a folder but not one written by datasets' save_to_disk (no state.json or "
            "dataset_dict.json). Pass a file, or save the dataset with Dataset.save_to_disk(folder)."
        )
    dataset = load_from_disk(folder)
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise ValueError(f"{folder} holds the splits {list(dataset)}, not {split!r}: choose one of them.")
        dataset = dataset[split]
    return dataset


def _hub_dataset(name: str, split: str, streaming: bool, what: str, subset: str | None = None):
    from datasets import load_dataset

    check_hub_name(name, what)
    try:
        return load_dataset(name, subset, split=split, streaming=streaming)
    except Exception as error:
        which = f"subset {subset!r}, split {split!r}" if subset else f"split {split!r}"
        reason = " ".join(str(error).split())
        raise ValueError(
            f"{name}: could not be loaded as a hub dataset, {which} ({type(error).__name__}: {reason})."
        ) from None
