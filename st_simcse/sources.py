"""Where a name points (a local path, or a repository on the Hugging Face hub), whether the hub can be reached, and
reading a data source of any form through ``datasets`` (memory-mapped Arrow, cached).

Models and datasets are given by name (``bert-base-uncased``, ``owner/name``) or by path. Telling the two apart
before anything loads matters: a mistyped local path shaped like ``owner/name`` would otherwise wait about a minute
for the hub's retries and end in a traceback, and an offline machine waits the same for any hub name.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import urlparse

import datasets
from datasets import Dataset, DatasetDict, IterableDataset, load_dataset, load_from_disk
from datasets.exceptions import DatasetGenerationError

# The suffixes of data files: a missing name ending in one of them is a local file, never a hub repository.
DATA_FILE_SUFFIXES = (".txt", ".csv", ".tsv", ".json", ".jsonl", ".parquet", ".gz", ".bz2", ".xz", ".zst", ".arrow")


PROGRESS_BYTES = 50_000_000
STREAM_CHUNK_BYTES = 1 << 20
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".zst": None}  # zstandard opens .zst
# File suffix -> the datasets builder that reads it, and its options.
FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".txt": ("text", {}),
    # keep_default_na=False: a sentence reading "NA" or "null" is text, not a missing value (an empty cell still is).
    ".csv": ("csv", {"keep_default_na": False}),
    ".tsv": ("csv", {"sep": "\t", "quoting": 3, "keep_default_na": False}),  # tsv has no quoting (csv.QUOTE_NONE)
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}


class SourceError(ValueError):
    """A model or data source that does not exist, or cannot be reached; the message says what to pass instead."""


def looks_like_local_path(name: str) -> bool:
    """A hub name is ``name`` or ``owner/name``; anything else (absolute, ``./``, ``../``, ``~``, deeper, ending in a
    data-file suffix) is a path, and so is ``a/b`` whose first part is a local folder (``output/unsup-simcs``)."""
    name = os.fspath(name)
    if name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or os.path.exists(name):
        return True
    if name.lower().endswith(DATA_FILE_SUFFIXES):
        return True
    return "/" in name and os.path.isdir(name.split("/", 1)[0])


def hub_offline_mode() -> bool:
    """True where the user told the Hugging Face libraries to use their local cache only (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's endpoint (``HF_ENDPOINT``) opens within ``timeout`` seconds. Asked once
    per process; it spares an offline machine the libraries' retries (about a minute) before their error."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def check_hub_name(name: str, what: str) -> None:
    """Raise :class:`SourceError` before any download is tried where ``name`` (a hub name) cannot be fetched: the hub
    is unreachable and the user did not ask for the local cache (``HF_HUB_OFFLINE=1``, which fails fast by itself)."""
    if hub_offline_mode() or hub_reachable():
        return
    raise SourceError(
        f"{what} {name!r}: not a local path, and the Hugging Face hub cannot be reached from this machine to fetch "
        "it. Pass a local path, or set HF_HUB_OFFLINE=1 to use a copy in the local hub cache."
    )


def in_local_hub_cache(name: str) -> bool:
    """Whether the local hub cache holds a model ``name`` (its ``config.json`` or ``modules.json``), which is all
    that ``HF_HUB_OFFLINE=1`` lets the libraries load."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(name, marker), str) for marker in ("config.json", "modules.json"))


def check_model_source(name: str, what: str = "--model") -> None:
    """A model given by path must be a folder holding a model; a model given by hub name must be fetchable: the hub
    in reach, or, with ``HF_HUB_OFFLINE=1``, the model in the local hub cache."""
    if looks_like_local_path(name):
        path = os.path.expanduser(name)
        if not os.path.isdir(path):
            raise SourceError(
                f"{what} {name}: no such folder. Pass an existing model folder, or a hub name such as "
                "bert-base-uncased."
            )
        if not any(os.path.isfile(os.path.join(path, marker)) for marker in ("config.json", "modules.json")):
            raise SourceError(
                f"{what} {name}: the folder holds no model (no config.json of a transformers checkpoint, no "
                "modules.json of a sentence-transformers model)."
            )
        return
    if hub_offline_mode() and not in_local_hub_cache(name):
        from huggingface_hub import constants

        raise SourceError(
            f"{what} {name}: HF_HUB_OFFLINE=1 is set and the local hub cache ({constants.HF_HUB_CACHE}) has no "
            "copy of it. Pass a local path, or unset HF_HUB_OFFLINE where the hub can be reached to download it."
        )
    check_hub_name(name, what)


def check_writable_folder(path: str, what: str = "The output folder") -> None:
    """Raise a ``ValueError`` before anything is written where ``path`` cannot become a folder of files: it is a
    file, lies under one, or its nearest existing folder is read-only (or not writable for this user)."""
    target = os.path.abspath(os.path.expanduser(path))
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == target else f"lies under {existing}, which is a file"
        raise ValueError(f"{what} {path} {where}, not a folder: choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"{what} {path} cannot be written: {existing} is on a read-only file system or not writable for this "
            "user. Choose a writable folder."
        )


def read_dataset(
    source: str, split: str = "train", streaming: bool = False, what: str = "Training file", subset: str | None = None
) -> Dataset:
    """The rows of ``source``: a data file (by its suffix, after any compression suffix: plain text, one row
    ``text`` per line, for unknown suffixes), a ``save_to_disk`` folder, or a hub dataset (``split``, and ``subset``:
    its configuration, e.g. ``"triplet"`` of sentence-transformers/all-nli). ``what`` names the source in errors.
    Raises ``FileNotFoundError`` or ``ValueError`` saying what is wrong (a file whose content is not what its suffix
    says among it). Reading a file of more than ``PROGRESS_BYTES`` shows datasets' progress bars; a smaller one is
    read in about a second, silently."""
    with progress_bars(not os.path.isfile(source) or os.path.getsize(source) > PROGRESS_BYTES):
        return _read_dataset(os.fspath(source), split, streaming, what, subset)


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """datasets' progress bars on or off inside the block, as they were outside it."""
    was_enabled = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was_enabled else datasets.disable_progress_bars)()


