"""The urbansound sweeper on a tiny task app (tests/sweep/apps/quadratic), in this process.

Every sweep writes its SQLite study and job directories under tmp_path; assertions reopen the
study with ``optuna.load_study``, as a user would.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.config.test_config import cli as user_cli
from tests.helpers import SWEEP_DIR
from urbansound.errors import ConfigError
from urbansound.sweep.conditional import resolve_branches
from urbansound.sweep.launch import JobOutcome
from urbansound.sweep.lifecycle import record_heartbeat, requeue
from urbansound.sweep.runner import open_study, prepare_study, run_workers
from urbansound.sweep.settings import (
    GRID_SAMPLER,
    build_pruner,
    build_sampler,
    resolve_sampler_target,
    sweep_settings,
)
from urbansound.sweep.space import Param, build_search_space
from urbansound.sweep.storage import SweepError
from urbansound.sweep.summary import format_table, summarize, write_trials_csv
from urbansound.sweep.trials import HEARTBEAT_ATTR, Progress, study_progress

from .apps.quadratic import app
from .apps.sweeper_conf import sweeper_conf

APP = Path(app.__file__)


@pytest.fixture
def run_sweep(hydra_sweep_runner, tmp_path: Path) -> Callable[..., Path]:
    """Run the quadratic app's sweep in this process; returns its sweep dir (kept after)."""
    counter = iter(range(1000))

    def _run(*overrides: str, db: str = "optuna.db") -> Path:
        sweep_dir = tmp_path / f"sweep{next(counter)}"
        storage = db if "://" in db or db.endswith(".log") else f"sqlite:///{tmp_path / db}"
        runner = hydra_sweep_runner(
            calling_file=str(APP),
            calling_module=None,
            task_function=app.task,
            config_path="conf",
            config_name="config",
            overrides=[f"hydra.sweeper.storage={storage}", *overrides],
            temp_dir=sweep_dir / "jobs",
        )
        runner.__enter__()  # not as a context: its __exit__ would delete the job directories
        return sweep_dir / "jobs"

    return _run


def load(tmp_path: Path, name: str | None = None, db: str = "optuna.db") -> optuna.Study:
    storage = f"sqlite:///{tmp_path / db}"
    if name is None:
        (summary,) = optuna.get_all_study_summaries(storage)
        name = summary.study_name
    return optuna.load_study(study_name=name, storage=storage)


def complete_params(study: optuna.Study) -> list[tuple]:
    return sorted(
        tuple(sorted(t.params.items())) for t in study.trials if t.state == TrialState.COMPLETE
    )


