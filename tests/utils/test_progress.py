"""Tests of urbansound.utils.progress.

Bars on a terminal, clean lines in a file, tqdm's environment honoured.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest

from urbansound.utils import progress
from urbansound.utils.progress import LineProgress, progress_bar, resolve_mode, set_default_mode

# A loop of 50 steps, as the package runs one, with a log line after it (the line that bars used
# to be glued to). argv: mode (or "default"), log interval in seconds.
_CHILD = textwrap.dedent(
    """
    import logging, sys
    from urbansound.utils.progress import progress_bar
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    mode = None if sys.argv[1] == "default" else sys.argv[1]
    bar = progress_bar(total=50, desc="features", unit="clip", mode=mode,
                       interval=float(sys.argv[2]))
    for _ in range(50):
        bar.update(1)
    bar.close()
    logging.info("next log line")
    """
)


def _run(tmp_path: Path, mode: str = "default", interval: float = 0.0, **env: str) -> str:
    """Run the loop with stderr to a file; return what the file holds."""
    out = tmp_path / "stderr.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    with out.open("w") as fh:
        subprocess.run(
            [sys.executable, "-c", _CHILD, mode, str(interval)],
            stderr=fh,
            env={**environ, **env},
            check=True,
            timeout=60,
        )
    return out.read_bytes().decode()  # bytes: read_text() would turn "\r" into "\n"


def test_stderr_to_a_file_gets_lines_never_frames(tmp_path: Path) -> None:
    text = _run(tmp_path)
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[-1] == "INFO next log line"  # on its own line, nothing glued to it
    progress_lines = lines[:-1]
    assert len(progress_lines) == 51  # interval 0: one line per update, then the last one
    assert progress_lines[0].startswith("features: 1/50 clip (2%)")
    assert progress_lines[-1].startswith("features: 50/50 clip (100%)")
    assert progress_lines[-1].endswith(" s") and "done in" in progress_lines[-1]


def test_log_lines_are_periodic(tmp_path: Path) -> None:
    # A long interval: no line during the loop, one at the end.
    lines = _run(tmp_path, interval=3600).splitlines()
    assert len(lines) == 2 and "50/50" in lines[0] and "done in" in lines[0]


@pytest.mark.parametrize("mode", ["default", "log", "bar"])
def test_tqdm_disable_silences_everything(tmp_path: Path, mode: str) -> None:
    assert _run(tmp_path, mode, TQDM_DISABLE="1").splitlines() == ["INFO next log line"]


def test_tqdm_disable_false_values_keep_the_lines(tmp_path: Path) -> None:
    assert "50/50" in _run(tmp_path, TQDM_DISABLE="0")


def test_mode_none_is_silent_and_bar_is_a_bar(tmp_path: Path) -> None:
    assert _run(tmp_path, "none").splitlines() == ["INFO next log line"]
    bar = _run(tmp_path, "bar")
    assert bar.startswith("\rfeatures:   0%|")  # asked for explicitly: tqdm's frames


def test_other_tqdm_variables_reach_tqdm(tmp_path: Path) -> None:
    # tqdm would take our leave=False over TQDM_LEAVE; TQDM_NCOLS sets the width.
    text = _run(tmp_path, "bar", TQDM_NCOLS="40", TQDM_LEAVE="1")
    frames = [f.split("\n")[0] for f in text.split("\r") if "features" in f]
    assert frames and all(len(f) == 40 for f in frames), frames
    last_frame = text.split("\n")[0].split("\r")[-1]
    assert "100%" in last_frame and "50/50" in last_frame  # left in place (leave), a newline


def test_a_terminal_gets_a_bar() -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: stderr is the pty, 80 columns wide (a new pty has 0: no bar fits)
        fcntl.ioctl(2, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.execv(sys.executable, [sys.executable, "-c", _CHILD, "default", "0"])
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the pty
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    assert "\r" in text and "features:" in text and "clip/s" in text
    assert "done in" not in text  # a bar, not the log lines


def test_resolve_mode_and_default() -> None:
    assert resolve_mode("auto", file=io.StringIO()) == "log"
    assert resolve_mode("bar", file=io.StringIO()) == "bar"
    try:
        set_default_mode("none")
        assert resolve_mode(None, file=io.StringIO()) == "none"
    finally:
        set_default_mode("auto")
    with pytest.raises(ValueError, match="progress must be one of auto, bar, log, none"):
        set_default_mode("quiet")
    with pytest.raises(ValueError, match="progress must be one of"):
        progress_bar(total=1, mode="always")


def test_line_progress_iterates_and_reports_postfix() -> None:
    out = io.StringIO()
    seen = list(LineProgress(range(4), desc="epochs", unit="epoch", file=out, interval=0))
    assert seen == [0, 1, 2, 3]
    assert out.getvalue().splitlines()[0].startswith("epochs: 1/4 epoch (25%)")
    out = io.StringIO()
    with progress_bar(total=2, desc="x", mode="log", file=out, interval=3600) as bar:
        bar.set_postfix(acc="0.7312")
        bar.update(2)
    (line,) = out.getvalue().splitlines()
    assert line.startswith("x: 2/2 it (100%)") and ", acc=0.7312, done in" in line
    quiet = io.StringIO()
    progress_bar(total=2, mode="none", file=quiet).close()
    assert quiet.getvalue() == ""
    assert progress.MODES == ("auto", "bar", "log", "none")
