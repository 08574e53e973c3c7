"""The job side of a sweep: the trial reaches the job through the storage.

The sweeper passes ``trial.study_name``, ``trial.storage`` and ``trial.number`` to the job; the
job reopens the trial to read its parameters (:func:`trial_params`), to report the mean CV
accuracy once per epoch and ask whether to prune (:func:`epoch_reporter`), and to store links
(run directory, Comet experiment key: :func:`set_trial_attrs`). A transient storage error is
retried (see :func:`urbansound.sweep.storage.retrying`), so a database restart does not cost the
trial.

With a launcher that runs a batch of jobs at once, each job also records its outcome on its
trial before it returns (:class:`RecordingTask`): such a launcher raises for the whole batch
when one job's process dies, and the sweeper then reads the others' outcomes back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from urbansound.config.settings import TrialSettings
from urbansound.errors import ConfigError, TrialPruned
from urbansound.sweep._compat import live_trial, quiet_optuna
from urbansound.sweep.settings import build_pruner
from urbansound.sweep.storage import open_storage, retrying, use_password_env
from urbansound.sweep.trials import OUTCOME_ATTR, PRUNER_ATTR
from urbansound.sweep.urls import display_storage

log = logging.getLogger(__name__)

_JOB_STORAGES: dict[str, BaseStorage] = {}


def _job_storage(url: str) -> BaseStorage:
    if url not in _JOB_STORAGES:
        _JOB_STORAGES[url] = open_storage(url)
    return _JOB_STORAGES[url]


def _in_sweep(trial: TrialSettings) -> bool:
    return not (trial.number is None or trial.study_name is None or trial.storage is None)


def _trial_id(trial: TrialSettings) -> tuple[BaseStorage, int]:
    assert trial.storage is not None and trial.study_name is not None and trial.number is not None
    storage = _job_storage(trial.storage)
    try:
        study_id = retrying(
            "finding the study", lambda: storage.get_study_id_from_name(trial.study_name)
        )
        return storage, retrying(
            "finding the trial",
            lambda: storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
        )
    except KeyError:
        raise ConfigError(
            f"trial.number={trial.number} of study {trial.study_name!r} is not in "
            f"{display_storage(trial.storage)}: trial.* is set by the urbansound sweeper, "
            "leave it unset"
        ) from None


def trial_params(trial: TrialSettings) -> dict[str, Any]:
    """The swept parameters of the job's trial (an empty dict outside a sweep)."""
    if not _in_sweep(trial):
        return {}
    storage, trial_id = _trial_id(trial)
    return dict(retrying("reading the trial", lambda: storage.get_trial(trial_id)).params)


def epoch_reporter(trial: TrialSettings) -> Callable[[Any], None] | None:
    """An epoch callback that reports to the job's Optuna trial and prunes it.

    Returns None outside a sweep (``trial.number`` unset). The callback reports
    ``metrics.mean_test_accuracy`` with ``metrics.epoch`` as the step and raises
    :class:`~urbansound.errors.TrialPruned` when the sweep's pruner says so. A storage that stays
    unreachable raises :class:`~urbansound.sweep.storage.SweepError` (the trial then fails
    with it).
    """
    if not _in_sweep(trial):
        return None
    storage, trial_id = _trial_id(trial)
    frozen = retrying("reading the trial", lambda: storage.get_trial(trial_id))
    pruner = build_pruner(frozen.system_attrs.get(PRUNER_ATTR))
    with quiet_optuna():
        study = retrying(
            "opening the study",
            lambda: optuna.load_study(
                study_name=trial.study_name,
                storage=storage,
                pruner=pruner,
                sampler=optuna.samplers.RandomSampler(seed=0),  # the job suggests nothing
            ),
        )
        live = live_trial(study, trial_id)

    def report(metrics: Any) -> None:
        value, step = float(metrics.mean_test_accuracy), int(metrics.epoch)
        retrying(f"reporting epoch {step}", lambda: live.report(value, step))
        if retrying(f"asking the pruner at epoch {step}", live.should_prune):
            raise TrialPruned(step, value)

    return report


def set_trial_attrs(trial: TrialSettings, **attrs: Any) -> None:
    """Store user attributes (run_dir, overrides, comet_experiment_key, ...) on the job's trial.

    A no-op outside a sweep. Values are stored as JSON (paths as strings); a storage error is
    logged, never raised: a link must not cost the trial.
    """
    if not _in_sweep(trial):
        return
    try:
        storage, trial_id = _trial_id(trial)
        for key, value in attrs.items():
            retrying(
                f"storing {key}",
                lambda k=key, v=value: storage.set_trial_user_attr(trial_id, k, _jsonable(v)),
            )
    except Exception as exc:
        log.warning("could not store %s on trial %s: %s", sorted(attrs), trial.number, exc)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class RecordingTask:
    """A Hydra task function that records its outcome on the job's trial (picklable).

    The trial is found from the job config's ``trial.study_name``, ``trial.storage`` and
    ``trial.number`` (set by the sweeper); outside a sweep it only calls ``task``. The outcome
    (:data:`~urbansound.sweep.trials.OUTCOME_ATTR`) is ``{"value": float}``,
    ``{"pruned": message}`` or ``{"error": "Type: message"}``; a storage error while recording
    is one warning, never the job's failure. Returns, or raises, what ``task`` does.

    ``password_env`` (``hydra.sweeper.storage_password_env``) travels with the task to the
    job's process, where the job's storage is opened with that variable's password.
    """

    def __init__(self, task: Callable[[Any], Any], password_env: str | None = None) -> None:
        self.task = task
        self.password_env = password_env

    def __call__(self, cfg: Any) -> Any:
        from omegaconf import OmegaConf

        storage = OmegaConf.select(cfg, "trial.storage", default=None)
        if storage is not None and self.password_env is not None:
            use_password_env(str(storage), self.password_env)
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
    if isinstance(exc, TrialPruned | optuna.TrialPruned):
        return {"pruned": str(exc)}
    return {"error": f"{type(exc).__name__}: {exc}"}


def _record(cfg: Any, outcome: dict[str, Any]) -> None:
    from omegaconf import OmegaConf

    node = OmegaConf.select(cfg, "trial", default=None)
    keys = ("study_name", "storage", "number")
    if node is None or any(node.get(key) is None for key in keys):
        return
    try:
        trial = TrialSettings(
            study_name=str(node.study_name), storage=str(node.storage), number=int(node.number)
        )
        storage, trial_id = _trial_id(trial)
        retrying(
            "recording the job's outcome",
            lambda: storage.set_trial_system_attr(trial_id, OUTCOME_ATTR, outcome),
        )
    except Exception as exc:
        log.warning("could not record the outcome of trial %s: %s", node.get("number"), exc)