@pytest.mark.slow
def test_grid_runs_every_combination_once_with_links_and_summary(run_sweep, tmp_path, capsys):
    jobs = run_sweep("x=0,1,2", "y=0,1")
    study = load(tmp_path)
    assert study.study_name.startswith("x+y-")
    assert complete_params(study) == [(("x", x), ("y", y)) for x in (0, 1, 2) for y in (0, 1)]
    assert study.metric_names == ["score"]
    for t in study.trials:
        assert t.value == pytest.approx(app.score(t.params["x"], t.params["y"]))
        # the job reported every epoch; the job directory is named after the trial number
        assert sorted(t.intermediate_values) == [1, 2]
        assert t.user_attrs["run_dir"] == str(jobs / str(t.number))
        assert t.user_attrs["job_dir"] == t.user_attrs["run_dir"]  # set by the job itself
        assert t.user_attrs["overrides"] == [f"x={t.params['x']}", f"y={t.params['y']}"]
        results = json.loads((jobs / str(t.number) / "results.json").read_text())
        assert results["score"] == pytest.approx(t.value)
        overrides = yaml.safe_load((jobs / str(t.number) / ".hydra" / "overrides.yaml").read_text())
        assert f"trial.number={t.number}" in overrides
        assert f"trial.study_name={study.study_name}" in overrides

    out = capsys.readouterr().out
    assert f"study {study.study_name}: 6 complete, 0 pruned, 0 failed (n_trials 6)" in out
    assert "best: trial" in out and "x=2 y=1" in out
    assert f"optuna-dashboard sqlite:///{tmp_path / 'optuna.db'}" in out
    assert "x=0,1,2" in (jobs / "multirun.yaml").read_text()  # the sweep's own config
    rows = (jobs / "trials.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["trial", "state", "value", "duration_s"]
    assert len(rows) == 7
    best = yaml.safe_load((jobs / "best_params.yaml").read_text())
    assert best["params"] == {"x": 2, "y": 1}
    assert best["best_value"] == pytest.approx(1.0)
    assert best["overrides"] == ["x=2", "y=1"]


def test_same_command_continues_the_study_without_repeating_grid_points(run_sweep, tmp_path):
    first = run_sweep("x=0,1,2,3", "hydra.sweeper.n_trials=2")
    name = load(tmp_path).study_name
    assert len(load(tmp_path, name).trials) == 2

    second = run_sweep("x=0,1,2,3")  # n_trials defaults to the grid size: 2 more trials
    study = load(tmp_path, name)
    assert complete_params(study) == [(("x", x),) for x in range(4)]
    # job numbers continue: the second run's jobs are 2 and 3, the first run's stay untouched
    assert sorted(p.name for p in first.iterdir() if p.name.isdigit()) == ["0", "1"]
    assert sorted(p.name for p in second.iterdir() if p.name.isdigit()) == ["2", "3"]

    third = run_sweep("x=0,1,2,3")  # nothing left to do
    assert len(load(tmp_path, name).trials) == 4
    assert not any(p.name.isdigit() for p in third.iterdir())


@pytest.mark.slow
def test_resumed_random_search_does_not_replay_earlier_draws(run_sweep, tmp_path):
    common = ("x=interval(-5,5)", "hydra/sweeper/sampler=random")
    run_sweep(*common, "hydra.sweeper.n_trials=2")
    run_sweep(*common, "hydra.sweeper.n_trials=4")
    xs = [t.params["x"] for t in load(tmp_path).trials]
    assert len(xs) == 4 and len(set(xs)) == 4
    # the same command on a fresh study reproduces the first run's draws (seed 0)
    run_sweep(*common, "hydra.sweeper.n_trials=2", db="fresh.db")
    assert [t.params["x"] for t in load(tmp_path, db="fresh.db").trials] == xs[:2]


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc", "cmaes", "gp"])
def test_every_sampler_runs_a_search(run_sweep, tmp_path, sampler):
    run_sweep(
        "x=interval(-5,5)",
        "y=int(interval(0,3))",
        f"hydra/sweeper/sampler={sampler}",
        "hydra.sweeper.n_trials=2",
        "epochs=1",
    )
    study = load(tmp_path)
    assert len(study.trials) == 2
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    expected = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "qmc": optuna.samplers.QMCSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "gp": optuna.samplers.GPSampler,
    }[sampler]
    assert (
        type(
            build_sampler(
                {"_target_": f"{expected.__module__}.{expected.__name__}"},
                build_search_space(None, ["x=interval(0,1)"]),
            )
        )
        is expected
    )
    for t in study.trials:
        assert -5 <= t.params["x"] <= 5 and t.params["y"] in (0, 1, 2, 3)


# A user error reaches the entry point as one UrbansoundError, before any trial (the entry point
# prints it as one `error:` line, exit 2: test_a_user_error_is_one_line_from_the_command_line).


def test_search_without_n_trials_is_a_one_line_error(run_sweep, tmp_path):
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.n_trials is required with TPESampler"):
        run_sweep("x=interval(0,1)")


def test_a_user_error_is_one_line_from_the_command_line(tmp_path):
    """The sweeper raises; `urbansound`'s entry point prints the one line, exit 2 (as a user
    starts it: the tests' HYDRA_FULL_ERROR=1 keeps every error's full traceback)."""
    proc = user_cli(
        "-m", "n_mfcc=interval(10,20)", f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "error: hydra.sweeper.n_trials is required with TPESampler (a grid runs every point; a "
        "search needs a budget): add hydra.sweeper.n_trials=20"
    )
    assert "Traceback" not in proc.stderr


def test_unknown_key_fails_before_any_trial(run_sweep, tmp_path):
    with pytest.raises(ConfigError, match=r"^the sweep's overrides do not compose"):
        run_sweep("nope.key=1,2")
    assert optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna.db'}") == []


def test_a_misspelt_swept_key_names_the_close_match(run_sweep, tmp_path):
    """As a single run's `+train.epoch=3` does: the close key, not only "check its spelling"."""
    with pytest.raises(ConfigError) as info:
        run_sweep("xx=1,2")
    assert str(info.value) == (
        "the sweep's overrides do not compose: key xx exists in no configuration the "
        "sweep composes (did you mean x?)"
    )


