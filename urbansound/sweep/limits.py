"""A trial's time limit (``hydra.sweeper.trial_timeout``): the job is stopped, its processes
ended, and the trial told FAIL with the reason.

:func:`trial_time_limit` arms a real-time timer (``signal.setitimer``) around the job in the
process whose main thread runs it: the sweeper's own process or forked worker with Hydra's
basic launcher, the job's process with a launcher of its own (hydra-joblib-launcher's loky
worker, hydra-submitit-launcher's job process: :class:`urbansound.sweep.job.RecordingTask`).
When it fires, every process the job started below that process is ended (SIGTERM, then SIGKILL
after a grace of :data:`KILL_GRACE` seconds: the training fork server and its children,
scikit-learn's joblib workers), and :class:`TrialTimeout` is raised in the job's thread at its
next Python instruction, which fails the trial like any error of the job (again every
:data:`REPEAT` seconds while the job goes on: an ``except Exception`` of its own cannot keep it
running). The limit covers the job's whole run, its start included. The limit is checked
in Python: a job blocked in one C call that never returns (an uninterruptible read) is stopped
when it returns. Processes are found through ``/proc`` (Linux); elsewhere only the job's own
thread is stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "KILL_GRACE",
    "REPEAT",
    "TrialTimeout",
    "descendants",
    "end_processes",
    "is_timeout",
    "trial_time_limit",
]

#: Seconds between SIGTERM and SIGKILL for the processes of a stopped job.
KILL_GRACE = 5.0
#: Seconds between further signals to a job that is still running after its time limit.
REPEAT = 1.0


class TrialTimeout(Exception):
    """A job ran past ``hydra.sweeper.trial_timeout``; its trial is told FAIL (not queued
    again: it would run past the limit again)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the trial ran past hydra.sweeper.trial_timeout={seconds:g} s: stopped, its "
            "processes ended"
        )
        self.seconds = seconds

    def __reduce__(self) -> tuple[Any, tuple[float]]:  # (a launcher pickles a job's error)
        return (TrialTimeout, (self.seconds,))


def is_timeout(error: BaseException | None) -> bool:
    """True for a job stopped by its time limit: a :class:`TrialTimeout`, or the error text a
    launcher's job recorded for one."""
    return isinstance(error, TrialTimeout) or str(error).startswith("TrialTimeout:")


def descendants(pid: int) -> list[int]:
    """The process ids below ``pid`` (children, their children, ...), from ``/proc``; [] where
    there is no ``/proc``. multiprocessing's resource tracker is left out (it outlives jobs and
    cleans up after them)."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if b"resource_tracker" in cmdline:
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def end_processes(pids: list[int], *, grace: float = KILL_GRACE) -> None:
    """SIGTERM ``pids``, then SIGKILL those still alive after ``grace`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < end:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False  # our own child, reaped now
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = Path(f"/proc/{pid}/stat")
    try:
        return state.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def trial_time_limit(seconds: float | None) -> Iterator[None]:
    """Stop the job in this block after ``seconds`` (module docstring); raises
    :class:`TrialTimeout` in it then. No limit for None, or outside the main thread (signals
    reach the main thread only): there the block runs as it is."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        # the timer repeats every REPEAT s until the block ends: a job whose own `except
        # Exception` swallowed the first TrialTimeout gets it again (and its new processes end)
        found = descendants(os.getpid())
        log.warning(
            "trial_timeout=%g s: ending the job's %d process(es) %s", seconds, len(found), found
        )
        end_processes(found)
        raise TrialTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
