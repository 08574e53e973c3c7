"""Memory that runs out, said in one line: an address-space limit checked before heavy libraries
load, and the exceptions that mean memory ran out.

Under an address-space limit (``ulimit -v``, ``RLIMIT_AS``) libraries fail to load in ways no
Python code can catch: torch's loader throws ``std::bad_alloc`` and terminates the process, the
dynamic loader aborts ("cannot allocate memory for thread-local data"), OpenBLAS retries its
buffer and gives up with its own exit (or never). :func:`require_memory_for` tries the imports in
a child process under the same limit first; :func:`memory_failure` recognises the failures that
do reach Python. Both give :func:`memory_message`'s one line. Without a limit (the default)
nothing is probed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from urbansound.errors import UrbansoundError

__all__ = ["address_space", "memory_failure", "memory_message", "require_memory_for"]

#: Run in a child under the same limits: reserve the address space the caller already uses
#: (less what the child itself holds, numpy included, which the caller holds too), then import
#: the modules given. Libraries fail to load in ways no Python code can catch when the address
#: space runs out (torch's ``std::bad_alloc`` terminating the process, the dynamic loader's abort,
#: OpenBLAS retrying its buffer forever), so they are tried where a failure costs nothing.
_PROBE = """
import importlib, mmap, re, resource, sys
import numpy
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
own = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
held = mmap.mmap(-1, max(int(sys.argv[1]) - own, mmap.PAGESIZE), prot=0)  # PROT_NONE: reserved
for name in sys.argv[2:]:
    importlib.import_module(name)
if "torch" in sys.modules:  # one product, single-threaded, as predict and the trainer run it
    import torch
    torch.set_num_threads(1)
    torch.nn.functional.linear(torch.ones(4, 8), torch.ones(3, 8)).sum().item()
"""


def address_space() -> tuple[int | None, int]:
    """``(limit, used)`` in bytes: the soft address-space limit (``ulimit -v``; ``None``:
    unlimited) and the address space this process maps now (``VmSize``; 0 where unknown)."""
    import re
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    try:
        status = Path("/proc/self/status").read_text()
        used = int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]
    except (OSError, AttributeError, ValueError, MemoryError):  # memory may be all gone
        used = 0
    return (None if soft == resource.RLIM_INFINITY else soft), used


def require_memory_for(modules: Sequence[str], *, doing: str, spare: int = 256 * 2**20) -> None:
    """Check, before ``modules`` are imported, that the address-space limit leaves room for them.

    Nothing to do without a limit (``ulimit -v unlimited``, the default) or when they are all
    imported already. Otherwise a child process under the same limit reserves what this process
    uses plus ``spare`` bytes for the work itself (threads' stacks and malloc arenas, features,
    batches) and imports them (torch alone takes about 0.5 GiB of address space): where the child
    fails, this process would have failed in a library's loader, often without a way to say so
    (an abort, or OpenBLAS retrying its buffer).

    Raises
    ------
    UrbansoundError
        One line naming the limit, what is in use and what to do (``doing`` says what needed
        the memory: ``"loading torch"``).
    """
    import subprocess

    limit, used = address_space()
    if limit is None or all(m in sys.modules for m in modules):
        return
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, str(used + spare), *modules],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=180,  # a library retrying an allocation forever (OpenBLAS does) is a failure
        )
        ok = probe.returncode == 0
    except (OSError, subprocess.SubprocessError):  # not even a child could start
        ok = False
    if not ok:
        raise UrbansoundError(memory_message(limit, used, doing))


def memory_message(limit: int | None, used: int, doing: str) -> str:
    """The one line for memory that ran out while ``doing`` something."""
    mib = 2**20
    if limit is None:
        return (
            f"out of memory while {doing} ({used // mib} MiB in use): free memory, or lower "
            "features.n_jobs / train.batch_size / the number of files at once"
        )
    return (
        f"not enough memory for {doing}: the address-space limit (ulimit -v) is "
        f"{limit // mib} MiB and {used // mib} MiB of it are in use; raise the limit "
        "(`ulimit -v unlimited`, or a few GiB more) and run again"
    )


#: What libraries say when the address space runs out (the dynamic loader, glibc's strerror of
#: ENOMEM, torch's CPU allocator, C++).
_OUT_OF_MEMORY = ("failed to map segment", "Cannot allocate memory", "can't allocate", "bad_alloc")


def memory_failure(exc: BaseException) -> str | None:
    """The memory line for an exception that means memory ran out (itself or what caused it),
    else None: a MemoryError, an OSError ENOMEM, or an import or runtime error whose message is a
    library saying so (:data:`_OUT_OF_MEMORY`)."""
    import errno

    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 5:
        if isinstance(cause, MemoryError) or (
            isinstance(cause, OSError) and cause.errno == errno.ENOMEM
        ):
            break
        if isinstance(cause, OSError | ImportError | RuntimeError) and any(
            m in str(cause) for m in _OUT_OF_MEMORY
        ):
            break
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    else:
        return None
    limit, used = address_space()
    return memory_message(limit, used, "this command")
