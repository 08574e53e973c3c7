"""trial_timeout with a launcher of its own: the limit is armed inside the job's process (a
loky worker of hydra-joblib-launcher, submitit's job process), the job's child process is
ended, its trial fails with the reason and the batch goes on."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import process_alive

from .test_sweep_launchers import command, run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local", "hydra.sweeper.batch_size=2"],
    ],
    ids=["joblib", "submitit_local"],
)
def test_a_launchers_job_past_its_time_limit_fails_and_its_child_ends(
    tmp_path: Path, launcher: list[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    markers = tmp_path / "markers"
    cmd = command(
        tmp_path,
        storage,
        "x=0,3",
        "epochs=1",
        "slow_x=[3]",
        "slow_sleep=120",
        "child_sleep=600",
        f"marker_dir={markers}",
        "hydra.sweeper.trial_timeout=10",  # a loaded machine takes seconds to start a job
        *launcher,
    )
    run(cmd, tmp_path)
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    by_x = {t.params["x"]: t for t in study.trials}
    assert len(study.trials) == 2  # not queued again
    assert by_x[0].state == TrialState.COMPLETE
    assert by_x[3].state == TrialState.FAIL
    assert "trial_timeout=10 s" in by_x[3].user_attrs["error"]
    assert by_x[3].system_attrs["urbansound:timed_out"] == 10
    child = int((markers / f"{by_x[3].number}.child").read_text())
    assert not process_alive(child)
