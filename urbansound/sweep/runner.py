"""Running a sweep: prepare the study, run workers that ask, launch and tell trials.

- **Trials.** ``study.ask(fixed_distributions=...)``; the job runs through Hydra's launcher with
  ``trial.study_name``, ``trial.storage`` and ``trial.number`` overrides; ``study.tell`` records
  COMPLETE (the returned value), PRUNED or FAIL (the error in the ``error`` user attribute and
  ``error.txt`` in the job directory). Job numbers are trial numbers. Whatever goes wrong after
  ``ask`` (a job that does not compose, Ctrl-C, a crash in this code) the trial is told: nothing
  is ever left RUNNING by this process.
- **Resume.** ``n_trials`` is the size the study should reach: COMPLETE, PRUNED and FAIL trials
  of earlier runs count. A worker records a heartbeat for its running trial. A RUNNING trial
  that no live process owns (its heartbeat, or its start when it has none, is older than the
  grace period) is failed and queued again with its parameters; one that never got parameters
  (its process died inside ``ask``) is failed and not counted. Ctrl-C queues the trial at once.
- **Workers.** ``n_jobs`` worker processes, each asking for its next trial as soon as its last
  one ends. A worker exits when the sweep's main process is gone. Several machines run the same
  command against a PostgreSQL storage; the storage is the only coordination.
- **Launcher batches.** With a launcher that runs jobs at once (hydra-joblib-launcher's
  ``n_jobs``, hydra-submitit-launcher's ``array_parallelism``), one worker asks that many trials
  and hands them to the launcher in one ``launch()`` call
  (:func:`~urbansound.sweep.launching.run_batch`); the next batch is asked when the whole batch
  has ended. A job whose process dies fails its trial alone (queued
  again); the other jobs' outcomes are read from the storage (:mod:`~urbansound.sweep.launching`).
- **Identity.** The sampler and pruner (type and settings) and the direction are recorded on the
  study; reopening it with other ones stops with one line (see :func:`prepare_study`).
- **Seeds.** The first worker on a new study uses the configured seed; other workers and resumed
  runs derive theirs (:func:`~urbansound.sweep.settings.derive_seed`).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from urbansound.config.overrides import format_value
from urbansound.errors import ConfigError, TrialPruned, UrbansoundError
from urbansound.sweep import EXCESS_ATTR, HEARTBEAT_ATTR, PRUNER_ATTR, SweepError
from urbansound.sweep._compat import quiet_optuna
from urbansound.sweep.conditional import Check, Compose, resolve_settings
from urbansound.sweep.settings import (
    SweepSettings,
    build_pruner,
    build_sampler,
    resolve_sampler_target,
)
from urbansound.sweep.storage import (
    Heartbeat,
    display_storage,
    open_storage,
    release,
    retrying,
)
from urbansound.sweep.summary import Progress, SweepSummary, study_progress, summarize, superseded
from urbansound.utils.files import atomic_write, write_json

log = logging.getLogger(__name__)

ERROR_MAX_CHARS = 2000


@dataclass
class JobOutcome:
    """What the launcher reports for one job."""

    value: Any = None
    error: BaseException | None = None
    output_dir: str | None = None
    # True when the launcher lost the job (its process died): no outcome came back.
    lost: bool = False


# launch(overrides, job_num) -> JobOutcome; runs one job (the plugin wraps Hydra's launcher).
Launch = Callable[[list[str], int], JobOutcome]


@dataclass(frozen=True)
class Job:
    """One job of a launcher batch: its overrides and its job number (the trial number)."""

    overrides: list[str]
    number: int


# launch_batch(jobs) -> one JobOutcome per job, in order; runs them in one launch() call.
LaunchBatch = Callable[[Sequence[Job]], list[JobOutcome]]


def _describe_node(node: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(node.items()) if k != "_target_")
    return f"{str(node.get('_target_')).rsplit('.', 1)[-1]}({args})"


def _check_identity(settings: SweepSettings, study: Any) -> None:
    """ConfigError when the study was created with another sampler, pruner or direction."""
    if study.direction.name.lower() != settings.direction:
        raise ConfigError(
            f"study {settings.study_name!r} exists with direction "
            f"{study.direction.name.lower()}; hydra.sweeper.direction is {settings.direction}: "
            "choose another hydra.sweeper.study_name, or the study's direction to continue it"
        )
    wanted = settings.identity()
    stored = study.user_attrs
    for key in ("sampler", "pruner"):
        if key in stored and stored[key] != wanted[key]:
            raise ConfigError(
                f"study {settings.study_name!r} in {display_storage(settings.storage)} was run "
                f"with {key} {_describe_node(stored[key])}; this sweep has "
                f"{_describe_node(wanted[key])}: choose another hydra.sweeper.study_name for a "
                f"new study, or the study's {key} settings to continue it"
            )


def open_study(settings: SweepSettings, *, worker: int) -> tuple[BaseStorage, Any]:
    """Reopen the (prepared) study with this worker's sampler."""
    storage = open_storage(settings.storage)
    study_id = storage.get_study_id_from_name(settings.study_name)
    n_existing = len(storage.get_all_trials(study_id, deepcopy=False))
    with quiet_optuna():
        study = optuna.load_study(
            storage=storage,
            study_name=settings.study_name,
            sampler=build_sampler(
                settings.sampler, settings.space, worker=worker, n_existing=n_existing
            ),
            pruner=build_pruner(settings.pruner),
        )
    return storage, study


