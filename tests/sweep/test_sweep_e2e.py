"""End to end: `python -m urbansound.run -m ...` as Optuna studies, on the small demo corpus."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.config.test_config import cli as user_cli
from tests.helpers import DEMO_CLIPS_PER_CLASS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")


def quick(demo_dir: Path, cache: Path) -> list[str]:
    return [
        "train.epochs=2",
        "tracking.mode=disabled",
        "features.n_jobs=1",
        f"features.cache_dir={cache}",
        f"data.demo_dir={demo_dir}",
        f"data.demo_clips_per_class={DEMO_CLIPS_PER_CLASS}",
    ]


def only_study(tmp_path: Path) -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'outputs' / 'optuna.db'}"  # the default, relative to cwd
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def test_command_line_grid_runs_as_a_study_with_epoch_curves_and_links(
    run_cli, tmp_path, demo_dir, feature_cache
):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        "-m", "n_mfcc=13,20", *quick(demo_dir, feature_cache), f"hydra.sweep.dir={sweep_dir}"
    )
    study = only_study(tmp_path)
    assert study.study_name.startswith("n_mfcc-")
    assert study.metric_names == ["mean_cv_accuracy"]
    assert sorted(t.params["n_mfcc"] for t in study.trials) == [13, 20]
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        job = sweep_dir / str(t.number)
        results = json.loads((job / "results.json").read_text())
        assert results["status"] == "complete"
        assert results["trial"]["number"] == t.number
        assert results["trial"]["study_name"] == study.study_name
        assert t.value == pytest.approx(results["mean_accuracy"])
        curve = [h["mean_test_accuracy"] for h in results["history"]]
        assert [t.intermediate_values[step] for step in (1, 2)] == pytest.approx(curve)
        assert t.user_attrs["run_dir"] == str(job)
        assert t.user_attrs["comet_mode"] == "disabled"
        assert f"n_mfcc={t.params['n_mfcc']}" in t.user_attrs["overrides"]
    assert f"study {study.study_name}: 2 complete, 0 pruned, 0 failed" in proc.stdout
    assert f"dashboard: optuna-dashboard sqlite:///{tmp_path}/outputs/optuna.db" in proc.stdout
    assert (sweep_dir / "trials.csv").is_file() and (sweep_dir / "best_params.yaml").is_file()


def test_named_sweep_file_with_a_pruner_marks_the_job_pruned(
    run_cli, tmp_path, demo_dir, feature_cache
):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(  # no -m: the sweep file sets hydra.mode=MULTIRUN
        "sweep=mfcc_grid",
        "hydra.sweeper.params.n_mfcc='choice(13)'",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=2.0",  # no accuracy reaches 2: pruned after epoch 1
        *quick(demo_dir, feature_cache),
        f"hydra.sweep.dir={sweep_dir}",
    )
    study = only_study(tmp_path)
    assert study.study_name == "mfcc_grid"  # a name the sweep file wrote is used as written
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    results = json.loads((sweep_dir / "0" / "results.json").read_text())
    assert results["status"] == "pruned"
    assert results["pruned_at_epoch"] == 1
    assert trial.value == pytest.approx(results["mean_accuracy"])
    assert f"study {study.study_name}: 0 complete, 1 pruned, 0 failed" in proc.stdout


def test_a_value_no_trial_can_run_stops_the_sweep_before_any_trial(
    tmp_path, demo_dir, feature_cache
):
    storage = tmp_path / "outputs" / "optuna.db"
    cases = {
        # every value of the swept key is out of range
        ("train.epochs=0,-1",): "error: every value of sweep key train.epochs is invalid, "
        "e.g. train.epochs must be an integer >= 1, got 0",
        # a fixed value out of range: the single run's own line
        ("n_mfcc=13,20", "features.n_mels=4000"): "error: features.n_mels (4000) leaves mel",
        ("n_mfcc=13,20", "cv.folds=[]"): "error: cv.folds must list at least one fold",
    }
    for args, message in cases.items():
        # as a user starts it: the tests' HYDRA_FULL_ERROR=1 keeps every error's traceback
        proc = user_cli("-m", *quick(demo_dir, feature_cache), *args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith(message)
        assert "Traceback" not in proc.stderr
        assert not storage.exists() or not optuna.get_all_study_summaries(f"sqlite:///{storage}")


def test_one_invalid_value_fails_its_trial_and_the_sweep_goes_on(
    run_cli, tmp_path, demo_dir, feature_cache
):
    proc = run_cli("-m", *quick(demo_dir, feature_cache), "train.epochs=0,2", check=False)
    assert proc.returncode == 0, proc.stderr
    study = only_study(tmp_path)
    states = {t.params["train.epochs"]: t.state for t in study.trials}
    assert states == {0: TrialState.FAIL, 2: TrialState.COMPLETE}
    (failed,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert "train.epochs must be an integer >= 1, got 0" in failed.user_attrs["error"]
