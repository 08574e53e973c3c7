"""predict's inputs that are no regular files, symlink loops, and where its output goes (`-o -`,
a link, a FIFO, a device, a closed pipe)."""

from __future__ import annotations

import csv
import io
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import cli_env
from tests.inference.models import write_model
from urbansound.inference.cli import expand_inputs


def _wav(path: Path, seconds: float = 1.0) -> Path:
    import soundfile as sf

    t = np.arange(int(22050 * seconds)) / 22050
    sf.write(path, (0.1 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 22050)
    return path


def _predict(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(
        [sys.executable, "-m", "urbansound.predict", *args],
        cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "model.safetensors")


# --------------------------------------------------------------------------------------------
# Inputs


def test_inputs_that_are_no_regular_files_are_refused_without_opening(tmp_path: Path) -> None:
    good = _wav(tmp_path / "good.wav")
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)  # opening it would block: no writer ever comes
    to_fifo = tmp_path / "to-fifo.wav"
    to_fifo.symlink_to(fifo)
    broken = tmp_path / "broken.wav"
    broken.symlink_to(tmp_path / "gone.wav")
    sock_path = tmp_path / "s.wav"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        args = ["-", "/dev/zero", "/dev/stdin", str(fifo), str(to_fifo), str(broken),
                str(sock_path), str(good)]  # fmt: skip
        paths, problems = expand_inputs(args)
    finally:
        sock.close()
    assert paths == [str(good)]
    reasons = dict(problems)
    assert reasons["-"].startswith("standard input is not read: predict decodes whole audio")
    assert reasons["/dev/zero"] == "a character device, not a regular file"
    assert reasons["/dev/stdin"].endswith("not a regular file")  # a device or a pipe
    assert reasons[str(fifo)] == reasons[str(to_fifo)] == "a FIFO (named pipe), not a regular file"
    assert reasons[str(broken)] == f"a broken symbolic link (to {tmp_path / 'gone.wav'})"
    assert reasons[str(sock_path)] == "a socket, not a regular file"
    # inside a folder too: the FIFO named like audio is reported, not opened
    paths, problems = expand_inputs([str(tmp_path)])
    assert paths == [str(good)]
    assert (str(fifo), "a FIFO (named pipe), not a regular file") in problems


@pytest.mark.parametrize("arg", ["/dev/zero", "-", "/dev/stdin", "fifo"])
def test_one_input_that_is_no_file_is_one_error_line_and_exit_2(
    model: Path, tmp_path: Path, arg: str
) -> None:
    """Before: /dev/zero read until MemoryError, `-` opened by libsndfile as stdin."""
    if arg == "fifo":
        arg = str(tmp_path / "pipe.wav")
        os.mkfifo(arg)
    proc = _predict(str(model), arg, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {arg}: ") and line.endswith("nothing to classify")
    assert "not a regular file" in line or "standard input is not read" in line


def test_a_glob_through_symlink_loops_yields_each_file_once(tmp_path: Path) -> None:
    """One loop gave each file 41 times (glob follows the link until the path is too long);
    two loops would give 2**40."""
    root = tmp_path / "rec"
    (root / "a").mkdir(parents=True)
    for name in ("1.wav", "a/2.wav"):
        _wav(root / name, 0.1)
    (root / "a" / "up").symlink_to("..")
    (root / "self").symlink_to(".")
    (root / "a" / "alias.wav").symlink_to("2.wav")  # the same file by another name
    paths, problems = expand_inputs([str(root / "**" / "*.wav"), str(root), str(root / "a")])
    assert sorted(os.path.realpath(p) for p in paths) == sorted(
        os.path.realpath(root / n) for n in ("1.wav", "a/2.wav")
    )
    assert len(paths) == 2 and problems == []


# --------------------------------------------------------------------------------------------
# Output


def test_dash_is_stdout_and_a_link_is_written_through(model: Path, tmp_path: Path) -> None:
    clip = _wav(tmp_path / "clip.wav")
    proc = _predict(str(model), str(clip), "-o", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = csv.DictReader(io.StringIO(proc.stdout))
    assert row["path"] == str(clip) and not (tmp_path / "-").exists()
    target = tmp_path / "kept" / "predictions.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    proc = _predict(str(model), str(clip), "-o", str(link), cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert link.is_symlink() and target.read_text() == proc_csv(model, clip, tmp_path)


def proc_csv(model: Path, clip: Path, cwd: Path) -> str:
    return _predict(str(model), str(clip), cwd=cwd).stdout


def test_a_device_or_fifo_output_is_written_in_place(model: Path, tmp_path: Path) -> None:
    clip = _wav(tmp_path / "clip.wav")
    expected = proc_csv(model, clip, tmp_path)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    try:
        proc = _predict(str(model), str(clip), "-o", str(fifo), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert reader.communicate(timeout=60)[0] == expected
    finally:
        reader.kill()  # a FIFO replaced by a file would leave cat waiting for a writer
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    null = tmp_path / "null"
    try:  # a private node of /dev/null's device: the machine's own is never at stake
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        return  # needs root, the case of the issue: covered by tests/utils/test_files.py too
    proc = _predict(str(model), str(clip), "-o", str(null), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.stat(null).st_mode)


def test_a_reader_that_goes_away_ends_predict_quietly_as_a_unix_tool(
    model: Path, tmp_path: Path
) -> None:
    """`predict ... | head -1`: a BrokenPipeError traceback before; now no word and exit 141
    (128 + SIGPIPE, what a shell reports for `cat` in the same place)."""
    clip = _wav(tmp_path / "long.wav", 30.0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "urbansound.predict", str(model), str(clip), "--hop", "0.05"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    proc.stdout.close()  # the reader is gone before predict writes its 600 rows
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    assert stderr == ""
