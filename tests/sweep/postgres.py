"""The PostgreSQL server the tests marked ``postgres`` use, or a skip that says why.

``.ci/services.sh`` starts a local one (role, password and database
``urbansound``/``urbansound``/``urbansound_test``); ``URBANSOUND_TEST_POSTGRES_URL`` points the
tests elsewhere.
"""

from __future__ import annotations

import os

import pytest

DEFAULT_URL = "postgresql+psycopg://urbansound:urbansound@localhost:5432/urbansound_test"
URL = os.environ.get("URBANSOUND_TEST_POSTGRES_URL", DEFAULT_URL)


def postgres_url() -> str:
    """The test server's URL (with its password: tests open it directly), or skip the test."""
    import sqlalchemy

    from urbansound.sweep.storage import display_storage

    try:
        engine = sqlalchemy.create_engine(URL, connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        pytest.skip(
            f"PostgreSQL not reachable at {display_storage(URL)} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}); run .ci/services.sh or set "
            "URBANSOUND_TEST_POSTGRES_URL"
        )
    return URL
