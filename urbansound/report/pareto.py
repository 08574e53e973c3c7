"""The report's view of a study with several objectives or constraints.

- **Pareto front.** A study with several objectives has no single best: its Pareto front
  (Optuna's ``best_trials``: the feasible COMPLETE trials no other feasible one dominates;
  LEAKY random-split trials left out) is shown as a table (trial, each objective, parameters)
  and, for 2 or 3 objectives, as Optuna's Pareto-front plot
  (:func:`urbansound.sweep.records.pareto_front_figure`).
- **Paired tests among the front.** When the first objective is the mean CV accuracy, the
  front's most accurate trial is compared with each other trial of the front across their
  common folds (the report's corrected resampled t-test and Wilcoxon signed-rank test,
  :func:`urbansound.report.stats.paired_comparison`): how much accuracy a cheaper model gives
  up, with its noise.
- **Infeasible trials** (a constraint broken, ``hydra.sweeper.constraints``) are listed apart
  with their constraint values; they are never the best nor on the front.
"""

from __future__ import annotations

from typing import Any

from urbansound.report import stats
from urbansound.report.trials import Sweep, TrialRecord, fmt_param
from urbansound.sweep import records as study_records

__all__ = [
    "front_comparisons",
    "front_records",
    "infeasible_records",
    "pareto_model",
    "pareto_tables",
]


def front_records(sweep: Sweep) -> list[TrialRecord]:
    """The Pareto front's trials (number order), LEAKY trials left out; [] for a study with
    one objective (or none read from a storage)."""
    study = sweep.study
    if study is None or not study.is_multi_objective:
        return []
    leaky = [r.number for r in sweep.trials if r.leaky and r.number is not None]
    numbers = set(study_records.pareto_numbers(study, leave_out=leaky))
    return sorted((r for r in sweep.trials if r.number in numbers), key=lambda r: r.number or 0)


def front_comparisons(sweep: Sweep) -> list[list[str]]:
    """Rows ``[best, other, common folds, mean difference, t-test p, Wilcoxon p]``: the
    front's most accurate trial against each other one (module docstring); [] when the first
    objective is not the mean CV accuracy or fewer than two front trials have per-fold
    results. A pair with fewer than two common folds says so instead of numbers."""
    study = sweep.study
    if study is None or (study.metric_names or ["mean_cv_accuracy"])[0] != "mean_cv_accuracy":
        return []
    front = [r for r in front_records(sweep) if r.folds]
    if len(front) < 2:
        return []
    sign = 1.0 if study.directions[0] == "maximize" else -1.0
    best = max(front, key=lambda r: (sign * float(r.value or 0.0), -(r.number or 0)))
    folds = {f.fold: f for f in best.folds}
    rows = []
    for other in front:
        if other is best:
            continue
        theirs = {f.fold: f for f in other.folds}
        common = [k for k in folds if k in theirs]
        if len(common) < 2:
            rows.append([f"#{best.number}", f"#{other.number}", str(len(common)), "–", "–", "–"])
            continue
        cmp = stats.paired_comparison(
            [folds[k].accuracy for k in common],
            [theirs[k].accuracy for k in common],
            folds=common,
            n_train=[folds[k].n_train for k in common],
            n_test=[folds[k].n_test for k in common],
        )
        rows.append(
            [
                f"#{best.number}",
                f"#{other.number}",
                str(len(common)),
                f"{cmp.mean_difference:+.4f}",
                f"{cmp.ttest.pvalue:.3g}",
                f"{cmp.wilcoxon.pvalue:.3g}",
            ]
        )
    return rows


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
        "paired": pd.DataFrame(paired, columns=_PAIRED)
        if (paired := front_comparisons(sweep))
        else None,
    }


_PAIRED = [
    "most accurate",
    "other Pareto trial",
    "common folds",
    "mean accuracy difference",
    "corrected t-test p",
    "Wilcoxon p",
]
