"""A final fit's Comet experiment says what it is: its name, tags and re-run command.

The names and commands are pure functions; the archive test opens what comet_ml's real offline
mode wrote (no network: no key, so Comet is never asked).
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.tracking.archives import read_archive
from tests.tracking.results import run_result
from urbansound.config.overrides import parse_override
from urbansound.config.settings import Settings, TrackingSettings
from urbansound.tracking import experiments
from urbansound.tracking.naming import FitOrigin, fit_command, fit_name, fit_tags, hydra_string
from urbansound.training.results import CVResult, RunResult

SWEEP_TRIAL = FitOrigin(
    location="outputs/multirun/2026-12-06/10-00-00",
    kind="sweep",
    study_name="mfcc_grid",
    trial=2,
    run_dir="/work/outputs/multirun/2026-12-06/10-00-00/2",
)


def _shell_words(command: str, program: str) -> list[str]:
    """The arguments a shell hands to ``program`` when ``command`` is pasted into it."""
    assert command.startswith(program + " ")
    printed = subprocess.run(
        ["bash", "-c", 'printf "%s\\n"' + command.removeprefix(program)],
        capture_output=True,
        text=True,
        check=True,
    )
    return printed.stdout.splitlines()


def _parsed(words: list[str]) -> dict[str, object]:
    """Each override as Hydra's grammar reads it: key -> typed value."""
    pairs = [parse_override(w) for w in words]
    assert None not in pairs, words
    return dict(pairs)  # type: ignore[arg-type]


def test_a_fit_is_named_and_tagged_after_its_source_trial() -> None:
    assert fit_name(SWEEP_TRIAL, run_dir="outputs/fits/d/t", overrides=[]) == (
        "fit of mfcc_grid trial 2"
    )
    assert fit_tags(SWEEP_TRIAL) == ["fit", "study:mfcc_grid", "trial:2"]

    # a sweep directory whose jobs record no study: the trial of that directory
    no_study = FitOrigin(location="old/sweep", kind="sweep", trial=5)
    assert fit_name(no_study, run_dir="f", overrides=[]) == "fit of trial 5 of old/sweep"
    assert fit_tags(no_study) == ["fit", "trial:5"]

    # a single run's directory: the run; a storage URL is shown without its password
    run = FitOrigin(location="outputs/runs/2026-12-06/09-00-00", kind="run")
    assert fit_name(run, run_dir="f", overrides=[]) == "fit of outputs/runs/2026-12-06/09-00-00"
    study = FitOrigin(location="postgresql://me:s3cret@db/optuna", kind="study", study_name="s")
    assert fit_name(study, run_dir="f", overrides=[]) == "fit of postgresql://me:***@db/optuna"
    assert fit_tags(run) == ["fit"]

    # no source: the command line's configuration, or the fit directory
    plain = FitOrigin()
    assert fit_name(plain, run_dir="outputs/fits/d/12-00-00", overrides=["n_mfcc=20"]) == (
        "fit n_mfcc=20"
    )
    assert fit_name(plain, run_dir="outputs/fits/d/12-00-00", overrides=["fit.seeds=[0,1]"]) == (
        "fit 12-00-00"
    )
    long = fit_name(plain, run_dir="f", overrides=[f"data.root=/{'x' * 200}"])
    assert len(long) == 100 and long.endswith("...")


