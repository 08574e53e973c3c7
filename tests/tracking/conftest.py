"""Isolation for every tracking test: no Comet key, no Comet config file, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from urbansound.tracking.comet import COMET_ENV_DEFAULTS


@pytest.fixture(autouse=True)
def comet_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No COMET_* variables but this project's defaults, no ~/.comet.config, cwd in tmp_path."""
    for key in list(os.environ):
        if key.startswith("COMET_") and key not in COMET_ENV_DEFAULTS:
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
