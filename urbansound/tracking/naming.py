"""Names, tags, parameters and the re-run command of an experiment: pure functions."""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from urbansound.config.settings import Settings

#: The objective's one name: Comet's metric and optimizer metric, Optuna's metric name.
OBJECTIVE = "mean_cv_accuracy"


#: The tag of the class-samples experiment (:func:`log_dataset_samples`).
SAMPLES_TAG = "samples"


#: Config sections that are not parameters of the experiment.
_NOT_PARAMETERS = ("trial", "hydra")


def flatten_config(config: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """The resolved config as experiment parameters with stable dotted names.

    Nested mappings become ``group.key``; lists and tuples become JSON text (``"[256, 256]"``) so
    that every parameter is a scalar that Comet compares across experiments. The ``trial`` and
    ``hydra`` sections are left out.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if not prefix and key in _NOT_PARAMETERS:
            continue
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = value
    return flat


def experiment_tags(settings: Settings, *, dataset: str | None = None) -> list[str]:
    """Tags shared by the experiments of one study: dataset, ``sweep``, study and trial."""
    tags: list[str] = []
    if dataset:
        tags.append(dataset)
    trial = settings.trial
    if trial.number is not None or trial.study_name is not None:
        tags.append("sweep")
    if trial.study_name is not None:
        tags.append(f"study:{trial.study_name}")
    if trial.number is not None:
        tags.append(f"trial:{trial.number}")
    return tags


def experiment_name(settings: Settings, *, run_dir: str | Path, overrides: Sequence[str]) -> str:
    """``<study>#<trial>`` in a sweep; otherwise the run's overrides, or its directory's name."""
    trial = settings.trial
    if trial.number is not None:
        return f"{trial.study_name or 'trial'}#{trial.number}"
    shown = _rerun_overrides(overrides)
    name = " ".join(shown) if shown else f"run {Path(run_dir).name}"
    return name if len(name) <= 100 else name[:97] + "..."


def _rerun_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that make this configuration: not the sweeper's ``trial.*``, not Hydra's
    ``hydra.*`` / ``hydra/...``, and not ``sweep=<name>``: a named sweep sets
    ``hydra.mode=MULTIRUN``, so with it the command would run the whole sweep again (its swept
    values are in the job's overrides already)."""

    def key(override: str) -> str:
        return override.lstrip("+~").split("=", 1)[0].strip()

    return [
        o
        for o in overrides
        if key(o) != "sweep" and not key(o).startswith(("trial.", "hydra.", "hydra/"))
    ]


def rerun_command(overrides: Sequence[str]) -> str:
    """The shell command that runs this configuration again, as one run.

    ``python -m urbansound.run`` with the job's overrides shell-quoted, without the sweeper's
    ``trial.*`` keys (which would report to the study), Hydra's own ``hydra.*`` ones and the
    named sweep (``sweep=...``, which would start the sweep again).
    """
    return " ".join(["python -m urbansound.run", *map(shlex.quote, _rerun_overrides(overrides))])


def samples_tags(settings: Settings) -> list[str]:
    study = settings.trial.study_name
    return [SAMPLES_TAG, *([f"study:{study}"] if study is not None else [])]


def metric_key(fold: Any) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(fold))


def finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def reason(exc: BaseException) -> str:
    """One line saying why: our own errors as their message, others with their type's name."""
    from urbansound.errors import UrbansoundError

    text = str(exc).strip().splitlines()
    if text and isinstance(exc, UrbansoundError):
        return text[0]
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
