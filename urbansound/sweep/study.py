"""A sweep's study: created or reopened, checked against the sweep, prepared for its workers.

- **Created once.** The study is created with the sweep's directions; when two processes start
  the same new study at once, one creates it (the storage's unique name decides) and the other
  reopens it. Only a study with no trials is seeded by a warm start
  (:func:`urbansound.sweep.seeding.warm_start`).
- **Identity.** A study records its sampler and pruner (type and settings), its objectives
  (names, directions: Optuna's ``directions`` and metric names) and its constraints; reopening it
  with others stops with one line naming what differs (:func:`check_identity`). Its search space
  may change (to extend a search) where Optuna allows: a range may grow, but a categorical
  parameter's choices and a parameter's kind are fixed by its first trial
  (:func:`check_space`).
- **Prepared.** Trials a dead process left RUNNING are failed (and queued again); with
  ``retry_failed`` earlier FAIL trials are queued again (not one stopped by a ``trial_timeout``
  it would run past again); known configurations are enqueued once
  (:func:`urbansound.sweep.seeding.enqueue_known`); the search space, fixed overrides and
  branches are recorded for readers.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from urbansound.errors import ConfigError
from urbansound.sweep._compat import quiet_optuna
from urbansound.sweep.lifecycle import fail_ownerless, requeue
from urbansound.sweep.seeding import enqueue_known, warm_start
from urbansound.sweep.settings import SweepSettings, build_pruner, build_sampler
from urbansound.sweep.space import describe_distribution
from urbansound.sweep.storage import open_storage
from urbansound.sweep.trials import EXCESS_ATTR, TIMED_OUT_ATTR, superseded
from urbansound.sweep.urls import display_storage

log = logging.getLogger(__name__)

__all__ = [
    "SWEEP_DIRS_ATTR",
    "check_identity",
    "check_space",
    "first_sweep_dir",
    "open_study",
    "prepare_study",
    "record_sweep_dir",
    "study_record",
    "study_sweep_dirs",
]

#: The study's user attribute listing the sweep directories its sweeps wrote into, in the order
#: first used: ``[{"host": <hostname>, "path": <absolute path>}]``.
SWEEP_DIRS_ATTR = "sweep_dirs"


def _describe_node(node: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(node.items()) if k != "_target_")
    return f"{str(node.get('_target_')).rsplit('.', 1)[-1]}({args})"


def _objectives(names: list[str], directions: list[str]) -> str:
    if len(names) != len(directions):
        names = [f"objective {i}" for i in range(len(directions))]
    return ", ".join(f"{n} ({d})" for n, d in zip(names, directions, strict=True))


def check_identity(settings: SweepSettings, study: Any, *, created: bool = False) -> None:
    """ConfigError when the study was created with another sampler, pruner, objectives or
    constraints, naming what differs and what to do (``created``: this process just created
    it, so it has none recorded yet)."""
    where = f"study {settings.study_name!r} in {display_storage(settings.storage)}"
    stored_dirs = [d.name.lower() for d in study.directions]
    stored_names = list(study.metric_names or [])
    names_differ = settings.is_multi_objective and stored_names not in ([], settings.metric_names)
    if stored_dirs != settings.directions or names_differ:
        raise ConfigError(
            f"{where} optimises {_objectives(stored_names, stored_dirs)}; this sweep has "
            f"{_objectives(settings.metric_names, settings.directions)} "
            "(hydra.sweeper.objectives, hydra.sweeper.direction): choose another "
            "hydra.sweeper.study_name for a new study, or the study's objectives to continue it"
        )
    wanted = settings.identity()
    stored = study.user_attrs
    for key in ("sampler", "pruner"):
        if key in stored and stored[key] != wanted[key]:
            raise ConfigError(
                f"{where} was run with {key} {_describe_node(stored[key])}; this sweep has "
                f"{_describe_node(wanted[key])}: choose another hydra.sweeper.study_name for a "
                f"new study, or the study's {key} settings to continue it"
            )
    # a study from before constraints were recorded had none; a new one gets this sweep's
    default = wanted["constraints"] if created else []
    if stored.get("constraints", default) != wanted["constraints"]:
        raise ConfigError(
            f"{where} was run with constraints {stored.get('constraints') or 'none'}; this "
            f"sweep has {wanted['constraints'] or 'none'} (hydra.sweeper.constraints): its "
            "trials' feasibility was judged by those: choose another hydra.sweeper.study_name "
            "for a new study, or the study's constraints to continue it"
        )


def check_space(settings: SweepSettings, study: Any) -> None:
    """ConfigError when a swept key's distribution cannot continue the study's trials.

    Optuna fixes a parameter's kind and a categorical parameter's choices with its first trial
    (``study.ask`` raises "CategoricalDistribution does not support dynamic value space" for
    ``x=0,1`` followed by ``x=0,1,2``, after the trial was created); a range may change.
    """
    from optuna.distributions import check_distribution_compatibility

    wanted = settings.space.distributions()
    seen: set[str] = set()
    for t in study.get_trials(deepcopy=False):
        for name, old in t.distributions.items():
            if name in seen or name not in wanted:
                continue
            seen.add(name)
            try:
                check_distribution_compatibility(old, wanted[name])
            except ValueError as exc:
                raise ConfigError(
                    f"hydra.sweeper.params: {name} is {describe_distribution(wanted[name])} but "
                    f"study {settings.study_name!r} drew it from {describe_distribution(old)} "
                    f"(Optuna: {exc}); a categorical parameter's choices and a parameter's kind "
                    "cannot change within a study: choose another hydra.sweeper.study_name for "
                    "these values, or the study's own to continue it"
                ) from None


def open_study(settings: SweepSettings, *, worker: int) -> tuple[BaseStorage, Any]:
    """The (prepared) study reopened with this worker's sampler and the sweep's pruner;
    returns its storage and the ``optuna.Study``."""
    storage = open_storage(settings.storage, password_env=settings.password_env)
    study_id = storage.get_study_id_from_name(settings.study_name)
    n_existing = len(storage.get_all_trials(study_id, deepcopy=False))
    with quiet_optuna():
        study = optuna.load_study(
            storage=storage,
            study_name=settings.study_name,
            sampler=build_sampler(
                settings.sampler,
                settings.space,
                worker=worker,
                n_existing=n_existing,
            ),
            pruner=build_pruner(settings.pruner),
        )
    return storage, study


def _create_or_load(settings: SweepSettings, storage: BaseStorage) -> tuple[Any, bool]:
    """The study and whether this process created it."""
    try:
        storage.get_study_id_from_name(settings.study_name)
    except KeyError:
        try:
            with quiet_optuna():
                study = optuna.create_study(
                    storage=storage,
                    study_name=settings.study_name,
                    directions=settings.directions,
                )
            return study, True
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another machine created it at the same moment
    with quiet_optuna():
        return optuna.load_study(study_name=settings.study_name, storage=storage), False


def prepare_study(settings: SweepSettings) -> tuple[BaseStorage, Any]:
    """Create or reopen the study, check its identity, fail ownerless trials, record settings,
    seed it (a warm start of a new study, known configurations once); returns its storage and
    the ``optuna.Study``.

    Raises
    ------
    ConfigError
        The study exists with another sampler, pruner, objectives or constraints, or a swept
        key that cannot continue its trials; a warm start or known configuration that cannot be
        used (naming what differs).
    """
    storage = open_storage(settings.storage, password_env=settings.password_env)
    study, created = _create_or_load(settings, storage)
    check_identity(settings, study, created=created)
    check_space(settings, study)
    identity = settings.identity()
    for key in ("sampler", "pruner", "constraints"):
        if key not in study.user_attrs:
            study.set_user_attr(key, identity[key])
    fail_ownerless(settings, storage, study)
    with quiet_optuna():
        study.set_metric_names(settings.metric_names)
    study.set_user_attr("search_space", settings.space.to_json())
    study.set_user_attr("fixed_overrides", list(settings.space.fixed))
    if settings.space.is_conditional:
        study.set_user_attr(
            "branches",
            [{"choices": dict(b.choices), "keys": list(b.keys)} for b in settings.space.branches],
        )
    if settings.retry_failed:
        _requeue_failed(settings, study)
    warm_start(settings, study, created=created)
    enqueue_known(settings, study)
    return storage, study


def _requeue_failed(settings: SweepSettings, study: Any) -> None:
    """Queue the study's FAIL trials again (``retry_failed``), except those a ``trial_timeout``
    stopped that the sweep's own would stop again."""
    trials = study.get_trials(deepcopy=False)
    gone = superseded(trials)
    for t in trials:
        if t.state != TrialState.FAIL or t.number in gone or t.system_attrs.get(EXCESS_ATTR):
            continue
        limit = t.system_attrs.get(TIMED_OUT_ATTR)
        timeout = settings.trial_timeout
        if limit is not None and timeout is not None and timeout <= float(limit):
            log.info(
                "trial %d ran past trial_timeout=%g s: not queued again under %g s",
                t.number,
                float(limit),
                timeout,
            )
            continue
        log.info("trial %d failed in an earlier run: queued again", t.number)
        requeue(study, t, None)


