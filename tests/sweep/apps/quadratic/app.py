"""A tiny Hydra task for the sweeper tests (like Hydra's own plugin tests use).

``score = 1 - ((x - 2)^2 + (y - 1)^2) / 100`` (plus a term of the ``branch`` group's keys),
reached linearly over ``epochs`` "epochs", each
reported through :func:`urbansound.sweep.job.epoch_reporter` exactly as the real trainer does. A
pruned job writes ``results.json`` with ``status: pruned`` and re-raises, as ``urbansound.run``
does.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig


@dataclass
class Metrics:
    epoch: int
    mean_test_accuracy: float


def score(x: float, y: float, branch: dict | None = None) -> float:
    """The quadratic's value; a ``branch`` option's keys lower it away from their best."""
    value = 1.0 - ((x - 2.0) ** 2 + (y - 1.0) ** 2) / 100.0
    branch = branch or {}
    if branch.get("kind") == "lin":
        value -= float(branch["a"]) ** 2 / 100.0
    elif branch.get("kind") == "sq":
        value -= ((float(branch["b"]) - 1.0) ** 2 + float(branch["c"]) ** 2) / 100.0 - 0.01
    return value


def task(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from urbansound.config.settings import TrialSettings
    from urbansound.errors import TrialPruned
    from urbansound.sweep.job import epoch_reporter, set_trial_attrs

    out = Path(HydraConfig.get().runtime.output_dir)
    trial = TrialSettings(**cfg.trial)
    if cfg.marker_dir:
        Path(cfg.marker_dir).mkdir(parents=True, exist_ok=True)
        with (Path(cfg.marker_dir) / f"{trial.number}.start").open("a") as marker:
            marker.write(f"{os.getpid()} {out}\n")  # one line per start of this trial
    set_trial_attrs(trial, job_dir=str(out))
    reporter = epoch_reporter(trial)
    final = score(float(cfg.x), float(cfg.y), dict(cfg.branch))
    slow = float(cfg.x) in [float(v) for v in cfg.slow_x]
    try:
        for epoch in range(1, int(cfg.epochs) + 1):
            time.sleep(float(cfg.slow_sleep if slow else cfg.sleep))
            if reporter is not None:
                reporter(Metrics(epoch, final * epoch / int(cfg.epochs)))
    except TrialPruned as pruned:
        (out / "results.json").write_text(json.dumps({"status": "pruned", "epoch": pruned.epoch}))
        raise
    if float(cfg.x) in [float(v) for v in cfg.fail_x]:
        raise RuntimeError(f"boom at x={cfg.x}")
    (out / "results.json").write_text(json.dumps({"status": "complete", "score": final}))
    return final


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return task(cfg)


def cli() -> None:
    """The app's command, with urbansound's error handling: the sweeper raises a user error
    (a bad search space, a storage that stays down) and, as in ``urbansound.run``, the entry
    point prints it as one ``error:`` line, exit status 2."""
    from urbansound.errors import UrbansoundError

    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra lets the error reach us instead of printing it
    try:
        main()
    except UrbansoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
