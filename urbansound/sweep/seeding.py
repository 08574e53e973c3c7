"""Seeding a study: known configurations first, and a new study warm-started from earlier trials.

- **Known configurations** (``hydra.sweeper.enqueue``): each set of overrides becomes the
  parameters of a trial (:func:`~urbansound.sweep.points.enqueue_params`) queued with Optuna's
  ``study.enqueue_trial`` before the sampler draws any. The study records the sets it queued
  (its user attribute ``enqueued``), so a resumed sweep does not queue them again; a set added
  to the sweep later is queued then. They run, and count toward ``n_trials``, like any trial.
- **Warm start** (``hydra.sweeper.warm_start``): a NEW study is seeded with copies
  (``optuna.trial.create_trial``, ``study.add_trials``) of the COMPLETE trials of an earlier
  study (a storage URL or journal file, with ``warm_start_study`` when it holds several; a sweep
  directory, whose ``study.json`` names its study) or of run directories (one run's, or every
  job's of a sweep directory without a study). A trial is taken only when every parameter it has
  is a swept key of this sweep with a value its distribution holds, it has every swept key (of
  its branch, in a conditional space), it was not evaluated on the LEAKY random split, and it has
  a value of every objective and constrained name (its objective values by its study's metric
  names, or what its job recorded). One log line says how many were taken, one line per reason
  how many were not. Copies carry :data:`~urbansound.sweep.rules.SEEDED_ATTR` (where they came
  from) and do not count toward ``n_trials``; their constraint values are this study's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from urbansound.errors import ConfigError, DataError
from urbansound.sweep._compat import quiet_optuna
from urbansound.sweep.objectives import record_values, trial_value
from urbansound.sweep.points import enqueue_params, fits
from urbansound.sweep.rules import RANDOM_SPLIT, SEEDED_ATTR, override_params
from urbansound.sweep.settings import SweepSettings
from urbansound.sweep.space import SearchSpace
from urbansound.sweep.urls import display_storage, refuse_password, storage_identity

log = logging.getLogger(__name__)

__all__ = ["ENQUEUED_ATTR", "WARM_START_ATTR", "enqueue_known", "known_params", "warm_start"]

#: The study's user attribute listing the override sets already queued (each a list of texts).
ENQUEUED_ATTR = "enqueued"
#: The study's user attribute saying where a warm start came from and what it took.
WARM_START_ATTR = "warm_start"


def known_params(settings: SweepSettings) -> list[dict[str, Any]]:
    """The parameters of each known configuration (``hydra.sweeper.enqueue``), checked against
    the search space; raises ConfigError naming the configuration and the key that is wrong."""
    return [
        enqueue_params(
            settings.space,
            overrides,
            where=f"hydra.sweeper.enqueue item {i} ({' '.join(overrides)})",
        )
        for i, overrides in enumerate(settings.enqueue)
    ]


def enqueue_known(settings: SweepSettings, study: Any) -> int:
    """Queue the known configurations this study has not queued yet; returns how many."""
    if not settings.enqueue:
        return 0
    params = known_params(settings)
    done = [list(s) for s in study.user_attrs.get(ENQUEUED_ATTR) or []]
    new = 0
    for overrides, p in zip(settings.enqueue, params, strict=True):
        if list(overrides) in done:
            continue
        study.enqueue_trial(p, user_attrs={"enqueued": list(overrides)}, skip_if_exists=True)
        done.append(list(overrides))
        new += 1
    study.set_user_attr(ENQUEUED_ATTR, done)
    log.info(
        "known configurations: %d queued now, %d queued by an earlier run of this study",
        new,
        len(settings.enqueue) - new,
    )
    return new


# ---------------------------------------------------------------------------------------------
# Warm start


@dataclass
class _Candidate:
    """An earlier trial (or run) as a warm start sees it."""

    state: str
    params: dict[str, Any]
    values: dict[str, float]  # every needed name that has a value
    origin: dict[str, Any]
    user_attrs: dict[str, Any] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)
    leaky: bool = False


def warm_start(settings: SweepSettings, study: Any, *, created: bool) -> int:
    """Seed ``study`` from ``settings.warm_start`` (module docstring); returns the trials taken.

    Nothing happens without a warm start, or when the study was seeded already (a resume).

    Raises
    ------
    ConfigError
        The study has trials of its own (a warm start seeds a new study), or the source cannot
        be read, holds several studies with none named, or has no such study.
    """
    if settings.warm_start is None:
        return 0
    if study.user_attrs.get(WARM_START_ATTR):
        log.info("warm start: study %s was seeded when it was created", settings.study_name)
        return 0
    n_own = len(study.get_trials(deepcopy=False))
    if n_own and not created:
        raise ConfigError(
            f"hydra.sweeper.warm_start={settings.warm_start}: study {settings.study_name} "
            f"exists with {n_own} trials; a warm start seeds a new study: choose another "
            "hydra.sweeper.study_name, or leave warm_start out to continue this one"
        )
    source, candidates = _read_source(settings)
    trials, skipped = _select(settings, candidates)
    with quiet_optuna():
        study.add_trials(trials)
    study.set_user_attr(
        WARM_START_ATTR,
        {"source": source, "taken": len(trials), "not_taken": dict(skipped)},
    )
    level = logging.INFO if trials else logging.WARNING
    log.log(
        level, "warm start from %s: %d of %d trial(s) taken", source, len(trials), len(candidates)
    )
    for reason, n in skipped.most_common():
        log.info("warm start: %d trial(s) not taken: %s", n, reason)
    return len(trials)


def _select(
    settings: SweepSettings, candidates: Sequence[_Candidate]
) -> tuple[list[Any], Counter[str]]:
    """The candidates that fit this sweep, as FrozenTrials, and the reasons of the others."""
    skipped: Counter[str] = Counter()
    out = []
    names = settings.recorded_names
    objectives = settings.metric_names
    for c in candidates:
        reason = _reason(settings.space, c, names, objectives)
        if reason is not None:
            skipped[reason] += 1
            continue
        distributions = {k: settings.space.params[k].distribution for k in c.params}
        values = [c.values[n] for n in objectives]
        constraints = {k.text: k.violation(c.values[k.name]) for k in settings.constraints}
        out.append(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE,
                values=values,
                params=dict(c.params),
                distributions=distributions,
                user_attrs=dict(c.user_attrs),
                system_attrs={SEEDED_ATTR: dict(c.origin)},
                intermediate_values=dict(c.intermediate) if len(objectives) == 1 else None,
                constraints=constraints or None,
            )
        )
    return out, skipped


def _reason(
    space: SearchSpace, c: _Candidate, names: Sequence[str], objectives: Sequence[str]
) -> str | None:
    """Why a candidate is not taken (one reason, the first found), or None."""
    if c.state != "COMPLETE":
        return f"it is {c.state}, not COMPLETE"
    if c.leaky:
        return "it was evaluated on the LEAKY random split"
    for name, value in c.params.items():
        if name not in space.params:
            return f"it has parameter {name}, which this sweep does not sweep"
        if not fits(space.params[name].distribution, value):
            return f"its value of {name} is not among this sweep's values of {name}"
    wanted = _wanted_keys(space, c.params)
    if wanted is None:
        return "its group choices are no branch of this sweep's space"
    missing = [k for k in wanted if k not in c.params]
    if missing:
        return f"it has no value of the swept key {missing[0]}"
    for name in names:
        if name not in c.values:
            what = "objective" if name in objectives else "constrained value"
            return f"it has no value of {what} {name}"
    return None


def _wanted_keys(space: SearchSpace, params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The swept keys a trial with ``params`` has in ``space``; None when its group choices
    lead to no branch."""
    if not space.is_conditional:
        return tuple(space.params)
    for branch in space.branches:
        if all(params.get(g, object()) == v for g, v in branch.choices):
            return branch.names()
    return None


