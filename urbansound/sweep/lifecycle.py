"""The life of a trial: asked, given to a job, told; failed and queued again when its owner died.

- **Ask.** ``study.ask(fixed_distributions=...)`` (a conditional space is asked define-by-run
  just after). A fresh trial that must not run (the study is full, or another trial holds its
  grid point: :func:`urbansound.sweep.grid.yield_reason`) is told FAIL at once, marked
  :data:`~urbansound.sweep.trials.EXCESS_ATTR`, and does not count.
- **Job.** The job gets the trial's overrides plus ``trial.study_name``, ``trial.storage`` and
  ``trial.number``; job numbers are trial numbers. :func:`run_trials` asks a batch (one trial
  with Hydra's basic launcher; a launcher's parallelism otherwise) and hands it over in one
  call, recording each trial's heartbeat (:class:`Heartbeat`) meanwhile.
- **Tell.** COMPLETE with the returned value, PRUNED, or FAIL with the error (its ``error``
  user attribute, and ``error.txt`` in the job directory). Whatever goes wrong after ``ask``
  (a job that does not compose, Ctrl-C, a crash in this code) the trial is told: nothing is
  ever left RUNNING by this process. Ctrl-C queues the trial again at once.
- **Ownerless trials.** A RUNNING trial whose heartbeat (or start) is older than the grace
  period belongs to a dead process (:func:`fail_ownerless`): the outcome its launcher's job
  recorded is told when there is one; otherwise it is failed and queued again with its
  parameters (up to ``max_retry`` times), or, when it never got parameters, failed and not
  counted.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from urbansound.config.overrides import format_value
from urbansound.errors import TrialPruned, UrbansoundError
from urbansound.sweep._compat import quiet_optuna
from urbansound.sweep.grid import yield_reason
from urbansound.sweep.launch import Job, JobOutcome, LaunchBatch
from urbansound.sweep.settings import SweepSettings
from urbansound.sweep.storage import SweepError, retrying, root_cause
from urbansound.sweep.trials import (
    EXCESS_ATTR,
    HEARTBEAT_ATTR,
    OUTCOME_ATTR,
    PRUNER_ATTR,
    is_queued,
)
from urbansound.utils.files import atomic_write

log = logging.getLogger(__name__)

#: The longest error text stored on a trial (its ``error`` user attribute).
ERROR_MAX_CHARS = 2000


# ---------------------------------------------------------------------------------------------
# Heartbeats


def worker_name(pid: int | None = None) -> str:
    """``host:pid`` of a sweep process (this one by default): a trial's ``worker`` attribute."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def record_heartbeat(storage: BaseStorage, trial_id: int) -> None:
    """Mark a running trial alive now (wall-clock time: machines need roughly synced clocks)."""
    storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())


