"""Training groups in child processes: same results, errors raised here, no child left behind.

The children come from a fork server (a single-threaded process), never from a fork of the
training process, and die with their parent however it ends: killed, terminated, exiting
normally, or with the server itself killed; even a child that never reads its pipe again (as one
waiting forever on a native lock). The process tree is read from /proc.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from tests.helpers import REPO, process_alive
from tests.training.common import N_CLASSES, SMALL, blobs, cv, quick_train
from tests.training.processes import (
    FailingGroup,
    StuckGroup,
    children_of,
    descendants,
    thread_count,
    wait_gone,
)
from urbansound.data.cv import fold_splits
from urbansound.errors import TrialPruned, UrbansoundError
from urbansound.training.child_groups import ChildGroup, close_children
from urbansound.training.results import EpochMetrics

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="groups run in child processes on Linux only"
)


def grandchildren() -> list[int]:
    """Running processes two levels below this one: the training children of its fork servers."""
    return sorted(g for c in children_of(os.getpid()) for g in children_of(c))


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@contextlib.contextmanager
def _script(code: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """``python -c code args`` in the repository, and a list of pids: the script and every pid
    put in the list are killed on the way out, whatever the test found."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    leftovers: list[int] = []
    try:
        yield proc, leftovers
    finally:
        proc.kill()
        proc.wait()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# Results and errors


def test_groups_in_child_processes_equal_groups_in_threads_bitwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # threads=3: one group here and two in child processes, against the same three groups as
    # threads of this process (as where child processes are unavailable): the same
    # single-threaded arithmetic, so every figure, probability and weight is bitwise the same.
    import urbansound.training.lockstep as lockstep

    X, y, folds = blobs(n=260, seed=11, n_folds=5)
    splits = fold_splits(folds)
    kw = {"n_classes": N_CLASSES, "model": SMALL, "progress": False, "keep_models": True}
    seen: list[int] = []
    forked = cv(
        X,
        y,
        splits,
        train=quick_train(threads=3),
        callbacks=[lambda m: seen.extend(grandchildren())],
        **kw,
    )
    assert len(set(seen)) == 2 and grandchildren() == []  # two children, gone afterwards
    monkeypatch.setattr(lockstep, "children_available", lambda: False)
    threads = cv(X, y, splits, train=quick_train(threads=3), **kw)
    for a, b in zip(forked.history, threads.history, strict=True):
        np.testing.assert_array_equal(a.train_loss, b.train_loss)
        np.testing.assert_array_equal(a.test_loss, b.test_loss)
        np.testing.assert_array_equal(a.test_accuracy, b.test_accuracy)
    assert forked.folds == threads.folds
    for a, b in zip(forked.predictions, threads.predictions, strict=True):
        np.testing.assert_array_equal(a.probabilities, b.probabilities)
    for a, b in zip(forked.models, threads.models, strict=True):
        assert a.fold == b.fold
        for (wa, ba), (wb, bb) in zip(a.params, b.params, strict=True):
            np.testing.assert_array_equal(wa, wb)
            np.testing.assert_array_equal(ba, bb)
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.std, b.std)


@pytest.mark.parametrize("where", ["build", "epoch"])
def test_a_child_groups_error_is_raised_here_and_the_child_ends(where: str) -> None:
    group = ChildGroup(functools.partial(FailingGroup, where))
    error, message = {
        "build": (MemoryError, "no room for the group"),
        "epoch": (FloatingPointError, "epoch failed in the child"),
    }[where]
    try:
        if where == "epoch":
            group.recv()  # built
            group.send("run_epoch")
        with pytest.raises(error, match=message):
            group.recv()
    finally:
        close_children([group])
    assert not process_alive(group.pid)


def _train_calling(callback: Callable[[EpochMetrics], None], *, seed: int, **train: int):
    """``cross_validate`` of ``blobs(seed)`` with ``quick_train(**train)``, calling ``callback``
    after every epoch."""
    X, y, folds = blobs(seed=seed)
    return cv(
        X, y, fold_splits(folds), n_classes=N_CLASSES, model=SMALL, train=quick_train(**train),
        callbacks=[callback], progress=False,
    )  # fmt: skip


def _prune(m: EpochMetrics) -> None:
    raise TrialPruned(m.epoch, m.mean_test_accuracy)


def test_pruning_stops_the_child_groups_too() -> None:
    with pytest.raises(TrialPruned):
        _train_calling(_prune, seed=6, epochs=50, threads=4)
    assert grandchildren() == []


def test_a_killed_child_is_one_clear_error() -> None:
    # The kernel's out-of-memory killer sends SIGKILL: no reply ever comes from the child.
    def kill_a_child(m: EpochMetrics) -> None:
        if m.epoch == 1:
            os.kill(grandchildren()[0], signal.SIGKILL)

    with pytest.raises(UrbansoundError, match=r"killed by signal 9; out of memory\?\); "
                       r"train.threads=1 trains every fold in this process"):  # fmt: skip
        _train_calling(kill_a_child, seed=14, epochs=5, threads=2)
    assert grandchildren() == []


