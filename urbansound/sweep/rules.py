"""The rules every reader of a study shares, written once: which runs are LEAKY, which trial
is the best, a run's overrides as parameters, and where a trial came from.

- :func:`is_leaky`: a run evaluated on the LEAKY random split (never the best);
- :func:`ranked` and :func:`best_trial`: the feasible COMPLETE trials best first, and the best
  of them that is not leaky (an infeasible trial, one that broke a constraint, is never ranked);
- :func:`chosen_by_rule`: ``fit``'s rule over a study's trials (``fit.objective``,
  ``fit.constraints``; a study with several objectives needs one);
- :func:`override_params`: a run's ``key=value`` overrides as parameters;
- :data:`SEEDED_ATTR`: the system attribute of a trial a warm start copied from another study
  or run (:mod:`urbansound.sweep.seeding`).

Nothing here imports Optuna: the report, ``fit`` and the sweeper use it freely.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from urbansound.config.overrides import parse_override
from urbansound.errors import ConfigError
from urbansound.sweep.objectives import Constraint, trial_value

if TYPE_CHECKING:
    from urbansound.training.results import RunResult

__all__ = [
    "RANDOM_SPLIT",
    "SEEDED_ATTR",
    "Ranked",
    "best_trial",
    "chosen_by_rule",
    "is_leaky",
    "override_params",
    "ranked",
]

#: Set on a trial copied from another study by ``hydra.sweeper.warm_start``: where it came from
#: (``{"storage", "study_name", "number"}``, or ``{"run_dir"}``). It does not count toward
#: ``n_trials``: the budget is the study's own trials.
SEEDED_ATTR = "urbansound:warm_start"

#: ``cv.name`` of the tutorial's random 80/20 split: slices of one recording end up in train and
#: test, so its accuracy is inflated (LEAKY) and never the best.
RANDOM_SPLIT = "random_split"


def is_leaky(
    results: RunResult | None,
    config: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> bool:
    """True for a run evaluated on the LEAKY random split.

    The run's ``results.json`` says so (``leaky``); without readable results, its
    ``config.yaml`` (``cv.name``) or, without either, its swept ``cv`` choice.
    """
    if results is not None:
        return bool(results.leaky)
    cv = (config or {}).get("cv") or {}
    return cv.get("name") == RANDOM_SPLIT or (params or {}).get("cv") == RANDOM_SPLIT


class Ranked(Protocol):
    """What :func:`ranked` needs of a trial: its number, state, value and feasibility."""

    @property
    def number(self) -> int | None: ...

    @property
    def state(self) -> str: ...

    @property
    def value(self) -> float | None: ...

    @property
    def feasible(self) -> bool: ...


T = TypeVar("T", bound=Ranked)


def ranked(trials: Iterable[T], *, direction: str = "maximize") -> list[T]:
    """The feasible COMPLETE trials with a finite value, best first (ties: the lower number
    first). An infeasible trial (a constraint broken) is never ranked."""
    done = [
        t
        for t in trials
        if t.state == "COMPLETE" and t.value is not None and math.isfinite(t.value) and t.feasible
    ]
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(done, key=lambda t: (sign * float(t.value or 0.0), t.number or 0))


def best_trial(
    trials: Iterable[T], *, direction: str = "maximize", leaky: Callable[[T], bool]
) -> T | None:
    """The best feasible COMPLETE trial not evaluated on the LEAKY random split; None when there
    is none.

    ``leaky`` tells a leaky trial (e.g. :func:`is_leaky` of its run directory's results); it is
    asked best first, and no further than the first trial that is not.
    """
    return next((t for t in ranked(trials, direction=direction) if not leaky(t)), None)


def override_params(overrides: Sequence[str], *, skip: Sequence[str] = ()) -> dict[str, Any]:
    """A run's ``key=value`` overrides as ``{key: value}``, skipping keys under ``skip`` prefixes
    (e.g. the sweeper's ``trial``); sweeps, deletions and text that is no override are left out.
    Lists and dicts are kept as written (they are shown and compared as text)."""
    out: dict[str, Any] = {}
    for text in overrides:
        try:
            parsed = parse_override(text)
        except ConfigError:
            continue
        if parsed is None:
            continue
        key, value = parsed
        if any(key == s or key.startswith((s + ".", s + "/")) for s in skip):
            continue
        if isinstance(value, Mapping | list | tuple):
            value = text.split("=", 1)[1]
        out[key] = value
    return out


def chosen_by_rule(
    study: Any, *, objective: str | None, constraints: Sequence[Constraint], where: str
) -> list[Any]:
    """``fit``'s rule: the COMPLETE feasible trials of ``study``
    (:class:`~urbansound.sweep.records.StudyRecords`) that meet ``constraints``
    (``fit.constraints``), best first by ``objective`` (``fit.objective``; default: the study's
    only objective); ties by trial number. ``where`` names the study in messages.

    Raises
    ------
    ConfigError
        A study with several objectives and no ``fit.objective`` (the message lists its Pareto
        trials, number and values, and how to choose), or an objective the study does not have.
    """
    names = list(study.metric_names) or ["value"]
    if objective is None and study.is_multi_objective:
        front = {t.number: t for t in study.trials if t.number in set(study.pareto)}
        listed = "; ".join(
            f"trial {n} ("
            + ", ".join(f"{m} {v:.4g}" for m, v in zip(names, front[n].values or [], strict=False))
            + ")"
            for n in sorted(front)
        )
        raise ConfigError(
            f"{where} has {len(names)} objectives ({', '.join(names)}): choose a trial with "
            f"fit.trial=<n> or a rule with fit.objective=<name> (and fit.constraints); Pareto "
            f"trials: {listed or 'none'}"
        )
    index = 0
    if objective is not None:
        if objective not in names:
            raise ConfigError(
                f"fit.objective={objective}: {where} optimises {', '.join(names)}; name one of them"
            )
        index = names.index(objective)
    sign = -1.0 if study.directions[index] == "maximize" else 1.0

    def value(t: Any) -> float | None:
        values = t.values if t.values is not None else [t.value]
        v = values[index] if index < len(values) else None
        return None if v is None or not math.isfinite(v) else float(v)

    def meets(t: Any) -> bool:
        for c in constraints:
            found = trial_value(
                c.name, metric_names=names, values=t.values, user_attrs=t.user_attrs
            )
            if found is None or not c.holds(found):
                return False
        return True

    done = [
        t
        for t in study.trials
        if t.state == "COMPLETE" and value(t) is not None and t.feasible and meets(t)
    ]
    return sorted(done, key=lambda t: (sign * float(value(t) or 0.0), t.number))
