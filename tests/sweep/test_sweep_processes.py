"""The sweeper across processes: kill -9 and resume, parallel workers, optuna-dashboard.

Each test runs the tiny task app (tests/sweep/apps/quadratic) as a command, like a user would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import process_alive
from urbansound.sweep.trials import EXCESS_ATTR

from .apps.quadratic import app

pytestmark = pytest.mark.slow

APP = Path(app.__file__)


def command(jobs: Path, storage: str, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(APP),
        "-m",
        f"hydra.sweep.dir={jobs}",
        f"hydra.sweeper.storage={storage}",
        *overrides,
    ]


def run(cmd: list[str], cwd: Path, *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def only_study(storage: str) -> optuna.Study:
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def trial_table(study: optuna.Study) -> str:
    """The study's trials, one line each: what a failed assertion prints to diagnose a race."""
    return "\n".join(
        f"{t.number} {t.state.name} {t.params} error={t.user_attrs.get('error')!r} "
        f"worker={t.user_attrs.get('worker')} start={t.datetime_start} end={t.datetime_complete}"
        f" failed_trial={t.system_attrs.get('failed_trial')}"
        for t in study.trials
    )


def start_group(cmd: list[str], cwd: Path) -> subprocess.Popen[str]:
    """``cmd`` in a process group of its own, as a terminal starts it (Ctrl-C reaches all)."""
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_kill_9_in_the_middle_of_a_trial_then_the_same_command_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    jobs = tmp_path / "jobs"
    markers = tmp_path / "markers"
    cmd = command(jobs, storage, "x=0,1,2,3", "epochs=4", "sleep=0.3", f"marker_dir={markers}")

    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    wait_for(markers / "2.start")  # trials 0 and 1 are finished, trial 2 is training
    time.sleep(0.6)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)

    study = only_study(storage)
    before = {t.number: t for t in study.trials}
    assert [before[n].state for n in (0, 1, 2)] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.RUNNING,
    ]
    assert len(before[2].intermediate_values) < 4  # killed in the middle of training
    kept = {n: (jobs / str(n) / "results.json").read_text() for n in (0, 1)}

    second = run(cmd, tmp_path)  # exactly the same command
    assert "study " + study.study_name in second.stdout

    study = only_study(storage)
    trials = {t.number: t for t in study.trials}
    assert trials[2].state == TrialState.FAIL  # the dead trial, replaced by its retry
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 2)
    assert retry.params == before[2].params and retry.state == TrialState.COMPLETE
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    xs = sorted(t.params["x"] for t in complete)
    assert xs == [0, 1, 2, 3], trial_table(study)  # four COMPLETE trials, no grid point twice
    for n in (0, 1):  # finished trials kept, and their job directories untouched
        assert trials[n].state == TrialState.COMPLETE
        assert trials[n].value == before[n].value
        assert (jobs / str(n) / "results.json").read_text() == kept[n]
    # job numbers continued; the killed job's directory was not reused
    assert not (jobs / "2" / "results.json").exists()
    assert sorted(int(p.name) for p in jobs.iterdir() if p.name.isdigit()) == [0, 1, 2, 3, 4]

    # an uninterrupted sweep of the same grid gives the same COMPLETE trials and values
    ref_storage = f"sqlite:///{tmp_path / 'ref.db'}"
    ref_cmd = command(
        tmp_path / "ref", ref_storage, "x=0,1,2,3", "epochs=4", f"marker_dir={markers}"
    )
    run(ref_cmd, tmp_path)
    ref = only_study(ref_storage)
    assert sorted((t.params["x"], t.value) for t in ref.trials) == sorted(
        (t.params["x"], t.value) for t in complete
    )
    assert all(t.state == TrialState.COMPLETE for t in ref.trials)