def test_failed_trial_is_recorded_and_the_sweep_goes_on(run_sweep, tmp_path):
    jobs = run_sweep("x=0,1,2,3", "fail_x=[1]", "hydra.sweeper.max_failure_rate=0.25")
    study = load(tmp_path)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].params == {"x": 1}
    assert failed[0].user_attrs["error"] == "RuntimeError: boom at x=1"
    assert failed[0].value is None
    error_txt = (jobs / str(failed[0].number) / "error.txt").read_text()
    assert "Traceback" in error_txt and "boom at x=1" in error_txt
    assert complete_params(study) == [(("x", 0),), (("x", 2),), (("x", 3),)]
    assert "RuntimeError: boom at x=1" in (jobs / "trials.csv").read_text()


def test_too_many_failures_stop_the_sweep(run_sweep, tmp_path, capsys):
    with pytest.raises(SweepError, match=r"2 trials failed, more than max_failure_rate 0\.25 x n_"):
        run_sweep("x=0,1,2,3", "fail_x=[0,1,2,3]", "hydra.sweeper.max_failure_rate=0.25")
    trials = load(tmp_path).trials
    # one failure is tolerated (0.25 x 4); the second stops the sweep
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert ": 0 complete, 0 pruned, 2 failed (n_trials 4)" in capsys.readouterr().out  # summary


def test_failed_trials_run_again_when_asked(run_sweep, tmp_path):
    run_sweep("x=0,1", "fail_x=[1]", "hydra.sweeper.study_name=retry")
    # fixed: the same study, failed trials queued again
    run_sweep("x=0,1", "hydra.sweeper.study_name=retry", "hydra.sweeper.retry_failed=true")
    study = load(tmp_path, "retry")
    assert complete_params(study) == [(("x", 0),), (("x", 1),)]
    retried = [t for t in study.trials if t.state == TrialState.COMPLETE and t.params["x"] == 1]
    assert retried[0].system_attrs["retry_history"] == [
        t.number for t in study.trials if t.state == TrialState.FAIL
    ]
    assert not retried[0].user_attrs.get("error")


def test_median_pruner_stops_a_bad_trial_and_its_job_says_so(run_sweep, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="prune", storage=storage, direction="maximize")
    study.enqueue_trial({"x": 2})  # runs first and completes: 0.495, 0.99
    study.enqueue_trial({"x": -8})  # below the median from epoch 1 on
    jobs = run_sweep(
        "x=2,-8",
        "hydra.sweeper.study_name=prune",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
    )
    good, bad = load(tmp_path, "prune").trials
    assert good.state == TrialState.COMPLETE and good.params == {"x": 2}
    assert bad.state == TrialState.PRUNED and bad.params == {"x": -8}
    assert list(bad.intermediate_values) == [1]
    assert bad.value == pytest.approx(app.score(-8, 0) / 2)  # the last reported value
    assert json.loads((jobs / "1" / "results.json").read_text()) == {"status": "pruned", "epoch": 1}


