"""Sweeps through Hydra's launchers: joblib runs trials at once, submitit_local runs every job as
its own process (as submitit_slurm does on a cluster) and still reports, prunes and resumes.

Each sweep test runs the tiny task app (tests/sweep/apps/quadratic) as a command. The jobs record
their own run intervals through a Hydra callback (:class:`JobClock`), which runs inside each job's
process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from urbansound.errors import ConfigError
from urbansound.sweep.settings import launcher_parallelism, sweep_settings
from urbansound.sweep.trials import EXCESS_ATTR, OUTCOME_ATTR

from .apps.quadratic import app
from .apps.sweeper_conf import sweeper_conf

APP = Path(app.__file__)
JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher."


class JobClock:
    """Hydra callback: each job writes ``<dir>/<trial>.json`` (pid, start, end) in its process.

    ``barrier``: a job waits (up to 60 s) until that many jobs have started, so jobs that run
    at once overlap for sure and jobs that run one after the other cannot. ``die_x``: a job with
    one of these ``x`` kills its own process (``kill -9``) before the task runs.
    """

    def __init__(self, dir: str, barrier: int = 0, die_x: Any = ()) -> None:
        self.dir, self.barrier, self.die_x = Path(dir), barrier, [float(x) for x in die_x]

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        if float(config.x) in self.die_x:
            os.kill(os.getpid(), signal.SIGKILL)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{config.trial.number}.json"
        path.write_text(json.dumps({"pid": os.getpid(), "start": time.time()}))
        deadline = time.time() + 60
        while len(list(self.dir.glob("*.json"))) < self.barrier and time.time() < deadline:
            time.sleep(0.05)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        path = self.dir / f"{config.trial.number}.json"
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "end": time.time()}))


def clock(tmp_path: Path, **kwargs: Any) -> list[str]:
    out = [
        f"+hydra.callbacks.clock._target_={__name__}.JobClock",
        f"+hydra.callbacks.clock.dir={tmp_path / 'clock'}",
    ]
    return out + [f"+hydra.callbacks.clock.{k}={v}" for k, v in kwargs.items()]


def command(tmp_path: Path, storage: str, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(APP),
        "-m",
        f"hydra.sweep.dir={tmp_path / 'jobs'}",
        f"hydra.sweeper.storage={storage}",
        *overrides,
    ]


def env() -> dict[str, str]:
    """The jobs import :class:`JobClock` from this module: the checkout on their path."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def run(cmd: list[str], cwd: Path, *, code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env())
    assert proc.returncode == code, (
        f"{shlex.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def intervals(tmp_path: Path) -> dict[int, dict[str, float]]:
    return {int(p.stem): json.loads(p.read_text()) for p in (tmp_path / "clock").glob("*.json")}


# --------------------------------------------------------------------------------------------
# How the launcher and hydra.sweeper.n_jobs combine


@pytest.mark.parametrize(
    ("launcher", "expected"),
    [
        (None, ("basic", 1)),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, ("basic", 1)),
        ({**JOBLIB, "n_jobs": 3}, ("joblib", 3)),
        ({**JOBLIB, "n_jobs": -1}, ("joblib", os.cpu_count())),
        ({"_target_": SUBMITIT + "SlurmLauncher", "array_parallelism": 8}, ("submitit_slurm", 8)),
        ({"_target_": SUBMITIT + "LocalLauncher"}, ("submitit_local", os.cpu_count())),
        ({"_target_": "my.RayLauncher", "n_jobs": 5}, ("my.RayLauncher", 5)),
        ({"_target_": "my.OtherLauncher"}, ("my.OtherLauncher", 1)),
    ],
)
def test_batch_size_is_the_launchers_parallelism(launcher, expected):
    assert launcher_parallelism(launcher) == expected
    settings = sweep_settings(sweeper_conf(), arguments=["x=0,1"], launcher=launcher)
    assert (settings.launcher, settings.batch_size) == expected


def test_batch_size_overrides_the_launcher():
    settings = sweep_settings(
        sweeper_conf(batch_size=2), arguments=["x=0,1"], launcher={**JOBLIB, "n_jobs": 8}
    )
    assert settings.batch_size == 2


