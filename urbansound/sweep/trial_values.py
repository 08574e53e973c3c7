"""A finished trial's values: one per objective, and its constraint values.

The sweeper tells a COMPLETE trial the value of each of its study's objectives
(:func:`complete_values`: what the job recorded on the trial, else its return value) and, with
``hydra.sweeper.constraints``, sets its constraint values first with Optuna's
``Trial.set_constraint`` (:func:`record_constraints`), whatever the sampler: TPE, NSGA-II/III
and GP read them back to sample toward feasible trials, and ``best_trial`` / ``best_trials``
leave infeasible ones out.
"""

from __future__ import annotations

from typing import Any

from urbansound.sweep.objectives import RECORDED_ATTR, constraint_values, objective_values
from urbansound.sweep.settings import SweepSettings
from urbansound.sweep.storage import retrying

__all__ = ["complete_values", "record_constraints"]


def complete_values(settings: SweepSettings, returned: Any, user_attrs: Any) -> list[float]:
    """A finished job's objective values, in order (what its job recorded on the trial, else its
    return value: :func:`~urbansound.sweep.objectives.objective_values`); raises ValueError
    naming the objective without a value."""
    recorded = user_attrs.get(RECORDED_ATTR) if isinstance(user_attrs, dict) else None
    return objective_values(settings.objectives, returned, recorded or {})


def record_constraints(
    settings: SweepSettings, trial: Any, values: Any, user_attrs: Any
) -> dict[str, float]:
    """Set the constraint values of the live ``optuna.Trial`` ``trial`` (before it is told);
    returns them by constraint."""
    found = constraint_values(
        settings.constraints,
        metric_names=settings.metric_names,
        values=values,
        user_attrs=user_attrs,
    )
    for key, value in found.items():
        retrying("storing the constraint values", lambda k=key, v=value: trial.set_constraint(k, v))
    return found