@pytest.mark.parametrize(
    ("pruner", "cls"),
    [
        ("none", optuna.pruners.NopPruner),
        ("median", optuna.pruners.MedianPruner),
        ("percentile", optuna.pruners.PercentilePruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("wilcoxon", optuna.pruners.WilcoxonPruner),
    ],
)
def test_pruner_groups_build_optuna_pruners(compose_cfg, pruner, cls):
    cfg = compose_cfg([f"hydra/sweeper/pruner={pruner}"], return_hydra_config=True)
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(cfg.hydra.sweeper.pruner)
    assert type(build_pruner(node)) is cls


def test_journal_storage_by_path(run_sweep, tmp_path, capsys):
    journal = tmp_path / "journal" / "optuna.log"
    run_sweep("x=0,1", db=str(journal))
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert complete_params(study) == [(("x", 0),), (("x", 1),)]
    assert all(HEARTBEAT_ATTR in t.system_attrs for t in study.trials)
    assert f"optuna-dashboard {journal}" in capsys.readouterr().out


def test_stale_running_trial_is_failed_and_run_again(tmp_path):
    """A trial left RUNNING by a dead worker (no heartbeat for grace_period) is re-run."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    settings = sweep_settings(
        sweeper_conf(
            storage=storage,
            study_name="stale",
            heartbeat_interval=1,
            grace_period=2,
            metric_name="score",
        ),
        arguments=["x=0,1,2"],
    )
    prepare_study(settings)
    st, study = open_study(settings, worker=0)  # the grid sampler
    dead = study.ask(fixed_distributions=settings.space.distributions())  # grid point 0
    record_heartbeat(st, st.get_trial_id_from_study_id_trial_number(study._study_id, 0))
    launched: list[tuple[list[str], int]] = []

    def launch(overrides: list[str], job_num: int) -> JobOutcome:
        launched.append((overrides, job_num))
        x = int(overrides[0].split("=")[1])
        return JobOutcome(value=float(x))

    import time

    time.sleep(3)
    run_workers(settings, launch)
    study = optuna.load_study(study_name="stale", storage=storage)
    states = {t.number: t.state for t in study.trials}
    assert states[0] == TrialState.FAIL
    assert complete_params(study) == [(("x", 0),), (("x", 1),), (("x", 2),)]
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.params == dead.params and retry.state == TrialState.COMPLETE
    assert sorted(n for _, n in launched) == [1, 2, 3]
    summary = summarize(settings, tmp_path / "s")
    assert summary.progress.complete == 3 and summary.progress.failed == 0
    assert "FAIL (retried)" in summary.table


SWEEP_FILES = sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))


def test_the_named_sweeps_exist():
    assert {"mfcc_grid", "features_tpe", "full_tpe", "families"} <= set(SWEEP_FILES)


def _corner(param: Param, *, last: bool):
    d = param.distribution
    if hasattr(d, "choices"):
        return d.choices[-1 if last else 0]
    return d.high if last else d.low


@pytest.mark.parametrize("name", SWEEP_FILES)
def test_every_sweep_file_composes_into_a_valid_study(compose_cfg, tmp_path, monkeypatch, name):
    from omegaconf import OmegaConf

    from urbansound.config.checks import settings_from_config

    monkeypatch.chdir(tmp_path)  # the default storage folder is created relative to here
    cfg = compose_cfg([f"sweep={name}"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"  # no -m needed
    conf = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    settings = sweep_settings(conf, arguments=[f"sweep={name}"])
    assert settings.named
    assert settings.study_name == name
    assert settings.storage == f"sqlite:///{tmp_path}/outputs/optuna.db"
    assert settings.space.params and settings.n_trials >= 1
    assert isinstance(build_sampler(settings.sampler, settings.space), optuna.samplers.BaseSampler)
    assert isinstance(build_pruner(settings.pruner), optuna.pruners.BasePruner)
    space = resolve_branches(
        settings.space,
        lambda overrides: compose_cfg([f"sweep={name}", *overrides], return_hydra_config=True),
    )
    if name == "families":  # each family's trials ask its own keys only
        keys = {dict(b.choices)["model"]: set(b.keys) for b in space.branches}
        assert keys["svm"] >= {"model.C", "model.gamma"}
        assert "model.dropout" not in keys["svm"] and "model.C" not in keys["mlp"]
        assert keys["random_forest"] == keys["extra_trees"]
    # both corners of every branch compose into settings the experiment accepts
    for branch in space.branches or [None]:
        names = branch.names() if branch else list(space.params)
        for last in (False, True):
            point = {n: _corner(space.params[n], last=last) for n in names}
            if branch:
                point.update(dict(branch.choices))
            settings_from_config(compose_cfg(space.overrides(point)))


def test_mfcc_grid_is_the_tutorials_grid(compose_cfg, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg(["sweep=mfcc_grid"], return_hydra_config=True)
    conf = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    settings = sweep_settings(conf, arguments=["sweep=mfcc_grid"])
    assert settings.space.grid() == {"n_mfcc": [20, 40, 60]}
    assert settings.n_trials == 3
    assert resolve_sampler_target(settings.sampler, settings.space) == GRID_SAMPLER


def test_command_line_grid_uses_the_default_sweeper(compose_cfg, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg([], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("UrbansoundSweeper")
    conf = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    settings = sweep_settings(conf, arguments=["n_mfcc=20,40,60"])
    assert resolve_sampler_target(settings.sampler, settings.space) == GRID_SAMPLER
    assert settings.n_trials == 3 and settings.study_name.startswith("n_mfcc-")
    basic = compose_cfg(["hydra/sweeper=basic"], return_hydra_config=True)
    assert basic.hydra.sweeper._target_.endswith("BasicSweeper")


def test_the_sweeper_gets_its_keys_from_its_dataclass_alone(compose_cfg, tmp_path, monkeypatch):
    """The keys of hydra.sweeper are written once, in UrbansoundSweeperConf: the Sweeper Hydra
    instantiates receives every one of them (a key added there reaches sweep_settings)."""
    import dataclasses

    from hydra.utils import instantiate

    from hydra_plugins.urbansound_sweeper.config import UrbansoundSweeperConf

    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg(["hydra.sweeper.n_trials=7"], return_hydra_config=True)
    sweeper = instantiate(cfg.hydra.sweeper)
    internal = {"_target_", "_recursive_", "defaults"}
    keys = {f.name for f in dataclasses.fields(UrbansoundSweeperConf)} - internal
    assert set(sweeper.sweeper.conf) == keys
    assert isinstance(sweeper.sweeper.conf["sampler"], dict)  # plain, as sweep_settings reads it
    settings = sweep_settings(sweeper.sweeper.conf, arguments=["x=interval(0,1)"])
    assert settings.n_trials == 7


def test_a_trial_failed_by_another_worker_meanwhile_does_not_stop_the_sweep(tmp_path, caplog):
    """A worker whose heartbeat stalled finds its trial failed (and queued) by another one."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    settings = sweep_settings(
        sweeper_conf(storage=storage, study_name="taken", max_retry=3), arguments=["x=0,1"]
    )
    prepare_study(settings)
    other = optuna.storages.RDBStorage(storage)
    study_id = other.get_study_id_from_name("taken")

    def launch(overrides: list[str], job_num: int) -> JobOutcome:
        if job_num == 0:  # meanwhile, another worker declares trial 0 dead and queues a copy
            other.set_trial_state_values(
                other.get_trial_id_from_study_id_trial_number(study_id, 0), TrialState.FAIL
            )
            study = optuna.load_study(study_name="taken", storage=other)
            requeue(study, study.trials[0], 3)
        return JobOutcome(value=float(overrides[0].split("=")[1]))

    with caplog.at_level(logging.WARNING, logger="urbansound.sweep.lifecycle"):
        run_workers(settings, launch)
    assert "trial 0 is already FAIL" in caplog.text
    study = optuna.load_study(study_name="taken", storage=storage)
    assert complete_params(study) == [(("x", 0),), (("x", 1),)]
    assert study.trials[0].state == TrialState.FAIL and study.trials[0].value is None