def _read_source(settings: SweepSettings) -> tuple[str, list[_Candidate]]:
    """A description of the warm start's source and its trials (or runs)."""
    from urbansound.sweep.ownership import read_study_file

    given = str(settings.warm_start)
    key = "hydra.sweeper.warm_start"
    if "://" in given:
        refuse_password(given, key=key, how="name it with hydra.sweeper.storage_password_env")
        same = storage_identity(given) == storage_identity(settings.storage)
        return _from_storage(settings, given, settings.password_env if same else None)
    path = Path(given).expanduser()
    if path.is_file():
        if path.name == "study.json":
            path = path.parent
        else:
            return _from_storage(settings, str(path.resolve()), None)
    if not path.is_dir():
        raise ConfigError(f"{key}={given}: no such storage file, sweep directory or run directory")
    try:
        info = read_study_file(path)
    except ConfigError as exc:
        raise ConfigError(f"{key}={given}: {exc}") from None
    if info is not None:
        env = str(info["password_env"]) if info.get("password_env") else None
        return _from_storage(settings, str(info["storage"]), env, study=str(info["study_name"]))
    runs = (
        [path]
        if (path / "results.json").is_file()
        else sorted(d for d in path.iterdir() if (d / "results.json").is_file())
    )
    if not runs:
        raise ConfigError(
            f"{key}={given}: neither a sweep directory (study.json, or job directories with "
            "results.json) nor a run directory (results.json)"
        )
    return f"{len(runs)} run director{'y' if len(runs) == 1 else 'ies'} in {path}", [
        _from_run_dir(d, settings.recorded_names) for d in runs
    ]


