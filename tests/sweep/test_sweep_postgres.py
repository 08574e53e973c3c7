"""Several workers on one PostgreSQL study: the multi-machine set-up, on one machine.

Needs a PostgreSQL server: ``.ci/services.sh`` starts a local one (role, password and database
``urbansound``/``urbansound``/``urbansound_test``); ``URBANSOUND_TEST_POSTGRES_URL`` points the
tests elsewhere. Without a reachable server they skip and say why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from urbansound.sweep.trials import EXCESS_ATTR

from .apps.quadratic import app
from .postgres import Server, postgres_server

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def pg() -> Server:
    """The server: sweeps get its URL without a password and PGPASSWORD in their environment."""
    return postgres_server()


@pytest.fixture(scope="module")
def pg_url(pg: Server) -> str:
    """The URL with its password, for this test's own Optuna calls."""
    return pg.direct


@pytest.fixture
def study_name(pg_url: str) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=pg_url)


def test_two_workers_on_one_postgres_study_share_the_grid(tmp_path: Path, pg, pg_url, study_name):
    cmd = [
        sys.executable,
        str(Path(app.__file__)),
        "-m",
        "x=0,1,2,3,4,5",
        "sleep=0.05",
        f"hydra.sweeper.storage={pg.url}",
        f"hydra.sweeper.study_name={study_name}",
    ]
    # Two machines: the same command, started at the same time, each with its own sweep dir.
    procs = [
        subprocess.Popen(
            [*cmd, f"hydra.sweep.dir={tmp_path / f'machine{i}'}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=pg.env,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]

    study = optuna.load_study(study_name=study_name, storage=pg_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in complete) == [0, 1, 2, 3, 4, 5]  # no grid point twice
    for t in study.trials:  # every trial finished; only a lost race may leave a FAIL not run
        assert t.state.is_finished()
        if t.state == TrialState.FAIL:
            assert t.system_attrs.get(EXCESS_ATTR)
    for t in complete:
        assert t.value == pytest.approx(app.score(t.params["x"], 0))
        assert Path(t.user_attrs["run_dir"]).is_dir()
    # both commands print the same, complete summary
    for out in outputs:
        assert f"study {study_name}: 6 complete, 0 pruned" in out


# --------------------------------------------------------------------------------------------
# Storage outage (issue 11.2): the real server stopped with `-m immediate`, then started again


def _cluster() -> list[str]:
    """``pg_ctlcluster <version> main`` of the local server; skips where it cannot be driven."""
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        pytest.skip("needs the local PostgreSQL cluster (pg_ctlcluster, as root)")
    url = os.environ.get("URBANSOUND_TEST_POSTGRES_URL", "localhost")
    if "localhost" not in url and "127.0.0.1" not in url:
        pytest.skip("URBANSOUND_TEST_POSTGRES_URL is not the local server")
    version = sorted(
        os.listdir("/usr/lib/postgresql"), key=lambda v: [int(p) for p in v.split(".")]
    )
    return ["pg_ctlcluster", version[-1], "main"]


@pytest.fixture
def server(pg_url: str) -> Iterator[list[str]]:
    cluster = _cluster()
    yield cluster
    subprocess.run([*cluster, "start"], capture_output=True)  # restored whatever happened
    subprocess.run(["pg_isready", "-q", "-t", "30", "-h", "localhost"], check=True)


def _stop(cluster: list[str]) -> None:
    subprocess.run([*cluster, "stop", "-m", "immediate"], check=True, capture_output=True)


def _start(cluster: list[str]) -> None:
    subprocess.run([*cluster, "start"], check=True, capture_output=True)
    subprocess.run(["pg_isready", "-q", "-t", "30", "-h", "localhost"], check=True)


def _sweep(tmp_path: Path, pg: Server, study_name: str, markers: Path) -> list[str]:
    return [
        sys.executable,
        str(Path(app.__file__)),
        "-m",
        "x=0,1",
        "epochs=15",
        "sleep=0.2",
        f"marker_dir={markers}",
        f"hydra.sweep.dir={tmp_path / 'jobs'}",
        f"hydra.sweeper.storage={pg.url}",
        f"hydra.sweeper.study_name={study_name}",
    ]


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_a_short_outage_mid_trial_costs_nothing(tmp_path, pg, pg_url, study_name, server):
    markers = tmp_path / "markers"
    proc = subprocess.Popen(
        _sweep(tmp_path, pg, study_name, markers),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=pg.env,
    )
    _wait_for(markers / "0.start")
    time.sleep(0.5)
    _stop(server)  # the job's next per-epoch report and the heartbeat meet a dead server
    time.sleep(4)
    _start(server)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "study storage unreachable" in out and "StorageInternalError" not in out
    assert "Traceback" not in out
    study = optuna.load_study(study_name=study_name, storage=pg_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert sorted(study.trials[0].intermediate_values) == list(range(1, 16))  # no epoch lost


def test_a_storage_that_stays_down_ends_the_sweep_with_one_line(
    tmp_path, pg, pg_url, study_name, server
):
    markers = tmp_path / "markers"
    cmd = _sweep(tmp_path, pg, study_name, markers)
    env = {**pg.env, "URBANSOUND_STORAGE_RETRY_SECONDS": "3"}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    _wait_for(markers / "0.start")
    _stop(server)
    out, err = proc.communicate(timeout=300)
    _start(server)
    assert proc.returncode == 2, out[-2000:] + err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the study storage stayed unreachable for 3 s" in errors[0]
    assert "Traceback" not in err

    # the trial it could not record is failed, with its reason, and run again by the next run
    proc = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=pg.env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name=study_name, storage=pg_url)
    first = study.trials[0]
    assert first.state == TrialState.FAIL and "its process stopped" in first.user_attrs["error"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in complete) == [0, 1]
