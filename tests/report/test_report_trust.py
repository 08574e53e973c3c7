"""What the report trusts: a journal file, a sweep directory's study.json, the jobs' results.

Each damaged or foreign input is one ``error:`` line or one warning naming the file, and a
run directory that belongs to another study or trial is never reported as this one's.
"""

from __future__ import annotations

import json

from tests.sweep.test_sweep_journal import cut_off, journal
from urbansound.report import cli


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