def test_the_fit_command_pins_the_source_trial_and_passes_the_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pasted into a shell, the command gives Hydra the source as resolved (absolute path,
    study, trial: the same trial after the study has gone on) and the other overrides as
    given; Hydra's own keys, the sweeper's and a named sweep are left out."""
    monkeypatch.chdir(tmp_path)
    overrides = [
        "fit.from=outputs/multirun/2026-12-06/10-00-00",
        "fit.seeds=[0,1,2]",
        "model.hidden=[8, 8]",
        "data.root=/data/my corpus",
        "hydra.run.dir=outputs/fits/best",
        "trial.number=3",
        "sweep=mfcc_grid",
    ]
    command = fit_command(SWEEP_TRIAL, overrides)
    words = _shell_words(command, "urbansound-fit")
    assert words[:3] == [
        f"fit.from={tmp_path / 'outputs/multirun/2026-12-06/10-00-00'}",
        "fit.study=mfcc_grid",
        "fit.trial=2",
    ]
    assert words[3:] == ["fit.seeds=[0,1,2]", "model.hidden=[8, 8]", "data.root=/data/my corpus"]
    assert _parsed(words)["fit.seeds"] == [0, 1, 2]

    # a fit.trial given on the command line is replaced by the one resolved, never repeated
    again = fit_command(SWEEP_TRIAL, ["fit.trial=2", *overrides])
    assert [w for w in _shell_words(again, "urbansound-fit") if w.startswith("fit.trial")] == [
        "fit.trial=2"
    ]

    # a run directory as source: no study or trial to pin (fit.trial would be refused)
    run = FitOrigin(location="runs/x", kind="run", study_name="s", trial=1)
    assert _shell_words(fit_command(run, ["fit.from=runs/x"]), "urbansound-fit") == [
        f"fit.from={tmp_path / 'runs/x'}"
    ]
    # no source: urbansound-fit with the overrides
    assert fit_command(FitOrigin(), ["n_mfcc=20", "hydra.run.dir=x"]) == "urbansound-fit n_mfcc=20"


@pytest.mark.parametrize(
    "location",
    ["/data/my sweeps/a,b", "/data/it's [here]", "/data/x=1 ${y}", "/data/back\\slash\\"],
)
def test_a_source_path_hydra_must_quote_reaches_the_fit_unchanged(location: str) -> None:
    origin = FitOrigin(location=location, kind="sweep", study_name="a b,c", trial=0)
    words = _shell_words(fit_command(origin, []), "urbansound-fit")
    assert _parsed(words) == {"fit.from": location, "fit.study": "a b,c", "fit.trial": 0}


@pytest.mark.parametrize("value", ["null", "true", "123", "x,y", " lead", "it's", "plain/path"])
def test_hydra_string_is_read_back_as_the_same_string(value: str) -> None:
    assert parse_override(f"k={hydra_string(value)}") == ("k", value)


def test_the_fit_command_holds_no_password() -> None:
    origin = FitOrigin(location="postgresql://me:s3cret@db/optuna", kind="study", trial=1)
    command = fit_command(origin, ["fit.from=postgresql://me:s3cret@db/optuna", "n_mfcc=13"])
    assert "s3cret" not in command
    assert command == (
        "urbansound-fit 'fit.from=postgresql://me:***@db/optuna' fit.trial=1 n_mfcc=13"
    )


def _fit_result() -> RunResult:
    """A fit's result as experiment.fit makes it: one split labelled ``all``, no history."""
    run = run_result()
    fold = replace(run.cv.folds[0], fold="all")
    cv = CVResult(folds=[fold], history=[], mean_accuracy=fold.accuracy)
    return replace(run, protocol="final fit on folds 1, 2; tested on training data", cv=cv)


def test_a_fit_archive_names_tags_and_records_the_fit(tmp_path: Path) -> None:
    settings = Settings(
        tracking=TrackingSettings(mode="offline", offline_dir=str(tmp_path / "comet"))
    )
    run_dir = tmp_path / "fits" / "best"
    run_dir.mkdir(parents=True)
    overrides = ["fit.from=outputs/multirun/2026-12-06/10-00-00", "n_mfcc=13", "hydra.run.dir=x"]
    tracker = experiments.start(
        settings,
        run_dir=run_dir,
        config={"n_mfcc": 13, "features": {"n_mfcc": 13}},
        overrides=overrides,
        fit=SWEEP_TRIAL,
    )
    tracker.finish(_fit_result(), run_dir=run_dir, figures={})
    info = tracker.info()
    assert info["mode"] == "offline" and info["errors"] == []
    a = read_archive(info["archive"])

    assert a.others["Name"] == "fit of mfcc_grid trial 2"
    assert set(a.experiment["tags"]) == {"fit", "study:mfcc_grid", "trial:2", "demo"}
    assert a.others["command"] == (
        f"urbansound-fit fit.from={tmp_path}/outputs/multirun/2026-12-06/10-00-00 "
        "fit.study=mfcc_grid fit.trial=2 n_mfcc=13"
    )
    assert a.others["fit_from"] == "outputs/multirun/2026-12-06/10-00-00"
    assert (a.others["source_study_name"], a.others["source_trial_number"]) == ("mfcc_grid", 2)
    assert a.others["source_run_dir"] == SWEEP_TRIAL.run_dir
    # a fit is no trial: no study or trial of its own, none of Comet's optimizer fields
    assert not {"study_name", "trial_number", "optimizer_id"} & set(a.others)
    assert a.metrics["accuracy_fold_all"] == pytest.approx({0: 6 / 7})
