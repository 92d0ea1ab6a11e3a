"""What a model is and how it may be set up, read from its files: no model loads here, and no heavy library is
imported, so the recipes' and the evaluation command's checks can use it before anything loads. The choices offered
for pooling, attention and compilation are listed here too. Used by :mod:`st_simcse.models.build`,
:mod:`st_simcse.models.released`, the evaluation command and the recipes' options."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field

from st_simcse.hub import hub_offline_mode, hub_reachable, looks_like_local_path

POOLING_MODES = ("cls", "mean", "max", "lasttoken", "weightedmean")
# transformers' attention implementations for BERT-like encoders; "auto" keeps transformers' own choice (SDPA).
# flash_attention_2 needs the flash-attn package and a CUDA GPU; sentence-transformers then feeds it unpadded
# (flattened) batches, and the losses embed each column in its own forward pass.
ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
# torch.compile's modes: "reduce-overhead" and "max-autotune" add CUDA graphs (one replay per step instead of one
# kernel launch per operation) on a GPU; on a CPU they compile as "default" does.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# The poolers of the paper's evaluation.py and its `simcse` tool, by their names there.
REFERENCE_POOLERS = ("cls", "cls_before_pooler", "avg", "avg_first_last", "avg_top2")
# Those that sentence-transformers' built-in modules express exactly, so a model using them saves as a plain folder.
BUILT_IN_POOLERS = ("cls", "cls_before_pooler", "avg")
# sentence-transformers' older Pooling configs name the mode with one flag per mode, in this order of precedence
# (its own reading of them, Pooling.load_config, gives the same mode: tests/test_architectures.py).
LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass
class StartModel:
    """What a start model is, read from its files before it loads: a sentence-transformers model (its module types,
    its pooling mode, the length it serves with) or a plain transformers checkpoint."""

    sentence_transformer: bool
    modules: list[str] = field(default_factory=list)
    pooling: str | None = None
    max_seq_length: int | None = None


def model_file(model_name_or_path: str, filename: str, local_files_only: bool = False) -> str | None:
    """The path of ``filename`` of a model (a local folder, or a hub repository: downloaded, or from the local hub
    cache with ``local_files_only``), None where the model has no such file."""
    name = os.fspath(model_name_or_path)
    if os.path.isdir(name):
        path = os.path.join(name, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError

    folder, base = os.path.split(filename)
    # HF_HUB_OFFLINE set after huggingface_hub was imported is not seen by it: ask the cache alone then too.
    local_files_only = local_files_only or hub_offline_mode()
    try:
        return hf_hub_download(name, base, subfolder=folder or None, local_files_only=local_files_only)
    except (EntryNotFoundError, HFValidationError, LocalEntryNotFoundError):
        return None


def _read_json(path: str) -> dict | list:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def pooling_mode(config: dict) -> str | None:
    """The mode of a Pooling module's ``config.json`` (several modes joined by "+")."""
    mode = config.get("pooling_mode")
    if mode is None:
        flagged = [name for key, name in LEGACY_POOLING_FLAGS.items() if config.get(key)]
        if not any(key in config for key in LEGACY_POOLING_FLAGS):
            return None
        mode = flagged or ["mean"]
    return "+".join(mode) if isinstance(mode, (list, tuple)) else mode


@functools.lru_cache(maxsize=8)
def describe_start_model(model_name_or_path: str) -> StartModel:
    """A local folder or a hub name (fetched from the hub: call it where the hub is reachable or cached)."""
    modules_file = model_file(model_name_or_path, "modules.json")
    if modules_file is None:
        return StartModel(False)
    modules = _read_json(modules_file)
    pooling = None
    for module in modules:
        if module["type"].endswith("Pooling"):
            config = model_file(model_name_or_path, os.path.join(module["path"], "config.json"))
            pooling = pooling_mode(_read_json(config)) if config else None
    config_file = model_file(model_name_or_path, "sentence_bert_config.json")
    max_seq_length = _read_json(config_file).get("max_seq_length") if config_file else None
    names = [module["type"].rsplit(".", 1)[-1] for module in modules]
    return StartModel(True, names, pooling, max_seq_length)


def model_is_describable(name: str) -> bool:
    """Whether ``name``'s files can be read without a wait: a local folder, or a hub name with the hub in reach (or
    the local cache asked for)."""
    if looks_like_local_path(name):
        return os.path.isdir(os.path.expanduser(name))
    return hub_offline_mode() or hub_reachable()


def is_sentence_transformer(model_name_or_path: str) -> bool:
    """Whether ``model_name_or_path`` (a local folder, or a hub name: fetched from the hub or its cache) is a
    sentence-transformers model, i.e. has a ``modules.json``. Read afresh on every call (no cache), so a folder
    overwritten with another kind of model is seen as it is now."""
    name = os.fspath(model_name_or_path)
    # Offline, a hub name is looked up in the local cache only: the hub libraries' retries take half a minute.
    cache_only = not looks_like_local_path(name) and (hub_offline_mode() or not hub_reachable())
    return model_file(name, "modules.json", local_files_only=cache_only) is not None


def default_pooler(model_name_or_path: str) -> str:
    """The paper's tool's choice for a plain transformers checkpoint in the paper's layout: ``cls_before_pooler`` for
    unsupervised models (a name containing "unsup"), whose training-only MLP was dropped, else ``cls`` (the
    supervised models keep the MLP as BERT's pooler). A sentence-transformers model needs no choice: it pools with
    its own modules (:func:`is_sentence_transformer`)."""
    return "cls_before_pooler" if "unsup" in os.fspath(model_name_or_path) else "cls"
