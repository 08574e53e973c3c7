"""Two objectives with a constraint, and a warm start, on a PostgreSQL study (the storage of
sweeps on several machines). Skips, saying why, without a reachable server."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from .apps.quadratic import app
from .postgres import Server, postgres_server

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def pg() -> Iterator[tuple[Server, list[str]]]:
    server = postgres_server()
    names: list[str] = []
    yield server, names
    for name in names:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=server.direct)


def sweep(server: Server, cwd: Path, name: str, *overrides: str) -> str:
    cmd = [
        sys.executable,
        str(Path(app.__file__)),
        "-m",
        f"hydra.sweep.dir={cwd / name}",
        f"hydra.sweeper.storage={server.url}",
        f"hydra.sweeper.study_name={name}",
        "epochs=1",
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=server.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_a_two_objective_study_with_a_constraint_and_its_warm_start_on_postgres(
    tmp_path: Path, pg: tuple[Server, list[str]]
) -> None:
    server, names = pg
    first, second = f"test-{uuid.uuid4().hex[:10]}", f"test-{uuid.uuid4().hex[:10]}"
    names += [first, second]
    two = [
        "hydra.sweeper.objectives=[score,costs.cost]",
        "hydra.sweeper.direction=[maximize,minimize]",
        "hydra.sweeper.constraints=['costs.cost<=3']",
    ]
    sweep(server, tmp_path, first, "x=0,1,2,3", "y=0,1", *two)
    study = optuna.load_study(study_name=first, storage=server.direct)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["score", "costs.cost"]
    points = {(t.params["x"], t.params["y"]): t for t in study.trials}
    assert all(t.state == TrialState.COMPLETE for t in study.trials) and len(points) == 8
    assert points[(3, 1)].constraints == pytest.approx({"costs.cost<=3": 1.0})
    front = {(t.params["x"], t.params["y"]) for t in study.best_trials}
    assert (3, 1) not in front and front
    best = yaml.safe_load((tmp_path / first / "best_params.yaml").read_text())
    assert {(p["params"]["x"], p["params"]["y"]) for p in best["pareto"]} == front

    # a new study seeded from it on the same server (its password from PGPASSWORD)
    out = sweep(
        server,
        tmp_path,
        second,
        "hydra/sweeper/sampler=random",
        "x=choice(0,1,2,3)",
        "y=choice(0,1)",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweeper.warm_start={server.url}",
        f"hydra.sweeper.warm_start_study={first}",
        *two,
    )
    seeded = optuna.load_study(study_name=second, storage=server.direct)
    copies = [t for t in seeded.trials if "urbansound:warm_start" in t.system_attrs]
    assert len(copies) == 8 and len(seeded.trials) == 9
    copied = {(t.params["x"], t.params["y"]): t for t in copies}
    assert set(copied) == set(points)
    for point, t in copied.items():  # values and constraint values carried over
        assert t.values == pytest.approx(points[point].values)
        assert t.constraints == pytest.approx(points[point].constraints)
    assert "(warm start)" in out
