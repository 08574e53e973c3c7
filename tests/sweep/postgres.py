"""The PostgreSQL server the tests marked ``postgres`` use, or a skip that says why.

``.ci/services.sh`` starts a local one (role, password and database
``urbansound``/``urbansound``/``urbansound_test``). ``URBANSOUND_TEST_POSTGRES_URL`` points the
tests elsewhere and ``PGPASSWORD`` gives its password; a password written in that URL is taken
out of it, since a sweep refuses a URL that holds one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

DEFAULT_URL = "postgresql+psycopg://urbansound@localhost:5432/urbansound_test"
#: The local test server's password (``.ci/services.sh``), unless PGPASSWORD says otherwise.
DEFAULT_PASSWORD = "urbansound"


@dataclass(frozen=True)
class Server:
    """The test server: its URL without a password (what a sweep is given) and the password."""

    url: str
    password: str

    @property
    def env(self) -> dict[str, str]:
        """The environment of a command that reaches the server through ``PGPASSWORD``."""
        return {**os.environ, "PGPASSWORD": self.password}

    @property
    def direct(self) -> str:
        """The URL with its password, for the test's own Optuna calls (never a sweep's)."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).set(password=self.password).render_as_string(False)


def postgres_server() -> Server:
    """The reachable test server, or skip the test saying why."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    from urbansound.sweep.urls import display_storage, without_password

    given = os.environ.get("URBANSOUND_TEST_POSTGRES_URL", DEFAULT_URL)
    password = make_url(given).password or os.environ.get("PGPASSWORD") or DEFAULT_PASSWORD
    server = Server(without_password(given), str(password))
    try:
        engine = sqlalchemy.create_engine(server.direct, connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        pytest.skip(
            f"PostgreSQL not reachable at {display_storage(server.url)} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}); run .ci/services.sh or set "
            "URBANSOUND_TEST_POSTGRES_URL and PGPASSWORD"
        )
    return server


def postgres_url() -> str:
    """The test server's URL with its password, for direct use by a test (or skip)."""
    return postgres_server().direct