def _from_storage(
    settings: SweepSettings, storage: str, password_env: str | None, *, study: str | None = None
) -> tuple[str, list[_Candidate]]:
    from urbansound.sweep.records import load_study, study_names

    key = "hydra.sweeper.warm_start"
    shown = display_storage(storage)
    try:
        names = study_names(storage, password_env=password_env)
    except ConfigError as exc:
        raise ConfigError(f"{key}={shown}: {exc}") from None
    same = storage_identity(storage) == storage_identity(settings.storage)
    others = [n for n in names if not (same and n == settings.study_name)]
    name = study or settings.warm_start_study
    if name is None:
        if len(others) != 1:
            raise ConfigError(
                f"{key}={shown} holds {len(others)} other studies ({', '.join(others) or 'none'})"
                ": name one with hydra.sweeper.warm_start_study=<name>"
            )
        name = others[0]
    if name not in others:
        raise ConfigError(
            f"{key}={shown}: no study {name} to start from (studies there: "
            f"{', '.join(others) or 'none'})"
        )
    records = load_study(storage, name, password_env=password_env)
    metric_names = records.metric_names or settings.metric_names[:1]
    candidates = []
    for t in records.trials:
        values = {}
        for n in settings.recorded_names:
            found = trial_value(
                n, metric_names=metric_names, values=t.values, user_attrs=t.user_attrs
            )
            if found is not None:
                values[n] = found
        candidates.append(
            _Candidate(
                state=t.state,
                params=dict(t.params),
                values=values,
                origin={"storage": shown, "study_name": name, "number": t.number},
                user_attrs=dict(t.user_attrs),
                intermediate=dict(t.intermediate_values),
                leaky=t.params.get("cv") == RANDOM_SPLIT,
            )
        )
    return f"study {name} in {shown}", candidates


def _from_run_dir(run_dir: Path, names: Sequence[str]) -> _Candidate:
    """One run directory's ``results.json`` as a candidate (not COMPLETE when unreadable)."""
    import json

    from urbansound.training.results import RunResult

    path = run_dir / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        result = RunResult.from_dict(data, where=str(path))
    except (OSError, ValueError, DataError) as exc:
        log.warning("warm start: %s not read (%s)", path, exc)
        return _Candidate(
            state="unreadable", params={}, values={}, origin={"run_dir": str(run_dir)}
        )
    overrides = [o for o in result.overrides if not o.lstrip("+~").startswith(("trial.", "hydra."))]
    return _Candidate(
        state={"complete": "COMPLETE", "pruned": "PRUNED"}.get(result.status, "FAIL"),
        params=override_params(overrides, skip=("trial", "hydra")),
        values=record_values(data, names),
        origin={"run_dir": str(run_dir)},
        user_attrs={"run_dir": str(run_dir), "overrides": overrides},
        intermediate={m.epoch: m.mean_test_accuracy for m in result.epochs},
        leaky=result.leaky,
    )
