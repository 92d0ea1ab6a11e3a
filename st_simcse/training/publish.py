"""Publishing a finished run's model (``--push-to-hub``): the kept model and its card, with the run's metrics and
plots, pushed with sentence-transformers' own ``push_to_hub``. What the push needs was checked before training
(:mod:`st_simcse.training.reporting`); a push that fails afterwards keeps the local model and says how to push it by
hand. Used by the recipes' machinery (:mod:`st_simcse.training.loop`, :mod:`st_simcse.training.seeds`)."""

from __future__ import annotations

import os
import shutil

from sentence_transformers import SentenceTransformer

from st_simcse.training.run import PushFailed

# The hidden folder a push stages its files in (beside them, so that they can be hard links).
STAGED = ".push-staging"
# What stays local: how the run went, not what it made (and the checkpoints, which can weigh gigabytes).
NOT_PUSHED = ("checkpoints", "run.log", "run.lock", "runs", "mined_triplets.parquet", "best_model", "wandb", "mlruns")


def pushed_files(output_dir: str) -> list[str]:
    """The names in ``output_dir`` that a push uploads: the model, its card, the metrics and the plots."""
    return sorted(
        name
        for name in os.listdir(output_dir)
        if name not in NOT_PUSHED and not name.startswith(("seed-", ".")) and not name.endswith((".tmp", ".partial"))
    )


def push(model: SentenceTransformer, output_dir: str, repo_id: str, private: bool) -> str:
    """Push the model saved in ``output_dir`` (``model`` is it, loaded) to ``repo_id``: the files of
    :func:`pushed_files`, staged as hard links in a hidden folder beside them (no copy of the weights), through
    ``model.push_to_hub(local_model_path=...)``, so that the card is the one saved there. Returns the commit's
    address; raises :class:`PushFailed`, the local model untouched."""
    staged = os.path.join(output_dir, STAGED)
    try:
        shutil.rmtree(staged, ignore_errors=True)
        os.makedirs(staged)
        for name in pushed_files(output_dir):
            source, target = os.path.join(output_dir, name), os.path.join(staged, name)
            if os.path.isdir(source):
                shutil.copytree(source, target, copy_function=_link_or_copy)
            else:
                _link_or_copy(source, target)
        return model.push_to_hub(
            repo_id,
            private=private,
            exist_ok=True,
            local_model_path=staged,
            commit_message="Add a SimCSE model trained with st_simcse",
        )
    except Exception as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise PushFailed(output_dir, repo_id, reason) from error
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    """A hard link (no copy of a large weights file) where the file system allows one."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
