"""Tests of urbansound.utils.redaction: no password survives, everything else does."""

from __future__ import annotations

import pytest

from urbansound.utils.redaction import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:pw@h/db", "postgresql+psycopg://u:***@h/db"),
        (  # port, query and a percent-escaped password
            "postgresql://user:p%40ss@db.example:5432/optuna?sslmode=require",
            "postgresql://user:***@db.example:5432/optuna?sslmode=require",
        ),
        ("mysql://u@h/db", "mysql://u@h/db"),  # no password: unchanged
        ("sqlite:////tmp/optuna.db", "sqlite:////tmp/optuna.db"),
        ("postgresql://u:secret@h:notaport/db", "postgresql://u:***@h:notaport/db"),  # fallback
        ("outputs/journal.log", "outputs/journal.log"),  # a journal file: no URL
        (None, None),
    ],
)
def test_redact_url_hides_the_password_only(url, shown) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u@h/db?password=pw", "postgresql://u@h/db?password=***"),
        ("postgresql://u@h/db?sslmode=require&sslpassword=pw", "sslpassword=***"),
        ("postgresql://u:pw@h:port/db?PASSWD=x", "PASSWD=***"),
    ],
)
def test_a_password_in_the_query_is_hidden_too(url: str, shown: str) -> None:
    out = redact_url(url)
    assert out is not None and shown in out
    assert "pw" not in out.replace("password", "").replace("sslpassword", "")
