"""A fork server: child processes forked from a helper process that has a single thread.

Forking the training process itself is not safe: the child gets a copy of every lock that the
process's other threads hold at that moment, and a thread inside an MKL/BLAS call (another
training, a feature extraction, a library's background thread) holds some. The child then waits
on that lock forever (seen: a training child spinning in MKL's allocator after its parent had
given up on it). So children are forked from a server instead: a fresh interpreter started once
per process with :mod:`subprocess` (fork and exec: nothing of the parent's memory is copied),
that imports one module (torch and the training code: the seconds of start-up are paid once)
with one-threaded BLAS and OpenMP, and afterwards does nothing but fork. Each child starts in
milliseconds with everything imported, from a process whose only thread is the one that forks.

Lifetimes (Linux): the parent holds one end of the server's control socket. When the parent
exits or is killed, the server reads end-of-file, kills its children and exits. Each child asks
the kernel for SIGKILL when the server dies (``PR_SET_PDEATHSIG``), so no child outlives it even
when the server itself is killed. Processes forked from the parent later (``os.fork``,
multiprocessing's ``fork`` start method) close their copy of the control socket, so they cannot
keep the server alive after the parent's death.

:func:`fork_server` gives the process's server (started on first use, again after a ``fork`` or
after the server died); :meth:`ForkServer.fork` makes a child that runs the server's target with
a :class:`multiprocessing.connection.Connection`, and :meth:`ForkServer.wait` its exit status.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import itertools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["ForkServer", "ServerGone", "die_with_parent", "fork_server", "serve"]

#: Environment of the server (and so of its children): one-threaded native libraries, so the
#: server has one thread when it forks (numpy's OpenBLAS starts a thread pool on import).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

# Requests: operation, request id, argument (a pid), timeout in seconds. Replies: request id,
# kind, value. "F" (with a socket): fork a child -> "P" pid, or "E" errno when fork failed. "W"
# pid: wait for that child at most `timeout` seconds, then kill it -> "C" exit status
# (os.waitstatus_to_exitcode: negative for a signal) or "U" (no such child).
_REQUEST = struct.Struct("<cqqd")
_REPLY = struct.Struct("<qcq")
_PR_SET_PDEATHSIG = 1
#: The server's code: the parent's sys.path, then :func:`serve`.
_BOOT = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from urbansound.training.fork_server import serve; "
    "serve(int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]))"
)


class ServerGone(OSError):
    """The fork server exited or closed its socket (it was killed, or it could not start)."""


def die_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGKILL when its parent exits (Linux), then check that
    the parent (pid ``parent``) did not exit before the request, exiting at once if it did.

    Raises
    ------
    OSError
        The kernel refused the request (``prctl``'s errno).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


# --------------------------------------------------------------------------------------------
# The server process


def serve(control_fd: int, target: str, preload: list[str]) -> None:
    """The server's main loop; returns when the parent closes the control socket.

    ``target`` is ``"module:function"``: imported here, once, and called in every child with the
    child's :class:`~multiprocessing.connection.Connection`; the ``preload`` modules are imported
    here too, so that no child imports them again. The server runs in a session of its own and
    ignores SIGINT, as its children do: Ctrl-C is the parent's to handle.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in preload:
        importlib.import_module(name)
    module, _, name = target.partition(":")
    run = getattr(importlib.import_module(module), name)
    control = socket.socket(fileno=control_fd)
    live: set[int] = set()
    exited: dict[int, int] = {}
    try:
        while True:
            ready, _, _ = select.select([control], [], [], 1.0)
            _reap(live, exited)
            if not ready:
                continue
            try:
                data, fds, _, _ = socket.recv_fds(control, _REQUEST.size, 1)
            except OSError:
                return
            if not data:
                return  # the parent is gone
            op, request, pid, timeout = _REQUEST.unpack(data)
            if op == b"F" and fds:
                try:
                    kind, value = b"P", _fork(fds[0], control, run)
                    live.add(value)
                except OSError as exc:  # no memory or no process left for a child
                    kind, value = b"E", exc.errno or 0
                finally:
                    for fd in fds:
                        os.close(fd)
            else:
                kind, value = _wait(pid, timeout, live, exited)
            with contextlib.suppress(OSError):
                control.send(_REPLY.pack(request, kind, value))
    finally:
        for pid in live:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in live:
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)


def _fork(fd: int, control: socket.socket, run: Callable[[Connection], Any]) -> int:
    """Fork a child that runs ``run`` on socket ``fd``; its pid (in the server)."""
    server = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: never returns
        control.close()
        die_with_parent(server)
        run(Connection(fd))
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stderr.flush()
        os._exit(code)


