"""The report's view of a study with several objectives or constraints.

- **Pareto front.** A study with several objectives has no single best: its Pareto front
  (Optuna's ``best_trials``: the feasible COMPLETE trials no other feasible one dominates;
  LEAKY random-split trials left out) is shown as a table (trial, each objective, parameters)
  and, for 2 or 3 objectives, as Optuna's Pareto-front plot
  (:func:`urbansound.sweep.records.pareto_front_figure`).
- **Infeasible trials** (a constraint broken, ``hydra.sweeper.constraints``) are listed apart
  with their constraint values; they are never the best nor on the front.
"""

from __future__ import annotations

from typing import Any

from urbansound.report.trials import Sweep, TrialRecord, fmt_param
from urbansound.sweep import records as study_records

__all__ = ["front_records", "infeasible_records", "pareto_model", "pareto_tables"]


def front_records(sweep: Sweep) -> list[TrialRecord]:
    """The Pareto front's trials (number order), LEAKY trials left out; [] for a study with
    one objective (or none read from a storage)."""
    study = sweep.study
    if study is None or not study.is_multi_objective:
        return []
    leaky = [r.number for r in sweep.trials if r.leaky and r.number is not None]
    numbers = set(study_records.pareto_numbers(study, leave_out=leaky))
    return sorted((r for r in sweep.trials if r.number in numbers), key=lambda r: r.number or 0)


def infeasible_records(sweep: Sweep) -> list[TrialRecord]:
    """The COMPLETE trials that broke a constraint, in number order."""
    return [r for r in sweep.trials if r.state == "COMPLETE" and not r.feasible]


def _value_cells(r: TrialRecord, n: int) -> list[str]:
    values = list(r.values or ([r.value] if r.value is not None else []))
    return [f"{v:.4g}" if i < len(values) else "–" for i, v in enumerate(values[:n])] + ["–"] * max(
        0, n - len(values)
    )


def pareto_model(sweep: Sweep) -> dict[str, Any] | None:
    """What the pages show of the front and the infeasible trials: ``{"metrics", "front":
    (header, rows) or None, "infeasible": (header, rows)}``; None when the study has one
    objective and no infeasible trial."""
    study = sweep.study
    multi = study is not None and study.is_multi_objective
    infeasible = infeasible_records(sweep)
    if not multi and not infeasible:
        return None
    names = list(study.metric_names) if study is not None else []
    if not names and study is not None:
        names = [f"objective {i}" for i in range(len(study.directions))]
    directions = list(study.directions) if study is not None else []
    header = ["trial", *(f"{n} ({d[:3]})" for n, d in zip(names, directions, strict=False))]
    front = [
        [f"#{r.number}", *_value_cells(r, len(names)), r.label()] for r in front_records(sweep)
    ]
    off = [
        [
            f"#{r.number}",
            *_value_cells(r, len(names)),
            ", ".join(f"{k}: {fmt_param(v)}" for k, v in r.constraints.items()),
            r.label(),
        ]
        for r in infeasible
    ]
    return {
        "metrics": names,
        "front": ([*header, "parameters"], front) if multi else None,
        "infeasible": ([*header, "constraint values (> 0: broken)", "parameters"], off),
    }


def pareto_tables(sweep: Sweep) -> dict[str, Any] | None:
    """:func:`pareto_model` with its tables as ``pandas.DataFrame`` s (None where empty), the
    metric names joined: what the report's templates show."""
    import pandas as pd

    found = pareto_model(sweep)
    if found is None:
        return None
    front, off = found["front"], found["infeasible"]
    return {
        "metrics": ", ".join(found["metrics"]),
        "front": pd.DataFrame(front[1], columns=front[0]) if front is not None else None,
        "infeasible": pd.DataFrame(off[1], columns=off[0]) if off[1] else None,
    }