class Heartbeat:
    """Records heartbeats of one running trial from a background thread.

    The first heartbeat is recorded by ``__enter__`` itself; ``interval`` None records none. A
    failed heartbeat is logged (once while the storage stays unreachable) and retried at the
    next interval.
    """

    def __init__(self, storage: BaseStorage, trial_id: int, interval: int | None) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self._interval is None:
            return self
        record_heartbeat(self._storage, self._trial_id)
        self._thread = threading.Thread(target=self._run, name="urbansound-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._interval is not None
        failing = False
        while not self._stop.wait(self._interval):
            try:
                record_heartbeat(self._storage, self._trial_id)
            except Exception as exc:  # a storage hiccup; the next beat may get through
                if not failing:
                    log.warning(
                        "heartbeat of trial id %d not recorded (retrying every %d s): %s",
                        self._trial_id,
                        self._interval,
                        root_cause(exc),
                    )
                failing = True
            else:
                if failing:
                    log.info("heartbeat of trial id %d recorded again", self._trial_id)
                failing = False

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# ---------------------------------------------------------------------------------------------
# Ask and launch


def ask_trial(settings: SweepSettings, study: Any) -> Any:
    """A new (or queued) trial of ``study``; a plain space's parameters are drawn at once.

    A conditional space is asked define-by-run afterwards (:func:`prepare_trial`, where a
    failure fails the trial like any error of the launch path).
    """
    fixed = {} if settings.space.is_conditional else settings.space.distributions()
    with quiet_optuna():
        return retrying("asking for a trial", lambda: study.ask(fixed_distributions=fixed))


def prepare_trial(
    settings: SweepSettings,
    storage: BaseStorage,
    study: Any,
    study_id: int,
    trial: Any,
    trial_id: int,
) -> list[str] | None:
    """The job's overrides for an asked trial; None when it must not run (told FAIL already).

    Records on the trial what its job and the dashboard need: the pruner node and the job's
    overrides (:func:`run_trials` recorded the worker, ``host:pid``, when it asked).
    """
    if settings.space.is_conditional:
        with quiet_optuna():
            params = settings.space.suggest(trial)
    else:
        params = trial.params
    frozen = storage.get_trial(trial_id)
    reason = yield_reason(
        storage, study_id, frozen, n_trials=settings.n_trials, is_grid=settings.is_grid
    )
    if reason is not None:
        storage.set_trial_system_attr(trial_id, EXCESS_ATTR, True)
        trial.set_user_attr("error", reason)
        tell_state(study, trial, state=TrialState.FAIL)
        return None
    if is_queued(frozen) and frozen.user_attrs.get("error"):
        trial.set_user_attr("error", None)  # copied from the trial this one re-runs
    storage.set_trial_system_attr(trial_id, PRUNER_ATTR, settings.pruner)
    job_overrides = settings.space.overrides(params)
    trial.set_user_attr("overrides", job_overrides)
    log.info("trial %d: %s", trial.number, " ".join(job_overrides) or "(no overrides)")
    return [
        *job_overrides,
        f"trial.study_name={format_value(settings.study_name)}",
        f"trial.storage={format_value(settings.storage)}",
        f"trial.number={trial.number}",
    ]


def run_trials(
    settings: SweepSettings,
    storage: BaseStorage,
    study: Any,
    study_id: int,
    launch_batch: LaunchBatch,
    *,
    size: int,
) -> None:
    """Ask ``size`` trials, run them in one ``launch_batch`` call, tell each of them.

    This process records every trial's heartbeat while the jobs run. A job the launcher lost
    (its process died) is told from the outcome it recorded on its trial before it ended
    (:class:`urbansound.sweep.job.RecordingTask`), else failed and queued again. Ctrl-C queues
    every trial of the batch again; any other exception here fails them (a storage that is
    down, :class:`SweepError`, leaves them to :func:`fail_ownerless`). Nothing stays RUNNING.
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
                # Who runs it, at once: the sweep's main process fails a dead worker's trials.
                storage.set_trial_user_attr(trial_id, "worker", worker_name())
                beats.enter_context(Heartbeat(storage, trial_id, settings.heartbeat_interval))
                overrides = prepare_trial(settings, storage, study, study_id, trial, trial_id)
                if overrides is not None:
                    jobs.append((trial, trial_id, Job(overrides, trial.number)))
            if not jobs:
                return
            if settings.launcher != "basic":
                numbers = [job.number for _, _, job in jobs]
                log.info("launching trials %s with hydra/launcher=%s", numbers, settings.launcher)
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
        log.exception(
            "trials %s FAIL: the sweeper could not run them", [t.number for t, _ in asked]
        )
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


# ---------------------------------------------------------------------------------------------
# Tell, fail, queue again


def tell(
    study: Any, trial: Any, outcome: JobOutcome, *, storage: BaseStorage, trial_id: int, t0: float
) -> None:
    """Record the job's outcome (COMPLETE, PRUNED or FAIL), retrying a briefly unreachable
    storage; ``t0`` is the job's start (``time.monotonic``) for the logged duration."""
    stored = retrying("reading the trial", lambda: storage.get_trial(trial_id))
    if stored.state != TrialState.RUNNING:
        # Another process finished it meanwhile: most likely it took this trial for dead (no
        # heartbeat for grace_period seconds: a starved or suspended process) and queued a
        # copy, whose result is the one kept. Its own record says why.
        log.warning(
            "trial %d is already %s (%s); this job's result is dropped",
            trial.number,
            stored.state.name,
            stored.user_attrs.get("error") or "told by another process",
        )
        return
    seconds = time.monotonic() - t0
    if outcome.output_dir:
        retrying("storing run_dir", lambda: trial.set_user_attr("run_dir", outcome.output_dir))
    error = outcome.error
    if error is None:
        try:
            value = float(outcome.value)
            if math.isnan(value):
                raise ValueError
        except (TypeError, ValueError):
            error = ValueError(f"the job returned {outcome.value!r}, not a number")
        else:
            retrying(f"telling trial {trial.number}", lambda: tell_state(study, trial, value=value))
            log.info("trial %d COMPLETE: %.4g (%.1f s)", trial.number, value, seconds)
            return
    if isinstance(error, TrialPruned | optuna.TrialPruned):
        retrying(
            f"telling trial {trial.number}",
            lambda: tell_state(study, trial, state=TrialState.PRUNED),
        )
        log.info("trial %d PRUNED: %s (%.1f s)", trial.number, error, seconds)
        return
    message = f"{type(error).__name__}: {error}"[:ERROR_MAX_CHARS]
    if outcome.output_dir:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        try:
            atomic_write(Path(outcome.output_dir) / "error.txt", text)
        except UrbansoundError as exc:
            log.warning("%s", exc)
    retrying("storing the error", lambda: trial.set_user_attr("error", message))
    retrying(
        f"telling trial {trial.number}", lambda: tell_state(study, trial, state=TrialState.FAIL)
    )
    log.warning(
        "trial %d FAIL: %s (%.1f s)", trial.number, message, seconds, exc_info=_exc_info(error)
    )


def _exc_info(error: BaseException) -> Any:
    if isinstance(error, UrbansoundError | SystemExit) or getattr(error, "composition", False):
        return None  # the message says it all
    return (type(error), error, error.__traceback__)


def tell_state(
    study: Any, trial: Any, *, value: float | None = None, state: TrialState | None = None
) -> None:
    """``study.tell(trial, value, state=state)``, where a trial told already is no error.

    Another worker may have failed it meanwhile (it took a starved trial for dead and queued a
    copy, whose result is the one kept), or a retried tell's first try may have reached the
    storage; both are logged or ignored. Optuna's ``GridSampler`` calls ``study.stop()`` after
    the last point, which ask-and-tell code cannot honour: the trial is stored before that.
    """
    try:
        study.tell(trial, value, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning(
            "trial %d was finished by another process meanwhile; this result is dropped",
            trial.number,
        )
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise
    except ValueError as exc:
        if "Cannot tell a" not in str(exc):
            raise


def requeue(study: Any, trial: FrozenTrial, max_retry: int | None) -> None:
    """Queue a copy of the failed ``trial`` (same parameters), up to ``max_retry`` times."""
    with quiet_optuna():
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, trial)


def abandon(
    study: Any,
    storage: BaseStorage,
    trial_id: int,
    message: str,
    settings: SweepSettings | None,
) -> None:
    """FAIL a trial that this process cannot finish (queued again when ``settings`` is given)."""
    try:
        storage.set_trial_user_attr(trial_id, "error", message)
        if storage.set_trial_state_values(trial_id, state=TrialState.FAIL) and settings:
            requeue(study, storage.get_trial(trial_id), settings.max_retry)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # told already
    except Exception as exc:  # the storage is down: the ownerless rule fails it later
        log.error("trial id %d could not be marked FAIL: %s", trial_id, exc)


def fail_ownerless(settings: SweepSettings, storage: BaseStorage, study: Any) -> list[int]:
    """Fail the RUNNING trials no live process owns; return their numbers.

    A trial is ownerless when its last heartbeat, or its start when it has none, is older than
    ``settings.grace`` seconds. One whose launcher's job recorded its outcome is told that
    outcome (:func:`tell_recorded`); one with parameters (or a grid point) is queued again; one
    without (its process died inside ``study.ask``) is marked not run and does not count.
    Nothing happens when heartbeats are off.
    """
    grace = settings.grace
    if grace is None:
        return []
    study_id = storage.get_study_id_from_name(settings.study_name)
    now = time.time()
    failed = []
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        started = t.datetime_start.timestamp() if t.datetime_start else 0.0
        last = max(float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0)), started)
        if now - last <= grace:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        if tell_recorded(study, storage, trial_id, t):
            continue  # its sweep died, its launcher's job finished and recorded the outcome
        assigned = bool(t.params) or "grid_id" in t.system_attrs
        try:
            if assigned:
                storage.set_trial_user_attr(
                    trial_id,
                    "error",
                    f"its process stopped (no heartbeat for {now - last:.0f} s > grace period "
                    f"{grace} s); queued again",
                )
            else:
                storage.set_trial_system_attr(trial_id, EXCESS_ATTR, True)
                storage.set_trial_user_attr(
                    trial_id, "error", "not run: its process stopped before it had parameters"
                )
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        log.warning(
            "trial %d was RUNNING with no live process (no heartbeat for %.0f s): FAIL%s",
            t.number,
            now - last,
            ", queued again" if assigned else ", not counted",
        )
        if assigned:
            requeue(study, storage.get_trial(trial_id), settings.max_retry)
        failed.append(t.number)
    return failed


# ---------------------------------------------------------------------------------------------
# Outcomes a launcher's jobs recorded (urbansound.sweep.job.RecordingTask)


def recorded_outcome(storage: BaseStorage, trial_id: int) -> dict[str, Any] | None:
    """What the trial's job recorded on it (``{"value"}``, ``{"pruned"}``, ``{"error"}``), or
    None when it recorded nothing."""
    outcome = storage.get_trial(trial_id).system_attrs.get(OUTCOME_ATTR)
    return outcome if isinstance(outcome, dict) else None


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
