"""A study's trials as plain records, and what needs a study object: the Optuna plots.

The one place outside the sweeper that touches Optuna: readers such as :mod:`urbansound.report`
get :class:`StudyRecords` (dataclasses of plain values) from a storage with :func:`load_study`,
or build them from run directories themselves, and hand them back here for what needs a study
object (fANOVA importances, Optuna's plotly and matplotlib visualisations, the Pareto front).
Those functions rebuild an in-memory study from the records with every trial at its own number
(a trial that did not finish is a FAIL placeholder there, which no plot draws), its study's
directions, metric names and constraint values, so the plots number and name trials as
optuna-dashboard does; a sweep that has only run directories (Hydra's basic sweeper) gets the
same plots as one with a storage.

The rules every reader shares (the LEAKY split, the best trial) are
:mod:`urbansound.sweep.rules`'; the Pareto front of a study with several objectives is Optuna's
(``best_trials``, :func:`pareto_numbers`).

Storage strings are those of ``hydra.sweeper.storage``: an SQLAlchemy URL (``sqlite:///...``,
``postgresql://...``) or a file path for Optuna's journal storage. They are opened by
:func:`urbansound.sweep.storage.open_storage` without creating anything.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from urbansound.errors import ConfigError
from urbansound.sweep._compat import quiet_optuna
from urbansound.sweep.rules import SEEDED_ATTR
from urbansound.sweep.storage import open_storage

__all__ = [
    "StudyRecords",
    "StudyTrial",
    "load_study",
    "optimization_history_figure",
    "parallel_coordinate_figure",
    "param_importances",
    "param_importances_figure",
    "pareto_front_figure",
    "pareto_numbers",
    "study_names",
]

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
RUN_DIR_ATTRS = ("run_dir", "job_dir", "output_dir", "run_directory")


@dataclass
class StudyTrial:
    """One Optuna trial in plain values.

    ``distributions`` holds each parameter's Optuna distribution as JSON
    (``optuna.distributions.distribution_to_json``); empty when the trial was not read from a
    storage, in which case distributions are inferred from the values. ``intermediate_values``
    maps the epoch (step) to the mean CV accuracy reported then.
    """

    number: int
    state: str  # one of STATES
    value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    distributions: dict[str, str] = field(default_factory=dict)
    intermediate_values: dict[int, float] = field(default_factory=dict)
    duration_s: float | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    completed: float | None = None  # POSIX time the trial finished (None: unknown or running)
    # Every objective's value, in the study's order (``value`` is the first); None: none.
    values: list[float] | None = None
    # Optuna's constraint values by name (``inference_ms_per_clip<=5``: value - 5); feasible when
    # every one is <= 0.
    constraints: dict[str, float] = field(default_factory=dict)
    # Where a warm start copied the trial from ({"storage", "study_name", "number"} or
    # {"run_dir"}); None for a trial of this study's own.
    seeded_from: dict[str, Any] | None = None

    @property
    def feasible(self) -> bool:
        """True when every constraint holds (a study without constraints: always)."""
        return all(v <= 0.0 for v in self.constraints.values())

    @property
    def run_dir(self) -> Path | None:
        """The trial's run directory, as the job recorded it (None when it has none)."""
        for key in RUN_DIR_ATTRS:
            if self.user_attrs.get(key):
                return Path(str(self.user_attrs[key]))
        return None


