"""Writing files so that a reader never sees half of one: the project's one home for writes.

Every file the package writes (``results.json``, reports, figures, the model file, predict's
``--output``, cache entries that are not raw arrays) goes through :func:`atomic_open` (or
:func:`atomic_write`). What it does depends on what the path already is:

- nothing, or a regular file: the bytes go to a temporary file in the same directory, are
  flushed, and replace the file with ``os.replace`` (atomic on POSIX). A crash, a full disk or a
  kill -9 leaves either the old file or the new one, never a partial one, and the temporary file
  is removed on every error;
- a symbolic link (or a chain of them): the link is followed and its target is replaced as
  above; the link itself stays (``-o latest.csv`` writes through it, as a shell's ``>`` does). A
  dangling link creates its target;
- a character device or a FIFO (``/dev/null``, a terminal, a named pipe), and a path that names
  an open file descriptor (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``):
  written in place, appending, never replaced: a rename would put a regular file where the
  device was, and would bypass the descriptor (``> out.csv``, ``>> log.csv``) the caller gave.
  Such a write is not atomic (a reader of a pipe sees the bytes as they come);
- a directory, a socket or a block device: refused (:class:`~urbansound.errors.OutputError`).

Reading side: :func:`not_a_regular_file` says why a path to read (a model file, audio) is no
regular file, without opening it.

Errors: an ``OSError`` while writing (read-only directory, full disk, a directory where the file
should be) is raised as :class:`~urbansound.errors.OutputError` naming the path and what to do,
unless ``raw=True``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from urbansound.errors import OutputError


def _process_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


#: The process's umask when this module was imported: files and folders made through temporary
#: names (``mkstemp`` 0600, ``mkdtemp`` 0700) get the mode a plain ``open``/``mkdir`` would give.
UMASK = _process_umask()

__all__ = [
    "UMASK",
    "atomic_open",
    "atomic_write",
    "json_default",
    "not_a_regular_file",
    "output_error",
    "public_mode",
    "write_json",
    "write_target",
]


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for the values our results hold.

    numpy scalars and arrays become Python numbers and lists, paths become strings; anything else
    raises ``TypeError`` (so a new field of an unexpected type is found by the tests, not silently
    written as its ``repr``).
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def public_mode(path: str | Path, *, directory: bool = False) -> None:
    """Give ``path`` the mode ``open``/``mkdir`` would have (``0o666``/``0o777`` less the umask),
    not the private one of ``tempfile.mkstemp``/``mkdtemp``: caches and outputs are shared."""
    os.chmod(path, (0o777 if directory else 0o666) & ~UMASK)


def not_a_regular_file(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a file, found without opening it; ``None`` for a regular
    file (symbolic links followed).

    A FIFO would block the open until a writer comes (forever, for a stale one), a device such
    as ``/dev/zero`` never ends, and neither can be read twice: readers of inputs (the model
    file, audio) refuse them with this reason (``"a FIFO (named pipe), not a regular file"``,
    ``"a character device, not a regular file"``, ``"a broken symbolic link (to x.wav)"``,
    ``"no such file"``, ...).
    """
    try:
        mode = os.stat(path).st_mode  # follows links, opens nothing
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a broken symbolic link (to {os.readlink(path)})"
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a loop of symbolic links"
        return (exc.strerror or str(exc)).lower()
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


#: What a path is, for :func:`not_a_regular_file`.
_KINDS = (
    (stat.S_ISDIR, "a directory, not a regular file"),
    (stat.S_ISFIFO, "a FIFO (named pipe), not a regular file"),
    (stat.S_ISCHR, "a character device, not a regular file"),
    (stat.S_ISBLK, "a block device, not a regular file"),
    (stat.S_ISSOCK, "a socket, not a regular file"),
)


