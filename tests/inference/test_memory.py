"""An address-space limit (`ulimit -v`) too small for predict is one line naming memory, not an
ImportError, an allocator traceback or an abort in torch's loader."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import cli_env
from tests.inference.models import write_model

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")


def _under_limit(mib: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "urbansound.predict", *args))
    return subprocess.run(
        ["bash", "-c", f"ulimit -v {mib * 1024} && exec {command}"],
        cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow
def test_a_limit_too_small_for_the_features_or_torch_is_one_line_naming_memory(
    tmp_path: Path,
) -> None:
    import soundfile as sf

    model = write_model(tmp_path / "model.safetensors")
    clip = tmp_path / "clip.wav"
    sf.write(clip, (0.1 * np.sin(np.arange(22050) / 7.0)).astype(np.float32), 22050)
    # 200 MiB: not even the feature code loads; 600 MiB: it does, torch (~0.5 GiB) does not
    for mib, doing in [(200, "loading the feature code"), (600, "loading torch")]:
        proc = _under_limit(mib, str(model), str(clip), cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == "", (mib, proc.stderr[-2000:])
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"error: not enough memory for {doing}: the address-space limit ")
        assert f"(ulimit -v) is {mib - 1} MiB" in line or f"is {mib} MiB" in line
    # a limit that is large enough is not refused
    proc = _under_limit(8192, str(model), str(clip), "--jobs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("\n") == 2