def requeue(study: Any, trial: FrozenTrial, max_retry: int | None) -> None:
    """Queue a copy of the failed ``trial`` (same parameters), up to ``max_retry`` times."""
    with quiet_optuna():
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, trial)


def fail_ownerless(settings: SweepSettings, storage: BaseStorage, study: Any) -> list[int]:
    """Fail the RUNNING trials no live process owns; return their numbers.

    A trial is ownerless when its last heartbeat, or its start when it has none, is older than
    ``settings.grace`` seconds. One with parameters (or a grid point) is queued again; one
    without (its process died inside ``study.ask``) is marked not run and does not count.
    Nothing happens when heartbeats are off.
    """
    from urbansound.sweep.launching import tell_recorded

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


def prepare_study(settings: SweepSettings) -> tuple[BaseStorage, Any]:
    """Create or reopen the study, check its identity, fail ownerless trials, record settings.

    Raises
    ------
    ConfigError
        When the study exists with another sampler, pruner or direction, naming what differs.
    """
    storage = open_storage(settings.storage)
    try:
        storage.get_study_id_from_name(settings.study_name)
        exists = True
    except KeyError:
        exists = False
    with quiet_optuna():
        if exists:
            study = optuna.load_study(study_name=settings.study_name, storage=storage)
        else:
            study = optuna.create_study(
                storage=storage,
                study_name=settings.study_name,
                direction=settings.direction,
                load_if_exists=True,  # another machine may create it at the same moment
            )
    _check_identity(settings, study)
    identity = settings.identity()
    for key in ("sampler", "pruner"):
        if key not in study.user_attrs:
            study.set_user_attr(key, identity[key])
    fail_ownerless(settings, storage, study)
    with quiet_optuna():
        study.set_metric_names([settings.metric_name])
    study.set_user_attr("search_space", settings.space.to_json())
    study.set_user_attr("fixed_overrides", list(settings.space.fixed))
    if settings.space.is_conditional:
        study.set_user_attr(
            "branches",
            [{"choices": dict(b.choices), "keys": list(b.keys)} for b in settings.space.branches],
        )
    if settings.retry_failed:
        trials = study.get_trials(deepcopy=False)
        gone = superseded(trials)
        for t in trials:
            if (
                t.state == TrialState.FAIL
                and t.number not in gone
                and not t.system_attrs.get(EXCESS_ATTR)
            ):
                log.info("trial %d failed in an earlier run: queued again", t.number)
                requeue(study, t, None)
    return storage, study


