"""Several workers on one PostgreSQL study: the multi-machine set-up, on one machine.

Needs a PostgreSQL server: ``.ci/services.sh`` starts a local one (role, password and database
``urbansound``/``urbansound``/``urbansound_test``); ``URBANSOUND_TEST_POSTGRES_URL`` points the
tests elsewhere. Without a reachable server they skip and say why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from urbansound import sweep

from .apps.quadratic import app

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEFAULT_URL = "postgresql+psycopg://urbansound:urbansound@localhost:5432/urbansound_test"
URL = os.environ.get("URBANSOUND_TEST_POSTGRES_URL", DEFAULT_URL)


@pytest.fixture(scope="module")
def pg_url() -> str:
    import sqlalchemy

    url = sweep.normalize_storage(URL)
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        pytest.skip(
            f"PostgreSQL not reachable at {sweep.display_storage(url)} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}); run .ci/services.sh or set "
            "URBANSOUND_TEST_POSTGRES_URL"
        )
    return url


@pytest.fixture
def study_name(pg_url: str) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=pg_url)


def test_two_workers_on_one_postgres_study_share_the_grid(tmp_path: Path, pg_url, study_name):
    cmd = [
        sys.executable,
        str(Path(app.__file__)),
        "-m",
        "x=0,1,2,3,4,5",
        "sleep=0.05",
        f"hydra.sweeper.storage={pg_url}",
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
            assert t.system_attrs.get(sweep.EXCESS_ATTR)
    for t in complete:
        assert t.value == pytest.approx(app.score(t.params["x"], 0))
        assert Path(t.user_attrs["run_dir"]).is_dir()
    # both commands print the same, complete summary
    for out in outputs:
        assert f"study {study_name}: 6 complete, 0 pruned" in out
