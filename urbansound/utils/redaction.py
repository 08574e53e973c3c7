"""Secrets kept out of everything the package writes or prints: the one home for redaction.

Storage URLs (``hydra.sweeper.storage``, ``fit.from``) reach logs, results, model files,
reports and Comet, and a PostgreSQL URL may carry a password: every such place shows it through
:func:`redact_url`.
"""

from __future__ import annotations

import re

__all__ = ["redact_url"]


def redact_url(url: str | None) -> str | None:
    """A database URL with any password replaced by ``***``; other strings are returned as given.

    Uses SQLAlchemy's URL parser, so ``postgresql+psycopg://user:pw@host/db`` becomes
    ``postgresql+psycopg://user:***@host/db``; a journal-file path has no password and is kept.
    A URL SQLAlchemy cannot parse (a port that is no number) still has whatever sits between
    ``user:`` and ``@`` replaced.
    """
    if url is None or "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: hide what looks like a password
        return re.sub(r"(://[^/:@]+:)[^@/]*@", r"\1***@", url)
