"""The end of a sweep: the trial table, ``trials.csv`` and the best parameters.

Trials are counted and labelled by the sweeper's rules (:mod:`urbansound.sweep.trials`): a trial
that was queued again shows as ``(retried)``, one that was not run as ``(not run)``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from urbansound.sweep.settings import SweepSettings
from urbansound.sweep.storage import dashboard_command, open_storage
from urbansound.sweep.trials import EXCESS_ATTR, Progress, study_progress, superseded
from urbansound.sweep.urls import display_storage
from urbansound.utils.files import atomic_write


@dataclass
class SweepSummary:
    """The end of a sweep: the study's trials and where they were written.

    ``best`` is None when no trial is COMPLETE; ``no_best`` then says why, and no
    ``best_params.yaml`` is written.
    """

    study_name: str
    storage: str
    table: str
    progress: Progress
    n_trials: int
    best: dict[str, Any] | None
    csv_path: Path | None = None
    best_path: Path | None = None
    dashboard: str = ""
    failed_too_often: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    no_best: str = ""


def trial_rows(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, duration, params, run_dir, error."""
    gone = superseded(trials)
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        state = t.state.name
        if t.number in gone:
            state += " (retried)"
        elif t.system_attrs.get(EXCESS_ATTR):
            state += " (not run)"
        rows.append(
            {
                "trial": t.number,
                "state": state,
                "value": t.value,
                "duration_s": None if duration is None else round(duration, 1),
                **{f"params.{k}": v for k, v in t.params.items()},
                "run_dir": t.user_attrs.get("run_dir", ""),
                "error": t.user_attrs.get("error") or "",
            }
        )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The printed trial table (trial, state, params, value, seconds); floats to 4 digits.

    Full values stay in ``trials.csv``.
    """
    import pandas as pd

    if not rows:
        return "(no trials)"
    param_cols = sorted({k for r in rows for k in r if k.startswith("params.")})
    cols = ["trial", "state", *param_cols, "value", "duration_s"]
    header = ["trial", "state", *(c.removeprefix("params.") for c in param_cols), "value", "s"]
    frame = pd.DataFrame([[_cell(r.get(c)) for c in cols] for r in rows], columns=header)
    return frame.to_string(index=False)


def write_trials_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``rows`` as CSV (full precision) at ``path``, written atomically."""
    import pandas as pd

    buffer = io.StringIO()
    pd.DataFrame(list(rows)).to_csv(buffer, index=False)
    return atomic_write(path, buffer.getvalue())


def summarize(settings: SweepSettings, sweep_dir: Path | None) -> SweepSummary:
    """Read the study back, write ``trials.csv`` and ``best_params.yaml`` into ``sweep_dir``.

    Returns the :class:`SweepSummary` (its paths set where files were written).
    """
    import optuna

    storage = open_storage(settings.storage, password_env=settings.password_env)
    study = optuna.load_study(study_name=settings.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials)
    progress = study_progress(trials)
    best: dict[str, Any] | None = None
    no_best = ""
    if any(t.state == TrialState.COMPLETE for t in trials):
        b = study.best_trial
        best = {
            "study_name": settings.study_name,
            "storage": display_storage(settings.storage),
            "direction": settings.direction,
            "metric": settings.metric_name,
            "best_trial": b.number,
            "best_value": b.value,
            "params": dict(b.params),
            "overrides": list(b.user_attrs.get("overrides", [])),
            "run_dir": b.user_attrs.get("run_dir"),
        }
    elif trials:
        no_best = (
            f"no trial completed ({progress.failed} failed, {progress.pruned} pruned): "
            "no best parameters; the errors are in trials.csv and each job's error.txt"
        )
    else:
        no_best = "the study has no trials: no best parameters"
    summary = SweepSummary(
        study_name=settings.study_name,
        storage=settings.storage,
        table=format_table(rows),
        progress=progress,
        n_trials=settings.n_trials,
        best=best,
        dashboard=dashboard_command(settings.storage, settings.password_env),
        failed_too_often=progress.failed > settings.max_failures,
        rows=rows,
        no_best=no_best,
    )
    if sweep_dir is not None:
        import yaml

        summary.csv_path = write_trials_csv(sweep_dir / "trials.csv", rows)
        if best is not None:
            summary.best_path = atomic_write(
                sweep_dir / "best_params.yaml", yaml.safe_dump(best, sort_keys=False)
            )
    return summary