def test_progress_line_shows_finished_trials_against_n_trials() -> None:
    line = Progress(complete=3, pruned=1, failed=0, running=[7], waiting=0).describe(10)
    assert line == "[########............] 4/10 trials (3 complete, 1 pruned, 0 failed, 1 running)"
    assert Progress(0, 0, 0, [], 0).describe(3).startswith("[....................] 0/3 trials")


# --------------------------------------------------------------------------------------------
# Faults (issue 11): no trial is left RUNNING, no study is silently reused


def _bare_ask(storage: str, name: str) -> None:
    """``study.ask()`` from another process: a RUNNING trial that is never told nor heartbeated."""
    code = (
        "import optuna, sys\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "optuna.load_study(study_name=sys.argv[1], storage=sys.argv[2]).ask()\n"
    )
    subprocess.run([sys.executable, "-c", code, name, storage], check=True, timeout=120)


def test_a_trial_asked_by_another_process_does_not_block_the_grid(run_sweep, tmp_path):
    """Issue 11.1: a RUNNING trial with no heartbeat at all is failed after the grace period."""
    run_sweep("x=0,1,2", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=g")
    _bare_ask(f"sqlite:///{tmp_path / 'optuna.db'}", "g")
    assert [t.state for t in load(tmp_path, "g").trials][-1] == TrialState.RUNNING
    run_sweep("x=0,1,2", "hydra.sweeper.study_name=g")  # the grid's last point still runs
    study = load(tmp_path, "g")
    assert complete_params(study) == [(("x", 0),), (("x", 1),), (("x", 2),)]
    orphan = study.trials[2]
    assert orphan.state == TrialState.FAIL and orphan.params == {}
    assert orphan.user_attrs["error"].startswith("not run: its process stopped")
    assert study_progress(study.trials).failed == 0  # not counted as a failure
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_a_finished_grid_with_an_ownerless_trial_ends(run_sweep, tmp_path, capsys):
    """Issue 11.1, the repro: the rerun of a finished grid no longer waits forever."""
    run_sweep("x=0,1", "hydra.sweeper.study_name=done")
    _bare_ask(f"sqlite:///{tmp_path / 'optuna.db'}", "done")
    run_sweep("x=0,1", "hydra.sweeper.study_name=done")
    study = load(tmp_path, "done")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]
    assert "study done: 2 complete, 0 pruned, 0 failed" in capsys.readouterr().out


