"""Process helpers for the tests of training groups in child processes.

The process tree is read from ``/proc`` (Linux), and the group classes here are what the tests
hand to :class:`urbansound.training.child_groups.ChildGroup`: a child imports this module when it
unpickles its group, so they live in a module of their own rather than in a test file.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.helpers import process_alive


def children_of(pid: int) -> list[int]:
    """The running (not zombie) processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """Every running process below ``pid`` (children, their children, ...)."""
    found, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        found += kids
        todo += kids
    return sorted(found)


def wait_gone(pids: list[int], seconds: float = 20.0) -> list[int]:
    """Wait until none of ``pids`` runs (at most ``seconds``); those still running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(process_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if process_alive(p)]


def thread_count(pid: int) -> int:
    """The number of threads of process ``pid``."""
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


class FailingGroup:
    """A group that fails where told: ``"build"`` (MemoryError) or in :meth:`run_epoch`."""

    def __init__(self, where: str) -> None:
        if where == "build":
            raise MemoryError("no room for the group")

    def run_epoch(self) -> None:
        raise FloatingPointError("epoch failed in the child")


class StuckGroup:
    """A group whose :meth:`hang` never returns and never reads its pipe again, as a child
    waiting forever on a native lock would."""

    def hang(self) -> None:
        threading.Event().wait()

    def ping(self) -> str:
        return "pong"
