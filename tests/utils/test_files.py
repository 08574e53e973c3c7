"""Tests of urbansound.utils.files.

Atomic writes that leave nothing partial, one-line OutputErrors, helpers.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from urbansound.errors import OutputError
from urbansound.utils.files import (
    atomic_open,
    atomic_write,
    json_default,
    output_error,
    write_json,
)


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.txt"
    atomic_write(path, "first")
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_an_error_inside_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(path) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.mkdir(), "a directory is in the way"),
        (lambda p: None, "a file is in the way where a directory should be"),
    ],
    ids=["directory-in-the-way", "parent-is-a-file"],
)
def test_write_failures_are_one_line_naming_the_path(tmp_path: Path, make, expected) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    path = tmp_path / "out.json" if expected.startswith("a directory") else blocker / "out.json"
    make(path)
    with pytest.raises(OutputError) as err:
        write_json(path, {"a": 1})
    msg = str(err.value)
    assert msg.startswith(f"cannot write {path}: ") and expected in msg and "\n" not in msg
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # nothing partial
    assert (tmp_path / "blocker").read_text() == "a file"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOSPC, "the disk is full; free space or point the output elsewhere"),
        (errno.EROFS, "permission denied (read-only?)"),
        (errno.EACCES, "permission denied (read-only?)"),
        (errno.EEXIST, "a file is in the way where a directory should be"),
        (errno.EIO, "Input/output error"),
    ],
)
def test_output_error_says_what_to_do(tmp_path: Path, code: int, expected: str) -> None:
    import os

    err = output_error(tmp_path / "x", OSError(code, os.strerror(code)))
    assert isinstance(err, OutputError)
    assert str(err).startswith(f"cannot write {tmp_path / 'x'}: {expected}")


def test_json_helpers(tmp_path: Path) -> None:
    path = write_json(tmp_path / "r.json", {"a": np.float32(0.5), "b": np.arange(2), "p": tmp_path})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1], "p": str(tmp_path)}
    with pytest.raises(TypeError, match="not JSON serialisable: set"):
        json_default({1})


def test_atomic_writes_get_the_mode_a_plain_open_would_give(tmp_path) -> None:
    """mkstemp makes 0600 files: shared outputs and caches must follow the umask instead."""
    import os
    import stat

    from urbansound.utils import files

    old = os.umask(0o022)
    try:
        files.UMASK, saved = 0o022, files.UMASK
        path = files.atomic_write(tmp_path / "results.json", "{}\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        folder = tmp_path / "shared"
        folder.mkdir(mode=0o700)
        files.public_mode(folder, directory=True)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    finally:
        files.UMASK = saved
        os.umask(old)


def test_a_missing_parent_that_cannot_be_made_says_what_to_do(tmp_path) -> None:
    import errno

    from urbansound.utils import files

    err = files.output_error("/proc/nope/x", OSError(errno.ENOENT, "No such file or directory"))
    assert str(err) == (
        "cannot write /proc/nope/x: a folder on its path does not exist and cannot be created; "
        "choose another path"
    )