@dataclass
class StudyRecords:
    """A study in plain values: its name, storage, direction and trials (by number).

    ``direction`` is the first objective's; ``directions`` and ``metric_names`` hold every
    objective's (empty: the one ``direction``, unnamed). ``best_number`` / ``best_value`` are
    Optuna's own best trial of a single-objective study (over every COMPLETE, feasible trial,
    whatever its protocol); None when no trial completed, the study has several objectives, or
    the records hold no storage's study. ``pareto`` is Optuna's Pareto front (``best_trials``)
    of a study with several objectives, by trial number.
    """

    name: str
    direction: str  # "maximize" | "minimize"
    trials: list[StudyTrial]
    storage: str | None = None
    best_number: int | None = None
    best_value: float | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    directions: list[str] = field(default_factory=list)
    metric_names: list[str] = field(default_factory=list)
    pareto: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.directions:
            self.directions = [self.direction]

    @property
    def is_multi_objective(self) -> bool:
        """True for a study with several objectives."""
        return len(self.directions) > 1

    @property
    def metric(self) -> str:
        """The first objective's name (``Objective Value`` when the study named none)."""
        return self.metric_names[0] if self.metric_names else "Objective Value"


# ---------------------------------------------------------------------------------------------
# Reading a storage


def study_names(storage: str, *, password_env: str | None = None) -> list[str]:
    """The names of the studies ``storage`` holds.

    ``password_env``: the environment variable holding the storage's password (as the sweep's
    ``hydra.sweeper.storage_password_env`` named it).

    Raises
    ------
    ConfigError
        When the storage cannot be opened (a missing SQLite file is not created).
    """
    import optuna

    opened = open_storage(storage, create=False, password_env=password_env)
    with quiet_optuna(info=False):
        try:
            return optuna.study.get_all_study_names(storage=opened)
        except Exception as exc:  # a journal file whose lines are no Optuna log
            raise ConfigError(f"cannot open the study storage ({exc})") from None


def load_study(storage: str, study_name: str, *, password_env: str | None = None) -> StudyRecords:
    """Every trial of one study, read from its storage, as :class:`StudyRecords`.

    ``password_env``: as for :func:`study_names`.

    Raises
    ------
    ConfigError
        When the storage cannot be opened or the study is not there.
    """
    import optuna

    opened = open_storage(storage, create=False, password_env=password_env)
    with quiet_optuna(info=False):
        try:
            study = optuna.load_study(study_name=study_name, storage=opened)
        except KeyError:
            raise ConfigError(f"no study {study_name} in the storage") from None
        trials = [_plain_trial(t) for t in study.get_trials(deepcopy=False)]
        directions = [d.name.lower() for d in study.directions]
        best, pareto = None, []
        if len(directions) == 1 and any(t.state == "COMPLETE" and t.feasible for t in trials):
            best = study.best_trial
        elif len(directions) > 1:
            pareto = sorted(t.number for t in study.best_trials)
        return StudyRecords(
            name=study.study_name,
            direction=directions[0],
            trials=trials,
            storage=storage,
            best_number=best.number if best else None,
            best_value=float(best.value) if best else None,
            user_attrs=dict(study.user_attrs),
            directions=directions,
            metric_names=list(study.metric_names or []),
            pareto=pareto,
        )


def _plain_trial(t: Any) -> StudyTrial:
    """An Optuna ``FrozenTrial`` as a :class:`StudyTrial`."""
    from optuna.distributions import distribution_to_json

    error = t.user_attrs.get("error") or t.system_attrs.get("fail_reason")
    values = [float(v) for v in t.values] if t.values is not None else None
    seeded = t.system_attrs.get(SEEDED_ATTR)
    return StudyTrial(
        number=t.number,
        state=t.state.name,
        value=values[0] if values else None,
        params=dict(t.params),
        distributions={k: distribution_to_json(d) for k, d in t.distributions.items()},
        intermediate_values={int(k): float(v) for k, v in t.intermediate_values.items()},
        duration_s=t.duration.total_seconds() if t.duration is not None else None,
        user_attrs=dict(t.user_attrs),
        error=str(error) if error else None,
        completed=t.datetime_complete.timestamp() if t.datetime_complete else None,
        values=values,
        constraints={str(k): float(v) for k, v in t.constraints.items()},
        seeded_from=dict(seeded) if isinstance(seeded, Mapping) else None,
    )


# ---------------------------------------------------------------------------------------------
# Plots and importances (an in-memory study rebuilt from the records)


