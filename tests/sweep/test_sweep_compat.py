"""The private Optuna and Hydra APIs the sweep package uses (urbansound/sweep/_compat.py).

Each test exercises one adapter against the installed library: a library upgrade that changes
one of them fails here, by name.
"""

from __future__ import annotations

import warnings

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus

from urbansound.sweep._compat import job_exception, live_trial, quiet_optuna


def test_live_trial_reports_and_prunes_a_trial_asked_elsewhere(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    asked = study.ask()
    rdb = optuna.storages.RDBStorage(storage)
    trial_id = rdb.get_trial_id_from_study_id_trial_number(
        rdb.get_study_id_from_name("s"), asked.number
    )
    job_study = optuna.load_study(
        study_name="s", storage=rdb, pruner=optuna.pruners.ThresholdPruner(lower=0.5)
    )
    live = live_trial(job_study, trial_id)
    assert live.number == asked.number
    live.report(0.25, 1)
    assert live.should_prune()  # below the threshold
    assert optuna.load_study(study_name="s", storage=storage).trials[0].intermediate_values == {
        1: 0.25
    }


def test_job_exception_is_the_exception_a_failed_hydra_job_raised() -> None:
    error = RuntimeError("boom")
    ret = JobReturn()
    ret.status = JobStatus.FAILED
    ret.return_value = error
    assert job_exception(ret) is error
    ok = JobReturn()
    ok.status = JobStatus.COMPLETED
    ok.return_value = 0.5
    with pytest.raises(TypeError, match="_return_value is float"):
        job_exception(ok)


def test_quiet_optuna_silences_experimental_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with quiet_optuna():
            warnings.warn("x", optuna.exceptions.ExperimentalWarning, stacklevel=1)


def test_set_trial_system_attr_reaches_the_trial_a_sampler_sees(tmp_path) -> None:
    from urbansound.sweep._compat import set_trial_system_attr

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    trial = study.ask()
    frozen = study._storage.get_trial(trial._trial_id)  # what before_trial receives
    set_trial_system_attr(study, frozen, "grid_id", 3)
    assert study.trials[0].system_attrs["grid_id"] == 3
