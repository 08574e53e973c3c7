"""Secrets kept out of everything the package writes or prints: the one home for redaction.

Storage URLs (``hydra.sweeper.storage``, ``fit.from``) reach logs, results, model files,
reports and Comet, and a PostgreSQL URL may carry a password: every such place shows it through
:func:`redact_url`.
"""

from __future__ import annotations

import re

__all__ = ["HIDDEN", "PASSWORD_KEYS", "QUERY_PASSWORD", "has_password", "redact_url"]

#: What a hidden password is shown as.
HIDDEN = "***"
#: Query keys that carry a password in an SQLAlchemy URL (libpq's, PyMySQL's).
PASSWORD_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword"})
#: A password query parameter (``?password=...``, ``&sslpassword=...``), its value in the match's
#: end: group 1 is the key and ``=``.
QUERY_PASSWORD = re.compile(r"([?&](?:" + "|".join(sorted(PASSWORD_KEYS)) + r")=)[^&]*", re.I)


def has_password(url: str) -> bool:
    """True when the URL ``url`` carries a password: ``user:password@`` (percent-encoded or not)
    or a password query key (:data:`PASSWORD_KEYS`). A URL SQLAlchemy cannot parse counts when
    its text has ``user:...@`` or such a key; a journal-file path (no ``://``) never does."""
    if "://" not in url:
        return False
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # an ArgumentError, or a port that is no number
        return bool(re.search(r"://[^/@]*:[^/@]*@", url) or QUERY_PASSWORD.search(url))
    return bool(parsed.password) or bool({k.lower() for k in parsed.query} & PASSWORD_KEYS)


def redact_url(url: str | None) -> str | None:
    """A database URL with any password replaced by ``***``; other strings are returned as given.

    Both places a URL carries one are hidden: the user part (``postgresql+psycopg://user:pw@host
    /db`` becomes ``postgresql+psycopg://user:***@host/db``, through SQLAlchemy's URL parser) and
    a password query parameter (``?password=pw``, :data:`PASSWORD_KEYS`). A journal-file path has
    no password and is kept. A URL SQLAlchemy cannot parse (a port that is no number) still has
    whatever sits between ``user:`` and ``@`` replaced.
    """
    if url is None or "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        text = make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: hide what looks like a password
        text = re.sub(r"(://[^/:@]*:)[^@/]*@", rf"\1{HIDDEN}@", url)
    return QUERY_PASSWORD.sub(rf"\g<1>{HIDDEN}", text)
