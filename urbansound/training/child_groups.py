"""Training groups in child processes, driven over a pipe.

:func:`urbansound.training.lockstep.train_folds` trains its first group of folds in this process
and the others in child processes on Linux: a child has a Python lock of its own, where threads
of one process would hand one lock back and forth about 25 times a step (each torch op releases
it; on two cores that cost 15% of a trial, ``benchmarks/train.py``).

The children come from this process's fork server (:mod:`urbansound.training.fork_server`), never
from a fork of this process, whose other threads may hold native locks. A child receives the
callable that builds its group (pickled: the arrays are copied once), builds it, answers
``(method, kwargs)`` requests with the result or the exception, ignores SIGINT (Ctrl-C is the
parent's) and exits when the parent hangs up; it is killed when the parent dies (the server's
end-of-file, then ``PR_SET_PDEATHSIG``), whatever it is doing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import torch

from urbansound.errors import UrbansoundError
from urbansound.training.fork_server import ForkServer, ServerGone, fork_server

__all__ = ["ChildGroup", "children_available", "close_children", "serve_group"]

#: What the fork server runs in each child.
SERVE = f"{__name__}:serve_group"


def children_available() -> bool:
    """Whether groups may run in child processes: on Linux (elsewhere they are threads of this
    process; the fork server needs ``PR_SET_PDEATHSIG`` and a fork that is safe with torch
    loaded, which macOS's system libraries do not promise)."""
    return sys.platform == "linux"


def serve_group(conn: Connection) -> None:
    """In the child: build a group, then run the parent's calls until told to stop.

    The first message is the callable that builds the group. Each request is
    ``(method, kwargs)`` on the group; the reply is ``(True, result)`` or ``(False, exception)``.
    ``None`` (or a closed pipe: the parent is gone) ends the child.
    """
    torch.set_num_threads(1)
    try:
        group = conn.recv()()
    except (EOFError, OSError):
        return
    except BaseException as exc:  # every failure goes back to the parent
        conn.send((False, exc))
        return
    conn.send((True, None))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        method, kwargs = request
        try:
            reply = (True, getattr(group, method)(**kwargs))
        except BaseException as exc:
            reply = (False, exc)
        try:
            conn.send(reply)
        except OSError:
            return


# This process's ends of its live children's pipes. A process forked from this one (os.fork,
# multiprocessing's fork) closes its copies: a copy kept open there would hide this process's
# death from the child (the pipe would not hang up) and a child's death from this process.
_OUR_ENDS: set[Connection] = set()
_ENDS_LOCK = threading.Lock()


def _close_inherited_ends() -> None:
    global _ENDS_LOCK
    _ENDS_LOCK = threading.Lock()  # may have been held by a thread the child does not have
    for conn in _OUR_ENDS:
        with contextlib.suppress(OSError):
            conn.close()
    _OUR_ENDS.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_close_inherited_ends)


class ChildGroup:
    """A training group (e.g. :class:`urbansound.training.lockstep_group.LockstepGroup`) in a
    child process of the fork server, driven over a pipe.

    The first :meth:`recv` answers whether the group was built (or raises its error).

    Parameters
    ----------
    build:
        A picklable callable that returns the group (pickled to the child with its arguments).
    preload:
        Modules the fork server imports once, so that no child imports them (the group's).
    """

    def __init__(self, build: Callable[[], Any], *, preload: tuple[str, ...] = ()) -> None:
        self.server: ForkServer = fork_server(SERVE, preload)
        ours, theirs = multiprocessing.Pipe()
        with _ENDS_LOCK:
            _OUR_ENDS.update((ours, theirs))
        try:
            try:
                self.pid = self.server.fork(theirs.fileno())
            except ServerGone as exc:
                raise UrbansoundError(
                    f"the training processes' fork server could not start or ended ({exc}); "
                    "train.threads=1 trains every fold in this process"
                ) from None
            except OSError as exc:
                raise UrbansoundError(
                    f"cannot start a training process ({exc.strerror}); "
                    "train.threads=1 trains every fold in this process"
                ) from None
        except BaseException:
            self._forget(ours)
            raise
        finally:
            self._forget(theirs)
        self.conn = ours
        with contextlib.suppress(OSError):  # a child that died at once is reported by recv
            ours.send(build)

    @staticmethod
    def _forget(conn: Connection) -> None:
        with _ENDS_LOCK:
            _OUR_ENDS.discard(conn)
        conn.close()

    def send(self, method: str, **kwargs: Any) -> None:
        """Ask the child to call ``group.method(**kwargs)``; :meth:`recv` gives the answer."""
        with contextlib.suppress(OSError):  # a dead child is reported by recv
            self.conn.send((method, kwargs))

    def recv(self) -> Any:
        """The reply to the last request: its result, or its exception raised here.

        Raises
        ------
        UrbansoundError
            The child ended without replying (killed: by the kernel's out-of-memory killer,
            for one), naming its pid and exit status.
        """
        try:
            ok, value = self.conn.recv()
        except (EOFError, OSError) as exc:
            code = self.server.wait(self.pid, timeout=5)
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
            hint = "; out of memory?" if code == -signal.SIGKILL else ""
            raise UrbansoundError(
                f"a training process (pid {self.pid}) ended unexpectedly ({how}{hint}); "
                "train.threads=1 trains every fold in this process"
            ) from exc
        if not ok:
            raise value
        return value

    def hang_up(self) -> None:
        """Tell the child to stop and close the pipe; returns at once (the child then exits
        after its current request, or at once when idle)."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self._forget(self.conn)

    def join(self) -> None:
        """Wait for the child to exit (5 s at most, then it is killed)."""
        self.server.wait(self.pid, timeout=5)


def close_children(children: Sequence[ChildGroup]) -> None:
    """Hang up on every child first, then wait for each: a second Ctrl-C while waiting (a
    notebook lives on after it) leaves no child with an open pipe, so none keeps running."""
    for c in children:
        c.hang_up()
    for c in children:
        c.join()
