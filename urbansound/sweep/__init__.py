"""Optuna sweeps: search spaces from Hydra's override grammar, studies, the trial bridge, pruning.

The Hydra side is the thin sweeper in ``hydra_plugins/urbansound_sweeper``; everything else lives
in this package, one concern per module:

- :mod:`~urbansound.sweep.space`: Hydra's override grammar -> Optuna distributions, the one
  override parser of the package (:func:`parse_override`), derived study names.
- :mod:`~urbansound.sweep.conditional`: conditional spaces (keys asked only where they exist).
- :mod:`~urbansound.sweep.settings`: ``hydra.sweeper.*`` validated into :class:`SweepSettings`;
  samplers and pruners.
- :mod:`~urbansound.sweep.storage`: storage URLs, opening storages, heartbeats.
- :mod:`~urbansound.sweep.runner`: study preparation, workers, asking and telling trials.
- :mod:`~urbansound.sweep.launching`: a launcher batch's job side (each job records its outcome).
- :mod:`~urbansound.sweep.summary`: trial counts, the trial table, ``trials.csv``, best params.
- :mod:`~urbansound.sweep.job`: the job side (:func:`epoch_reporter`, :func:`set_trial_attrs`).
- :mod:`~urbansound.sweep._compat`: every use of a private Optuna or Hydra API, one function each.

Importing this package is cheap: the names below are loaded from their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from urbansound.errors import UrbansoundError


class SweepError(UrbansoundError):
    """A sweep stopped: too many failed trials, a worker process died, the storage is down."""


# Trial system attributes written by the sweeper.
PRUNER_ATTR = "urbansound:pruner"
EXCESS_ATTR = "urbansound:excess"
HEARTBEAT_ATTR = "urbansound:heartbeat"
# The objective's name in Optuna (dashboard), Comet and the report.
METRIC_NAME = "mean_cv_accuracy"

_EXPORTS = {
    "space": (
        "Param",
        "SearchSpace",
        "build_search_space",
        "derive_study_name",
        "parse_param",
    ),
    "settings": (
        "AUTO_SAMPLER",
        "GRID_SAMPLER",
        "NOP_PRUNER",
        "TPE_SAMPLER",
        "SweepSettings",
        "auto_sampler",
        "build_pruner",
        "build_sampler",
        "derive_seed",
        "launcher_parallelism",
        "resolve_sampler_target",
        "sweep_settings",
    ),
    "storage": ("dashboard_command", "display_storage", "normalize_storage", "open_storage"),
    "runner": (
        "Job",
        "JobOutcome",
        "Launch",
        "LaunchBatch",
        "prepare_study",
        "run_sweep",
        "run_worker",
        "run_workers",
    ),
    "launching": ("RecordingTask", "run_batch"),
    "summary": (
        "Progress",
        "SweepSummary",
        "format_table",
        "study_progress",
        "summarize",
        "trial_rows",
    ),
    "job": ("epoch_reporter", "set_trial_attrs", "trial_params"),
    "conditional": ("Branch", "BranchGridSampler", "resolve_branches", "resolve_settings"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "EXCESS_ATTR",
    "HEARTBEAT_ATTR",
    "METRIC_NAME",
    "PRUNER_ATTR",
    "SweepError",
    *sorted(_WHERE),
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
