"""A sweep directory belongs to one study, and each job directory to one of its trials.

Sweep A wrote ``n_mfcc=13,20,40`` into a directory; sweep B (another storage) was then started
on the same ``hydra.sweep.dir`` and overwrote A's job directories 0 and 1 without a word. Now B
stops before any trial with one line naming both studies; resuming A there keeps working.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from urbansound.errors import ConfigError
from urbansound.sweep.ownership import (
    Owner,
    check_sweep_dir,
    claim_sweep_dir,
    job_record,
    trial_mismatch,
)

from .apps.quadratic import app


@pytest.fixture
def sweep_into(hydra_sweep_runner, tmp_path: Path) -> Callable[..., Path]:
    """Run the quadratic app's sweep in this process into ``tmp_path/jobs``; returns that dir."""

    def _run(*overrides: str, db: str) -> Path:
        jobs = tmp_path / "jobs"
        runner = hydra_sweep_runner(
            calling_file=str(Path(app.__file__)),
            calling_module=None,
            task_function=app.task,
            config_path="conf",
            config_name="config",
            overrides=[f"hydra.sweeper.storage={db}", *overrides],
            temp_dir=jobs,
        )
        runner.__enter__()  # not as a context: its __exit__ would delete the job directories
        return jobs

    return _run


def files(jobs: Path) -> dict[str, bytes]:
    """Every file under ``jobs`` (but the log files, which each start appends to), by path."""
    return {
        str(p.relative_to(jobs)): p.read_bytes()
        for p in sorted(jobs.rglob("*"))
        if p.is_file() and p.suffix != ".log"
    }


def test_a_sweep_into_another_studys_directory_stops_before_any_trial(sweep_into, tmp_path):
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    jobs = sweep_into("x=0,1,2", db=a)
    before = files(jobs)
    (name_a,) = optuna.get_all_study_names(a)
    with pytest.raises(ConfigError) as info:
        sweep_into("x=3,4", db=b)
    message = str(info.value)
    assert message.startswith(f"hydra.sweep.dir={jobs} belongs to study {name_a} in {a} ")
    assert "this sweep is study x-" in message and f"in {b}:" in message
    assert "another hydra.sweep.dir" in message and "\n" not in message
    assert files(jobs) == before  # nothing of A's was touched (multirun.yaml included)
    assert not optuna.get_all_study_names(b)  # and nothing of B's was created


def test_the_same_study_resumes_in_its_own_directory(sweep_into, tmp_path, monkeypatch):
    a = f"sqlite:///{tmp_path / 'a.db'}"
    jobs = sweep_into("x=0,1,2", "hydra.sweeper.study_name=s", "hydra.sweeper.n_trials=2", db=a)
    monkeypatch.chdir(tmp_path)  # the same storage, spelled as a relative path
    sweep_into("x=0,1,2", "hydra.sweeper.study_name=s", db="sqlite:///a.db")
    study = optuna.load_study(study_name="s", storage=a)
    assert sorted(t.params["x"] for t in study.trials) == [0, 1, 2]
    assert sorted(p.name for p in jobs.iterdir() if p.name.isdigit()) == ["0", "1", "2"]


def test_a_study_json_of_another_storage_is_another_study(sweep_into, tmp_path):
    """One study name, two storages: two studies."""
    jobs = sweep_into("x=0,1", "hydra.sweeper.study_name=s", db=f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(ConfigError, match=r"belongs to study s in sqlite:///.*/a\.db \(its study"):
        sweep_into("x=0,1", "hydra.sweeper.study_name=s", db=f"sqlite:///{tmp_path / 'b.db'}")
    assert json.loads((jobs / "study.json").read_text())["storage"].endswith("/a.db")


def test_job_directories_of_another_study_count_without_a_study_json(sweep_into, tmp_path):
    """A's study.json gone (or written by a version before it existed): its job directory 0,
    a trial number B uses too, still says whose it is."""
    jobs = sweep_into("x=0,1", db=f"sqlite:///{tmp_path / 'a.db'}")
    (jobs / "study.json").unlink()
    before = files(jobs)
    with pytest.raises(ConfigError, match=r"holds 0/, a job of study x-\w+ in sqlite:///.*a\.db"):
        sweep_into("x=3,4", db=f"sqlite:///{tmp_path / 'b.db'}")
    assert files(jobs) == before


def test_a_plain_run_in_the_directory_is_not_overwritten(sweep_into, tmp_path):
    jobs = tmp_path / "jobs" / "0"
    jobs.mkdir(parents=True)
    (jobs / "results.json").write_text(json.dumps({"trial": {"study_name": None}}))
    with pytest.raises(ConfigError, match=r"holds 0/, a run of no study"):
        sweep_into("x=3,4", db=f"sqlite:///{tmp_path / 'b.db'}")
    # a folder of something else (a report) is no job directory
    shutil.rmtree(jobs)
    (tmp_path / "jobs" / "report").mkdir()
    (tmp_path / "jobs" / "report" / "summary.json").write_text("{}")
    sweep_into("x=3,4", db=f"sqlite:///{tmp_path / 'b.db'}")


def test_a_claim_is_exclusive_and_refreshed_only_by_its_owner(tmp_path):
    a = Owner(f"sqlite:///{tmp_path / 'a.db'}", "s")
    b = Owner(f"sqlite:///{tmp_path / 'b.db'}", "s")
    claim_sweep_dir(tmp_path / "d", a, {"study_name": "s", "storage": a.storage, "n": 1})
    claim_sweep_dir(tmp_path / "d", a, {"study_name": "s", "storage": a.storage, "n": 2})
    with pytest.raises(ConfigError, match="belongs to study s in"):
        claim_sweep_dir(tmp_path / "d", b, {"study_name": "s", "storage": b.storage})
    assert json.loads((tmp_path / "d" / "study.json").read_text())["n"] == 2
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["study.json"]  # no temp file left
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "study.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"study\.json cannot be read .*restore it"):
        check_sweep_dir(tmp_path / "e", a)


def test_what_a_job_directory_records_and_a_readers_check(tmp_path):
    job = tmp_path / "3"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        "- x=1\n- trial.study_name=s\n- trial.storage='sqlite:////x/a.db'\n- trial.number=3\n"
    )
    record = job_record(job)
    assert record is not None and (record.study_name, record.number) == ("s", 3)
    assert record.owner() == Owner("sqlite:////x/a.db", "s")
    assert job_record(tmp_path) is None  # no job directory
    owner = Owner("sqlite:////x/a.db", "s")
    ok = {"study_name": "s", "number": 3}
    assert trial_mismatch(ok, None, owner=owner, number=3) is None
    assert (
        trial_mismatch(ok, {"trial": {"storage": "sqlite:////x/a.db"}}, owner=owner, number=3)
        is None
    )
    assert "trial 3 of study s, not trial 0" in trial_mismatch(ok, None, owner=owner, number=0)
    other = {"study_name": "t", "number": 3}
    assert "trial 3 of study t" in trial_mismatch(other, None, owner=owner, number=3)
    assert "a run of no study" in trial_mismatch({"study_name": None}, None, owner=owner, number=3)
    elsewhere = {"trial": {"storage": "sqlite:////x/b.db"}}
    assert "in sqlite:////x/b.db, not in sqlite:////x/a.db" in trial_mismatch(
        ok, elsewhere, owner=owner, number=3
    )
