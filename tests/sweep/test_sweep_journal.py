"""A damaged journal file (Optuna's JournalStorage) is one line naming it and what to do.

Optuna skips a last line without its newline (a record a killed process was writing) and then
glues the next record to it, and meets other damage with a ``JSONDecodeError`` or an
``AssertionError: Should not reach.`` deep in its replay. The sweeper, a job and every reader
(the report, ``fit``) open a journal through :func:`urbansound.sweep.storage.open_storage`,
which checks the file first.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest

from urbansound.errors import ConfigError
from urbansound.sweep import records
from urbansound.sweep.runner import prepare_study
from urbansound.sweep.settings import sweep_settings
from urbansound.sweep.storage import check_journal, open_storage

from .apps.sweeper_conf import sweeper_conf
from .test_sweep_processes import command


def journal(path: Path, n_trials: int = 3) -> Path:
    """A sound journal file holding study ``s`` with ``n_trials`` COMPLETE trials."""
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n_trials)
    return path


def cut_off(path: Path) -> int:
    """Cut the file in the middle of its last record; returns where that record starts."""
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: start + 20])
    return start


def damaged(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A journal damaged in one way, and the words the error must contain."""
    path = journal(tmp_path / "j.log")
    lines = path.read_bytes().splitlines(keepends=True)
    if kind == "cut off":
        start = cut_off(path)
        return path, f"cut off: its last line (from byte {start}) is incomplete"
    if kind == "garbage line":
        lines.insert(2, b'{"op_code": 5, garbage\n')
        words = "line 3 of the journal file is no Optuna journal record"
    elif kind == "no record":
        lines.insert(1, b'{"x": 1}\n')
        words = "line 2 of the journal file is no Optuna journal record (no op_code)"
    elif kind == "unknown operation":
        lines.append(b'{"op_code": 99, "worker_id": "w"}\n')
        words = "records are no Optuna journal (Should not reach.)"
    else:  # "not a journal": someone's results file
        lines = [b'{"status": "complete", "score": 0.9}\n']
        words = "line 1 of the journal file is no Optuna journal record (no op_code)"
    path.write_bytes(b"".join(lines))
    return path, words


KINDS = ["cut off", "garbage line", "no record", "unknown operation", "not a journal"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_journal_is_one_line_for_a_reader(tmp_path, kind):
    path, words = damaged(tmp_path, kind)
    for read in (records.study_names, lambda s: records.load_study(s, "s")):
        with pytest.raises(ConfigError) as info:
            read(str(path))
        message = str(info.value)
        assert words in message and "\n" not in message  # the caller names the file


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_journal_stops_a_sweep_before_any_trial(tmp_path, kind):
    path, words = damaged(tmp_path, kind)
    before = path.read_bytes()
    settings = sweep_settings(sweeper_conf(storage=str(path)), arguments=["x=0,1"])
    with pytest.raises(ConfigError) as info:
        prepare_study(settings)
    message = str(info.value)
    assert message.startswith(f"hydra.sweeper.storage={path}: ")
    assert words in message and message.count(str(path)) <= 2 and "\n" not in message
    assert path.read_bytes() == before  # nothing appended to a damaged file


def test_a_cut_off_journal_says_how_to_repair_it_and_the_repair_works(tmp_path):
    path = journal(tmp_path / "j.log")
    start = cut_off(path)
    with pytest.raises(ConfigError, match=rf"truncate -s {start} {path}\) and run again"):
        check_journal(path)
    subprocess.run(["truncate", "-s", str(start), str(path)], check=True)
    check_journal(path)  # repaired: the two records before the cut are all there
    study = optuna.load_study(study_name="s", storage=open_storage(str(path), create=False))
    assert len(study.trials) == 3 and study.trials[-1].state != optuna.trial.TrialState.COMPLETE


def test_a_line_being_written_is_not_taken_for_a_cut_off_one(tmp_path):
    """Another process appending: its line is complete a moment later."""
    import threading

    path = journal(tmp_path / "j.log", n_trials=1)
    whole = path.read_bytes()
    head = whole.rstrip(b"\n")
    start = head.rfind(b"\n") + 1
    path.write_bytes(whole[: start + 10])  # a writer is in the middle of its last record
    finish = threading.Timer(0.1, lambda: path.write_bytes(whole))
    finish.start()
    try:
        check_journal(path)
    finally:
        finish.join()


def test_missing_and_empty_journals_are_new_ones(tmp_path):
    check_journal(tmp_path / "none.log")
    (tmp_path / "empty.log").write_bytes(b"")
    check_journal(tmp_path / "empty.log")


@pytest.mark.slow
def test_a_sweep_on_a_cut_off_journal_is_one_error_line_from_the_command_line(tmp_path):
    path = journal(tmp_path / "j.log")
    start = cut_off(path)
    cmd = command(tmp_path / "jobs", str(path), "x=0,1")
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"truncate -s {start} {path}" in errors[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "jobs" / "0").exists()
