"""Storage URLs as text: the passwords they may hold, and which storage they name.

A storage URL reaches every job's config, ``results.json``, Hydra's ``.hydra`` files, the logs
and Comet, so a password in it would be written everywhere: :func:`refuse_password` stops such a
URL before anything is written, and the password comes from the environment instead
(PostgreSQL's ``PGPASSWORD`` or ``~/.pgpass``, read by its client library; or a variable named in
the config, put into the URL in memory only by :func:`with_password`). :func:`display_storage`
hides a password wherever one is shown anyway (an old ``study.json``). :func:`storage_identity`
names the storage itself, whatever driver, password or spelling reaches it: what a sweep
directory records as its owner.

Nothing here imports Optuna, so readers (the report, ``fit``) use it freely.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from urbansound.errors import ConfigError
from urbansound.utils.redaction import HIDDEN, PASSWORD_KEYS, has_password, redact_url

#: The usual port of each network backend, so that ``host`` and ``host:5432`` are one storage.
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _parse(storage: str) -> Any | None:
    """SQLAlchemy's URL of ``storage``; None for a journal path or text that is no URL."""
    if "://" not in storage:
        return None
    from sqlalchemy.engine import make_url

    try:
        return make_url(storage)
    except Exception:  # an ArgumentError, or a port that is no number
        return None


def display_storage(storage: str | None) -> str:
    """``storage`` with any password (in its user part or its query) replaced by ``***``."""
    return redact_url(storage) or ""


def refuse_password(storage: str, *, key: str, how: str) -> None:
    """ConfigError when ``storage`` holds a password, before anything is written.

    ``key`` names where the URL came from (``hydra.sweeper.storage``, ``--storage``); ``how``
    says how this command is told which environment variable holds the password. The message
    shows the URL with the password hidden.
    """
    if has_password(storage):
        raise ConfigError(
            f"{key}={display_storage(storage)}: a password in the storage URL would be written "
            "into every job's config, results and logs: remove it from the URL and give it "
            f"through PGPASSWORD or ~/.pgpass (PostgreSQL), or {how}"
        )


def check_password_env(name: Any, *, key: str) -> str:
    """``name`` checked as the environment variable holding a storage's password; returned.

    Raises
    ------
    ConfigError
        ``name`` is no variable name, or the variable is not set (or empty) here.
    """
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        raise ConfigError(
            f"{key} must name an environment variable (letters, digits, _), got {name!r}"
        )
    if not os.environ.get(name):
        raise ConfigError(
            f"{key}={name}: the environment variable {name} is not set; export {name} with the "
            "storage's password first (it is read, never written anywhere)"
        )
    return name


def with_password(storage: str, password_env: str | None, *, key: str) -> str:
    """``storage`` with the password of environment variable ``password_env`` (None: as is).

    The URL returned is for the database driver only: it must never be shown or written.
    A redacted password (``***``, from an old ``study.json``) is dropped, so that the client's
    own sources (``PGPASSWORD``, ``~/.pgpass``) apply. ``key`` names the setting that named the
    variable, in the error when it is not set.
    """
    url = _parse(storage)
    if url is None:
        return storage
    if url.password == HIDDEN:
        url = _without_password(url)
    if password_env is not None:
        url = url.set(password=os.environ[check_password_env(password_env, key=key)])
    return url.render_as_string(hide_password=False)


def without_password(storage: str) -> str:
    """``storage`` with no password in its user part (a journal path as it is)."""
    url = _parse(storage)
    return storage if url is None else _without_password(url).render_as_string(False)


def _without_password(url: Any) -> Any:
    from sqlalchemy.engine import URL

    # (URL.set(password=None) keeps the password: None there means "unchanged")
    return URL.create(
        url.drivername,
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )


def storage_identity(storage: str) -> str:
    """The storage ``storage`` names, as text: equal for two URLs that reach the same one.

    A journal file or SQLite database is its absolute path; a server's URL keeps its backend,
    host, port (the backend's usual one when left out), database and query, without the user,
    password or driver (``postgresql+psycopg://u:pw@db/optuna`` and ``postgresql://db:5432/optuna``
    are one storage).
    """
    url = _parse(storage)
    if url is None:
        return str(Path(storage).expanduser().resolve()) if "://" not in storage else storage
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"sqlite:///{Path(url.database or '').expanduser().resolve()}"
    backend = "postgresql" if backend == "postgres" else backend
    port = url.port or _DEFAULT_PORTS.get(backend)
    query = "&".join(
        f"{k}={v}" for k, v in sorted(url.query.items()) if k.lower() not in PASSWORD_KEYS
    )
    host = (url.host or "").lower()
    return f"{backend}://{host}{f':{port}' if port else ''}/{url.database or ''}" + (
        f"?{query}" if query else ""
    )