def run_worker(
    settings: SweepSettings,
    launch: Launch,
    *,
    worker: int = 0,
    launch_batch: LaunchBatch | None = None,
) -> Progress:
    """Ask, launch and tell trials until the study holds ``n_trials`` (or too many failed).

    With ``launch_batch`` (a launcher other than Hydra's basic one), trials go to the launcher
    in batches of up to ``settings.batch_size``
    (:func:`~urbansound.sweep.launching.run_batch`); otherwise one at a time through
    ``launch``. Returns the study's progress when this worker stops. Waits for trials other
    workers are running (they may die and be failed and queued again) when heartbeats are on.
    """
    from urbansound.sweep.launching import run_batch

    storage, study = open_study(settings, worker=worker)
    study_id = storage.get_study_id_from_name(settings.study_name)
    waiting_logged: list[int] = []
    while True:
        retrying("checking running trials", lambda: fail_ownerless(settings, storage, study))
        trials = retrying("reading the trials", lambda: study.get_trials(deepcopy=False))
        progress = study_progress(trials)
        if progress.failed > settings.max_failures:
            log.error(
                "%d trials failed (more than max_failure_rate %.2f x n_trials %d): "
                "no new trials are started",
                progress.failed,
                settings.max_failure_rate,
                settings.n_trials,
            )
            return progress
        if progress.counted >= settings.n_trials:
            if not progress.running:
                return progress
            if settings.heartbeat_interval is None:
                log.warning(
                    "trials %s are still RUNNING (another worker, or a killed sweep: without "
                    "hydra.sweeper.heartbeat_interval they are never run again)",
                    progress.running,
                )
                return progress
            if progress.running != waiting_logged:
                log.info(
                    "waiting for running trials %s (other workers, or a dead process's trial "
                    "that is failed and queued again once its grace period of %d s is over)",
                    progress.running,
                    settings.grace,
                )
                waiting_logged = progress.running
            time.sleep(min(settings.heartbeat_interval, 5))
            continue
        log.info("sweep %s: %s", settings.study_name, progress.describe(settings.n_trials))
        if launch_batch is not None:
            size = min(settings.batch_size, settings.n_trials - progress.counted)
            run_batch(settings, storage, study, study_id, launch_batch, size=size)
        else:
            _run_trial(settings, storage, study, study_id, launch)


def ask_trial(settings: SweepSettings, study: Any) -> Any:
    # A conditional space is asked define-by-run after ``ask`` (in prepare_trial, where a
    # failure fails the trial); a plain one gets every distribution at once.
    fixed = {} if settings.space.is_conditional else settings.space.distributions()
    with quiet_optuna():
        return retrying("asking for a trial", lambda: study.ask(fixed_distributions=fixed))


def _run_trial(
    settings: SweepSettings, storage: BaseStorage, study: Any, study_id: int, launch: Launch
) -> None:
    trial = ask_trial(settings, study)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    t0 = time.monotonic()
    try:
        with Heartbeat(storage, trial_id, settings.heartbeat_interval):
            outcome = _launch_trial(settings, storage, study, study_id, trial, trial_id, launch)
    except KeyboardInterrupt:
        abandon(study, storage, trial_id, "interrupted (KeyboardInterrupt); queued again", settings)
        raise
    except SweepError:
        raise  # the storage is down: nothing can be told
    except BaseException as exc:  # a bug here or a SystemExit: the trial fails, not silently
        message = f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]
        abandon(study, storage, trial_id, message, None)
        if not isinstance(exc, Exception):
            raise
        log.exception("trial %d FAIL: the sweeper could not run it", trial.number)
        return
    if outcome is not None:
        tell(study, trial, outcome, storage=storage, trial_id=trial_id, t0=t0)


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


def _launch_trial(
    settings: SweepSettings,
    storage: BaseStorage,
    study: Any,
    study_id: int,
    trial: Any,
    trial_id: int,
    launch: Launch,
) -> JobOutcome | None:
    overrides = prepare_trial(settings, storage, study, study_id, trial, trial_id)
    if overrides is None:
        return None
    try:
        return launch(overrides, trial.number)
    except SystemExit as exc:  # a task that calls sys.exit fails its trial, not the sweep
        return JobOutcome(error=exc)


def prepare_trial(
    settings: SweepSettings,
    storage: BaseStorage,
    study: Any,
    study_id: int,
    trial: Any,
    trial_id: int,
) -> list[str] | None:
    """The job's overrides for an asked trial; None when it must not run (told already).

    A conditional space's trial is asked its parameters here, define-by-run (an error fails
    the trial like any error of the launch path).
    """
    if settings.space.is_conditional:
        with quiet_optuna():
            params = settings.space.suggest(trial)
    else:
        params = trial.params
    frozen = storage.get_trial(trial_id)
    queued = _is_queued(frozen)
    if not queued and _is_excess(storage, study_id, trial.number, settings.n_trials):
        storage.set_trial_system_attr(trial_id, EXCESS_ATTR, True)
        trial.set_user_attr("error", "not run: other workers reached n_trials first")
        tell_state(study, trial, state=TrialState.FAIL)
        return None
    if not queued and settings.is_grid and _grid_point_taken(storage, study_id, frozen):
        # Two workers drew the same grid point at once (Optuna's GridSampler picks at random
        # among the unvisited points): the later trial yields and is not counted.
        storage.set_trial_system_attr(trial_id, EXCESS_ATTR, True)
        trial.set_user_attr("error", "not run: another worker took this grid point first")
        tell_state(study, trial, state=TrialState.FAIL)
        return None
    if queued and frozen.user_attrs.get("error"):
        trial.set_user_attr("error", None)  # copied from the trial this one re-runs
    storage.set_trial_system_attr(trial_id, PRUNER_ATTR, settings.pruner)
    job_overrides = settings.space.overrides(params)
    trial.set_user_attr("overrides", job_overrides)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    overrides = [
        *job_overrides,
        f"trial.study_name={format_value(settings.study_name)}",
        f"trial.storage={format_value(settings.storage)}",
        f"trial.number={trial.number}",
    ]
    log.info("trial %d: %s", trial.number, " ".join(job_overrides) or "(no overrides)")
    return overrides


