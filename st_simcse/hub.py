"""Where a name points: a local path, or a repository on the Hugging Face hub; whether the hub can be reached; and
whether a model or output folder given by the user can be used. Used by everything that takes a model or data name
(the models, the data readers, the evaluation command, the recipes' checks), before anything loads.

Models and datasets are given by name (``bert-base-uncased``, ``owner/name``) or by path. Telling the two apart
before anything loads matters: a mistyped local path shaped like ``owner/name`` would otherwise wait about a minute
for the hub's retries and end in a traceback, and an offline machine waits the same for any hub name. Nothing here
imports a heavy library.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

from st_simcse.data.formats import DATA_FILE_SUFFIXES


class SourceError(ValueError):
    """A model or data source that does not exist, or cannot be reached; the message says what to pass instead."""


def looks_like_local_path(name: str) -> bool:
    """A hub name is ``name`` or ``owner/name``; anything else (absolute, ``./``, ``../``, ``~``, deeper, ending in a
    data-file suffix) is a path, and so is ``a/b`` whose first part is a local folder (``output/unsup-simcs``)."""
    name = os.fspath(name)
    if name.startswith(("/", "./", "../", "~", ".\\")) or name.endswith("/") or name.count("/") > 1:
        return True
    if os.path.exists(name):
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
