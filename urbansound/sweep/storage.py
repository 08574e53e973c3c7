"""Study storages: their URLs, the one way they are opened, and retries while one is down.

``hydra.sweeper.storage`` is an SQLAlchemy URL (SQLite by default, PostgreSQL for several
machines) or a file path for Optuna's journal storage. Every storage of the package, the
sweeper's, a job's and a reader's (the report, ``fit``), is opened by :func:`open_storage`; an
operation on it that fails while a server restarts is retried by :func:`retrying`.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.storages import BaseStorage

from urbansound.errors import ConfigError, UrbansoundError
from urbansound.sweep._compat import quiet_optuna
from urbansound.sweep.urls import (
    display_storage,
    refuse_password,
    with_password,
    without_password,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class SweepError(UrbansoundError):
    """A sweep stopped: too many failed trials, a worker process died, the storage is down."""


def _make_folder(path: Path, storage: str) -> None:
    """The folder of a SQLite or journal file, created; one line when it cannot be."""
    if path.is_dir():
        raise ConfigError(
            f"hydra.sweeper.storage={storage}: {path} is a folder; name a file in it "
            f"(sqlite:///{path / 'optuna.db'}, or {path / 'optuna.log'} for a journal file)"
        )
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(
            f"hydra.sweeper.storage={storage}: {path.parent} is a file, not a folder: choose "
            "another location"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"hydra.sweeper.storage={storage}: cannot create the folder {path.parent} "
            f"({exc.strerror or exc}): choose a writable location"
        ) from None


#: How a sweep is told which environment variable holds its storage's password.
PASSWORD_ENV_KEY = "hydra.sweeper.storage_password_env"


def normalize_storage(storage: str) -> str:
    """``storage`` made usable from any working directory (absolute paths, a driver that exists).

    A value without ``://`` is a file path for Optuna's journal storage. A relative SQLite path
    becomes absolute and its folder is created; ``postgresql://`` uses psycopg (3) when psycopg2
    is not installed.

    Raises
    ------
    ConfigError
        Before anything is created: a URL that holds a password (it would be written into every
        job's files), one that is no URL, an in-memory SQLite database, a folder that cannot be
        created.
    """
    if not isinstance(storage, str) or not storage.strip():
        raise ConfigError("hydra.sweeper.storage must be a storage URL or a journal file path")
    storage = storage.strip()
    refuse_password(
        storage,
        key="hydra.sweeper.storage",
        how=f"name an environment variable that holds it with {PASSWORD_ENV_KEY}=<NAME>",
    )
    if "://" not in storage:
        path = Path(storage).expanduser().resolve()
        _make_folder(path, storage)
        return str(path)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(storage)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"hydra.sweeper.storage {storage!r} is not a valid URL: {exc}") from None
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise ConfigError(
                "hydra.sweeper.storage: an in-memory SQLite database cannot be reopened by the "
                "jobs; use a file such as sqlite:///outputs/optuna.db"
            )
        path = Path(database).expanduser().resolve()
        _make_folder(path, storage)
        url = url.set(database=str(path))
        return url.render_as_string(hide_password=False)
    return _with_driver(url.render_as_string(hide_password=False))


def _postgres_driver() -> str:
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg"):
        return "psycopg"
    return "psycopg2"


def dashboard_command(storage: str, password_env: str | None = None) -> str:
    """The optuna-dashboard command line that opens ``storage`` (a URL without a password).

    With ``password_env`` (the variable holding a PostgreSQL password), the command hands it
    to the dashboard's client as ``PGPASSWORD``, by the variable's name, never its value.
    """
    if "://" not in storage:
        return f"optuna-dashboard {shlex.quote(storage)}"
    command = f"optuna-dashboard {shlex.quote(display_storage(without_password(storage)))}"
    if password_env is not None and storage.startswith(("postgresql", "postgres:")):
        command = f'PGPASSWORD="${password_env}" {command}'
    return command


#: Storage URL -> the environment variable holding its password, in this process (and those it
#: forks): how a job, which gets only ``trial.storage``, opens its sweep's storage.
_PASSWORD_ENVS: dict[str, str] = {}


def use_password_env(storage: str, password_env: str | None) -> None:
    """Open ``storage`` with the password in environment variable ``password_env`` from now on,
    in this process and the processes it starts (None: with none)."""
    if password_env is None:
        _PASSWORD_ENVS.pop(storage, None)
    else:
        _PASSWORD_ENVS[storage] = password_env


def open_storage(
    storage: str, *, create: bool = True, password_env: str | None = None
) -> BaseStorage:
    """The Optuna storage ``storage`` names: the one way this package opens a storage.

    Parameters
    ----------
    storage:
        An SQLAlchemy URL or a journal file path; for a sweep, as :func:`normalize_storage`
        returned it.
    create:
        True for a sweep (the sweeper, its workers and jobs): a missing SQLite or journal file
        is created, and opening is tried a few times (several workers create the tables at
        once; a server may be busy). False for a reader of a finished sweep (the report,
        ``fit``): a missing file is an error, never created, and opening is tried once.
    password_env:
        The environment variable holding the storage's password, put into the URL in memory
        only; None: the one :func:`use_password_env` gave for ``storage``, if any (else the
        database client's own sources, such as ``PGPASSWORD`` and ``~/.pgpass``).

    Returns
    -------
    BaseStorage
        A journal storage for a path, else an RDB storage (SQLite: waits up to 60 s for another
        process's lock and uses a write-ahead log, so that readers never block the workers).

    Raises
    ------
    ConfigError
        A file that is no Optuna storage, a database driver that is not installed; for a reader,
        a missing file or a storage that cannot be opened. One line; a sweep's names
        ``hydra.sweeper.storage``.
    SweepError
        For a sweep, when the storage still cannot be opened after a few tries (a server that
        is down).
    """
    where = f"hydra.sweeper.storage={display_storage(storage)}: " if create else ""
    if not create:
        _check_exists(storage)
    if "://" not in storage:
        from optuna.storages.journal import JournalFileBackend

        check_journal(Path(storage), where=where, create=create)
        try:
            with quiet_optuna():
                return optuna.storages.JournalStorage(JournalFileBackend(storage))
        except OSError as exc:  # unreadable, a folder that cannot be written
            raise ConfigError(
                f"{where}cannot open the study storage ({_cause(exc)}): {storage} is not an "
                "Optuna journal file that can be read and written"
                + ("; name a new file, or an sqlite:/// URL" if create else "")
            ) from None
        except (ValueError, KeyError, TypeError, IndexError, AssertionError) as exc:
            # Lines of JSON that Optuna's replay does not understand ("Should not reach.")
            raise ConfigError(
                f"{where}the journal file's records are no Optuna journal "
                f"({_cause(exc)}): {_restore(create)}"
            ) from None
    password_env = password_env or _PASSWORD_ENVS.get(storage)
    key = f"{where}{PASSWORD_ENV_KEY}" if create else "the password's environment variable"
    storage = _with_driver(with_password(storage, password_env, key=key))
    engine_kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite"):
        # Several processes write one file: wait for its lock rather than fail at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    last: Exception | None = None
    for attempt in range(4 if create else 1):
        try:
            with quiet_optuna():
                rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs)
            if storage.startswith("sqlite"):
                from sqlalchemy import event

                event.listen(rdb.engine, "connect", _sqlite_pragmas)
                if create:  # a sweep writes: its transactions must be transactions
                    event.listen(rdb.engine, "connect", _sqlite_transactions)
                    event.listen(rdb.engine, "begin", _sqlite_begin)
                rdb.engine.dispose()  # reconnect with the pragmas and the transaction control
            return rdb
        except ImportError as exc:
            raise ConfigError(f"{where}cannot open the study storage ({exc})") from None
        except Exception as exc:  # two processes creating the tables at once, a busy server
            last = exc
            if create:
                time.sleep(0.5 * (attempt + 1))
    message = f"{where}cannot open the study storage ({_cause(last)})"
    raise SweepError(message) if create else ConfigError(message)


def _restore(create: bool) -> str:
    """What to do about a damaged journal file: for a sweep, a new file is a way out too."""
    return "restore the file from a copy" + (
        ", or name another file for a new study" if create else ""
    )


def check_journal(path: Path, *, where: str = "", create: bool = False) -> None:
    """ConfigError, one line saying what to do, when the journal file ``path`` is damaged.

    ``where`` starts the message (the key or option that named the file); ``create`` says it
    is a sweep's (which may start a new file instead).

    Every complete line must be a JSON object with an ``op_code`` (Optuna's journal records). A
    last line without its newline is a record a process was stopped while writing: Optuna
    skips it, and the next record written would be glued to it and lost with it. A writer that
    is appending at this moment finishes its line within a moment, so such a line is read
    again before it counts as cut off. A missing or empty file is a new journal.
    """
    import json

    for _ in range(5):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"{where}cannot read the journal file {path} ({exc})") from None
        lines = data.split(b"\n")
        last = lines.pop()  # b"" when the file ends with its newline
        if not last:
            break
        time.sleep(0.2)
        if path.stat().st_size == len(data):  # nobody is writing it
            cut = len(data) - len(last)
            raise ConfigError(
                f"{where}the journal file is cut off: its last line (from byte {cut}) "
                "is incomplete, a process was stopped while writing it; keep a copy of the "
                f"file, then remove that line (truncate -s {cut} {path}) and run again"
            )
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError as exc:
            cause = _cause(exc)
        else:
            if isinstance(record, dict) and isinstance(record.get("op_code"), int):
                continue
            cause = "no op_code"
        raise ConfigError(
            f"{where}line {number} of the journal file is no Optuna journal record ({cause}): "
            f"the file is corrupt or no journal; {_restore(create)}"
        )


def _check_exists(storage: str) -> None:
    """ConfigError when a reader's SQLite or journal file is missing (it would be created)."""
    if storage.startswith("sqlite:///"):
        db = storage.removeprefix("sqlite:///").split("?", 1)[0]
        if db != ":memory:" and not Path(db).is_file():
            raise ConfigError(
                f"no such SQLite file {db} (relative to {Path.cwd()}); run from where the sweep "
                "ran or give the absolute path"
            )
    elif "://" not in storage and not Path(storage).is_file():
        raise ConfigError(f"no such journal file {storage} (relative to {Path.cwd()})")


def _with_driver(storage: str) -> str:
    """A ``postgresql://`` URL with a driver that is installed (psycopg when psycopg2 is not)."""
    if not storage.startswith(("postgresql://", "postgres://")):
        return storage
    from sqlalchemy.engine import make_url

    url = make_url(storage)
    return url.set(drivername="postgresql+" + _postgres_driver()).render_as_string(
        hide_password=False
    )


def _cause(exc: BaseException | None) -> str:
    """The first line of an error as it reads (SQLAlchemy's ``(driver.Error) message``)."""
    lines = str(exc).strip().splitlines() if exc is not None else []
    return lines[0] if lines else type(exc).__name__


def root_cause(exc: BaseException | None) -> str:
    """``Type: first line`` of the error's root cause (Optuna wraps the driver's error)."""
    while exc is not None and (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Write-ahead log: workers, jobs and optuna-dashboard read while one writes, and a commit
    does not wait for the disk (a crash loses at most the last commits, never the file)."""
    import sqlite3

    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.OperationalError as exc:  # another process holds a lock; keep its mode
        log.debug("SQLite pragmas not applied: %s", exc)
    finally:
        cursor.close()


def _sqlite_transactions(dbapi_connection: Any, _record: Any) -> None:
    """A sweep's SQLite connection: SQLAlchemy, not the sqlite3 module, begins transactions.

    sqlite3's legacy transaction control begins a transaction only at the first INSERT or
    UPDATE, so the SELECT ... FOR UPDATE with which Optuna claims a WAITING trial (FOR UPDATE is
    a no-op in SQLite) ran outside it, and two workers could claim the same trial. With BEGIN
    emitted by SQLAlchemy (:func:`_sqlite_begin`; SQLAlchemy's documented recipe for SQLite
    transactions), Optuna's read-then-write is one transaction, as on PostgreSQL.
    """
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Any) -> None:
    """Begin every transaction with SQLite's write lock (``BEGIN IMMEDIATE``).

    A transaction that reads and then writes (Optuna popping a WAITING trial, failing a RUNNING
    one) then sees no other writer in between: the second of two workers waits for the lock
    (up to the connection's 60 s timeout), reads the trial as RUNNING, and leaves it. Readers
    outside this package (optuna-dashboard) are not blocked: the log is write-ahead.
    """
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def release(storage: BaseStorage) -> None:
    """Close a storage's connections before forking (children open their own)."""
    if isinstance(storage, optuna.storages.RDBStorage):
        storage.remove_session()
        storage.engine.dispose()


# How long a storage operation is retried before the storage counts as down (seconds).
RETRY_SECONDS = float(os.environ.get("URBANSOUND_STORAGE_RETRY_SECONDS", "60"))


def is_transient(exc: BaseException) -> bool:
    """True for a storage error that may pass (a server restarting, a dropped connection)."""
    from optuna.exceptions import StorageInternalError

    try:
        from sqlalchemy.exc import DBAPIError, OperationalError
    except ImportError:  # pragma: no cover - SQLAlchemy ships with Optuna
        return isinstance(exc, StorageInternalError | ConnectionError)
    return isinstance(exc, StorageInternalError | OperationalError | DBAPIError | ConnectionError)


def retrying(what: str, fn: Callable[[], T], *, seconds: float | None = None) -> T:
    """``fn()``, retried while it raises a transient storage error, for up to ``seconds``.

    Logs one warning line when the first try fails and one line when it succeeds again.

    Raises
    ------
    SweepError
        When the storage is still unreachable after ``seconds`` (default
        ``URBANSOUND_STORAGE_RETRY_SECONDS``, 60), naming ``what`` and the last error.
    """
    limit = RETRY_SECONDS if seconds is None else seconds
    deadline = time.monotonic() + limit
    delay, failed = 0.25, False
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise SweepError(
                    f"the study storage stayed unreachable for {limit:.0f} s ({what}): "
                    f"{root_cause(exc)}"
                ) from None
            if not failed:
                log.warning(
                    "study storage unreachable (%s), retrying for up to %.0f s: %s",
                    what,
                    limit,
                    root_cause(exc),
                )
                failed = True
            time.sleep(delay)
            delay = min(2 * delay, 5.0)
        else:
            if failed:
                log.warning("study storage reachable again (%s)", what)
            return result
