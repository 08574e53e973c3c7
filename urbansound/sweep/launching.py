"""The job side of a launcher's batch: each job records its own outcome on its trial.

A launcher such as hydra-joblib-launcher or hydra-submitit-launcher returns the results of a
whole batch from one ``launch()`` call, and raises for the whole batch when one job's process
dies (``kill -9``, out of memory, a node lost): the results of the other jobs are not returned.
So the sweeper wraps the task function in :class:`RecordingTask`, which stores the job's
outcome on its trial (the system attribute ``urbansound:job_outcome``) before the job returns;
after a lost batch the sweeper reads it back (:func:`recorded_outcome`) and tells those trials
as usual. Only a trial whose job recorded nothing (its process died) is failed, and queued
again (up to ``hydra.sweeper.max_retry`` times).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from optuna.storages import BaseStorage

OUTCOME_ATTR = "urbansound:job_outcome"

log = logging.getLogger(__name__)

_STORAGES: dict[str, BaseStorage] = {}


class RecordingTask:
    """A Hydra task function that records its outcome on the job's trial (picklable).

    The trial is found from the job config's ``trial.study_name``, ``trial.storage`` and
    ``trial.number`` (set by the sweeper); outside a sweep it only calls ``task``. The outcome
    is ``{"value": float}``, ``{"pruned": message}`` or ``{"error": "Type: message"}``; a
    storage error while recording is one warning, never the job's failure.
    """

    def __init__(self, task: Callable[[Any], Any]) -> None:
        self.task = task

    def __call__(self, cfg: Any) -> Any:
        try:
            value = self.task(cfg)
        except BaseException as exc:
            _record(cfg, _error_outcome(exc))
            raise
        try:
            _record(cfg, {"value": float(value)})
        except (TypeError, ValueError):
            _record(cfg, {"error": f"ValueError: the job returned {value!r}, not a number"})
        return value


def _error_outcome(exc: BaseException) -> dict[str, str]:
    import optuna

    from urbansound.errors import TrialPruned

    if isinstance(exc, TrialPruned | optuna.TrialPruned):
        return {"pruned": str(exc)}
    return {"error": f"{type(exc).__name__}: {exc}"}


def _record(cfg: Any, outcome: dict[str, Any]) -> None:
    from omegaconf import OmegaConf

    from urbansound.sweep.storage import open_storage, retrying

    trial = OmegaConf.select(cfg, "trial", default=None)
    keys = ("study_name", "storage", "number")
    if trial is None or any(trial.get(key) is None for key in keys):
        return
    try:
        url = str(trial.storage)
        if url not in _STORAGES:
            _STORAGES[url] = open_storage(url)
        storage = _STORAGES[url]
        study_id = storage.get_study_id_from_name(str(trial.study_name))
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(trial.number))
        retrying(
            "recording the job's outcome",
            lambda: storage.set_trial_system_attr(trial_id, OUTCOME_ATTR, outcome),
        )
    except Exception as exc:
        log.warning("could not record the outcome of trial %s: %s", trial.number, exc)


def recorded_outcome(storage: BaseStorage, trial_id: int) -> dict[str, Any] | None:
    """What the trial's job recorded (see :class:`RecordingTask`), or None."""
    outcome = storage.get_trial(trial_id).system_attrs.get(OUTCOME_ATTR)
    return outcome if isinstance(outcome, dict) else None
