"""Shared fixtures: the real partial UrbanSound8K copy, a small demo corpus, config composition."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"


def _real_root() -> Path:
    env = os.environ.get("URBANSOUND_TEST_DATA")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data" / "UrbanSound8K"


REAL_ROOT = _real_root()
HAVE_REAL = (REAL_ROOT / "metadata" / "UrbanSound8K.csv").is_file()


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The partial real UrbanSound8K copy (../shared/data/UrbanSound8K); skips where absent."""
    if not HAVE_REAL:
        pytest.skip(
            f"real UrbanSound8K sample not found at {REAL_ROOT} "
            "(set URBANSOUND_TEST_DATA to an UrbanSound8K folder to run this test)"
        )
    return REAL_ROOT


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo corpus (6 clips per class = 60 clips), generated once per test session."""
    from urbansound.data import make_demo_corpus

    return make_demo_corpus(tmp_path_factory.mktemp("demo"), clips_per_class=6)


@pytest.fixture
def compose_cfg() -> Callable[..., object]:
    """Compose the project's Hydra config with overrides, as `python -m urbansound.run` would."""
    from hydra import compose, initialize_config_dir

    def _compose(overrides: list[str] | None = None, *, return_hydra_config: bool = False):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                config_name="config",
                overrides=list(overrides or []),
                return_hydra_config=return_hydra_config,
            )

    return _compose