# How long a grid trial waits for an earlier trial still inside ``study.ask`` (not yet given
# its grid point) before it counts that trial as holding no point (its process died there).
GRID_POINT_WAIT_SECONDS = 30.0


def _grid_point_taken(
    storage: BaseStorage,
    study_id: int,
    trial: FrozenTrial,
    *,
    wait: float = GRID_POINT_WAIT_SECONDS,
) -> bool:
    """True when another trial holds ``trial``'s grid point (``trial`` is a fresh one).

    A point is held by a finished trial (COMPLETE, PRUNED, or FAIL: a failed point counts
    toward ``n_trials`` and is queued again, not drawn again), by a queued trial (a retry of
    any number: its copy runs whatever its number), and by an earlier fresh trial that is
    running. Retried and not-run (``urbansound:excess``) trials hold nothing.

    A live trial's point is known from its queued parameters (``fixed_params``), its
    parameters, or its ``grid_id`` (the sampler sets it before any parameter, so it is known
    while the trial is still being asked). An earlier trial that has none yet is inside
    ``study.ask``: the check waits for it (up to ``wait`` seconds) rather than guess, since two
    workers that ask at the same moment may both draw the last free point.
    """
    deadline = time.monotonic() + wait
    while True:
        trials = storage.get_all_trials(study_id, deepcopy=False)
        gone = superseded(trials)
        unknown = False
        for t in trials:
            if t.number == trial.number or t.number in gone or t.system_attrs.get(EXCESS_ATTR):
                continue
            if t.state.is_finished():
                if t.params == trial.params:
                    return True
                continue
            if _is_queued(t) or t.number < trial.number:
                same = _same_point(t, trial)
                if same:
                    return True
                unknown = unknown or same is None
        if not unknown or time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _is_queued(trial: FrozenTrial) -> bool:
    """True for a trial queued with its parameters: a retry, or ``study.enqueue_trial``."""
    return "retry_history" in trial.system_attrs or "fixed_params" in trial.system_attrs


def _same_point(other: FrozenTrial, trial: FrozenTrial) -> bool | None:
    """Whether a live ``other`` trial has ``trial``'s grid point; None while it has none yet."""
    fixed = other.system_attrs.get("fixed_params")
    if fixed is not None:
        return dict(fixed) == trial.params
    if other.params and set(other.params) == set(trial.params):
        return other.params == trial.params
    gid = other.system_attrs.get("grid_id")
    if gid is None:
        return None
    return gid == trial.system_attrs.get("grid_id")


def _is_excess(storage: BaseStorage, study_id: int, number: int, n_trials: int) -> bool:
    """True when trials numbered below ``number`` already fill ``n_trials`` (a lost race)."""
    trials = storage.get_all_trials(study_id, deepcopy=False)
    earlier = [t for t in trials if t.number < number]
    return study_progress(earlier, gone=superseded(trials)).counted >= n_trials


