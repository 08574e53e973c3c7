"""A study's objectives and constraints: their names, directions and the values a trial records.

- **Objectives.** ``hydra.sweeper.objectives`` names them (null: the one ``metric_name``) and
  ``hydra.sweeper.direction`` gives one direction, or one per objective
  (:func:`parse_objectives`). A name is one of :data:`ALIASES` (the measured costs a run writes
  into ``results.json``'s ``costs``, and ``mean_cv_accuracy``) or a dotted path of any number in
  ``results.json`` (``std_accuracy``, ``durations.features``).
- **Constraints.** ``hydra.sweeper.constraints`` (and ``fit.constraints``): ``name <= number``
  or ``name >= number``, where the name is an objective or any value the job records
  (:func:`parse_constraint`). A trial is feasible when every constraint holds; its violation
  (``value - bound`` for ``<=``, ``bound - value`` for ``>=``) is what Optuna stores as the
  constraint value (feasible: <= 0).
- **Values.** A job of the sweep records the value of every name the sweeper asks for (its
  objectives and the constraints' names, :func:`record_values`) in the trial's user attribute
  :data:`RECORDED_ATTR`; the sweeper reads an objective's value there first, then from the
  task's return value (a number for the first objective, a sequence with one value per
  objective, or a mapping by name: :func:`objective_values`).

Nothing here imports Optuna: the report and ``fit`` use it freely.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from urbansound.errors import ConfigError

__all__ = [
    "ALIASES",
    "DIRECTIONS",
    "MEAN_CV_ACCURACY",
    "RECORDED_ATTR",
    "Constraint",
    "Objective",
    "constraint_values",
    "lookup",
    "objective_values",
    "parse_constraint",
    "parse_constraints",
    "parse_objectives",
    "record_values",
    "trial_value",
]

#: The default (and first) objective: the mean accuracy over the CV folds.
MEAN_CV_ACCURACY = "mean_cv_accuracy"
#: Objective names that stand for a value of ``results.json`` (a dotted path there). The costs
#: are measured by every complete run (:mod:`urbansound.experiment.costs`).
ALIASES = {
    MEAN_CV_ACCURACY: "mean_accuracy",
    "inference_ms_per_clip": "costs.inference_ms_per_clip",
    "model_ms_per_clip": "costs.model_ms_per_clip",
    "model_bytes": "costs.model_bytes",
    "train_seconds": "costs.train_seconds",
}
DIRECTIONS = ("maximize", "minimize")
#: The trial's user attribute holding ``{name: value}`` of every value the sweeper asked the job
#: to record (its objectives and the constraints' names).
RECORDED_ATTR = "recorded"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*\Z")
_CONSTRAINT = re.compile(
    r"\s*(?P<name>[^<>=!\s]+)\s*(?P<op><=|>=|==|!=|=|<|>)\s*(?P<bound>\S*)\s*\Z"
)


@dataclass(frozen=True)
class Objective:
    """One objective of a study: its name (the dashboard's metric name) and direction."""

    name: str
    direction: str  # "maximize" | "minimize"

    @property
    def path(self) -> str:
        """Where the value is in ``results.json`` (a dotted path)."""
        return ALIASES.get(self.name, self.name)


@dataclass(frozen=True)
class Constraint:
    """``name <= bound`` or ``name >= bound``: a bound on an objective or a recorded value."""

    name: str
    op: str  # "<=" | ">="
    bound: float

    @property
    def text(self) -> str:
        """The constraint as written canonically (``inference_ms_per_clip<=5``): its key among
        the trial's constraint values."""
        return f"{self.name}{self.op}{self.bound:g}"

    def violation(self, value: float) -> float:
        """By how much ``value`` breaks the bound (<= 0: it holds), Optuna's constraint value."""
        return value - self.bound if self.op == "<=" else self.bound - value

    def holds(self, value: float) -> bool:
        """Whether ``value`` satisfies the constraint."""
        return self.violation(value) <= 0.0


def _check_name(name: Any, key: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{key}: {name!r} is no value name; name an objective ({', '.join(ALIASES)}) or a "
            "dotted path of a number in results.json (e.g. durations.features)"
        )
    return name


def parse_objectives(objectives: Any, direction: Any, metric_name: Any) -> tuple[Objective, ...]:
    """The study's objectives from ``hydra.sweeper.objectives``, ``direction`` and
    ``metric_name``.

    ``objectives`` null means one objective named ``metric_name``. ``direction`` is one of
    :data:`DIRECTIONS`, or a list of them with one per objective (a single direction applies to
    a single objective only).

    Raises
    ------
    ConfigError
        One line naming the ``hydra.sweeper`` key that is wrong.
    """
    if objectives is None:
        names = [_check_name(metric_name, "hydra.sweeper.metric_name")]
    elif isinstance(objectives, str) or not isinstance(objectives, Sequence) or not objectives:
        raise ConfigError(
            "hydra.sweeper.objectives must be a non-empty list of value names (e.g. "
            f"[{MEAN_CV_ACCURACY},inference_ms_per_clip]) or null, got {objectives!r}"
        )
    else:
        names = [_check_name(n, "hydra.sweeper.objectives") for n in objectives]
        if len(set(names)) != len(names):
            raise ConfigError(f"hydra.sweeper.objectives lists a name twice: {names}")
    directions = [direction] if isinstance(direction, str) else direction
    if (
        not isinstance(directions, Sequence)
        or len(directions) != len(names)
        or any(d not in DIRECTIONS for d in directions)
    ):
        wanted = "maximize or minimize" if len(names) == 1 else f"a list of {len(names)}"
        raise ConfigError(
            f"hydra.sweeper.direction must be {wanted} (one of maximize, minimize per objective "
            f"of {names}), got {direction!r}"
        )
    return tuple(Objective(n, d) for n, d in zip(names, directions, strict=True))


def parse_constraint(text: Any, *, key: str) -> Constraint:
    """``"name <= number"`` or ``"name >= number"`` as a :class:`Constraint`.

    Raises
    ------
    ConfigError
        One line naming ``key`` and the constraint: no name, another operator (a strict ``<``
        cannot be told from ``<=`` by Optuna's rule, feasible means a violation <= 0), or a
        bound that is no finite number.
    """
    match = _CONSTRAINT.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(
            f"{key}: {text!r} is no constraint; write NAME<=NUMBER or NAME>=NUMBER "
            "(e.g. 'inference_ms_per_clip<=5')"
        )
    name, op, bound = match["name"], match["op"], match["bound"]
    _check_name(name, f"{key}: {text!r}")
    if op not in ("<=", ">="):
        raise ConfigError(
            f"{key}: {text!r} uses {op}; a constraint is NAME<=NUMBER or NAME>=NUMBER (a bound "
            "holds when the value equals it)"
        )
    try:
        number = float(bound)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"{key}: {text!r}: the bound {bound!r} is no finite number")
    return Constraint(name, op, number)


