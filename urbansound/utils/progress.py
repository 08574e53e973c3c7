"""Progress reporting: bars on a terminal, clean periodic lines in a log. The one home for tqdm.

Every loop the user waits on (demo corpus, feature extraction, training epochs, the report's
evaluations, predictions) asks :func:`progress_bar` for its bar. What it shows follows the
``progress`` setting (top-level config key ``progress``, or the ``--progress`` option of the
non-Hydra commands):

``auto`` (default)
    a tqdm bar when stderr is a terminal; otherwise one plain line every ``log_interval`` seconds
    (and one at the end), never a ``\\r`` frame, so piped logs stay readable;
``bar``
    always a tqdm bar;
``log``
    always periodic lines;
``none``
    nothing.

tqdm's own environment variables are honoured: ``TQDM_DISABLE=1`` turns every bar and line off
(read at each call, so a test or a notebook can set it late), and the other ``TQDM_*`` variables
(``TQDM_MININTERVAL``, ``TQDM_NCOLS``, ``TQDM_LEAVE``, ...) reach tqdm as they would without us:
an argument that a ``TQDM_<NAME>`` variable sets is not passed, since tqdm lets a passed argument
win over its environment (tqdm reads the variables when it is imported).
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from tqdm.auto import tqdm

MODES = ("auto", "bar", "log", "none")
LOG_INTERVAL_S = 30.0

__all__ = ["LOG_INTERVAL_S", "MODES", "LineProgress", "progress_bar", "resolve_mode"]

_default_mode = "auto"


def set_default_mode(mode: str) -> None:
    """The mode :func:`progress_bar` uses when its caller passes ``mode=None`` (entry points set it
    once from the config)."""
    global _default_mode
    if mode not in MODES:
        raise ValueError(f"progress must be one of {', '.join(MODES)}, not {mode!r}")
    _default_mode = mode


def _env_disabled() -> bool:
    value = os.environ.get("TQDM_DISABLE", "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def resolve_mode(mode: str | None = None, *, file: IO[str] | None = None) -> str:
    """``bar``, ``log`` or ``none``: what ``mode`` (``None`` = the default mode) means here."""
    mode = _default_mode if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"progress must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "none" or _env_disabled():
        return "none"
    if mode == "auto":
        stream = file if file is not None else sys.stderr
        isatty = getattr(stream, "isatty", None)
        return "bar" if isatty is not None and isatty() else "log"
    return mode


class LineProgress:
    """A tqdm-like counter that writes one plain line at most every ``interval`` seconds.

    Supports the part of tqdm's interface the package uses: ``update``, ``set_postfix``,
    ``set_description``, ``close``, iteration, and use as a context manager. Lines look like
    ``features: 120/1000 clips (12%) 4.1 clips/s, acc=0.7312`` and end with ``done in 3.2 s``.
    """

    def __init__(
        self,
        iterable: Any = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        file: IO[str] | None = None,
        interval: float = LOG_INTERVAL_S,
        **_: Any,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.desc = desc
        self.unit = unit
        self.file = file
        self.interval = interval
        self.n = 0
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._closed = False

    def __iter__(self) -> Any:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _write(self, text: str) -> None:
        stream = self.file if self.file is not None else sys.stderr
        print(text, file=stream, flush=True)

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = f" {self.n / elapsed:.1f} {self.unit}/s"
        post = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc or 'progress'}: {count} {self.unit}{pct}{rate}{post}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self._line())

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:  # tqdm compatibility
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n:
            elapsed = time.monotonic() - self._start
            self._write(f"{self._line()}, done in {elapsed:.1f} s")


class _Silent(LineProgress):
    def _write(self, text: str) -> None:
        pass


def progress_bar(
    iterable: Any = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    mode: str | None = None,
    file: IO[str] | None = None,
    interval: float = LOG_INTERVAL_S,
    leave: bool = False,
) -> Any:
    """A progress counter for a loop: a tqdm bar, a :class:`LineProgress`, or a silent one.

    ``mode`` is one of :data:`MODES` (``None``: the mode set by the entry point, ``auto`` unless
    changed). The returned object has tqdm's ``update``/``set_postfix``/``close`` interface and
    iterates over ``iterable`` when one is given.
    """
    resolved = resolve_mode(mode, file=file)
    if resolved == "bar":
        kwargs = {"total": total, "desc": desc, "unit": unit, "file": file, "leave": leave}
        for name in [k for k in kwargs if f"TQDM_{k.upper()}" in os.environ]:
            del kwargs[name]  # the user's TQDM_<NAME> wins, as it does for tqdm itself
        return tqdm(iterable, **kwargs)
    cls = LineProgress if resolved == "log" else _Silent
    return cls(iterable, total=total, desc=desc, unit=unit, file=file, interval=interval)