def _distributions(trials: Sequence[StudyTrial]) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
        json_to_distribution,
    )

    dists: dict[str, Any] = {}
    values: dict[str, list[Any]] = {}
    for t in trials:
        for k, v in t.params.items():
            if k in t.distributions and k not in dists:
                dists[k] = json_to_distribution(t.distributions[k])
            values.setdefault(k, []).append(v)
    for k, vs in values.items():
        if k in dists:
            continue
        if all(isinstance(v, int) and not isinstance(v, bool) for v in vs):
            dists[k] = IntDistribution(min(vs), max(vs))
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in vs):
            dists[k] = FloatDistribution(float(min(vs)), float(max(vs)))
        else:
            dists[k] = CategoricalDistribution(sorted({_choice(v) for v in vs}, key=str))
    return dists


def _choice(v: Any) -> Any:
    return v if v is None or isinstance(v, bool | int | float | str) else json.dumps(v)


def _study(
    records: StudyRecords | Sequence[StudyTrial],
    *,
    direction: str = "maximize",
    leave_out: Iterable[int] = (),
) -> Any:
    """An in-memory Optuna study of the records: every trial at its own number (one that did not
    finish, or one left out, as a FAIL placeholder), with the study's directions, metric names
    and constraint values."""
    if isinstance(records, StudyRecords):
        trials, name = records.trials, records.name
        directions, names = records.directions, records.metric_names
    else:
        trials, name, directions, names = list(records), "records", [direction], []
    import optuna
    from optuna.distributions import CategoricalDistribution

    skip = set(leave_out)
    with quiet_optuna(info=False):
        done = {
            t.number: t
            for t in trials
            if t.state in ("COMPLETE", "PRUNED") and t.number not in skip and t.number >= 0
        }
        dists = _distributions(list(done.values()))
        study = optuna.create_study(study_name=name, directions=directions)
        if names and len(names) == len(directions):
            study.set_metric_names(list(names))
        for number in range(max(done, default=-1) + 1):
            t = done.get(number)
            if t is None or (t.state == "COMPLETE" and _values(t, directions) is None):
                study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
                continue
            params = {
                k: (_choice(v) if isinstance(dists[k], CategoricalDistribution) else v)
                for k, v in t.params.items()
            }
            state = optuna.trial.TrialState[t.state]
            study.add_trial(
                optuna.trial.create_trial(
                    state=state,
                    values=_values(t, directions) if state.name == "COMPLETE" else None,
                    params=params,
                    distributions={k: dists[k] for k in params},
                    intermediate_values=dict(t.intermediate_values) if len(directions) == 1 else {},
                    constraints=dict(t.constraints) or None,
                )
            )
    return study


def _values(t: StudyTrial, directions: Sequence[str]) -> list[float] | None:
    """A COMPLETE trial's objective values, one per direction; None when it lacks one."""
    values = t.values if t.values is not None else ([t.value] if t.value is not None else None)
    if values is None or len(values) != len(directions):
        return None
    return list(values)


def _target(study: Any) -> dict[str, Any]:
    """The keyword arguments that plot a study's first objective under its metric's name."""
    names = study.metric_names or ["Objective Value"]
    if len(study.directions) == 1:
        return {"target_name": names[0]}
    return {"target": lambda t: t.values[0], "target_name": names[0]}


def _complete_with_params(study: Any) -> list[Any]:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.params]


def param_importances(
    records: StudyRecords | Sequence[StudyTrial], *, direction: str = "maximize"
) -> dict[str, float]:
    """fANOVA importance of each parameter (seed 0) for the first objective, largest first; {}
    with < 2 COMPLETE trials."""
    study = _study(records, direction=direction)
    if len(_complete_with_params(study)) < 2:
        return {}
    import optuna

    target = _target(study).get("target")
    with quiet_optuna(info=False):
        # fANOVA warns when a parameter never varied; the importance is still defined (0)
        warnings.simplefilter("ignore", UserWarning)
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
        return {k: float(v) for k, v in found.items()}


