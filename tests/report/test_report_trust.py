"""What the report trusts: a journal file, a sweep directory's study.json, the jobs' results.

Each damaged or foreign input is one ``error:`` line or one warning naming the file, and a
run directory that belongs to another study or trial is never reported as this one's.
"""

from __future__ import annotations

import json
import logging
import uuid

import optuna
import pytest

from tests.sweep.postgres import postgres_server
from tests.sweep.test_sweep_journal import cut_off, journal
from urbansound.report import cli
from urbansound.report.build import build_report
from urbansound.report.load import load_sweep

from .test_report import FOLD_ACC, add_trial, write_run


def test_a_cut_off_journal_is_one_line_from_the_report(tmp_path, capsys):
    path = journal(tmp_path / "j.log")
    start = cut_off(path)
    assert cli.main(["--storage", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: --storage {path}: the journal file is cut off")
    assert f"truncate -s {start} {path}" in err


def test_a_sweep_directory_whose_journal_is_damaged_is_one_line(tmp_path, capsys):
    path = journal(tmp_path / "j.log")
    with path.open("ab") as fh:
        fh.write(b'{"op_code": 99, "worker_id": "w"}\n')  # Optuna: "Should not reach."
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "study.json").write_text(
        json.dumps({"study_name": "s", "storage": str(path), "direction": "maximize"})
    )
    assert cli.main([str(sweep_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{sweep_dir / 'study.json'} {path}: the journal file's records are no Optuna" in err


# --------------------------------------------------------------------------------------------
# Run directories that another study's sweep overwrote


def test_a_run_directory_that_records_another_study_is_said_and_never_mixed(tmp_path, caplog):
    """Study A's trial 0 links a job directory that sweep B (another storage) overwrote: its
    per-fold results are B's, and the report must not show them as A's."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(study_name="A", storage=url, direction="maximize")
    sweep_dir = tmp_path / "sweep"
    for number, n in enumerate((20, 40)):
        run_dir = sweep_dir / str(number)
        res = write_run(run_dir, FOLD_ACC[n], overrides=[f"n_mfcc={n}"])
        add_trial(study, run_dir, res["mean_accuracy"], {"n_mfcc": n})
    # B's trial 0 went into A's job directory 0 (with B's config: other folds' accuracies)
    b_res = write_run(
        sweep_dir / "0",
        FOLD_ACC[60],
        overrides=["n_mfcc=60"],
        trial={"study_name": "B", "number": 0},
    )
    with caplog.at_level(logging.WARNING, logger="urbansound.report.load"):
        sw = load_sweep([sweep_dir], storage=url, study_name="A")
    rec0 = next(r for r in sw.trials if r.number == 0)
    assert rec0.results is None and rec0.run_dir is None  # B's results are not A's
    assert rec0.value == study.trials[0].value  # A's own value, from A's storage
    warnings = [r.getMessage() for r in caplog.records]
    assert any(
        f"trial #0: {sweep_dir / '0'}/results.json is not used: it records trial 0 of study B" in w
        for w in warnings
    ), warnings
    assert all(r.results is None or r.results.trial["study_name"] == "A" for r in sw.records)
    b_folds = [f["accuracy"] for f in b_res["folds"]]
    assert all([f.accuracy for f in r.folds] != b_folds for r in sw.records)
    summary = json.loads(build_report(sw, out_dir=tmp_path / "rep").summary.read_text())
    assert summary["best"]["number"] == 1  # A's own trial 1; B's run is in no table


@pytest.mark.postgres
def test_an_old_study_json_with_a_hidden_password_opens_through_pgpassword(
    tmp_path, monkeypatch, capsys
):
    """study.json of an earlier version shows ``user:***@``: the report drops the *** and
    the client reads PGPASSWORD."""
    pg = postgres_server()
    name = f"legacy-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=pg.direct, direction="maximize")
    sweep_dir = tmp_path / "sweep"
    res = write_run(sweep_dir / "0", FOLD_ACC[40], overrides=["n_mfcc=40"])
    add_trial(study, sweep_dir / "0", res["mean_accuracy"], {"n_mfcc": 40})
    from sqlalchemy.engine import make_url

    shown = make_url(pg.url).set(password="***").render_as_string(hide_password=True)
    (sweep_dir / "study.json").write_text(json.dumps({"study_name": name, "storage": shown}))
    monkeypatch.setenv("PGPASSWORD", pg.password)
    try:
        assert cli.main([str(sweep_dir), "--no-progress"]) == 0, capsys.readouterr().err
        assert f"study {name} (" in capsys.readouterr().out
    finally:
        optuna.delete_study(study_name=name, storage=pg.direct)