def _read_dataset(source: str, split: str, streaming: bool, what: str, subset: str | None = None) -> Dataset:
    if os.path.isdir(source):
        dataset = _saved_dataset(source, split)
        return dataset.to_iterable_dataset() if streaming else dataset
    if os.path.isfile(source):
        check_content_matches_suffix(source)
        return _data_file(source, streaming)
    if looks_like_local_path(source):
        raise FileNotFoundError(
            f"{what} not found: {source!r}. Pass an existing file (text, csv, tsv, jsonl, json or parquet, "
            "optionally compressed), a folder written by Dataset.save_to_disk, or a hub dataset name."
        )
    return _hub_dataset(source, split, streaming, what, subset)


# How each kind of file begins (after decompression for the compressed suffixes): what a suffix promises.
MAGIC = {b"PAR1": "Parquet", b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
SUFFIX_OF = {"Parquet": ".parquet", "gzip": ".gz", "bzip2": ".bz2", "xz": ".xz", "zstd": ".zst"}


def check_content_matches_suffix(path: str) -> None:
    """Raise a ``ValueError`` where the first bytes of ``path`` say it is another kind of file than its suffix says
    (a JSON-lines file named .csv, a Parquet file named .csv, an uncompressed file named .gz, ...): datasets would
    read it as something else and fail far from the cause, or not at all."""
    builder, _, compression = _builder(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    kind = next((name for magic, name in MAGIC.items() if head.startswith(magic)), None)
    expected = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd"}.get(compression or "")
    if expected is not None:
        if kind != expected:
            raise ValueError(
                f"{path}: named {compression} but not {expected}-compressed (it starts with {head[:4]!r}). Rename it "
                "to what it is."
            )
        return
    suffix = os.path.splitext(path.lower())[1]
    if kind is not None and not (kind == "Parquet" and builder == "parquet"):
        named = f"named {suffix}" if suffix else "without a suffix"
        raise ValueError(f"{path}: a {kind} file {named}; rename it to end in {SUFFIX_OF[kind]}.")
    if builder == "parquet" and kind != "Parquet":
        raise ValueError(f"{path}: named .parquet but not a Parquet file (it starts with {head[:4]!r}).")
    if builder == "csv" and head.lstrip()[:1] in (b"{", b"["):
        raise ValueError(
            f"{path}: named {suffix} but its text starts with '{head.lstrip()[:1].decode()}', as JSON does. If it is "
            "JSON lines (one object per line), rename it to end in .jsonl (.json for one JSON document)."
        )


def source_builder(path: str) -> str:
    """The datasets builder that reads the file ``path``: "text", "csv", "json" or "parquet"."""
    return _builder(path)[0]


def is_plain_text(source: str) -> bool:
    """Whether ``source`` is read as plain text, one row per line."""
    return os.path.isfile(source) and _builder(source)[0] == "text"


def _builder(path: str) -> tuple[str, dict[str, Any], str | None]:
    """The datasets builder for ``path`` by its suffix (after any compression suffix), its options, and the
    compression. Unknown suffixes are plain text, one sentence per line."""
    stem, compression = os.path.splitext(path.lower())
    if compression not in COMPRESSIONS:
        stem, compression = path.lower(), None
    builder, options = FORMATS.get(os.path.splitext(stem)[1], FORMATS[".txt"])
    return builder, options, compression


def _data_file(path: str, streaming: bool) -> Dataset | IterableDataset:
    builder, options, compression = _builder(path)
    if streaming and builder == "text":
        # A stream holds one chunk of the file at a time: 1 MB instead of datasets' 10 MB keeps its memory flat.
        options = {**options, "chunksize": STREAM_CHUNK_BYTES}
    try:
        return load_dataset(builder, data_files=os.path.abspath(path), split="train", streaming=streaming, **options)
    except (DatasetGenerationError, OSError, ValueError, EOFError, UnicodeDecodeError) as error:
        cause = error.__cause__ or error
        if isinstance(cause, UnicodeDecodeError) and builder == "text":
            raise ValueError(_invalid_utf8_message(path, compression)) from None
        if isinstance(cause, (OSError, EOFError, lzma.LZMAError)) or type(cause).__name__ == "ZstdError":
            raise ValueError(
                f"{path}: not a readable {compression or builder} file ({type(cause).__name__}: {cause}). Check that "
                "the file is complete and that its suffix says how it is compressed (.gz, .bz2, .xz, .zst)."
            ) from None
        if "corresponds to no data" in str(cause):  # datasets' words for a file without a single row
            raise ValueError(f"{path}: no rows (an empty file, or a header line alone); it needs some.") from None
        raise ValueError(f"{path}: could not be read as {builder} ({type(cause).__name__}: {cause}).") from None


def _open_decompressed(path: str, compression: str | None) -> IO[bytes]:
    if compression == ".zst":
        import zstandard

        return zstandard.open(path, "rb")
    opener = COMPRESSIONS.get(compression) if compression else None
    return opener(path, "rb") if opener else open(path, "rb")


def _invalid_utf8_message(path: str, compression: str | None) -> str:
    """Where the first line that is not UTF-8 is (read only on this error path)."""
    with _open_decompressed(path, compression) as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return (
                    f"{path}, line {line_number}: not valid UTF-8 ({error.reason} at byte {error.start}). Is it a "
                    "text file? Re-encode it as UTF-8, e.g. with `iconv -f latin1 -t utf-8`."
                )
    return f"{path}: not valid UTF-8. Re-encode it as UTF-8, e.g. with `iconv -f latin1 -t utf-8`."


def _saved_dataset(folder: str, split: str) -> Dataset:
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


def _hub_dataset(
    name: str, split: str, streaming: bool, what: str, subset: str | None = None
) -> Dataset | IterableDataset:
    check_hub_name(name, what)
    try:
        return load_dataset(name, subset, split=split, streaming=streaming)
    except Exception as error:
        which = f"subset {subset!r}, split {split!r}" if subset else f"split {split!r}"
        raise ValueError(
            f"{name}: could not be loaded as a hub dataset, {which} ({type(error).__name__}: {error})."
        ) from None
