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

from urbansound.sweep.rules import SEEDED_ATTR
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


def trial_rows(
    trials: Sequence[FrozenTrial],
    *,
    metric_names: Sequence[str] = (),
    pareto: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, duration, params, run_dir, error.

    With several objectives (``metric_names``), ``value`` is the first one's and each has its
    column (``values.<name>``), and ``pareto`` says whether the trial is on the Pareto front
    (trial numbers in ``pareto``); a trial with constraint values has ``feasible``.
    """
    gone = superseded(trials)
    multi = len(metric_names) > 1
    front = set(pareto)
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
        elif t.system_attrs.get(SEEDED_ATTR):
            state += " (warm start)"
        row: dict[str, Any] = {
            "trial": t.number,
            "state": state,
            "value": t.values[0] if t.values else None,
        }
        if multi:
            for i, name in enumerate(metric_names):
                row[f"values.{name}"] = t.values[i] if t.values and i < len(t.values) else None
            row["pareto"] = t.number in front
        if t.constraints:
            row["feasible"] = all(c <= 0.0 for c in t.constraints.values())
        row |= {
            "duration_s": None if duration is None else round(duration, 1),
            **{f"params.{k}": v for k, v in t.params.items()},
            "run_dir": t.user_attrs.get("run_dir", ""),
            "error": t.user_attrs.get("error") or "",
        }
        rows.append(row)
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
    value_cols = [k for k in rows[0] if k.startswith("values.")] or ["value"]
    flags = [k for k in ("pareto", "feasible") if any(k in r for r in rows)]
    cols = ["trial", "state", *param_cols, *value_cols, *flags, "duration_s"]
    header = [
        "trial",
        "state",
        *(c.removeprefix("params.") for c in param_cols),
        *(c.removeprefix("values.") for c in value_cols),
        *flags,
        "s",
    ]
    frame = pd.DataFrame([[_cell(r.get(c)) for c in cols] for r in rows], columns=header)
    return frame.to_string(index=False)


def write_trials_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``rows`` as CSV (full precision) at ``path``, written atomically."""
    import pandas as pd

    buffer = io.StringIO()
    pd.DataFrame(list(rows)).to_csv(buffer, index=False)
    return atomic_write(path, buffer.getvalue())


def _described(t: FrozenTrial, *, values: bool) -> dict[str, Any]:
    """A trial as ``best_params.yaml`` lists it: (number and values,) params, overrides and
    run directory."""
    head: dict[str, Any] = {"trial": t.number, "values": list(t.values)} if values else {}
    return head | {
        "params": dict(t.params),
        "overrides": list(t.user_attrs.get("overrides", [])),
        "run_dir": t.user_attrs.get("run_dir"),
    }


def summarize(settings: SweepSettings, sweep_dir: Path | None) -> SweepSummary:
    """Read the study back, write ``trials.csv`` and ``best_params.yaml`` into ``sweep_dir``.

    Returns the :class:`SweepSummary` (its paths set where files were written).
    """
    import optuna

    storage = open_storage(settings.storage, password_env=settings.password_env)
    study = optuna.load_study(study_name=settings.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    multi = settings.is_multi_objective
    pareto = [t.number for t in study.best_trials] if multi else []
    rows = trial_rows(trials, metric_names=settings.metric_names, pareto=pareto)
    progress = study_progress(trials)
    best: dict[str, Any] | None = None
    no_best = ""
    head = {
        "study_name": settings.study_name,
        "storage": display_storage(settings.storage),
    }
    feasible = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and all(c <= 0.0 for c in t.constraints.values())
    ]
    if multi and pareto:
        best = head | {
            "directions": settings.directions,
            "metrics": settings.metric_names,
            "constraints": [c.text for c in settings.constraints],
            "pareto": [_described(trials[n], values=True) for n in sorted(pareto)],
        }
    elif not multi and feasible:
        b = study.best_trial
        best = head | {
            "direction": settings.directions[0],
            "metric": settings.metric_names[0],
            "best_trial": b.number,
            "best_value": b.value,
            **_described(b, values=False),
        }
    elif any(t.state == TrialState.COMPLETE for t in trials):
        no_best = (
            f"no COMPLETE trial meets the constraints {[c.text for c in settings.constraints]}: "
            "no best parameters; each trial's constraint values are in trials.csv"
        )
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