def test_a_sweep_that_ends_with_a_trial_still_running_says_so(run_sweep, tmp_path, capsys):
    """Without heartbeats a killed sweep's RUNNING trial is never failed: the rerun ended with
    that grid point silently not run; now one warning names the trial and what to do."""
    run_sweep("x=0,1", "hydra.sweeper.study_name=nohb", "hydra.sweeper.heartbeat_interval=null")
    _bare_ask(f"sqlite:///{tmp_path / 'optuna.db'}", "nohb")  # as a killed sweep leaves one
    capsys.readouterr()
    run_sweep("x=0,1", "hydra.sweeper.study_name=nohb", "hydra.sweeper.heartbeat_interval=null")
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert line.startswith("warning: study nohb: trial(s) #2 still RUNNING: with ")
    assert "hydra.sweeper.heartbeat_interval=20" in line


@pytest.mark.parametrize("order", ["a,typo", "typo,a"])
def test_a_trial_whose_overrides_do_not_compose_fails_and_the_sweep_goes_on(
    run_sweep, tmp_path, order
):
    """Issue 11.8: `-m cv=folds,randomsplit` (a typo in one option) fails that trial only."""
    jobs = run_sweep(f"opt={order}", "hydra.sweeper.study_name=typo")
    study = load(tmp_path, "typo")
    by_opt = {t.params["opt"]: t for t in study.trials}
    assert by_opt["a"].state == TrialState.COMPLETE
    bad = by_opt["typo"]
    assert bad.state == TrialState.FAIL
    assert "Could not find 'opt/typo'" in bad.user_attrs["error"]
    assert "Could not find 'opt/typo'" in (jobs / str(bad.number) / "error.txt").read_text()
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    run_sweep(f"opt={order}", "hydra.sweeper.study_name=typo")  # a rerun adds nothing
    assert len(load(tmp_path, "typo").trials) == 2


def test_an_exception_in_the_launch_path_fails_the_trial_not_the_sweep(tmp_path):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    settings = sweep_settings(
        sweeper_conf(storage=storage, study_name="crash", max_failure_rate=0.5),
        arguments=["x=0,1"],
    )
    prepare_study(settings)

    def launch(overrides: list[str], job_num: int) -> JobOutcome:
        if job_num == 0:
            raise RuntimeError("launcher broke")
        return JobOutcome(value=1.0)

    run_workers(settings, launch)
    first, second = optuna.load_study(study_name="crash", storage=storage).trials
    assert first.state == TrialState.FAIL
    assert first.user_attrs["error"] == "RuntimeError: launcher broke"
    assert second.state == TrialState.COMPLETE


