"""fit and run under conditions users cause: an address-space limit too small for torch, a user
classifier that a model file could not hold (see also tests/inference)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DEMO_CLIPS_PER_CLASS, cli_env

QUICK = [
    "train.epochs=2",
    "train.batch_size=16",
    "model.hidden=[32]",
    "n_mfcc=13",
    "train.device=cpu",
    "tracking.mode=disabled",
]


def _demo(demo_dir: Path) -> list[str]:
    return [f"data.demo_dir={demo_dir}", f"data.demo_clips_per_class={DEMO_CLIPS_PER_CLASS}"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
@pytest.mark.parametrize("module", ["run", "fit"])
def test_a_limit_too_small_for_torch_is_one_line_naming_memory(
    demo_dir: Path, tmp_path: Path, module: str
) -> None:
    """Before: an ImportError from torch's loader (`failed to map segment`), a RuntimeError
    `std::bad_alloc` traceback, or an abort, depending on the limit."""
    for mib in (300, 700):  # torch, scikit-learn, scipy and librosa need more than 700 MiB
        run_dir = tmp_path / f"{module}-{mib}"
        args = [sys.executable, "-m", f"urbansound.{module}", *QUICK, *_demo(demo_dir),
                f"features.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"]  # fmt: skip
        command = " ".join(shlex.quote(a) for a in args)
        proc = subprocess.run(
            ["bash", "-c", f"ulimit -v {mib * 1024} && exec {command}"],
            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-3000:]
        (line,) = proc.stderr.splitlines()
        assert line.startswith(
            "error: not enough memory for loading torch and the training code: the address-space "
            "limit (ulimit -v) is "
        ), line
        assert "raise the limit" in line and "Traceback" not in proc.stdout
        assert not run_dir.exists()  # nothing half-written: the empty run directory is removed
