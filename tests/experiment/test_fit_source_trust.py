"""What fit's source trusts: the study and trial a run directory records, a sweep directory's
study.json, a storage URL (no password in it), a journal file.

The instance: sweep A (a.db) wrote job directories 0-2, sweep B (b.db, same hydra.sweep.dir)
wrote over 0 and 1; ``fit fit.from=a.db fit.trial=0`` then trained B's configuration and printed
B's CV figure. A run directory is now a trial's only when it records that trial of that study.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import optuna
import pytest

from tests.sweep.postgres import postgres_server
from tests.sweep.test_sweep_journal import cut_off, journal
from urbansound.errors import ConfigError
from urbansound.experiment.fit_source import FitOptions, resolve_source

from .test_fit import _fake_run

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(storage: str, name: str, runs: list[Path], values: list[float]) -> None:
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    dist = {"n_mfcc": optuna.distributions.IntDistribution(10, 60)}
    for number, (run, value) in enumerate(zip(runs, values, strict=True)):
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"n_mfcc": 13 + number},
                distributions=dist,
                user_attrs={"run_dir": str(run)},
            )
        )


def _overwritten_sweep(tmp_path: Path) -> tuple[Path, str, str]:
    """Sweep A's directory whose job 0 sweep B wrote over: (directory, A's and B's storage)."""
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    sweep = tmp_path / "sweep"
    runs = [
        _fake_run(sweep / str(n), mean=0.5 + n / 10, n_mfcc=13 + n, study="A", number=n)
        for n in range(3)
    ]
    _study(a, "A", runs, [0.5, 0.6, 0.7])
    (sweep / "study.json").write_text(json.dumps({"study_name": "A", "storage": a}))
    # B's trial 0 (another configuration, another figure) in A's job directory 0
    shutil.rmtree(sweep / "0")
    _fake_run(sweep / "0", mean=0.99, n_mfcc=60, study="B", number=0)
    return sweep, a, b


def test_a_trial_whose_run_directory_another_sweep_overwrote_is_refused(tmp_path):
    sweep, a, _ = _overwritten_sweep(tmp_path)
    for opts in (FitOptions(source=a, trial=0), FitOptions(source=str(sweep), trial=0)):
        with pytest.raises(ConfigError) as info:
            resolve_source(opts)
        message = str(info.value)
        assert message.startswith(f"trial 0 of study A: its run directory {sweep / '0'} is not")
        assert "it records trial 0 of study B, not trial 0 of study A" in message
        assert "\n" not in message
    # trials whose directories are their own still give their configuration
    src = resolve_source(FitOptions(source=a, trial=2))
    assert (src.trial, src.config["n_mfcc"], src.value) == (2, 15, 0.7)


def test_the_best_trial_is_checked_as_well(tmp_path):
    a = f"sqlite:///{tmp_path / 'a.db'}"
    runs = [
        _fake_run(tmp_path / "r0", mean=0.5, n_mfcc=13, study="A", number=0),
        _fake_run(tmp_path / "r1", mean=0.9, n_mfcc=14, study="A", number=0),  # not trial 1's
    ]
    _study(a, "A", runs, [0.5, 0.9])
    with pytest.raises(ConfigError, match=r"^trial 1 of study A: .* records trial 0 of study A"):
        resolve_source(FitOptions(source=a))


def test_fit_study_with_a_sweep_directory_must_be_its_study(tmp_path):
    sweep, _, _ = _overwritten_sweep(tmp_path)
    with pytest.raises(ConfigError) as info:
        resolve_source(FitOptions(source=str(sweep), study="nope"))
    assert str(info.value).startswith(
        f"fit.study=nope: fit.from={sweep} is the sweep directory of study A (its study.json)"
    )
    assert resolve_source(FitOptions(source=str(sweep), study="A", trial=1)).trial == 1


def test_job_directories_of_several_studies_are_never_chosen_among_together(tmp_path):
    """Without study.json (an older sweep, or the storage gone): the jobs' own records."""
    sweep, _, _ = _overwritten_sweep(tmp_path)
    (sweep / "study.json").unlink()
    with pytest.raises(ConfigError, match=r"holds jobs of several studies \(A, B\): choose one"):
        resolve_source(FitOptions(source=str(sweep)))
    best_a = resolve_source(FitOptions(source=str(sweep), study="A"))
    assert (best_a.trial, best_a.config["n_mfcc"]) == (2, 15)
    with pytest.raises(ConfigError, match=r"fit\.study=C: no job of .* belongs to study C"):
        resolve_source(FitOptions(source=str(sweep), study="C"))


def test_a_damaged_journal_is_one_line_naming_fit_from(tmp_path):
    path = journal(tmp_path / "j.log")
    start = cut_off(path)
    with pytest.raises(ConfigError) as info:
        resolve_source(FitOptions(source=str(path)))
    message = str(info.value)
    assert message.startswith(f"fit.from={path}: the journal file is cut off")
    assert f"truncate -s {start} {path}" in message and "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://me:Sekr1t@dbhost/optuna",
        "postgresql://me@dbhost/optuna?password=Sekr1t",
        "mysql://me:Sekr%40t@dbhost/optuna",
    ],
)
def test_a_storage_url_with_a_password_is_refused(url):
    with pytest.raises(ConfigError) as info:
        resolve_source(FitOptions(source=url))
    message = str(info.value)
    assert message.startswith("fit.from=") and "PGPASSWORD" in message
    assert "Sekr" not in message and "\n" not in message


@pytest.mark.postgres
def test_a_sweep_directory_names_the_variable_holding_its_password(tmp_path, monkeypatch):
    pg = postgres_server()
    name = f"fit-{uuid.uuid4().hex[:8]}"
    run = _fake_run(tmp_path / "sweep" / "0", mean=0.7, n_mfcc=13, study=name, number=0)
    _study(pg.direct, name, [run], [0.7])
    try:
        for key in ("PGPASSWORD", "PGPASSFILE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass
        monkeypatch.setenv("URBANSOUND_FIT_PW", pg.password)
        study_json = {"study_name": name, "storage": pg.url, "password_env": "URBANSOUND_FIT_PW"}
        (tmp_path / "sweep" / "study.json").write_text(json.dumps(study_json))
        src = resolve_source(FitOptions(source=str(tmp_path / "sweep")))
        assert (src.kind, src.study_name, src.trial) == ("sweep", name, 0)
        assert f":{pg.password}@" not in json.dumps(src.describe())  # no password in the URL
        # an older study.json showing the password as ***: PGPASSWORD is read instead
        from sqlalchemy.engine import make_url

        shown = make_url(pg.url).set(password="***").render_as_string(hide_password=True)
        (tmp_path / "sweep" / "study.json").write_text(
            json.dumps({"study_name": name, "storage": shown})
        )
        monkeypatch.setenv("PGPASSWORD", pg.password)
        assert resolve_source(FitOptions(source=str(tmp_path / "sweep"))).trial == 0
    finally:
        optuna.delete_study(study_name=name, storage=pg.direct)