def optimization_history_figure(
    records: StudyRecords | Sequence[StudyTrial],
    *,
    direction: str = "maximize",
    backend: str = "plotly",
    leave_out: Iterable[int] = (),
) -> Any:
    """Optuna's optimisation history of the COMPLETE trials (the first objective's, under its
    metric's name, at Optuna's trial numbers): a plotly figure, or a matplotlib
    :class:`~matplotlib.figure.Figure` with ``backend="matplotlib"``. Trials numbered in
    ``leave_out`` are not drawn (their numbers stay theirs)."""
    import optuna

    study = _study(records, direction=direction, leave_out=leave_out)
    with quiet_optuna(info=False):
        if backend == "plotly":
            return optuna.visualization.plot_optimization_history(study, **_target(study))
        if backend != "matplotlib":
            raise ValueError(f"backend must be 'plotly' or 'matplotlib', not {backend!r}")
        ax = optuna.visualization.matplotlib.plot_optimization_history(study, **_target(study))
        return _detach(ax)


def param_importances_figure(
    records: StudyRecords | Sequence[StudyTrial], *, direction: str = "maximize"
) -> Any:
    """Optuna's matplotlib bar chart of fANOVA importances (seed 0), as a matplotlib Figure."""
    study = _study(records, direction=direction)
    if len(_complete_with_params(study)) < 2:
        raise ValueError("importances need at least two COMPLETE trials with parameters")
    import optuna

    with quiet_optuna(info=False):
        warnings.simplefilter("ignore", UserWarning)
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        ax = optuna.visualization.matplotlib.plot_param_importances(study, evaluator=evaluator)
        return _detach(ax)


def parallel_coordinate_figure(
    records: StudyRecords | Sequence[StudyTrial], *, direction: str = "maximize"
) -> Any:
    """Optuna's plotly parallel-coordinate plot of the COMPLETE trials (the first objective,
    under its metric's name)."""
    import optuna

    study = _study(records, direction=direction)
    with quiet_optuna(info=False):
        return optuna.visualization.plot_parallel_coordinate(study, **_target(study))


def pareto_numbers(records: StudyRecords, *, leave_out: Iterable[int] = ()) -> list[int]:
    """The Pareto front of a study with several objectives (Optuna's ``best_trials``: the
    feasible COMPLETE trials no other feasible one dominates), by trial number, among the trials
    not in ``leave_out`` (e.g. the LEAKY ones)."""
    study = _study(records, leave_out=leave_out)
    with quiet_optuna(info=False):
        return sorted(t.number for t in study.best_trials)


def pareto_front_figure(
    records: StudyRecords, *, leave_out: Iterable[int] = (), backend: str = "plotly"
) -> Any:
    """Optuna's Pareto-front plot of a study with 2 or 3 objectives (axes named after its
    metrics; infeasible trials apart when it has constraints): plotly, or a matplotlib Figure
    with ``backend="matplotlib"``.

    Raises
    ------
    ValueError
        A study with one objective or more than three.
    """
    import optuna

    if len(records.directions) not in (2, 3):
        raise ValueError(
            f"a Pareto front is drawn for 2 or 3 objectives, not {len(records.directions)}"
        )
    study = _study(records, leave_out=leave_out)
    names = list(study.metric_names or [f"objective {i}" for i in range(len(records.directions))])
    with quiet_optuna(info=False):
        if backend == "plotly":
            return optuna.visualization.plot_pareto_front(study, target_names=names)
        ax = optuna.visualization.matplotlib.plot_pareto_front(study, target_names=names)
        return _detach(ax)


def _detach(ax: Any) -> Any:
    """The figure of an Optuna matplotlib plot, closed in pyplot so it is not kept alive there."""
    import matplotlib.pyplot as plt

    fig = ax.figure
    plt.close(fig)  # pyplot forgets it; the Figure itself can still be saved
    return fig