def parse_constraints(value: Any, *, key: str) -> tuple[Constraint, ...]:
    """A list of constraint texts (or null) as :class:`Constraint` s, each checked; a name
    bounded twice the same way is refused."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(
            f"{key} must be a list of constraints such as ['inference_ms_per_clip<=5'], got "
            f"{value!r}"
        )
    out = tuple(parse_constraint(v, key=key) for v in value)
    seen = [(c.name, c.op) for c in out]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"{key} bounds a value twice the same way: {list(value)}")
    return out


def lookup(data: Any, path: str) -> float | None:
    """The number at dotted ``path`` of ``data`` (nested mappings; list items by index), or
    None when there is none there (a missing key, a bool, text, NaN)."""
    node = data
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    if isinstance(node, bool) or not isinstance(node, int | float) or math.isnan(node):
        return None
    return float(node)


def _named(recorded: Mapping[str, Any], name: str) -> float | None:
    """``recorded[name]`` (recorded values are keyed by their whole name, dots included), else
    the number at dotted path ``name``."""
    found = lookup({"v": recorded.get(name)}, "v") if name in recorded else None
    return found if found is not None else lookup(recorded, name)


def record_values(results: Mapping[str, Any], names: Sequence[str]) -> dict[str, float]:
    """``{name: value}`` of each of ``names`` found in a run's ``results.json`` dict (aliases
    resolved); a name without a number there is left out."""
    out = {}
    for name in names:
        value = lookup(results, ALIASES.get(name, name))
        if value is not None:
            out[name] = value
    return out


def trial_value(
    name: str,
    *,
    metric_names: Sequence[str] = (),
    values: Sequence[float] | None = None,
    user_attrs: Mapping[str, Any] | None = None,
) -> float | None:
    """A finished trial's value of ``name``: one of its objective values (by its study's metric
    names), else what its job recorded (:data:`RECORDED_ATTR`), else a user attribute of that
    name (the measured costs are user attributes too); None when it has none."""
    if values is not None and name in metric_names:
        value = values[list(metric_names).index(name)]
        return None if value is None or math.isnan(value) else float(value)
    attrs = user_attrs or {}
    recorded = attrs.get(RECORDED_ATTR)
    if isinstance(recorded, Mapping) and (found := _named(recorded, name)) is not None:
        return found
    return lookup(attrs, name)


def objective_values(
    objectives: Sequence[Objective], returned: Any, recorded: Mapping[str, Any]
) -> list[float]:
    """The values of a finished job's objectives, in order.

    Each objective's value is the one its job recorded (``recorded``, the trial's
    :data:`RECORDED_ATTR`), else the task's return value's: a mapping's entry of that name (or
    path), a sequence's entry at the objective's position (one per objective), or a number for
    the first objective.

    Raises
    ------
    ValueError
        An objective without a value, or one that is NaN, saying which and what was returned.
    """
    out = []
    for i, objective in enumerate(objectives):
        value = _named(recorded, objective.name)
        if value is None and isinstance(returned, Mapping):
            value = lookup(returned, objective.name)
            if value is None:
                value = lookup(returned, objective.path)
        elif value is None and isinstance(returned, list | tuple):
            if len(returned) == len(objectives):
                value = lookup({"v": returned[i]}, "v")
        elif value is None and i == 0:
            value = lookup({"v": returned}, "v")
        if value is None:
            raise ValueError(
                f"no value of objective {objective.name} (the job returned {returned!r} and "
                f"recorded {dict(recorded) or 'nothing'}; results.json has no number at "
                f"{objective.path})"
            )
        out.append(value)
    return out


def constraint_values(
    constraints: Sequence[Constraint],
    *,
    metric_names: Sequence[str] = (),
    values: Sequence[float] | None = None,
    user_attrs: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Optuna's constraint values of a finished trial by constraint (its canonical text,
    ``inference_ms_per_clip<=5``): the violation (<= 0: it holds), ``inf`` for a value the
    trial does not have (it cannot be shown to hold, so the trial is infeasible)."""
    out = {}
    for c in constraints:
        value = trial_value(c.name, metric_names=metric_names, values=values, user_attrs=user_attrs)
        out[c.text] = math.inf if value is None else c.violation(value)
    return out