def output_error(path: str | Path, exc: OSError) -> OutputError:
    """One-line :class:`OutputError` for a failed write of ``path``, saying what to do."""
    path = Path(path)
    if exc.errno == errno.ENOSPC:
        what = "the disk is full; free space or point the output elsewhere"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "permission denied (read-only?); make it writable or choose another directory"
    elif exc.errno == errno.EISDIR or os.path.isdir(path):  # never raises (ENAMETOOLONG)
        what = "a directory is in the way; remove it or choose another path"
    elif exc.errno == errno.EEXIST:
        what = "a file is in the way where a directory should be; remove it or choose another path"
    elif exc.errno == errno.ENOTDIR:
        what = "a file is in the way of one of its parent directories; remove it"
    elif exc.errno == errno.ELOOP:
        what = "its symbolic links form a loop; fix them or choose another path"
    elif exc.errno == errno.ENOENT:
        what = "a folder on its path does not exist and cannot be created; choose another path"
    else:
        what = exc.strerror or str(exc)
    return OutputError(f"cannot write {path}: {what}")


def write_target(path: str | Path) -> tuple[Path, bool]:
    """Where a write of ``path`` goes and how (the module docstring).

    Returns ``(target, direct)``: ``target`` is ``path`` with its symbolic links followed (itself
    when it is none); ``direct`` is true for a character device, a FIFO or a path naming a file
    descriptor (``/dev/stdout``), which are opened and written in place (``target`` is then
    ``path``), false for a path to be replaced atomically (a regular file or nothing yet).

    Raises
    ------
    OSError
        ``EISDIR`` for a directory, ``EINVAL`` for a socket or a block device (with the path as
        ``filename``); what ``os.stat`` raises for a path that cannot be looked up (a symlink
        loop: ``ELOOP``; permission denied on a parent: ``EACCES``).
    """
    path = Path(path)
    if _DESCRIPTOR.match(os.path.abspath(path)):
        return path, True
    try:
        mode = os.stat(path).st_mode  # follows links
    except (FileNotFoundError, NotADirectoryError):
        # nothing there yet, or a dangling link (its target is created); a file in the way of a
        # parent directory is said by the mkdir that follows
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        return path, True
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a socket" if stat.S_ISSOCK(mode) else "a block device"
        raise OSError(errno.EINVAL, f"{kind}, not a regular file; choose a file", str(path))
    if os.path.islink(path):
        return Path(os.path.realpath(path)), False
    return path, False


#: Paths that name an open file descriptor rather than a file (written in place, appending).
_DESCRIPTOR = re.compile(r"^/(dev/(stdout|stderr|fd/\d+)|proc/(self|thread-self|\d+)/fd/\d+)$")


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, raw: bool = False) -> Iterator[IO[Any]]:
    """Open ``path`` for writing so that a reader never sees half of it (module docstring).

    ``mode`` is ``"w"`` (text, UTF-8) or ``"wb"``. A regular file (or a new one, or a symbolic
    link's target) is written to a temporary file beside it that replaces it atomically on a
    clean exit; on any exception the temporary file is removed and the file is left as it was.
    A character device or FIFO is written in place. Parent directories are created. ``OSError``
    becomes :class:`OutputError` (see the module docstring) unless ``raw`` is true.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    kwargs = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
    tmp: str | None = None
    try:
        target, direct = write_target(path)
        if direct:  # appending: O_TRUNC would empty a `>>` redirection's file behind /dev/fd/1
            with open(target, mode.replace("w", "a"), **kwargs) as fh:
                yield fh
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp's 0600 would make shared outputs private
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        if raw:
            raise
        raise output_error(path, exc) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write(path: str | Path, data: str | bytes, *, raw: bool = False) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; return the path."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", raw=raw) as fh:
        fh.write(data)
    return Path(path)


def write_json(
    path: str | Path, payload: Any, *, default: Callable[[Any], Any] = json_default
) -> Path:
    """Write ``payload`` as indented JSON (plus a newline) to ``path`` atomically."""
    text = json.dumps(payload, indent=2, default=default, allow_nan=True) + "\n"
    return atomic_write(path, text)
