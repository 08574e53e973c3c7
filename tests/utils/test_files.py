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


# --------------------------------------------------------------------------------------------
# What the path already is: a link, a device, a FIFO, a descriptor (issue 22)


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    target = tmp_path / "real" / "out.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(Path("real") / "out.csv")  # relative, as `ln -s` makes them
    chain = tmp_path / "chain.csv"
    chain.symlink_to(link)
    atomic_write(chain, "new")
    assert chain.is_symlink() and link.is_symlink()
    assert target.read_text() == "new" and not target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.csv", "link.csv", "real"]
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]  # no temporary left
    # a dangling link creates its target, as a shell's `>` does
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "real" / "new.csv")
    write_json(dangling, {"a": 1})
    assert dangling.is_symlink() and json.loads((target.parent / "new.csv").read_text()) == {"a": 1}


def test_a_fifo_is_written_in_place_not_replaced(tmp_path: Path) -> None:
    import os
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # the reading end, opened first and without blocking (the writer's open then returns)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        atomic_write(fifo, "a,b\n1,2\n")
        try:
            got = os.read(fd, 1 << 16)
        except BlockingIOError:  # nothing came through the pipe
            got = b""
    finally:
        os.close(fd)
    assert got == b"a,b\n1,2\n"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_character_device_is_written_in_place_not_replaced(tmp_path: Path) -> None:
    """As root, `-o /dev/null` renamed a temporary file over the device; here on a private
    node of the same device (1, 3), so that the machine's /dev/null is never at stake."""
    import os
    import stat

    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root (the case the issue is about)")
    link = tmp_path / "to-null"
    link.symlink_to(null)
    for path in (null, link):
        atomic_write(path, b"x" * 100)
        write_json(path, {"a": 1})
    assert stat.S_ISCHR(os.stat(null).st_mode) and os.stat(null).st_rdev == os.makedev(1, 3)
    assert link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "to-null"]


def test_a_descriptor_path_is_written_through_its_descriptor_appending(tmp_path: Path) -> None:
    """`-o /dev/stdout` with stdout redirected to a file (`>>` here) writes to that
    descriptor: the file keeps what was there and is not replaced by another inode."""
    import os

    out = tmp_path / "redirected.csv"
    out.write_text("before\n")
    inode = out.stat().st_ino
    with open(out, "a") as fh:
        atomic_write(f"/proc/self/fd/{fh.fileno()}", "after\n")
    assert out.read_text() == "before\nafter\n" and out.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["redirected.csv"]
    assert os.path.exists("/dev/stdout")


def test_a_socket_or_a_symlink_loop_is_one_line_naming_the_path(tmp_path: Path) -> None:
    import socket

    sock_path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    try:
        for path, expected in [
            (sock_path, "a socket, not a regular file"),
            (loop, "its symbolic links form a loop"),
        ]:
            with pytest.raises(OutputError) as err:
                atomic_write(path, "x")
            assert str(err.value).startswith(f"cannot write {path}: {expected}")
            assert "\n" not in str(err.value)
    finally:
        sock.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop.csv", "s.sock"]
