"""Helpers shared by the tests (imported as ``tests.helpers``; conftest.py holds the fixtures)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from urbansound.config.settings import (
    DataSettings,
    FeatureSettings,
    ModelSettings,
    Settings,
    TrackingSettings,
    TrainSettings,
)

#: The repository's root (a source checkout).
REPO = Path(__file__).resolve().parents[2]
#: The packaged Hydra config tree.
CONF_DIR = REPO / "urbansound" / "conf"
#: The named sweeps (the config group ``sweep``).
SWEEP_DIR = CONF_DIR / "sweep"


def _real_root() -> Path:
    env = os.environ.get("URBANSOUND_TEST_DATA")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data" / "UrbanSound8K"


#: The partial real UrbanSound8K copy (``URBANSOUND_TEST_DATA`` or ``../shared/data``).
REAL_ROOT = _real_root()
HAVE_REAL = (REAL_ROOT / "metadata" / "UrbanSound8K.csv").is_file()

#: Clips per class of the session's small demo corpus (the ``demo_dir`` fixture).
DEMO_CLIPS_PER_CLASS = 6


def cli_env() -> dict[str, str]:
    """The environment for CLI runs in tests: no dataset variable, no Comet key, no network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMET_", "URBANSOUND8K"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["MPLBACKEND"] = "Agg"
    env["HYDRA_FULL_ERROR"] = "1"
    return env


def start_cli(module: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    """Start ``python -m MODULE ARGS`` in a process group of its own (so a test can send SIGINT
    to the whole group, as a terminal's Ctrl-C does), with pipes for stdout and stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` is running: a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False  # gone between the two looks


def fit_settings(demo_dir: Path, cache: Path, **train: object) -> Settings:
    """A small, quick configuration on the session's demo corpus (CPU, no tracking)."""
    t = {"epochs": 60, "batch_size": 16, "lr": 5e-3, "device": "cpu", "threads": 1} | train
    return Settings(
        data=DataSettings(demo_dir=str(demo_dir), demo_clips_per_class=DEMO_CLIPS_PER_CLASS),
        features=FeatureSettings(n_mfcc=13, cache_dir=str(cache), n_jobs=2),
        model=ModelSettings(hidden=(64,), dropout=0.0),
        train=TrainSettings(**t),
        tracking=TrackingSettings(mode="disabled"),
    )