def _reap(live: set[int], exited: dict[int, int]) -> None:
    """Collect the exit status of every child that has ended (no zombies)."""
    for pid in list(live):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            live.discard(pid)
            exited[pid] = os.waitstatus_to_exitcode(status)
    while len(exited) > 4096:  # statuses nobody asked for
        exited.pop(next(iter(exited)))


def _wait(pid: int, timeout: float, live: set[int], exited: dict[int, int]) -> tuple[bytes, int]:
    """Child ``pid``'s exit status, killing it after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while pid in live:
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            done, status = os.waitpid(pid, 0)
        if done:
            live.discard(pid)
            exited[pid] = os.waitstatus_to_exitcode(status)
        else:
            time.sleep(0.005)
    if pid in exited:
        return b"C", exited.pop(pid)
    return b"U", 0


# --------------------------------------------------------------------------------------------
# The parent's side


class ForkServer:
    """A running fork server and this process's end of its control socket; thread-safe.

    Parameters
    ----------
    target:
        ``"module:function"`` run in every child with its connection (see :func:`serve`); the
        module is imported in the server when it starts.
    preload:
        Further modules the server imports when it starts (what the children will need).
    """

    def __init__(self, target: str, preload: tuple[str, ...] = ()) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BOOT,
                    json.dumps(sys.path),
                    str(theirs.fileno()),
                    target,
                    json.dumps(list(preload)),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={**os.environ, **ONE_THREAD},
                start_new_session=True,  # a terminal's Ctrl-C is the parent's, not the server's
            )
        self._sock = ours
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.owner = os.getpid()

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._proc.pid

    def running(self) -> bool:
        """Whether the server is alive and this process is the one that started it."""
        return self.owner == os.getpid() and self._proc.poll() is None

    def fork(self, fd: int) -> int:
        """A new child that runs the target on socket ``fd`` (a duplicate is passed: the caller
        closes its own); the child's pid.

        Raises
        ------
        ServerGone
            The server is not running (the first request waits for it to start).
        OSError
            The server could not fork (its errno: no memory, too many processes).
        """
        kind, value = self._request(b"F", fds=(fd,))
        if kind == b"E":
            raise OSError(value, f"the fork server cannot fork: {os.strerror(value)}")
        return value

    def wait(self, pid: int, *, timeout: float) -> int | None:
        """Wait for child ``pid`` to exit, at most ``timeout`` seconds, then kill it (SIGKILL).

        Returns
        -------
        int or None
            Its exit status (negative: killed by that signal), ``None`` when the server does not
            know the child (already waited for) or is gone (its children died with it).
        """
        try:
            kind, value = self._request(b"W", pid=pid, timeout=timeout)
        except ServerGone:
            return None
        return value if kind == b"C" else None

    def close(self) -> None:
        """Stop the server (its children are killed) and wait for it to exit."""
        self._sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _request(
        self, op: bytes, *, pid: int = 0, timeout: float = 0.0, fds: tuple[int, ...] = ()
    ) -> tuple[bytes, int]:
        with self._lock:
            request = next(self._ids)
            try:
                socket.send_fds(self._sock, [_REQUEST.pack(op, request, pid, timeout)], list(fds))
                while True:  # a reply to an interrupted earlier request is skipped
                    data = self._sock.recv(_REPLY.size)
                    if not data:
                        raise ServerGone(f"the fork server (pid {self.pid}) is gone")
                    answered, kind, value = _REPLY.unpack(data)
                    if answered == request:
                        return kind, value
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise ServerGone(f"the fork server (pid {self.pid}) is gone") from exc

    def forget(self) -> None:
        """In a process forked from the owner: close the inherited socket (the server is the
        owner's; this process must not keep it alive)."""
        self._sock.close()


_SERVERS: dict[tuple[str, tuple[str, ...]], ForkServer] = {}
_SERVERS_LOCK = threading.Lock()


def fork_server(target: str, preload: tuple[str, ...] = ()) -> ForkServer:
    """This process's fork server for ``target`` and ``preload`` (see :class:`ForkServer`),
    started here on first use, and again when the last one died or belongs to the process this
    one was forked from."""
    with _SERVERS_LOCK:
        server = _SERVERS.get((target, preload))
        if server is None or not server.running():
            server = _SERVERS[(target, preload)] = ForkServer(target, preload)
        return server


def _forget_servers() -> None:
    """After a fork, in the child: the servers belong to the parent (and the lock may have been
    held by a thread that the child does not have)."""
    global _SERVERS_LOCK
    _SERVERS_LOCK = threading.Lock()
    for server in _SERVERS.values():
        server.forget()
    _SERVERS.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_servers)
