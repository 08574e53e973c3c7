"""Running a sweep: prepare the study, run workers that take trials until it is full.

- **Study.** :func:`prepare_study` creates the study or reopens it; the sampler and pruner (type
  and settings) and the direction are recorded on it, and reopening it with other ones stops
  with one line. Trials a dead process left RUNNING are failed first, and with ``retry_failed``
  earlier FAIL trials are queued again.
- **Resume.** ``n_trials`` is the size the study should reach: COMPLETE, PRUNED and FAIL trials
  of earlier runs count (the counting rules: :mod:`urbansound.sweep.trials`).
- **Workers.** ``n_jobs`` worker processes (:func:`run_workers`), each asking for its next
  trial as soon as its last one ends (:func:`run_worker`); a worker exits when the sweep's main
  process is gone. With a launcher that runs jobs at once (hydra-joblib-launcher's ``n_jobs``,
  hydra-submitit-launcher's ``array_parallelism``), one worker asks that many trials and hands
  them to the launcher in one ``launch()`` call; the next batch is asked when the whole batch
  has ended. Several machines run the same command against a PostgreSQL storage; the storage
  is the only coordination. A trial's own life (ask, job, tell, heartbeats, retries) is
  :mod:`urbansound.sweep.lifecycle`.
- **Seeds.** The first worker on a new study uses the configured seed; other workers and resumed
  runs derive theirs (:func:`~urbansound.sweep.settings.derive_seed`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from urbansound.errors import ConfigError, UrbansoundError
from urbansound.sweep._compat import quiet_optuna
from urbansound.sweep.conditional import Check, Compose, resolve_settings
from urbansound.sweep.launch import Launch, LaunchBatch, one_at_a_time
from urbansound.sweep.lifecycle import (
    abandon,
    fail_ownerless,
    requeue,
    run_trials,
    worker_name,
)
from urbansound.sweep.ownership import Owner, check_sweep_dir, claim_sweep_dir
from urbansound.sweep.settings import (
    SweepSettings,
    build_pruner,
    build_sampler,
    resolve_sampler_target,
)
from urbansound.sweep.storage import (
    SweepError,
    open_storage,
    release,
    retrying,
    use_password_env,
)
from urbansound.sweep.summary import SweepSummary, summarize
from urbansound.sweep.trials import EXCESS_ATTR, Progress, study_progress, superseded
from urbansound.sweep.urls import display_storage

log = logging.getLogger(__name__)


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
    """The (prepared) study reopened with this worker's sampler and the sweep's pruner;
    returns its storage and the ``optuna.Study``."""
    storage = open_storage(settings.storage, password_env=settings.password_env)
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


def prepare_study(settings: SweepSettings) -> tuple[BaseStorage, Any]:
    """Create or reopen the study, check its identity, fail ownerless trials, record settings.

    Raises
    ------
    ConfigError
        When the study exists with another sampler, pruner or direction, naming what differs.
    """
    storage = open_storage(settings.storage, password_env=settings.password_env)
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
    in batches of up to ``settings.batch_size``; otherwise one at a time through ``launch``
    (:func:`~urbansound.sweep.lifecycle.run_trials`). Returns the study's progress when this
    worker stops. Waits for trials other workers are running (they may die and be failed and
    queued again) when heartbeats are on.
    """
    storage, study = open_study(settings, worker=worker)
    study_id = storage.get_study_id_from_name(settings.study_name)
    batch = launch_batch if launch_batch is not None else one_at_a_time(launch)
    batch_size = settings.batch_size if launch_batch is not None else 1
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
        size = min(batch_size, settings.n_trials - progress.counted)
        run_trials(settings, storage, study, study_id, batch, size=size)


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
    worker opens its own storage connection. Workers never outlive this call. A worker that
    dies (killed by a signal: ``kill -9``, the out-of-memory killer) has its trials failed and
    queued again at once (:func:`fail_dead_worker`), one warning line says so, and a new worker
    takes its place, so the sweep ends with its summary as if nothing happened.

    Raises
    ------
    SweepError
        When a worker process stopped with an error (a storage that stayed down, a bug).
    """
    if settings.n_jobs == 1:
        run_worker(settings, launch, worker=0, launch_batch=launch_batch)
        return
    if launch_batch is not None:
        raise ConfigError("hydra.sweeper.n_jobs > 1 forks workers for Hydra's basic launcher only")
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("fork")
    parent = os.getpid()

    def start(worker: int) -> Any:
        proc = ctx.Process(
            target=_worker_process,
            args=(settings, launch, worker, parent),
            name=f"urbansound-sweep-worker-{worker}",
        )
        proc.start()
        return proc

    live: dict[int, Any] = {}
    failed: list[tuple[str, int]] = []
    # A replacement per trial at most: a worker that dies whenever it starts cannot loop.
    spare = settings.n_trials
    try:
        for i in range(settings.n_jobs):
            live[i] = start(i)
        next_worker = settings.n_jobs
        while live:
            wait([p.sentinel for p in live.values()])
            for i, proc in list(live.items()):
                if proc.exitcode is None:
                    continue
                proc.join()
                del live[i]
                if proc.exitcode == 0:
                    continue
                if proc.exitcode == 130:  # Ctrl-C: it queued its own trial again
                    continue
                if proc.exitcode > 0:
                    failed.append((proc.name, proc.exitcode))
                    continue
                # Killed by a signal: its trials are not lost.
                numbers = fail_dead_worker(settings, proc.pid, _death(proc.exitcode))
                log.warning(
                    "sweep worker %d (pid %d) died (%s): %s",
                    i,
                    proc.pid,
                    _death(proc.exitcode),
                    ", ".join(f"trial {n} queued again" for n in numbers)
                    or "it was running no trial",
                )
                if spare > 0:
                    spare -= 1
                    live[next_worker] = start(next_worker)
                    next_worker += 1
    except KeyboardInterrupt:
        for p in live.values():  # the terminal sent SIGINT to every worker too; let them re-queue
            p.join(timeout=30)
        raise
    finally:
        for p in live.values():
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    if failed:
        raise SweepError(f"sweep worker processes failed: {failed} (see the log above)")


def _death(exitcode: int) -> str:
    """The signal that ended a worker process (its negative exit code), by name: ``SIGKILL``."""
    import signal

    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def fail_dead_worker(settings: SweepSettings, pid: int, how: str) -> list[int]:
    """FAIL and queue again the RUNNING trials of a dead worker process; return their numbers.

    A trial is the worker's when its ``worker`` attribute is this host and ``pid`` (recorded
    as it was asked). A trial told meanwhile is left alone; a storage that cannot be reached
    leaves them to the ownerless rule (:func:`~urbansound.sweep.lifecycle.fail_ownerless`).
    """
    name = worker_name(pid)
    try:
        storage = open_storage(settings.storage, password_env=settings.password_env)
        with quiet_optuna():
            study = retrying(
                "opening the study",
                lambda: optuna.load_study(study_name=settings.study_name, storage=storage),
            )
        running = retrying(
            "reading the running trials",
            lambda: study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)),
        )
        study_id = storage.get_study_id_from_name(settings.study_name)
    except UrbansoundError as exc:  # the storage is down: the ownerless rule fails them later
        log.error("the trials of dead worker %s could not be queued again: %s", name, exc)
        return []
    mine = [t.number for t in running if t.user_attrs.get("worker") == name]
    for number in mine:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        message = f"its worker process (pid {pid}) died ({how}); queued again"
        abandon(study, storage, trial_id, message, settings)
    release(storage)
    return mine


def study_record(settings: SweepSettings) -> dict[str, Any]:
    """What ``<sweep dir>/study.json`` holds: the study and storage the directory belongs to,
    its direction and metric, and the name of the environment variable holding the storage's
    password (for readers: the report, ``fit``)."""
    return {
        "study_name": settings.study_name,
        "storage": display_storage(settings.storage),
        "direction": settings.direction,
        "metric": settings.metric_name,
        "password_env": settings.password_env,
    }


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
    :func:`~urbansound.sweep.lifecycle.run_trials`); None runs trials one at a time in
    ``n_jobs`` workers. Returns the summary (``trials.csv`` and ``best_params.yaml`` written
    into ``sweep_dir``).

    Raises
    ------
    ConfigError
        Before any trial: ``sweep_dir`` belongs to another study (its ``study.json`` or job
        directories: :func:`~urbansound.sweep.ownership.check_sweep_dir`).
    """
    if compose is not None:
        settings = resolve_settings(settings, compose, check)
    owner = Owner(settings.storage, settings.study_name)
    if sweep_dir is not None:  # another study's directory: stop before the study is touched
        check_sweep_dir(sweep_dir, owner)
    # The jobs get trial.storage alone: in this process and the workers it forks, they open
    # it with the password of the variable the sweep names.
    use_password_env(settings.storage, settings.password_env)
    storage, study = retrying("opening the study", lambda: prepare_study(settings))
    if sweep_dir is not None:  # before any trial; a sweep that started at the same moment on
        claim_sweep_dir(sweep_dir, owner, study_record(settings))  # this directory may win
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