def test_ctrl_c_in_the_heartbeats_start_queues_the_trial(tmp_path, monkeypatch):
    """Issue 11.5: a KeyboardInterrupt as the first heartbeat is written leaves nothing RUNNING."""
    from urbansound.sweep import lifecycle

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    settings = sweep_settings(
        sweeper_conf(storage=storage, study_name="int", heartbeat_interval=60),
        arguments=["x=0,1"],
    )
    prepare_study(settings)

    def interrupted(storage: object, trial_id: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(lifecycle, "record_heartbeat", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_workers(settings, lambda o, n: JobOutcome(value=0.0))
    trials = optuna.load_study(study_name="int", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["error"] == "interrupted (KeyboardInterrupt); queued again"
    assert trials[1].params == trials[0].params


@pytest.mark.parametrize(
    ("second", "differs"),
    [
        (["hydra/sweeper/sampler=tpe"], "sampler RandomSampler(seed=0); this sweep has TPESampler"),
        (
            ["hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=1"],
            "sampler RandomSampler(seed=0); this sweep has RandomSampler(seed=1)",
        ),
        (
            ["hydra/sweeper/sampler=random", "hydra/sweeper/pruner=median"],
            "pruner NopPruner(); this sweep has MedianPruner(",
        ),
    ],
)
def test_a_named_study_is_not_reused_under_other_settings(run_sweep, tmp_path, second, differs):
    """Issue 11.9: reopening a named study with another sampler or pruner stops with one line."""
    common = ("x=interval(-5,5)", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=lr")
    run_sweep(*common, "hydra/sweeper/sampler=random")
    with pytest.raises(ConfigError) as info:
        run_sweep(*common, *second)
    line = str(info.value)
    assert "\n" not in line
    assert f"study 'lr' in sqlite:///{tmp_path / 'optuna.db'} was run with {differs}" in line
    assert "choose another hydra.sweeper.study_name" in line
    assert len(load(tmp_path, "lr").trials) == 2  # untouched


def test_a_derived_study_name_changes_with_the_sampler(run_sweep, tmp_path):
    """Issue 11.9, the repro: `sampler=random` then `sampler=tpe` are two studies."""
    common = ("x=interval(-5,5)", "hydra.sweeper.n_trials=2")
    run_sweep(*common, "hydra/sweeper/sampler=random")
    run_sweep(*common, "hydra/sweeper/sampler=tpe")
    summaries = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(summaries) == 2 and all(s.n_trials == 2 for s in summaries)
    samplers = sorted(
        load(tmp_path, s.study_name).user_attrs["sampler"]["_target_"] for s in summaries
    )
    assert samplers == ["optuna.samplers.RandomSampler", "optuna.samplers.TPESampler"]


# --------------------------------------------------------------------------------------------
# Conventions (issue 12.6/7)


def test_every_sweep_dir_knows_its_study_even_when_nothing_was_left_to_run(
    run_sweep, tmp_path, caplog
):
    root = logging.getLogger("optuna")
    verbosity, propagate = optuna.logging.get_verbosity(), root.propagate
    optuna.logging.set_verbosity(optuna.logging.INFO)  # other tests may have quietened it
    root.propagate = True
    try:
        first = run_sweep("x=0,1", "hydra.sweeper.study_name=known")
        second = run_sweep("x=0,1", "hydra.sweeper.study_name=known")  # finished: re-run
    finally:
        optuna.logging.set_verbosity(verbosity)
        root.propagate = propagate
    for jobs in (first, second):
        assert json.loads((jobs / "study.json").read_text()) == {
            "study_name": "known",
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "direction": "maximize",
            "metric": "score",
            "password_env": None,
        }
        assert (jobs / "trials.csv").is_file() and (jobs / "best_params.yaml").is_file()
    # (a record can reach caplog twice when another test added a handler to Optuna's logger)
    records = {(r.created, r.getMessage()) for r in caplog.records if r.name.startswith("optuna")}
    messages = [m for _, m in records]
    assert sum("A new study created" in m for m in messages) == 1
    assert not [m for m in messages if "Using an existing study" in m]
    study = load(tmp_path, "known")
    assert study.user_attrs["search_space"] == {
        "x": {"name": "CategoricalDistribution", "attributes": {"choices": [0, 1]}}
    }


def test_when_every_trial_failed_the_summary_says_so(run_sweep, tmp_path, capsys):
    jobs = run_sweep("x=0,1", "fail_x=[0,1]", "hydra.sweeper.max_failure_rate=1")
    out = capsys.readouterr().out
    assert "best: none, no trial completed (2 failed, 0 pruned)" in out
    assert not (jobs / "best_params.yaml").exists() and "best parameters:" not in out


def test_trial_table_shows_four_significant_digits_and_the_csv_keeps_all(tmp_path) -> None:
    rows = [
        {
            "trial": 0,
            "state": "COMPLETE",
            "value": 0.123456789,
            "duration_s": 12.3,
            "params.lr": 1e-5 / 3,
        },
        {"trial": 1, "state": "FAIL", "value": None, "duration_s": None, "params.lr": 0.1},
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["trial", "state", "lr", "value", "s"]
    assert lines[1].split() == ["0", "COMPLETE", "3.333e-06", "0.1235", "12.3"]
    assert lines[2].split() == ["1", "FAIL", "0.1", "-", "-"]
    text = write_trials_csv(tmp_path / "t.csv", rows).read_text()
    assert "0.123456789" in text
