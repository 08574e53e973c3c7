"""Shared fixtures: the real partial UrbanSound8K copy, a small demo corpus, config composition."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import CONF_DIR, DEMO_CLIPS_PER_CLASS, HAVE_REAL, REAL_ROOT, cli_env
from urbansound.config.app import register_configs


def pytest_configure(config: pytest.Config) -> None:
    """The config schemas in Hydra's ConfigStore before any test composes the config tree
    (registration is explicit: the entry points do it themselves); and the interrupt signals at
    their defaults for the processes the tests start.

    A shell starts a background job (``pytest &``, ``nohup ... &``, some CI runners) with SIGINT
    and SIGQUIT ignored, and an ignored signal stays ignored across ``exec``: every command a test
    starts would then ignore the Ctrl-C the signal tests send it and run to the end. A handled
    signal is reset to its default in an exec'd child, so handling them here gives the children
    what a terminal's user has, whatever started pytest.
    """
    register_configs()
    for sig, handler in (
        (signal.SIGINT, signal.default_int_handler),
        (signal.SIGQUIT, signal.SIG_DFL),
    ):
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, handler)


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
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``data.demo_dir`` holding a small demo corpus (6 clips per class = 60 clips).

    Pass ``data.demo_dir=<this> data.demo_clips_per_class=6`` to a run to reuse it.
    """
    from urbansound.data.demo import make_demo_corpus

    dest = tmp_path_factory.mktemp("demo")
    make_demo_corpus(dest, clips_per_class=DEMO_CLIPS_PER_CLASS)
    return dest


@pytest.fixture(scope="session")
def demo_root(demo_dir: Path) -> Path:
    """The UrbanSound8K-layout root of the small demo corpus, generated once per session."""
    from urbansound.data.demo import make_demo_corpus

    return make_demo_corpus(demo_dir, clips_per_class=DEMO_CLIPS_PER_CLASS)


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m urbansound.run ARGS`` with ``tmp_path`` as working directory.

    Relative outputs (run dirs, feature cache, study storage, Comet archives) land in tmp_path.
    """

    def _run(*args: str, timeout: float = 600, check: bool = True):
        proc = subprocess.run(
            [sys.executable, "-m", "urbansound.run", *args],
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"urbansound.run {' '.join(args)} exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
            )
        return proc

    return _run


@pytest.fixture
def compose_cfg() -> Callable[..., object]:
    """Compose the project's Hydra config with overrides, as `python -m urbansound.run` would."""
    from hydra import compose, initialize_config_dir

    def _compose(overrides: list[str] | None = None, *, return_hydra_config: bool = False):
        register_configs()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                config_name="config",
                overrides=list(overrides or []),
                return_hydra_config=return_hydra_config,
            )

    return _compose


@pytest.fixture
def tiny_mount(tmp_path: Path):
    """Mount a 64 KiB tmpfs (options given to the factory); unmounted afterwards.

    Real read-only and full file systems: as root, permissions alone block nothing.
    """
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size=64k,{options}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): needs root")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
