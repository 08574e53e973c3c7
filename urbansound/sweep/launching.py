"""A launcher's batch: the sweeper hands it over and tells it; each job records its outcome.

The sweeper side is :func:`run_batch` (ask a batch, heartbeat it, one ``launch()`` call, tell
each trial) and :func:`tell_recorded` (a later sweep keeps the outcome a finished job recorded).

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
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from urbansound.sweep import SweepError
from urbansound.sweep.runner import (
    ERROR_MAX_CHARS,
    Job,
    JobOutcome,
    LaunchBatch,
    abandon,
    ask_trial,
    prepare_trial,
    tell,
    tell_state,
)
from urbansound.sweep.settings import SweepSettings
from urbansound.sweep.storage import Heartbeat, retrying

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


# ---------------------------------------------------------------------------------------------
# The sweeper side


def run_batch(
    settings: SweepSettings,
    storage: BaseStorage,
    study: Any,
    study_id: int,
    launch_batch: LaunchBatch,
    *,
    size: int,
) -> None:
    """Ask ``size`` trials, run them in one launcher call, tell each (nothing left RUNNING).

    This process records every batch trial's heartbeat while the launcher runs them. A job the
    launcher lost (its process died) is told from the outcome it recorded on its trial before
    it ended (:class:`RecordingTask`), else failed and queued again. Ctrl-C queues
    every trial of the batch again; any other exception here fails them.
    """
    asked: list[tuple[Any, int]] = []
    jobs: list[tuple[Any, int, Job]] = []
    outcomes: list[JobOutcome] = []
    t0 = time.monotonic()
    try:
        with ExitStack() as beats:
            for _ in range(max(size, 1)):
                trial = ask_trial(settings, study)
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
                asked.append((trial, trial_id))
                beats.enter_context(Heartbeat(storage, trial_id, settings.heartbeat_interval))
                overrides = prepare_trial(settings, storage, study, study_id, trial, trial_id)
                if overrides is not None:
                    jobs.append((trial, trial_id, Job(overrides, trial.number)))
            if not jobs:
                return
            log.info(
                "launching trials %s with hydra/launcher=%s",
                [job.number for _, _, job in jobs],
                settings.launcher,
            )
            t0 = time.monotonic()
            outcomes = launch_batch([job for _, _, job in jobs])
    except KeyboardInterrupt:
        for _, trial_id in asked:
            abandon(
                study, storage, trial_id, "interrupted (KeyboardInterrupt); queued again", settings
            )
        raise
    except SweepError:
        raise  # the storage is down: nothing can be told
    except BaseException as exc:  # a bug here or a SystemExit: the trials fail, not silently
        message = f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]
        for _, trial_id in asked:
            abandon(study, storage, trial_id, message, None)
        if not isinstance(exc, Exception):
            raise
        numbers = [t.number for t, _ in asked]
        log.exception("trials %s FAIL: the sweeper could not run them", numbers)
        return
    for (trial, trial_id, _), outcome in zip(jobs, outcomes, strict=True):
        if outcome.lost:
            recorded = retrying(
                "reading the trial", lambda tid=trial_id: recorded_outcome(storage, tid)
            )
            if recorded is None:
                message = f"its job's process died: {outcome.error}"[:ERROR_MAX_CHARS]
                log.warning("trial %d FAIL, queued again: %s", trial.number, message)
                abandon(study, storage, trial_id, message, settings)
                continue
            outcome = _from_record(recorded, outcome.output_dir)
        tell(study, trial, outcome, storage=storage, trial_id=trial_id, t0=t0)


def tell_recorded(study: Any, storage: BaseStorage, trial_id: int, trial: FrozenTrial) -> bool:
    """Tell an ownerless trial the outcome its job recorded; False when it recorded none.

    A sweep killed while a launcher's jobs run (a login node's session lost) leaves their
    trials RUNNING; the jobs finish on their own and record their outcomes, which the next
    sweep keeps instead of running those trials again.
    """
    recorded = trial.system_attrs.get(OUTCOME_ATTR)
    if not isinstance(recorded, dict):
        return False
    try:
        if "value" in recorded:
            tell_state(study, trial.number, value=float(recorded["value"]))
        elif "pruned" in recorded:
            tell_state(study, trial.number, state=TrialState.PRUNED)
        else:
            storage.set_trial_user_attr(trial_id, "error", str(recorded.get("error")))
            tell_state(study, trial.number, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return True  # another worker told it first
    log.warning(
        "trial %d was RUNNING with no live sweep; its job had finished: told %s from its "
        "recorded outcome",
        trial.number,
        storage.get_trial(trial_id).state.name,
    )
    return True


def _from_record(recorded: dict[str, Any], output_dir: str | None) -> JobOutcome:
    """A :class:`JobOutcome` from what a job recorded on its trial."""
    if "value" in recorded:
        return JobOutcome(value=recorded["value"], output_dir=output_dir)
    if "pruned" in recorded:
        return JobOutcome(error=optuna.TrialPruned(recorded["pruned"]), output_dir=output_dir)
    return JobOutcome(error=RuntimeError(recorded.get("error")), output_dir=output_dir)