def test_a_killed_fork_server_is_an_error_and_the_next_training_starts_another() -> None:
    servers: list[int] = []

    def kill_the_server(m: EpochMetrics) -> None:
        if m.epoch == 1:
            servers.append(parent_of(grandchildren()[0]))
            os.kill(servers[0], signal.SIGKILL)

    with pytest.raises(UrbansoundError, match=r"a training process \(pid \d+\) ended unexpectedly"):
        _train_calling(kill_the_server, seed=16, epochs=5, threads=2)
    assert wait_gone(servers) == [] and grandchildren() == []  # its child died with it
    again = _train_calling(lambda m: None, seed=16, epochs=2, threads=2)
    assert len(again.folds) == 4


def test_a_fork_server_that_cannot_start_is_one_clear_error() -> None:
    with pytest.raises(UrbansoundError, match=r"fork server could not start or ended .*"
                       r"train.threads=1 trains every fold in this process"):  # fmt: skip
        ChildGroup(StuckGroup, preload=("urbansound.no_such_module",))


def test_the_fork_server_has_one_thread_when_it_forks() -> None:
    # Forking copies only the forking thread: any other thread's native locks (MKL's allocator,
    # OpenMP's pool) would be copied held. The server runs one thread, and forks.
    counts: list[int] = []

    def look(m: EpochMetrics) -> None:
        counts.extend(thread_count(parent_of(g)) for g in grandchildren())

    _train_calling(look, seed=17, epochs=2, threads=3)
    assert counts == [1, 1, 1, 1]  # 2 children x 2 epochs, each server seen with one thread


def test_a_terminals_ctrl_c_reaches_neither_the_fork_server_nor_the_children() -> None:
    # Ctrl-C goes to the terminal's foreground process group: the parent handles it (and closes
    # its children); the server, in a session of its own, and the children ignore SIGINT.
    seen: list[tuple[bool, bool]] = []

    def look(m: EpochMetrics) -> None:
        for child in grandchildren():
            server = parent_of(child)
            own_session = os.getsid(server) == server != os.getsid(0)
            seen.append((own_session, all(_ignores_sigint(p) for p in (server, child))))

    _train_calling(look, seed=18, epochs=1, threads=2)
    assert seen == [(True, True)]