@pytest.mark.parametrize(
    ("conf", "launcher", "message"),
    [
        (
            {"n_jobs": 2},
            {**JOBLIB, "n_jobs": 4},
            "hydra.sweeper.n_jobs=2 forks sweep workers for Hydra's basic launcher only; "
            "hydra/launcher=joblib runs 4 trial(s) at a time itself",
        ),
        (
            {"batch_size": 4},
            None,
            "hydra.sweeper.batch_size=4 is for a launcher that runs jobs at once",
        ),
        ({"batch_size": 0}, JOBLIB, "hydra.sweeper.batch_size must be an integer >= 1"),
        ({}, {**JOBLIB, "n_jobs": 0}, "hydra.launcher.n_jobs must be a non-zero integer"),
    ],
)
def test_conflicting_parallelism_is_one_line(conf, launcher, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        sweep_settings(sweeper_conf(**conf), arguments=["x=0,1"], launcher=launcher)


@pytest.mark.slow
def test_both_parallelisms_on_the_command_line_exit_2(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = command(tmp_path, storage, "x=0,1", "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2")
    proc = run(cmd, tmp_path, code=2)
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert "hydra.sweeper.n_jobs=2 forks sweep workers" in line
    assert not optuna.get_all_study_summaries(storage)  # nothing was started


# --------------------------------------------------------------------------------------------
# Real launchers


def only_study(storage: str) -> optuna.Study:
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


@pytest.mark.slow
def test_joblib_n_jobs_2_runs_two_trials_at_once(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = command(
        tmp_path,
        storage,
        "x=0,1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *clock(tmp_path, barrier=2),
    )
    run(cmd, tmp_path)
    study = only_study(storage)
    assert sorted(t.state for t in study.trials) == [TrialState.COMPLETE] * 2
    runs = intervals(tmp_path)
    assert sorted(runs) == [0, 1]
    first, second = runs[0], runs[1]
    assert first["pid"] != second["pid"]  # two joblib worker processes
    # the jobs' own clocks: each started before the other ended
    assert first["start"] < second["end"] and second["start"] < first["end"]
    for t in study.trials:  # job directories numbered by trial, with the trial's overrides
        overrides = (tmp_path / "jobs" / str(t.number) / ".hydra" / "overrides.yaml").read_text()
        assert f"trial.number={t.number}" in overrides and f"x={t.params['x']}" in overrides
        assert list(t.intermediate_values) == [1, 2]


def submitit_command(tmp_path: Path, storage: str, *overrides: str) -> list[str]:
    return command(
        tmp_path,
        storage,
        "hydra/launcher=submitit_local",
        "hydra.sweeper.batch_size=2",
        "hydra.sweeper.study_name=cluster",
        "epochs=3",
        *overrides,
    )


@pytest.mark.slow
def test_submitit_local_sweep_reports_epochs_prunes_and_survives_a_dead_job(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="cluster", storage=storage, direction="maximize")
    for x in (2, 3, -8, 1):  # batch 1: x=2, x=3 complete; batch 2: x=-8 pruned, x=1 dies
        study.enqueue_trial({"x": x})
    cmd = submitit_command(
        tmp_path,
        storage,
        "x=2,3,-8,1",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
        "hydra.sweeper.max_retry=0",
        *clock(tmp_path, barrier=0, die_x="[1]"),
    )
    run(cmd, tmp_path)
    trials = {t.params["x"]: t for t in only_study(storage).trials}
    assert sorted(trials) == [-8, 1, 2, 3] and len(trials) == 4
    for x in (2, 3):  # every epoch reported from the job's own process, then told COMPLETE
        assert trials[x].state == TrialState.COMPLETE
        assert trials[x].value == pytest.approx(app.score(x, 0))
        assert trials[x].intermediate_values == pytest.approx(
            {e: app.score(x, 0) * e / 3 for e in (1, 2, 3)}
        )
    # pruned by the median of x=2 and x=3 at epoch 1; its batch was lost (x=1's job died), so
    # its state came from the outcome its job recorded on the trial
    pruned = trials[-8]
    assert pruned.state == TrialState.PRUNED and list(pruned.intermediate_values) == [1]
    number = pruned.number
    assert json.loads((tmp_path / "jobs" / str(number) / "results.json").read_text()) == {
        "status": "pruned",
        "epoch": 1,
    }
    dead = trials[1]
    assert dead.state == TrialState.FAIL and "its job's process died" in dead.user_attrs["error"]
    assert not dead.intermediate_values
    runs = intervals(tmp_path)
    assert sorted(runs) == sorted(t.number for x, t in trials.items() if x != 1)
    assert len({r["pid"] for r in runs.values()} | {os.getpid()}) == 4  # a process per job


@pytest.mark.slow
def test_submitit_local_sweep_killed_then_the_same_command_resumes(tmp_path):
    """kill -9 of the sweep in the middle of a batch: one job finishes on its own (its outcome is
    kept), the other is killed too (as if its node died: run again); the same command resumes."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="cluster", storage=storage, direction="maximize")
    for x in (0, 1):  # batch 1: x=0 is quick, x=1 slow
        study.enqueue_trial({"x": x})
    cmd = submitit_command(
        tmp_path, storage, "x=0,1,2,3", "slow_x=[1]", "slow_sleep=3", *clock(tmp_path)
    )
    first = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env()
    )
    deadline = time.monotonic() + 120
    while not (
        OUTCOME_ATTR in _trial(storage, 0).system_attrs and (tmp_path / "clock/1.json").exists()
    ):
        assert time.monotonic() < deadline and first.poll() is None, "batch 1 did not run"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # the sweep's main process
    first.wait(timeout=30)
    os.kill(intervals(tmp_path)[1]["pid"], signal.SIGKILL)  # and x=1's job
    assert _trial(storage, 0).state == _trial(storage, 1).state == TrialState.RUNNING

    run(cmd, tmp_path)  # exactly the same command
    study = only_study(storage)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in complete) == [0, 1, 2, 3]
    for t in complete:
        assert list(t.intermediate_values) == [1, 2, 3]
    # x=0's job had finished: its recorded outcome was told, it did not run again
    quick = study.trials[0]
    assert quick.state == TrialState.COMPLETE and quick.value == pytest.approx(app.score(0, 0))
    runs = [t for t in study.trials if t.params["x"] == 0 and not t.system_attrs.get(EXCESS_ATTR)]
    assert [t.number for t in runs] == [0]  # (a grid draw of x=0 again yields, not run)
    ran = {int(p.parent.name) for p in (tmp_path / "jobs").glob("*/results.json")}
    assert ran == {t.number for t in complete}
    # x=1's job died with the sweep: FAIL (no heartbeat), run again with the same parameters
    dead = study.trials[1]
    assert dead.state == TrialState.FAIL and "no heartbeat" in dead.user_attrs["error"]
    (retry,) = [t for t in complete if t.system_attrs.get("failed_trial") == 1]
    assert retry.params == {"x": 1}


def _trial(storage: str, number: int) -> optuna.trial.FrozenTrial:
    return optuna.load_study(study_name="cluster", storage=storage).trials[number]


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    summaries = optuna.get_all_study_summaries(storage)
    if not summaries:
        return []
    return optuna.load_study(study_name=summaries[0].study_name, storage=storage).trials
