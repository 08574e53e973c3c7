"""Queued trials and dead workers across real processes: each queued trial runs once.

Optuna's storage coordinates the workers (``study.ask`` pops a WAITING trial by a read-then-write
in one of the storage's transactions); these tests check that it does for every storage the
sweeper opens, and that a worker killed with ``kill -9`` costs its trial nothing but a retry.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import process_alive
from urbansound.sweep.storage import open_storage, release
from urbansound.sweep.trials import EXCESS_ATTR

from .apps.quadratic import app
from .postgres import postgres_server, postgres_url
from .test_sweep_processes import command, only_study, trial_table, wait_for

APP = Path(app.__file__)
N_QUEUED = 48
N_PROCESSES = 4


def _ask_until_empty(storage: str, study_name: str, barrier: object, out: object) -> None:
    """One process: pop WAITING trials (``study.ask``) until none is left; put their numbers."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    barrier.wait()  # type: ignore[attr-defined]
    popped = []
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()
        if trial.number >= N_QUEUED:  # another process took the last one first: a fresh trial
            study.tell(trial, state=TrialState.FAIL)
            break
        popped.append(trial.number)
    out.put(popped)  # type: ignore[attr-defined]


def _claims(storage: str) -> list[int]:
    """Queue N_QUEUED trials, let N_PROCESSES processes pop them at once; every number popped."""
    study_name = f"claims-{uuid.uuid4().hex[:8]}"
    opened = open_storage(storage)
    study = optuna.create_study(study_name=study_name, storage=opened)
    for i in range(N_QUEUED):
        study.enqueue_trial({"i": i}, skip_if_exists=False)
    release(opened)
    ctx = multiprocessing.get_context("spawn")  # fresh processes, each with its own connection
    barrier, out = ctx.Barrier(N_PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=_ask_until_empty, args=(storage, study_name, barrier, out))
        for _ in range(N_PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        popped = [n for _ in procs for n in out.get(timeout=240)]
    finally:
        for p in procs:
            p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    return sorted(popped)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_each_queued_trial_is_claimed_by_exactly_one_of_several_processes(tmp_path, kind):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite" else str(tmp_path / "j.log")
    assert _claims(storage) == list(range(N_QUEUED))  # each popped once, none left behind


@pytest.mark.slow
@pytest.mark.postgres
def test_each_queued_trial_is_claimed_by_exactly_one_process_on_postgres():
    url = postgres_url()
    popped = _claims(url)
    for name in optuna.get_all_study_names(url):
        if name.startswith("claims-"):
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=url)
    assert popped == list(range(N_QUEUED))


# --------------------------------------------------------------------------------------------
# Whole sweeps: a queued retry starts once; a dead worker's trial is queued again


def starts(markers: Path) -> dict[int, list[str]]:
    """Trial number -> one line (pid, job dir) per start of its job."""
    return {
        int(p.stem): p.read_text().splitlines() for p in markers.glob("*.start") if p.stem.isdigit()
    }


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [2, 4])
def test_queued_retries_of_a_killed_parallel_sweep_each_start_once(tmp_path, n_jobs):
    """kill -9 of an n_jobs sweep while every worker trains; the same command again: each
    interrupted trial's retry starts once, in its own job directory, and nothing is dropped."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    markers = tmp_path / "markers"
    cmd = command(
        tmp_path / "jobs",
        storage,
        f"x=range(0,{2 * n_jobs})",
        "epochs=20",
        "sleep=0.1",
        f"marker_dir={markers}",
        f"hydra.sweeper.n_jobs={n_jobs}",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
    )
    first = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for n in range(n_jobs):
        wait_for(markers / f"{n}.start")
    first.send_signal(signal.SIGKILL)  # the main process; its workers follow it
    first.wait(timeout=30)
    workers = {t.user_attrs.get("worker") for t in only_study(storage).trials}
    deadline = time.monotonic() + 60
    while any(w and process_alive(int(w.rsplit(":", 1)[1])) for w in workers):
        assert time.monotonic() < deadline, "a sweep worker outlived its sweep"
        time.sleep(0.2)
    time.sleep(3.5)  # past the grace period: the re-run queues every trial before it forks

    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = only_study(storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in complete) == list(range(2 * n_jobs)), trial_table(study)
    retries = [t for t in study.trials if "failed_trial" in t.system_attrs]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == list(range(n_jobs))
    for number, lines in starts(markers).items():  # no trial's job started twice
        assert len(lines) == 1, f"trial {number} started {len(lines)} times: {lines}"
    assert "result is dropped" not in proc.stderr + proc.stdout


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sweep_storage(request, tmp_path) -> Iterator[tuple[str, str, dict[str, str] | None]]:
    """(storage a sweep is given, the URL this test opens, the sweep's environment)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
        yield url, url, None
        return
    pg = postgres_server()
    name = f"retries-{uuid.uuid4().hex[:8]}"
    yield pg.url, pg.direct, {**pg.env, "URBANSOUND_TEST_STUDY": name}
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=pg.direct)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_costs_a_retry_and_the_sweep_ends_with_its_summary(
    tmp_path, sweep_storage
):
    storage, url, env = sweep_storage
    study_name = (env or {}).get("URBANSOUND_TEST_STUDY", "killed")
    jobs = tmp_path / "jobs"
    markers = tmp_path / "markers"
    cmd = command(
        jobs,
        storage,
        "x=0,1,2,3",
        "epochs=10",
        "sleep=0.2",
        f"marker_dir={markers}",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.study_name={study_name}",
    )
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    wait_for(markers / "0.start")
    victim = int((markers / "0.start").read_text().split()[0])  # the worker running trial 0
    assert victim != proc.pid
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "error:" not in err
    # the death is said once, naming the worker and the trial queued again
    (died,) = [line for line in (out + err).splitlines() if "died" in line]
    assert re.search(rf"sweep worker \d+ \(pid {victim}\) died \(SIGKILL\)", died), died
    assert "trial 0 queued again" in died
    # the summary: the table, trials.csv and best_params.yaml
    assert f"study {study_name}: 4 complete, 0 pruned, 0 failed" in out, out
    assert (jobs / "trials.csv").is_file() and (jobs / "best_params.yaml").is_file()
    study = optuna.load_study(study_name=study_name, storage=url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in complete) == [0, 1, 2, 3], trial_table(study)
    dead = study.trials[0]
    assert dead.state == TrialState.FAIL and f"pid {victim}" in dead.user_attrs["error"]
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    ran = [t for t in study.trials if not t.system_attrs.get(EXCESS_ATTR)]
    assert not [t for t in ran if t.state == TrialState.RUNNING]
    for number, lines in starts(markers).items():  # the killed trial, its retry, each once
        assert len(lines) == 1, f"trial {number} started {len(lines)} times: {lines}"