def study_record(settings: SweepSettings) -> dict[str, Any]:
    """What ``<sweep dir>/study.json`` holds: the study and storage the directory belongs to,
    its direction and metric (its first objective's; with several objectives ``directions`` and
    ``metrics`` list every objective's), and the name of the environment variable holding the
    storage's password (for readers: the report, ``fit``)."""
    record: dict[str, Any] = {
        "study_name": settings.study_name,
        "storage": display_storage(settings.storage),
        "direction": settings.directions[0],
        "metric": settings.metric_names[0],
        "password_env": settings.password_env,
    }
    if settings.is_multi_objective:
        record["directions"] = settings.directions
        record["metrics"] = settings.metric_names
    return record


# ---------------------------------------------------------------------------------------------
# Where the study's sweeps wrote


def record_sweep_dir(study: Any, sweep_dir: Path) -> None:
    """Add ``sweep_dir`` (on this host) to the study's :data:`SWEEP_DIRS_ATTR` once."""
    entry = {"host": socket.gethostname(), "path": str(Path(sweep_dir).resolve())}
    dirs = list(study.user_attrs.get(SWEEP_DIRS_ATTR) or [])
    if entry not in dirs:
        study.set_user_attr(SWEEP_DIRS_ATTR, [*dirs, entry])


def study_sweep_dirs(
    storage: str, study_name: str, *, password_env: str | None = None, host: str | None = None
) -> list[Path]:
    """The sweep directories the study's sweeps wrote into on ``host`` (default: this
    machine), first used first, as the storage records them; [] for a study not there (or one
    from before they were recorded). The job directories of a trial are in its ``run_dir``
    user attribute; a directory may since have been removed.

    Raises
    ------
    ConfigError
        The storage cannot be opened.
    """
    opened = open_storage(storage, create=False, password_env=password_env)
    try:
        study_id = opened.get_study_id_from_name(study_name)
    except KeyError:
        return []
    host = host or socket.gethostname()
    recorded = opened.get_study_user_attrs(study_id).get(SWEEP_DIRS_ATTR) or []
    return [
        Path(str(d["path"]))
        for d in recorded
        if isinstance(d, dict) and d.get("host") == host and d.get("path")
    ]


def first_sweep_dir(settings: SweepSettings) -> Path | None:
    """The first sweep directory of the sweep's study on this machine that is still a
    directory; None for a new study (or one whose directories are gone)."""
    try:
        found = study_sweep_dirs(
            settings.storage, settings.study_name, password_env=settings.password_env
        )
    except ConfigError:  # a storage that does not exist yet: a new study
        return None
    return next((d for d in found if d.is_dir()), None)
