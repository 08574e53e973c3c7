"""Tests of urbansound.utils.memory: what means memory ran out, and the probe's verdict."""

from __future__ import annotations

import errno
import resource
import sys

import pytest

from urbansound.config.app import run_command
from urbansound.errors import UrbansoundError
from urbansound.utils.memory import address_space, memory_failure, require_memory_for


def _chained() -> BaseException:
    try:
        raise RuntimeError("std::bad_alloc")
    except RuntimeError as inner:
        try:
            raise ImportError("torch could not be imported") from inner
        except ImportError as outer:
            return outer


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError(),
        OSError(errno.ENOMEM, "Cannot allocate memory"),
        ImportError("libtorch_cpu.so: failed to map segment from shared object"),
        RuntimeError("std::bad_alloc"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"),
        OSError("cannot load library 'libsndfile.so': failed to map segment from shared object"),
        _chained(),
    ],
    ids=["MemoryError", "ENOMEM", "loader", "bad_alloc", "torch-allocator", "cffi", "chained"],
)
def test_failures_that_mean_memory_ran_out_are_one_line(exc: BaseException) -> None:
    line = memory_failure(exc)
    assert line is not None and "\n" not in line and "memory" in line

    def command() -> int:
        raise exc

    assert run_command(command, interrupted=lambda: "") == 2


@pytest.mark.parametrize(
    "exc", [ValueError("bad"), RuntimeError("shape mismatch"), OSError(errno.EIO, "I/O error")]
)
def test_other_failures_are_not_taken_for_memory(exc: BaseException) -> None:
    assert memory_failure(exc) is None

    def command() -> int:
        raise exc

    with pytest.raises(type(exc)):  # a bug keeps its traceback
        run_command(command, interrupted=lambda: "")


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_the_probe_refuses_only_under_a_limit_too_small(monkeypatch: pytest.MonkeyPatch) -> None:
    limit, used = address_space()
    assert used > 0
    # no limit: nothing probed, whatever the modules
    if limit is None:
        require_memory_for(("no_such_module_anywhere",), doing="x")
    # a limit (the parent's view only) and more to reserve than any machine has: the child
    # fails to reserve it, and the verdict is one line
    monkeypatch.setattr(resource, "getrlimit", lambda which: (used * 2, resource.RLIM_INFINITY))
    assert "tabnanny" not in sys.modules
    with pytest.raises(UrbansoundError, match=r"^not enough memory for loading tabnanny: the addr"):
        require_memory_for(("tabnanny",), doing="loading tabnanny", spare=2**50)