def _ignores_sigint(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        (mask,) = [line.split()[1] for line in f if line.startswith("SigIgn:")]
    return bool(int(mask, 16) & (1 << (signal.SIGINT - 1)))


def test_closing_a_stuck_child_kills_it() -> None:
    # A child that never answers again (waiting on a lock forever) is killed when closed.
    group = ChildGroup(StuckGroup)
    group.recv()
    group.send("hang")
    close_children([group])
    assert not process_alive(group.pid)


def test_a_second_interrupt_while_closing_leaves_no_child_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A notebook survives Ctrl-C and keeps the traceback (and with it the pipes): a second
    # Ctrl-C while the children are being joined must not leave any of them waiting forever.
    real_join = ChildGroup.join
    joins = []

    def join(self):
        joins.append(self)
        if len(joins) == 1:
            raise KeyboardInterrupt  # the second Ctrl-C, while joining the first child
        real_join(self)

    monkeypatch.setattr(ChildGroup, "join", join)
    with pytest.raises(KeyboardInterrupt) as kept:  # `kept` holds the traceback, as IPython
        _train_calling(_prune, seed=15, epochs=50, threads=4)
    assert kept.traceback
    assert wait_gone([g.pid for g in joins]) == [] and grandchildren() == []


def _train_in_pool_worker(seed: int) -> float:
    X, y, folds = blobs(seed=seed)
    result = cv(
        X, y, fold_splits(folds), n_classes=N_CLASSES, model=SMALL,
        train=quick_train(threads=2), progress=False,
    )  # fmt: skip
    return result.mean_accuracy


def test_training_inside_a_daemonic_pool_worker_gives_the_same_result() -> None:
    # multiprocessing.Pool workers are daemonic (multiprocessing lets them have no children of
    # its own); the fork server is no multiprocessing child, so the groups run as here.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        there = pool.apply(_train_in_pool_worker, (13,))
    assert there == _train_in_pool_worker(13)


# --------------------------------------------------------------------------------------------
# Parents that die, concurrent trainings

# The scripts' common start: problem() is a CVProblem of n random clips in 4 equal folds.
_PROBLEM = """
import multiprocessing, sys, threading, time
import numpy as np
from urbansound.config.settings import ModelSettings, TrainSettings
from urbansound.data.cv import fold_splits
from urbansound.training.cross_validation import cross_validate
from urbansound.training.problem import CVProblem

def problem(n, d, n_classes, hidden, **train):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, n_classes, n)
    splits = fold_splits(np.repeat(np.arange(1, 5), n // 4))
    return CVProblem(X, y, splits, n_classes=n_classes, model=ModelSettings(hidden=hidden),
                     train=TrainSettings(device="cpu", **train))
"""

_TRAINING_PARENT = (
    _PROBLEM
    + """
calls = int(sys.argv[1])  # cross_validate calls running at once, each in its own thread
started = threading.Barrier(calls + 1)

def report(m):
    if m.epoch == 1:
        started.wait()

def train():
    cross_validate(problem(4000, 20, 4, (64,), epochs=10_000, threads=3), callbacks=[report],
                   progress=False)

for _ in range(calls):
    threading.Thread(target=train, daemon=True).start()
started.wait()
print("training", flush=True)
threading.Event().wait()
"""
)


@pytest.mark.parametrize(
    ("calls", "how"),
    [(1, signal.SIGKILL), (2, signal.SIGKILL), (1, signal.SIGTERM)],
    ids=["one-call-killed", "two-concurrent-calls-killed", "one-call-terminated"],
)
def test_training_children_die_with_their_parent(calls: int, how: signal.Signals) -> None:
    with _script(_TRAINING_PARENT, str(calls)) as (proc, leftovers):
        assert proc.stdout.readline() == "training\n"
        tree = descendants(proc.pid)
        leftovers += tree
        assert len(tree) == 1 + 2 * calls  # the fork server; threads=3 on 4 folds: 2 children
        proc.send_signal(how)  # SIGKILL: no finally, no atexit; SIGTERM: Python's default
        proc.wait()
        assert wait_gone(tree) == [], "a training process outlived its parent"


_STUCK_CHILD_PARENT = """
import sys, threading
from urbansound.training.child_groups import ChildGroup
from tests.training.processes import StuckGroup
group = ChildGroup(StuckGroup)
assert group.recv() is None
group.send("hang")
print(group.pid, group.server.pid, flush=True)
if sys.argv[1] != "exit":
    threading.Event().wait()
"""


@pytest.mark.parametrize("end", ["exit", "SIGTERM", "SIGKILL", "server-killed"])
def test_a_stuck_child_dies_with_its_parent(end: str) -> None:
    # The child never reads its pipe again, so only the kernel can end it: SIGKILL when the
    # server exits (PR_SET_PDEATHSIG), which the server does when the parent is gone.
    with _script(_STUCK_CHILD_PARENT, end) as (proc, leftovers):
        child, server = (int(v) for v in proc.stdout.readline().split())
        leftovers += [child, server]
        if end == "exit":
            assert proc.wait(timeout=60) == 0
        elif end == "server-killed":
            os.kill(server, signal.SIGKILL)
        else:
            proc.send_signal(getattr(signal, end))
        assert wait_gone([child]) == [], "a stuck child outlived its parent"
        if end != "server-killed":
            assert wait_gone([server]) == []


_FORKING_PARENT = (
    _PROBLEM
    + """
cross_validate(problem(400, 5, 3, (8,), epochs=1, threads=2), progress=False)  # a server from now
sleeper = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,))
sleeper.start()
print(sleeper.pid, flush=True)
time.sleep(600)
"""
)


def test_a_process_forked_from_the_parent_does_not_keep_the_fork_server_alive() -> None:
    with _script(_FORKING_PARENT) as (proc, leftovers):
        sleeper = int(proc.stdout.readline())
        servers = [p for p in children_of(proc.pid) if p != sleeper]
        leftovers += [sleeper, *servers]
        assert len(servers) == 1
        proc.kill()
        proc.wait()
        assert process_alive(sleeper)
        assert wait_gone(servers) == [], "the forked process kept the fork server alive"


_CONCURRENT = (
    _PROBLEM
    + """
from concurrent.futures import ThreadPoolExecutor
import torch

def train(_):
    return cross_validate(problem(1200, 8, 3, (16,), epochs=4, threads=3),
                          progress=False).mean_accuracy

stop = threading.Event()

def blas():  # a thread inside MKL (torch) and OpenBLAS (numpy) calls all along
    a, b = torch.randn(300, 300), np.random.default_rng(1).normal(size=(300, 300))
    while not stop.is_set():
        torch.mm(a, a)
        b @ b

alone = train(None)
busy = threading.Thread(target=blas)
busy.start()
for _ in range(3):
    with ThreadPoolExecutor(3) as ex:
        together = list(ex.map(train, range(3)))
    print(alone, *together, flush=True)
stop.set()
busy.join()
"""
)


def test_concurrent_calls_from_threads_finish_with_the_lone_result() -> None:
    # Run in a subprocess with a time limit: the failure this guards against is a child that
    # waits forever on a lock another thread held when it was forked.
    out = subprocess.run(
        [sys.executable, "-c", _CONCURRENT], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [[float(v) for v in line.split()] for line in out.stdout.splitlines()]
    assert len(rows) == 3
    for alone, *together in rows:
        assert together == pytest.approx([alone] * 3, abs=1e-9)
