"""optuna-dashboard shows a two-objective study of the sweeper natively: both objective names
and its Pareto-front plot, in the real browser the report tests use (headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .test_sweep import load, run_sweep  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chromium() -> str | None:
    return next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))),
        None,
    )


def test_the_dashboard_shows_both_objectives_and_the_pareto_front(
    run_sweep,  # noqa: F811
    tmp_path: Path,
) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed (apt-get install chromium; .ci/services.sh does it)")
    run_sweep(
        "x=0,1,2,3",
        "y=0,1",
        "epochs=1",
        "hydra.sweeper.objectives=[score,costs.cost]",
        "hydra.sweeper.direction=[maximize,minimize]",
    )
    study = load(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    port = _free_port()
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    server = subprocess.Popen(
        [str(dashboard), storage, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90  # a bound on waiting, not a timing assertion
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as response:
                    (summary,) = json.loads(response.read())["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, "optuna-dashboard exited"
                assert time.monotonic() < deadline, "optuna-dashboard did not answer"
                time.sleep(0.3)
        assert summary["directions"] == ["maximize", "minimize"]
        page = f"{base}/dashboard/studies/{summary['study_id']}"
        common = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=20000",
            "--window-size=1400,2400",
        ]
        dom = subprocess.run(
            [*common, "--dump-dom", page], capture_output=True, text=True, timeout=180, check=True
        ).stdout
        shot = tmp_path / "dashboard.png"
        subprocess.run(
            [*common, f"--screenshot={shot}", page], capture_output=True, timeout=180, check=True
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    heading = dom.find(">Pareto Front<")
    assert heading > 0, dom[:2000]
    plot = re.search(r'id="graph-pareto-front"(.*?)</svg>', dom[heading:], re.S)
    assert plot is not None and "main-svg" in plot.group(1)  # plotly drew the front
    # the objectives by name: the metric names the sweeper set (study.set_metric_names)
    assert study.metric_names == ["score", "costs.cost"]
    for name in study.metric_names:
        assert f">{name}<" in dom[heading:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
