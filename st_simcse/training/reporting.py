"""What a recipe's run streams to the trackers practitioners already use (``--report-to``, with transformers' names
and meaning) and where it publishes its model (``--push-to-hub``), checked before any model loads: an unknown
tracker, a tracker whose package is missing, a bad repository id, no token, or the hub out of reach is one line. The
streaming itself is :mod:`st_simcse.training.trackers`, the push :mod:`st_simcse.training.publish`. No heavy library
is imported here."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re

from st_simcse.hub import hub_offline_mode, hub_reachable

# transformers' integrations (transformers.integrations.INTEGRATION_TO_CALLBACK; tests/test_publishing.py checks that
# the names match those of the installed transformers) -> the module each needs (None: none), and its package.
INTEGRATIONS: dict[str, tuple[str | None, str]] = {
    "azure_ml": ("azureml.core", "azureml-core"),
    "clearml": ("clearml", "clearml"),
    "codecarbon": ("codecarbon", "codecarbon"),
    "comet_ml": ("comet_ml", "comet-ml"),
    "dagshub": ("dagshub", "dagshub"),
    "dvclive": ("dvclive", "dvclive"),
    "flyte": ("flytekit", "flytekit"),
    "kubeflow": (None, "kubeflow"),  # enabled by its trainer's environment (KUBEFLOW_TRAINER_SERVER_URL)
    "mlflow": ("mlflow", "mlflow"),
    "neptune": ("neptune", "neptune"),
    "swanlab": ("swanlab", "swanlab"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "trackio": ("trackio", "trackio"),
    "wandb": ("wandb", "wandb"),
}
# Integrations that came in a later transformers than the lowest one pyproject.toml allows.
TRANSFORMERS_SINCE: dict[str, tuple[int, int]] = {"kubeflow": (5, 4)}


def installed_transformers() -> str:
    """The installed transformers' version, read from its metadata (importing it takes seconds)."""
    return importlib.metadata.version("transformers")


def available_integrations() -> list[str]:
    """The names of :data:`INTEGRATIONS` that the installed transformers has."""
    major, minor = re.match(r"(\d+)\.(\d+)", installed_transformers()).groups()  # "5.4.0", "5.4rc1", "5.10.0.dev0"
    version = (int(major), int(minor))
    return [name for name in INTEGRATIONS if TRANSFORMERS_SINCE.get(name, (0, 0)) <= version]


def trackers(report_to: str | None) -> list[str] | str:
    """``--report-to`` as transformers reads it: "none" -> [], "all" -> "all" (every installed one, decided when
    training starts), else the list of names."""
    if report_to is None or report_to.strip() in ("", "none"):
        return []
    if report_to.strip() == "all":
        return "all"
    return [name.strip() for name in report_to.split(",") if name.strip()]


def installed(name: str) -> bool:
    module = INTEGRATIONS[name][0]
    if module is None:
        return True
    try:
        return importlib.util.find_spec(module) is not None or (
            name == "tensorboard" and importlib.util.find_spec("tensorboardX") is not None
        )
    except ModuleNotFoundError:  # a parent package of a dotted module is missing
        return False


def check_reporting(args: argparse.Namespace) -> None:
    """``--report-to``, ``--logging-steps`` and ``--push-to-hub`` with its ``--hub-model-id``, checked before any
    model loads."""
    chosen = trackers(getattr(args, "report_to", None))
    if isinstance(chosen, list):
        unknown = [name for name in chosen if name not in INTEGRATIONS]
        if unknown:
            raise ValueError(
                f"--report-to {args.report_to}: no tracker called {', '.join(unknown)}; choose none, all (every one "
                f"installed), or a comma-separated list of {', '.join(INTEGRATIONS)}."
            )
        available = available_integrations()
        too_new = [name for name in chosen if name not in available]
        if too_new:
            needed = max(TRANSFORMERS_SINCE[name] for name in too_new)
            raise ValueError(
                f"--report-to {args.report_to}: {', '.join(too_new)} came in transformers {needed[0]}.{needed[1]}, "
                f"and {installed_transformers()} is installed: pip install -U "
                f"'transformers>={needed[0]}.{needed[1]}', or drop {', '.join(too_new)}."
            )
        if "kubeflow" in chosen and not os.environ.get("KUBEFLOW_TRAINER_SERVER_URL"):
            raise ValueError(
                f"--report-to {args.report_to}: kubeflow reports to the Kubeflow trainer that runs this job, and "
                "KUBEFLOW_TRAINER_SERVER_URL is not set: run it under Kubeflow, or drop kubeflow."
            )
        missing = [name for name in chosen if not installed(name)]
        if missing:
            packages = " ".join(INTEGRATIONS[name][1] for name in missing)
            raise ValueError(
                f"--report-to {args.report_to}: {', '.join(missing)} needs its package, which is not installed: "
                f"pip install {packages}"
            )
    if getattr(args, "logging_steps", 1) < 1:
        raise ValueError(f"--logging-steps must be positive, got {args.logging_steps}.")
    if getattr(args, "push_to_hub", False):
        check_push(hub_repository(args.hub_model_id, args.output_dir))
    elif getattr(args, "hub_model_id", None) or getattr(args, "hub_private", False):
        raise ValueError("--hub-model-id and --hub-private say how to push: add --push-to-hub, or drop them.")


def hub_repository(hub_model_id: str | None, output_dir: str) -> str:
    """The repository ``--push-to-hub`` pushes to: ``--hub-model-id``, else the output folder's name (in the
    token's own namespace), as Hugging Face's example scripts do."""
    return hub_model_id or os.path.basename(os.path.normpath(output_dir))


def check_push(repo_id: str) -> None:
    """Everything a push needs that can be known before training: a valid repository id, a token, the hub."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"--push-to-hub: {repo_id!r} is not a valid hub repository id ({reason}).") from None
    if hub_offline_mode():
        raise ValueError(
            "--push-to-hub needs the Hugging Face hub, and HF_HUB_OFFLINE=1 is set: unset it, or drop it."
        )
    if get_token() is None:
        raise ValueError(
            "--push-to-hub needs a Hugging Face token with write access: run `hf auth login`, or set HF_TOKEN."
        )
    if not hub_reachable():
        raise ValueError(
            "--push-to-hub: the Hugging Face hub cannot be reached from this machine; train without --push-to-hub "
            "and push the model later from a machine that reaches it."
        )
