"""A study's trials as plain records, the rules that pick among them, and the Optuna plots.

The one place outside the sweeper that touches Optuna: readers such as :mod:`urbansound.report`
get :class:`StudyRecords` (dataclasses of plain values) from a storage with :func:`load_study`,
or build them from run directories themselves, and hand them back here for what needs a study
object (fANOVA importances, Optuna's plotly and matplotlib visualisations). Those functions
rebuild an in-memory study from the records, so a sweep that has only run directories (Hydra's
basic sweeper) gets the same plots as one with a storage.

The rules every reader shares are written here once: :func:`is_leaky` (a run evaluated on the
LEAKY random split), :func:`ranked` and :func:`best_trial` (the best COMPLETE trial that is not
leaky), and :func:`override_params` (a run's overrides as parameters).

Storage strings are those of ``hydra.sweeper.storage``: an SQLAlchemy URL (``sqlite:///...``,
``postgresql://...``) or a file path for Optuna's journal storage. They are opened by
:func:`urbansound.sweep.storage.open_storage` without creating anything.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from urbansound.config.overrides import parse_override
from urbansound.errors import ConfigError
from urbansound.sweep._compat import quiet_optuna
from urbansound.sweep.storage import open_storage

if TYPE_CHECKING:
    from urbansound.training.results import RunResult

__all__ = [
    "RANDOM_SPLIT",
    "StudyRecords",
    "StudyTrial",
    "best_trial",
    "is_leaky",
    "load_study",
    "optimization_history_figure",
    "override_params",
    "parallel_coordinate_figure",
    "param_importances",
    "param_importances_figure",
    "ranked",
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

    ``best_number`` / ``best_value`` are Optuna's own best trial (over every COMPLETE trial,
    whatever its protocol); None when no trial completed or the records hold no storage's study.
    """

    name: str
    direction: str  # "maximize" | "minimize"
    trials: list[StudyTrial]
    storage: str | None = None
    best_number: int | None = None
    best_value: float | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Rules every reader shares

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
    """What :func:`ranked` needs of a trial: its number, state and value."""

    @property
    def number(self) -> int | None: ...

    @property
    def state(self) -> str: ...

    @property
    def value(self) -> float | None: ...


T = TypeVar("T", bound=Ranked)


def ranked(trials: Iterable[T], *, direction: str = "maximize") -> list[T]:
    """The COMPLETE trials with a finite value, best first (ties: the lower number first)."""
    done = [
        t
        for t in trials
        if t.state == "COMPLETE" and t.value is not None and math.isfinite(t.value)
    ]
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(done, key=lambda t: (sign * float(t.value or 0.0), t.number or 0))


def best_trial(
    trials: Iterable[T], *, direction: str = "maximize", leaky: Callable[[T], bool]
) -> T | None:
    """The best COMPLETE trial not evaluated on the LEAKY random split; None when there is none.

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
        When the storage cannot be opened, the study is not there, or it has several objectives.
    """
    import optuna
    from optuna.distributions import distribution_to_json

    opened = open_storage(storage, create=False, password_env=password_env)
    with quiet_optuna(info=False):
        try:
            study = optuna.load_study(study_name=study_name, storage=opened)
        except KeyError:
            raise ConfigError(f"no study {study_name} in the storage") from None
        if len(study.directions) != 1:
            raise ConfigError(f"study {study_name} has several objectives; reports need one")
        trials = []
        for t in study.get_trials(deepcopy=False):
            error = t.user_attrs.get("error") or t.system_attrs.get("fail_reason")
            trials.append(
                StudyTrial(
                    number=t.number,
                    state=t.state.name,
                    value=float(t.value) if t.value is not None else None,
                    params=dict(t.params),
                    distributions={k: distribution_to_json(d) for k, d in t.distributions.items()},
                    intermediate_values={
                        int(k): float(v) for k, v in t.intermediate_values.items()
                    },
                    duration_s=t.duration.total_seconds() if t.duration is not None else None,
                    user_attrs=dict(t.user_attrs),
                    error=str(error) if error else None,
                    completed=t.datetime_complete.timestamp() if t.datetime_complete else None,
                )
            )
        best = None
        if any(t.state == "COMPLETE" for t in trials):
            best = study.best_trial
        return StudyRecords(
            name=study.study_name,
            direction=study.direction.name.lower(),
            trials=trials,
            storage=storage,
            best_number=best.number if best else None,
            best_value=float(best.value) if best else None,
            user_attrs=dict(study.user_attrs),
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


def _study(records: StudyRecords | Sequence[StudyTrial], *, direction: str = "maximize") -> Any:
    """An in-memory Optuna study holding the COMPLETE and PRUNED trials."""
    if isinstance(records, StudyRecords):
        trials, direction, name = records.trials, records.direction, records.name
    else:
        trials, name = list(records), "records"
    import optuna
    from optuna.distributions import CategoricalDistribution

    with quiet_optuna(info=False):
        done = [t for t in trials if t.state in ("COMPLETE", "PRUNED")]
        dists = _distributions(done)
        study = optuna.create_study(study_name=name, direction=direction)
        for t in sorted(done, key=lambda t: t.number):
            params = {
                k: (_choice(v) if isinstance(dists[k], CategoricalDistribution) else v)
                for k, v in t.params.items()
            }
            state = optuna.trial.TrialState[t.state]
            study.add_trial(
                optuna.trial.create_trial(
                    state=state,
                    value=t.value if state == optuna.trial.TrialState.COMPLETE else None,
                    params=params,
                    distributions={k: dists[k] for k in params},
                    intermediate_values=dict(t.intermediate_values),
                )
            )
    return study


def _complete_with_params(study: Any) -> list[Any]:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.params]


def param_importances(
    records: StudyRecords | Sequence[StudyTrial], *, direction: str = "maximize"
) -> dict[str, float]:
    """fANOVA importance of each parameter (seed 0), largest first; {} with < 2 COMPLETE trials."""
    study = _study(records, direction=direction)
    if len(_complete_with_params(study)) < 2:
        return {}
    import optuna

    with quiet_optuna(info=False):
        # fANOVA warns when a parameter never varied; the importance is still defined (0)
        warnings.simplefilter("ignore", UserWarning)
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
        return {k: float(v) for k, v in found.items()}


def optimization_history_figure(
    records: StudyRecords | Sequence[StudyTrial],
    *,
    direction: str = "maximize",
    backend: str = "plotly",
) -> Any:
    """Optuna's optimisation history of the COMPLETE trials: a plotly figure, or a matplotlib
    :class:`~matplotlib.figure.Figure` with ``backend="matplotlib"``."""
    import optuna

    study = _study(records, direction=direction)
    with quiet_optuna(info=False):
        if backend == "plotly":
            return optuna.visualization.plot_optimization_history(study)
        if backend != "matplotlib":
            raise ValueError(f"backend must be 'plotly' or 'matplotlib', not {backend!r}")
        return _detach(optuna.visualization.matplotlib.plot_optimization_history(study))


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
    """Optuna's plotly parallel-coordinate plot of the COMPLETE trials."""
    import optuna

    study = _study(records, direction=direction)
    with quiet_optuna(info=False):
        return optuna.visualization.plot_parallel_coordinate(study)


def _detach(ax: Any) -> Any:
    """The figure of an Optuna matplotlib plot, closed in pyplot so it is not kept alive there."""
    import matplotlib.pyplot as plt

    fig = ax.figure
    plt.close(fig)  # pyplot forgets it; the Figure itself can still be saved
    return fig