def test_ctrl_c_queues_the_interrupted_trial_for_the_next_run_at_once(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    markers = tmp_path / "markers"
    # heartbeats every 60 s: only the Ctrl-C handling can make the next run start at once
    cmd = command(
        tmp_path / "jobs",
        storage,
        "x=0,1,2",
        "epochs=4",
        "sleep=0.3",
        f"marker_dir={markers}",
        "hydra.sweeper.heartbeat_interval=60",
        "hydra.sweeper.grace_period=120",
    )
    first = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(markers / "1.start")
    time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130
    assert interrupted_lines(out + err) == [INTERRUPTED]  # the one line the docs promise

    trials = only_study(storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["error"] == "interrupted (KeyboardInterrupt); queued again"
    assert trials[2].params == trials[1].params

    run(cmd, tmp_path, timeout=60)
    study = only_study(storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in complete) == [0, 1, 2], trial_table(study)
    assert study.trials[2].state == TrialState.COMPLETE  # the queued copy ran first


INTERRUPTED = (
    "error: interrupted: the running trials are queued again; run the same command to resume"
)


def interrupted_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "interrupted" in line]


def test_ctrl_c_of_parallel_workers_prints_one_line_and_the_rerun_finishes(tmp_path):
    """Ctrl-C in a terminal reaches the sweep and each of its workers (one process group)."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    markers = tmp_path / "markers"
    cmd = command(
        tmp_path / "jobs",
        storage,
        "x=0,1,2,3",
        "epochs=10",
        "sleep=0.3",
        f"marker_dir={markers}",
        "hydra.sweeper.n_jobs=2",
    )
    first = start_group(cmd, cwd=tmp_path)
    wait_for(markers / "0.start")
    wait_for(markers / "1.start")
    time.sleep(0.5)
    os.killpg(first.pid, signal.SIGINT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130, err[-3000:]
    assert interrupted_lines(out + err) == [INTERRUPTED]
    assert "Traceback" not in out + err
    queued = [t for t in only_study(storage).trials if t.state == TrialState.WAITING]
    assert len(queued) == 2  # both interrupted trials, queued again at once

    run(cmd, tmp_path)
    study = only_study(storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in complete) == [0, 1, 2, 3], trial_table(study)


def test_parallel_workers_do_not_wait_for_a_slow_trial(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    jobs = tmp_path / "jobs"
    run(
        command(
            jobs,
            storage,
            "x=0,1,2,3",
            "sleep=0.02",
            "slow_x=[0]",
            "slow_sleep=2.5",
            "hydra.sweeper.n_jobs=2",
        ),
        tmp_path,
    )
    study = only_study(storage)
    # Both workers may ask at the moment the study reaches n_trials: the later trial is then
    # marked not run (urbansound:excess, FAIL) and does not count.
    ran = [t for t in study.trials if not t.system_attrs.get(EXCESS_ATTR)]
    assert sorted(t.params["x"] for t in ran) == [0, 1, 2, 3], trial_table(study)
    assert all(t.state == TrialState.COMPLETE for t in ran), trial_table(study)
    assert len(study.trials) - len(ran) <= 1, trial_table(study)
    workers = {t.user_attrs["worker"] for t in ran}
    assert len(workers) == 2 and str(os.getpid()) not in " ".join(workers)
    slow = next(t for t in ran if t.params["x"] == 0)
    fast = [t for t in ran if t.params["x"] != 0]
    # the other worker ran every fast trial while the slow one trained: no batch barrier
    assert all(t.datetime_complete < slow.datetime_complete for t in fast)
    assert {t.user_attrs["worker"] for t in fast} != {slow.user_attrs["worker"]}
    assert sorted(int(p.name) for p in jobs.iterdir() if p.name.isdigit()) == [0, 1, 2, 3]
    assert (jobs / "trials.csv").read_text().count("COMPLETE") == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_optuna_dashboard_serves_the_study_from_the_printed_command(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    out = run(command(tmp_path / "jobs", storage, "x=1,2", "epochs=3"), tmp_path).stdout
    line = re.search(r"^dashboard: (optuna-dashboard .+)$", out, re.M)
    assert line, out
    argv = shlex.split(line.group(1))
    assert argv[1] == storage
    port = _free_port()
    exe = Path(sys.executable).with_name("optuna-dashboard")
    server = subprocess.Popen(
        [str(exe), *argv[1:], "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                studies = _get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, "optuna-dashboard exited"
                assert time.monotonic() < deadline, "optuna-dashboard did not answer"
                time.sleep(0.3)
        (summary,) = studies
        study = only_study(storage)
        assert summary["study_name"] == study.study_name
        detail = _get(f"{base}/api/studies/{summary['study_id']}?after=0")
        served = {t["number"]: t for t in detail["trials"]}
        assert sorted(served) == [t.number for t in study.trials]
        for t in study.trials:
            s = served[t.number]
            assert s["state"] == "Complete"
            assert s["values"] == [pytest.approx(t.value)]
            assert {p["name"]: p["param_external_value"] for p in s["params"]} == {
                "x": str(t.params["x"])
            }
            assert [v["step"] for v in s["intermediate_values"]] == [1, 2, 3]
            attrs = {a["key"]: a["value"] for a in s["user_attrs"]}
            assert attrs["run_dir"] == str(tmp_path / "jobs" / str(t.number))
        assert detail["objective_names"] == ["score"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_workers_do_not_outlive_a_killed_sweep_and_the_rerun_finishes(tmp_path):
    """Issue 11.1: kill -9 of the main process of an n_jobs=2 sweep; its workers stop too."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    markers = tmp_path / "markers"
    cmd = command(
        tmp_path / "jobs",
        storage,
        "x=0,1,2,3",
        "epochs=10",
        "sleep=0.2",
        f"marker_dir={markers}",
        "hydra.sweeper.n_jobs=2",
    )
    first = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(markers / "0.start")
    wait_for(markers / "1.start")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    workers = [int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in only_study(storage).trials]
    assert len(set(workers)) == 2
    deadline = time.monotonic() + 60
    while any(process_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "a sweep worker outlived its sweep"
        time.sleep(0.2)

    run(cmd, tmp_path)  # the same command resumes
    study = only_study(storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in complete) == [0, 1, 2, 3], trial_table(study)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
