"""The report's two optional evaluations of the winner, as ``python -m urbansound.run`` commands.

Neither trains anything inside the report and neither touches the study: each is one run of the
best trial's own overrides (its ``results.json`` ``overrides`` minus the sweeper's ``trial.*``
and any ``cv=``), launched as a subprocess into ``<report dir>/evaluations/<name>``, whose
``results.json`` the report then reads:

- outer fold (``--evaluate-outer``), for a sweep run with ``cv.outer_fold=k``::

      python -m urbansound.run <best trial's overrides> cv.evaluate_outer=true \\
          hydra.run.dir=<report dir>/evaluations/outer_fold<k>_trial<n>

  trains on every fold but k and tests once on fold k: an unbiased estimate of the chosen
  configuration (the search objective, maximised over trials, is optimistic);
- random split (``--random-split``)::

      python -m urbansound.run <best trial's overrides> cv=random_split \\
          hydra.run.dir=<report dir>/evaluations/random_split_trial<n>

  the tutorial's LEAKY 80/20 split on the same clips, for the protocol comparison.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from urbansound.config.overrides import parse_override
from urbansound.errors import ConfigError, UrbansoundError
from urbansound.report.load import EVALUATIONS, record_from_run_dir
from urbansound.report.trials import TrialRecord
from urbansound.training.results import RunResult

__all__ = [
    "evaluate_outer",
    "evaluate_random_split",
    "evaluation_command",
    "evaluation_dir",
    "shown_command",
]

KINDS = {"outer": ["cv.evaluate_outer=true"], "random_split": ["cv=random_split"]}
# replaced by the evaluation's own; `sweep=<name>` (a named sweep sets hydra.mode=MULTIRUN) would
# start the whole sweep again instead of one run: its swept values are in the overrides already
_DROP = ("trial", "hydra", "cv", "cv.evaluate_outer", "sweep")


def evaluation_dir(report_dir: str | Path, rec: TrialRecord, kind: str) -> Path:
    """Where an evaluation of ``rec`` goes: ``<report dir>/evaluations/<kind>_trial<n>``."""
    tag = f"trial{rec.number}"
    name = f"outer_fold{rec.outer_fold}_{tag}" if kind == "outer" else f"random_split_{tag}"
    return Path(report_dir) / EVALUATIONS / name


def _dropped(text: str) -> bool:
    try:
        parsed = parse_override(text)
    except ConfigError:  # no override at all: kept, and the run says what is wrong with it
        return False
    if parsed is None:
        return False
    key = parsed[0]
    return key in _DROP or key.startswith(("trial.", "hydra.", "hydra/"))


def _override_value(path: Path) -> str:
    text = str(path.resolve())
    if re.fullmatch(r"[\w/.:+@-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def evaluation_command(rec: TrialRecord, *, kind: str, run_dir: str | Path) -> list[str]:
    """The ``python -m urbansound.run`` argv that evaluates ``rec`` into ``run_dir``.

    Raises
    ------
    ConfigError
        When ``rec`` has no ``results.json`` to take its overrides from, or (``kind="outer"``)
        when it held no fold out of the search.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
    if kind == "outer" and rec.outer_fold is None:
        raise ConfigError(
            f"trial {rec.name} did not hold a fold out of the search: run the sweep with "
            "cv.outer_fold=k (k = the fold to keep for the final estimate)"
        )
    if rec.results is None:
        raise ConfigError(
            f"trial {rec.name}: no results.json in its run directory ({rec.run_dir}) to take "
            "its overrides from"
        )
    overrides = [o for o in rec.results.overrides if not _dropped(o)]
    return [
        sys.executable,
        "-m",
        "urbansound.run",
        *overrides,
        *KINDS[kind],
        f"hydra.run.dir={_override_value(Path(run_dir))}",
    ]


def shown_command(argv: list[str]) -> str:
    """``argv`` as a user would type it (``python`` for the interpreter)."""
    return shlex.join(["python", *argv[1:]])


def _run(argv: list[str], run_dir: Path, *, progress: bool) -> RunResult:
    env = dict(os.environ)
    if not progress:
        env["TQDM_DISABLE"] = "1"
    print(f"$ {shown_command(argv)}", flush=True)
    proc = subprocess.run(argv, env=env, check=False)
    rec = record_from_run_dir(run_dir) if (run_dir / "results.json").is_file() else None
    if proc.returncode != 0 or rec is None or rec.results is None:
        raise UrbansoundError(
            f"the evaluation run failed (exit {proc.returncode}; its output is above): "
            f"{shown_command(argv)}"
        )
    return rec.results


def evaluate_outer(rec: TrialRecord, *, out_dir: str | Path, progress: bool = True) -> RunResult:
    """Train ``rec``'s configuration on every fold but its held-out one and test on that fold once
    (a ``python -m urbansound.run`` subprocess writing ``out_dir``); returns its ``results.json``
    as a :class:`~urbansound.training.results.RunResult`.

    Raises
    ------
    ConfigError
        When the trial did not hold a fold out (``cv.outer_fold`` unset).
    UrbansoundError
        When the run fails.
    """
    argv = evaluation_command(rec, kind="outer", run_dir=out_dir)
    return _run(argv, Path(out_dir), progress=progress)


def evaluate_random_split(
    rec: TrialRecord, *, out_dir: str | Path, progress: bool = True
) -> RunResult:
    """Evaluate ``rec``'s configuration on the tutorial's LEAKY random 80/20 split (same clips);
    returns the run's ``results.json`` as a :class:`~urbansound.training.results.RunResult`."""
    argv = evaluation_command(rec, kind="random_split", run_dir=out_dir)
    return _run(argv, Path(out_dir), progress=progress)
