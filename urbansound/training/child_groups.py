"""Training groups in forked child processes, driven over a pipe.

:func:`urbansound.training.lockstep.train_folds` trains its first group of folds in this process and
the others in children made here (Linux): a forked child starts in microseconds, shares the parent's
arrays copy-on-write and has a Python lock of its own. A child builds its group from what it
inherits, answers ``(method, kwargs)`` requests with the result or the exception, ignores SIGINT
(Ctrl-C is the parent's) and exits when the parent hangs up or dies.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import torch

from urbansound.errors import UrbansoundError

__all__ = ["FORK_LOCK", "ChildGroup", "close_children", "fork_context"]


def fork_context() -> Any | None:
    """The ``fork`` start method where groups may run in child processes (Linux), else None.

    A forked child starts in microseconds and shares the parent's arrays copy-on-write; spawn
    or forkserver would re-import torch (seconds). macOS offers fork but its system libraries
    are not fork-safe, so other platforms, and daemonic processes (which multiprocessing does
    not let have children), keep every group in a thread of this process.
    """
    if sys.platform != "linux" or multiprocessing.current_process().daemon:
        return None  # (a daemonic process, e.g. a multiprocessing.Pool worker, may not fork)
    with contextlib.suppress(ValueError):
        return multiprocessing.get_context("fork")
    return None


def _serve(conn: Connection, inherited: list[Connection], build: Callable[[], Any]) -> None:
    """Child process: build a group, then run the parent's calls until told to stop.

    Each request is ``(method, kwargs)`` on the group; the reply is ``(True, result)`` or
    ``(False, exception)``. ``None`` (or a closed pipe: the parent is gone) ends the child.
    ``inherited`` are the parent-side ends of every live group's pipe (this one's included),
    copied by fork: closed first, so that the parent's death closes every pipe.
    """
    for c in inherited:
        c.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)
    try:
        group = build()
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
        except (BrokenPipeError, OSError):
            return


# Every child must close every parent-side pipe end it inherits, those of groups started by other
# threads of this process too (concurrent cross_validate calls): a child keeping another group's
# parent end open would keep that group's child from ever seeing its parent die. So the pipes
# are made, the children forked and the child ends closed under one lock, and the parent ends of
# this process's live groups are kept here.
FORK_LOCK = threading.RLock()
_PARENT_ENDS: set[Connection] = set()


class ChildGroup:
    """A training group (:class:`urbansound.training.lockstep._Lockstep`) in a forked child process,
    driven over a pipe.

    With every group in a thread of one process, the threads hand Python's lock back and forth
    about 25 times a step (each torch op releases it); on two cores that cost 15% of a trial
    (``benchmarks/train.py``). A child process has a lock of its own. The child builds its
    group from the arrays it inherits (nothing is copied or pickled on the way in), runs with
    single-threaded ops, ignores SIGINT, and exits when the parent closes the pipe or dies.
    """

    def __init__(self, ctx: Any, build: Callable[[], Any]) -> None:
        with FORK_LOCK:
            self.conn, child = ctx.Pipe()
            _PARENT_ENDS.add(self.conn)
            inherited = list(_PARENT_ENDS)
            self.proc = ctx.Process(target=_serve, args=(child, inherited, build), daemon=True)
            try:
                self.proc.start()
            except BaseException:
                _PARENT_ENDS.discard(self.conn)
                self.conn.close()
                raise
            finally:
                child.close()  # the first reply says the group is built (or raises its error)

    def send(self, method: str, **kwargs: Any) -> None:
        self.conn.send((method, kwargs))

    def recv(self) -> Any:
        """The reply to the last request: its result, or its exception raised here."""
        try:
            ok, value = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.proc.join(timeout=5)
            code = self.proc.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
            hint = "; out of memory?" if code == -signal.SIGKILL else ""
            raise UrbansoundError(
                f"a training process (pid {self.proc.pid}) ended unexpectedly ({how}{hint}); "
                "train.threads=1 trains every fold in this process"
            ) from exc
        if not ok:
            raise value
        return value

    def hang_up(self) -> None:
        """Tell the child to stop and close the pipe; returns at once (the child then exits
        after its current request, or at once when idle)."""
        with FORK_LOCK:
            _PARENT_ENDS.discard(self.conn)
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.conn.close()

    def join(self) -> None:
        """Wait for the child to exit (5 s at most, then kill it)."""
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def close_children(children: Sequence[ChildGroup]) -> None:
    """Hang up on every child first, then wait for each: a second Ctrl-C while waiting (a
    notebook lives on after it) leaves no child with an open pipe, so none keeps running."""
    for c in children:
        c.hang_up()
    for c in children:
        c.join()