def tell(
    study: Any, trial: Any, outcome: JobOutcome, *, storage: BaseStorage, trial_id: int, t0: float
) -> None:
    """Record the job's outcome, retrying while the storage is briefly unreachable."""
    state = retrying("reading the trial", lambda: storage.get_trial(trial_id)).state
    if state != TrialState.RUNNING:
        # Another worker took this trial for dead (no heartbeat for grace_period seconds: a
        # starved or suspended process) and queued a copy; that copy's result is the one kept.
        log.warning(
            "trial %d is already %s (its heartbeat stopped for too long); its result is dropped",
            trial.number,
            state.name,
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
    try:
        study.tell(trial, value, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker took it for dead meanwhile (its heartbeat starved past the grace
        # period) and queued a copy; that copy's result is the one kept.
        log.warning("trial %d was failed by another worker meanwhile; result dropped", trial.number)
    except RuntimeError as exc:
        # GridSampler calls study.stop() after the last grid point, which ask-and-tell code
        # cannot honour; the trial is stored before that (Optuna's tell writes it in `finally`).
        if "Study.stop" not in str(exc):
            raise
    except ValueError as exc:
        # Told already: a retried tell whose first try reached the storage before it failed.
        if "Cannot tell a" not in str(exc):
            raise


def _worker_process(
    settings: SweepSettings, launch: Launch, worker: int, parent: int
) -> None:  # pragma: no cover - runs in a forked child; covered through subprocess tests
    def watchdog() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)  # the sweep's main process is gone (kill -9): stop like it did

    threading.Thread(target=watchdog, name="urbansound-watchdog", daemon=True).start()
    code = 0
    try:
        run_worker(settings, launch, worker=worker)
    except KeyboardInterrupt:
        code = 130
    except UrbansoundError as exc:
        log.error("sweep worker %d stopped: %s", worker, exc)
        code = 2
    except Exception:
        log.exception("sweep worker %d stopped", worker)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)  # skip the parent's atexit handlers, inherited through fork


def run_workers(
    settings: SweepSettings, launch: Launch, *, launch_batch: LaunchBatch | None = None
) -> None:
    """Run ``settings.n_jobs`` workers: in this process for one, else in forked processes.

    ``launch_batch`` (a launcher with its own parallelism) needs ``n_jobs`` 1: the launcher
    runs the batch's trials at once (``sweep_settings`` refuses both).

    Forking keeps Hydra's state (config, launcher, task function) without pickling it; each
    worker opens its own storage connection. Workers never outlive this call.

    Raises
    ------
    SweepError
        When a worker process failed.
    """
    if settings.n_jobs == 1:
        run_worker(settings, launch, worker=0, launch_batch=launch_batch)
        return
    if launch_batch is not None:
        raise ConfigError("hydra.sweeper.n_jobs > 1 forks workers for Hydra's basic launcher only")
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(settings, launch, i, os.getpid()),
            name=f"urbansound-sweep-worker-{i}",
        )
        for i in range(settings.n_jobs)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # the terminal sent SIGINT to every worker too; let them re-queue
            p.join(timeout=30)
        raise
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if bad:
        raise SweepError(f"sweep worker processes failed: {bad} (see the log above)")


def write_study_json(settings: SweepSettings, sweep_dir: Path) -> Path:
    """``<sweep_dir>/study.json``: which study and storage this sweep directory belongs to."""
    return write_json(
        sweep_dir / "study.json",
        {
            "study_name": settings.study_name,
            "storage": display_storage(settings.storage),
            "direction": settings.direction,
            "metric": settings.metric_name,
        },
    )


def run_sweep(
    settings: SweepSettings,
    launch: Launch,
    *,
    sweep_dir: Path | None,
    compose: Compose | None = None,
    check: Check | None = None,
    launch_batch: LaunchBatch | None = None,
) -> SweepSummary:
    """Run a whole sweep and summarize it (``failed_too_often`` says whether it gave up).

    ``compose`` (job overrides -> composed config) resolves a conditional search space's
    branches and validates every branch before any trial exists
    (:func:`~urbansound.sweep.conditional.resolve_settings`). ``launch_batch``: hands batches of
    ``settings.batch_size`` trials to a launcher with its own parallelism (see
    :func:`run_batch`); None runs trials one at a time in ``n_jobs`` workers.
    """
    if compose is not None:
        settings = resolve_settings(settings, compose, check)
    storage, study = retrying("opening the study", lambda: prepare_study(settings))
    if sweep_dir is not None:
        write_study_json(settings, sweep_dir)
    progress = study_progress(study.get_trials(deepcopy=False))
    log.info(
        "study %s in %s: %d trials counted (%d complete, %d pruned, %d failed, %d running); "
        "n_trials %d, %s, sampler %s, pruner %s",
        settings.study_name,
        display_storage(settings.storage),
        progress.counted,
        progress.complete,
        progress.pruned,
        progress.failed,
        len(progress.running),
        settings.n_trials,
        (
            f"hydra/launcher={settings.launcher} running {settings.batch_size} at a time"
            if launch_batch is not None
            else f"{settings.n_jobs} worker(s)"
        ),
        resolve_sampler_target(settings.sampler, settings.space).rsplit(".", 1)[-1],
        str(settings.pruner.get("_target_")).rsplit(".", 1)[-1],
    )
    release(storage)
    del study
    run_workers(settings, launch, launch_batch=launch_batch)
    return retrying("reading the results", lambda: summarize(settings, sweep_dir))
