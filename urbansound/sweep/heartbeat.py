"""A running trial's heartbeat: who runs it and that it is alive.

The process that runs a trial records ``worker`` (``host:pid``, :func:`worker_name`) on it when
it asks, and a heartbeat (:data:`~urbansound.sweep.trials.HEARTBEAT_ATTR`, wall-clock time) every
``hydra.sweeper.heartbeat_interval`` seconds from a background thread (:class:`Heartbeat`)
while the job runs; :func:`urbansound.sweep.lifecycle.fail_ownerless` takes a trial whose
heartbeat is older than the grace period for a dead process's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from optuna.storages import BaseStorage

from urbansound.sweep.storage import root_cause
from urbansound.sweep.trials import HEARTBEAT_ATTR

log = logging.getLogger(__name__)

__all__ = ["Heartbeat", "record_heartbeat", "worker_name"]


def worker_name(pid: int | None = None) -> str:
    """``host:pid`` of a sweep process (this one by default): a trial's ``worker`` attribute."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def record_heartbeat(storage: BaseStorage, trial_id: int) -> None:
    """Mark a running trial alive now (wall-clock time: machines need roughly synced clocks)."""
    storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())


class Heartbeat:
    """Records heartbeats of one running trial from a background thread.

    The first heartbeat is recorded by ``__enter__`` itself; ``interval`` None records none. A
    failed heartbeat is logged (once while the storage stays unreachable) and retried at the
    next interval.
    """

    def __init__(self, storage: BaseStorage, trial_id: int, interval: int | None) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self._interval is None:
            return self
        record_heartbeat(self._storage, self._trial_id)
        self._thread = threading.Thread(target=self._run, name="urbansound-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._interval is not None
        failing = False
        while not self._stop.wait(self._interval):
            try:
                record_heartbeat(self._storage, self._trial_id)
            except Exception as exc:  # a storage hiccup; the next beat may get through
                if not failing:
                    log.warning(
                        "heartbeat of trial id %d not recorded (retrying every %d s): %s",
                        self._trial_id,
                        self._interval,
                        root_cause(exc),
                    )
                failing = True
            else:
                if failing:
                    log.info("heartbeat of trial id %d recorded again", self._trial_id)
                failing = False

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
