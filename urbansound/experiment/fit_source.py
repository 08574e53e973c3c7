"""Where a final fit's configuration comes from: the ``fit`` config node and its sources.

- :func:`fit_options`: the ``fit`` node of ``conf/fit.yaml`` (``fit.from``, ``fit.study``,
  ``fit.trial``, ``fit.seeds``) validated, one line naming the key otherwise (its schema,
  ``fit_config_schema``, is registered by :func:`urbansound.config.app.register_configs`).
- :func:`resolve_source`: ``fit.from`` (a run directory, a sweep directory, a storage URL or
  journal file) and ``fit.trial`` to a :class:`Source`: a run directory, its ``config.yaml`` and
  ``results.json`` (read by :mod:`urbansound.experiment.rundir`, every value checked). Trials are
  read through :mod:`urbansound.sweep.records`; the best is the best COMPLETE trial not evaluated
  on the LEAKY random split. A trial's run directory is used only when it records that trial of
  that study (:func:`urbansound.sweep.ownership.trial_mismatch`); a storage URL holding a
  password is refused, and a sweep directory's ``study.json`` names the study, its storage and
  the environment variable holding its password.

How the command line's overrides apply on top of a source's configuration is
:mod:`urbansound.experiment.fit_config`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from urbansound.config.checks import SEED_MAX
from urbansound.errors import ConfigError, DataError
from urbansound.experiment.rundir import CONFIG_FILE, RESULTS_FILE, read_config, read_results
from urbansound.sweep.objectives import Constraint, parse_constraints
from urbansound.sweep.ownership import STUDY_FILE, Owner, read_study_file, trial_mismatch
from urbansound.sweep.rules import chosen_by_rule
from urbansound.sweep.urls import display_storage, refuse_password
from urbansound.training.results import RunResult

log = logging.getLogger("urbansound.fit")

__all__ = ["FitOptions", "Source", "fit_options", "resolve_source"]

_FIT_KEYS = ("from", "study", "trial", "seeds", "objective", "constraints")

# --------------------------------------------------------------------------------------------
# The `fit` node of the config


@dataclass(frozen=True)
class FitOptions:
    """The ``fit`` node: where the configuration comes from and which seeds to train."""

    source: str | None = None  # fit.from
    study: str | None = None
    trial: int | None = None
    seeds: tuple[int, ...] | None = None
    # The rule that picks a trial of a study: the best by this objective among the trials that
    # meet ``constraints`` (and the study's own); null: the study's only objective.
    objective: str | None = None
    constraints: tuple[Constraint, ...] = ()


def fit_options(node: Mapping[str, Any] | None) -> FitOptions:
    """Validate the ``fit`` node; :class:`ConfigError` naming the key otherwise."""
    import difflib

    node = dict(node or {})
    for key in node:
        if key not in _FIT_KEYS:
            match = difflib.get_close_matches(key, _FIT_KEYS, n=1)
            hint = f"did you mean fit.{match[0]}?" if match else f"fit has {', '.join(_FIT_KEYS)}"
            raise ConfigError(f"unknown key fit.{key}; {hint}")
    source, study, trial, seeds, objective, constraints = (node.get(k) for k in _FIT_KEYS)
    if objective is not None and (not isinstance(objective, str) or not objective):
        raise ConfigError(f"fit.objective must be an objective's name or null, got {objective!r}")
    bounds = parse_constraints(constraints, key="fit.constraints")
    if (objective is not None or bounds) and (source is None or trial is not None):
        raise ConfigError(
            "fit.objective and fit.constraints pick a trial of a study: give fit.from=<sweep "
            "directory or storage> and no fit.trial"
        )
    for key, value in (("from", source), ("study", study)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"fit.{key} must be a non-empty string or null, got {value!r}")
    if trial is not None and (isinstance(trial, bool) or not isinstance(trial, int) or trial < 0):
        raise ConfigError(f"fit.trial must be a trial number >= 0 or null, got {trial!r}")
    if (trial is not None or study is not None) and source is None:
        raise ConfigError("fit.trial and fit.study need fit.from=<sweep directory or storage>")
    if seeds is not None:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            seeds = [seeds]
        ok = isinstance(seeds, list | tuple) and seeds
        ok = ok and all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= SEED_MAX for s in seeds
        )
        if not ok or len(set(seeds)) != len(seeds):
            raise ConfigError(
                f"fit.seeds must be a list of distinct integers between 0 and {SEED_MAX} "
                f"(e.g. [0,1,2]), got {seeds!r}"
            )
        seeds = tuple(int(s) for s in seeds)
    return FitOptions(
        source=source,
        study=study,
        trial=trial,
        seeds=seeds,
        objective=objective,
        constraints=bounds,
    )


# --------------------------------------------------------------------------------------------
# Sources: a run directory, a sweep directory, a study


@dataclass
class Source:
    """Where a fitted configuration came from: a run directory and what it recorded."""

    kind: str  # "run" | "sweep" | "study"
    location: str  # fit.from as given
    run_dir: Path
    config: dict[str, Any]
    results: RunResult | None = None
    study_name: str | None = None
    storage: str | None = None
    trial: int | None = None
    value: float | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the source and the CV figures of its configuration."""
        r = self.results
        cv = r.cv if r is not None else None
        folds = [{"fold": f.fold, "accuracy": f.accuracy} for f in cv.folds] if cv else []
        return {
            "kind": self.kind,
            "location": display_storage(self.location),
            "run_dir": str(self.run_dir),
            "study_name": self.study_name,
            "storage": display_storage(self.storage) or None,
            "trial": self.trial,
            "value": self.value,
            "cv": {
                "protocol": r.protocol if r else None,
                "leaky": r.leaky if r else None,
                "dataset": r.dataset if r else None,
                "n_clips": r.n_clips if r else None,
                "mean_accuracy": _finite(r.mean_accuracy) if r else None,
                "std_accuracy": _finite(r.std_accuracy) if r else None,
                "n_folds": len(folds),
                "folds": folds,
            },
        }


def _read_run_dir(run_dir: Path, what: str) -> tuple[dict[str, Any], RunResult | None]:
    """A run directory's ``config.yaml`` (required) and ``results.json`` (None when absent).

    Raises
    ------
    ConfigError
        No readable ``config.yaml``.
    DataError
        A ``results.json`` that cannot be read or is malformed (naming it).
    """
    try:
        config = read_config(run_dir)
    except DataError as exc:
        hint = (
            "; fit.from needs a run directory with the config.yaml that urbansound.run wrote"
            if not (run_dir / CONFIG_FILE).exists()
            else ""
        )
        raise ConfigError(f"{what}: {exc}{hint}") from None
    results = read_results(run_dir) if (run_dir / RESULTS_FILE).is_file() else None
    return config, results


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _leaky(config: Mapping[str, Any], results: RunResult | None) -> bool:
    if results is not None:
        return results.leaky
    return ((config.get("cv") or {}).get("name")) == "random_split"


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def resolve_source(opts: FitOptions) -> Source:
    """The run directory (and its configuration) that ``fit.from`` / ``fit.trial`` name.

    Raises
    ------
    ConfigError
        ``fit.from`` names nothing usable, the study or trial is not there, the trial did not
        complete, or its run directory (with its ``config.yaml``) is gone.
    """
    assert opts.source is not None
    location = opts.source
    if "://" in location:
        refuse_password(
            location,
            key="fit.from",
            how="give fit.from the sweep directory, whose study.json names the variable that "
            "holds it",
        )
        return _from_study(location, location, opts, kind="study")
    path = Path(location).expanduser()
    if path.is_file():
        if path.name == "study.json":
            path = path.parent
        else:
            storage = f"sqlite:///{path}" if _is_sqlite(path) else str(path)
            return _from_study(location, storage, opts, kind="study")
    if not path.is_dir():
        raise ConfigError(
            f"fit.from={location}: no such run or sweep directory, study file or storage URL"
        )
    if (path / STUDY_FILE).is_file():
        try:
            info = read_study_file(path)
        except ConfigError as exc:
            raise ConfigError(f"fit.from={location}: {exc}") from None
        assert info is not None
        name, storage = str(info["study_name"]), str(info["storage"])
        if opts.study is not None and opts.study != name:
            raise ConfigError(
                f"fit.study={opts.study}: fit.from={location} is the sweep directory of study "
                f"{name} (its {STUDY_FILE}); leave fit.study out, or give fit.from the storage "
                f"({display_storage(storage)}) to choose among its studies"
            )
        opts = replace(opts, study=name)
        password_env = str(info["password_env"]) if info.get("password_env") else None
        try:
            return _from_study(location, storage, opts, kind="sweep", password_env=password_env)
        except ConfigError as exc:
            if "cannot open" not in str(exc) and "no such" not in str(exc).lower():
                raise
            log.warning("%s; choosing among the job directories of %s instead", exc, path)
    if (path / CONFIG_FILE).is_file() and (path / RESULTS_FILE).is_file():
        if opts.trial is not None:
            raise ConfigError(
                f"fit.trial={opts.trial}: fit.from={location} is one run's directory, not a sweep"
            )
        config, results = _read_run_dir(path, f"fit.from={location}")
        return Source("run", location, path, config, results, value=_value(results))
    return _from_job_dirs(location, path, opts)


def _value(results: RunResult | None) -> float | None:
    return _finite(results.mean_accuracy) if results is not None else None


def _from_job_dirs(location: str, sweep_dir: Path, opts: FitOptions) -> Source:
    """A sweep directory without a readable study: its job directories' ``results.json``."""
    jobs = []
    unreadable: dict[int | None, DataError] = {}
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        if not ((d / CONFIG_FILE).is_file() and (d / RESULTS_FILE).is_file()):
            continue
        try:
            config, results = _read_run_dir(d, f"fit.from={location}")
        except DataError as exc:  # judged by nothing: left out, unless it is the one asked for
            log.warning("%s; job %s left out", exc, d.name)
            unreadable[int(d.name) if d.name.isdigit() else None] = exc
            continue
        number = (results.trial if results is not None else {}).get("number")
        if number is None and d.name.isdigit():
            number = int(d.name)
        jobs.append((number, d, config, results))
    if opts.trial is not None and opts.trial in unreadable:
        raise unreadable[opts.trial]
    if not jobs:
        raise ConfigError(
            f"fit.from={location}: neither a run directory (config.yaml, results.json) nor a "
            "sweep directory (study.json, or job directories with results.json)"
        )
    jobs = _of_one_study(location, jobs, opts.study)
    if opts.trial is not None:
        found = [j for j in jobs if j[0] == opts.trial]
        if not found:
            raise ConfigError(
                f"fit.trial={opts.trial}: no job of {location} is trial {opts.trial} "
                f"(trials there: {sorted(j[0] for j in jobs if j[0] is not None)})"
            )
        chosen = found[0]
        status = chosen[3].status if chosen[3] is not None else None
        if status != "complete":
            raise ConfigError(
                f"fit.trial={opts.trial}: the job of trial {opts.trial} in {location} is "
                f"{status or 'unfinished'}; choose a complete trial"
            )
    else:
        done = [
            j
            for j in jobs
            if j[3] is not None
            and j[3].status == "complete"
            and _value(j[3]) is not None
            and not _leaky(j[2], j[3])
        ]
        if not done:
            raise ConfigError(f"fit.from={location}: no job completed on the fold protocol")
        chosen = max(done, key=lambda j: _value(j[3]) or -math.inf)
    number, d, config, results = chosen
    return Source("sweep", location, d, config, results, trial=number, value=_value(results))


def _of_one_study(location: str, jobs: list[Any], study: str | None) -> list[Any]:
    """The jobs of one study: ``study``'s, or all when they record one study (or none).

    A sweep directory another sweep wrote into holds jobs of several studies: choosing the best
    among them would mix them, so the study must be named.
    """

    def name(job: Any) -> str | None:
        return job[3].trial.get("study_name") if job[3] is not None else None

    names = sorted({str(name(j)) for j in jobs})
    if study is not None:
        mine = [j for j in jobs if name(j) == study]
        if not mine:
            raise ConfigError(
                f"fit.study={study}: no job of {location} belongs to study {study} (studies "
                f"there: {', '.join(names)})"
            )
        return mine
    if len(names) > 1:
        raise ConfigError(
            f"fit.from={location} holds jobs of several studies ({', '.join(names)}): choose one "
            "with fit.study=<name>"
        )
    return jobs


def _storage_call(call: Any, location: str, storage: str, *args: Any, **kwargs: Any) -> Any:
    """``call(storage, *args, **kwargs)`` of :mod:`urbansound.sweep.records`; its error as one
    line that names ``fit.from`` (the URL without its password) and what to give instead."""
    try:
        return call(storage, *args, **kwargs)
    except ConfigError as exc:
        message = " ".join(str(exc).split())
        not_a_storage = "cannot open" in message or "no Optuna journal record" in message
        if "://" not in storage and Path(storage).is_file() and not_a_storage:
            message += (
                "; it is neither an SQLite database nor an Optuna journal file: give a run "
                "directory, a sweep directory, a study file or a storage URL"
            )
        raise ConfigError(f"fit.from={display_storage(location)}: {message}") from None


def _from_study(
    location: str,
    storage: str,
    opts: FitOptions,
    *,
    kind: str,
    password_env: str | None = None,
) -> Source:
    from urbansound.sweep import records

    shown = display_storage(location)
    name = opts.study
    # The names first: a study that is not there is named together with those that are.
    names = _storage_call(records.study_names, location, storage, password_env=password_env)
    if not names:
        raise ConfigError(
            f"fit.from={shown} holds no study; give the storage (or sweep directory) "
            "that the sweep wrote"
        )
    if name is not None and name not in names:
        raise ConfigError(
            f"fit.study={name}: no such study in fit.from={shown} "
            f"(studies there: {', '.join(sorted(names))})"
        )
    if name is None and len(names) != 1:
        raise ConfigError(
            f"fit.from={shown} holds {len(names)} studies ({', '.join(sorted(names))}); "
            "choose one with fit.study=<name>"
        )
    name = name or names[0]
    study = _storage_call(records.load_study, location, storage, name, password_env=password_env)
    by_number = {t.number: t for t in study.trials}
    if opts.trial is not None:
        trial = by_number.get(opts.trial)
        if trial is None:
            raise ConfigError(
                f"fit.trial={opts.trial}: study {name} has no trial {opts.trial} "
                f"(trials 0..{max(by_number, default=-1)})"
            )
        if trial.state != "COMPLETE":
            raise ConfigError(
                f"fit.trial={opts.trial}: trial {opts.trial} of study {name} is {trial.state}; "
                "choose a COMPLETE trial"
            )
        candidates = [trial]
    else:
        candidates = chosen_by_rule(
            study,
            objective=opts.objective,
            constraints=opts.constraints,
            where=f"fit.from={shown}: study {name}",
        )
        if not candidates:
            from collections import Counter

            states = Counter(t.state for t in study.trials)
            found = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
            raise ConfigError(
                f"fit.from={shown}: study {name} has no COMPLETE trial ({found or 'no trial'}); "
                "finish the sweep, or fit one configuration with fit.from=<run directory>"
            )
    for trial in candidates:
        run_dir = trial.run_dir
        what = f"trial {trial.number} of study {name}"
        if run_dir is None or not run_dir.is_dir():
            raise ConfigError(
                f"{what}: its run directory {run_dir or '(not recorded)'} is not here; run the "
                "fit where the sweep ran, or give fit.from=<that run directory>"
            )
        config, results = _read_run_dir(run_dir, what)
        recorded = results.trial if results is not None else None
        why = trial_mismatch(recorded, config, owner=Owner(storage, name), number=trial.number)
        if why is not None:  # another sweep wrote over it: its configuration is not the trial's
            raise ConfigError(
                f"{what}: its run directory {run_dir} is not that trial's ({why}); another sweep "
                f"wrote into it: fit.from={run_dir} fits what it holds, fit.trial=<n> another "
                "trial"
            )
        if opts.trial is None and _leaky(config, results):
            log.info("%s was evaluated on the LEAKY random split: not chosen as best", what)
            continue
        return Source(
            kind,
            location,
            run_dir,
            config,
            results,
            study_name=name,
            storage=storage,
            trial=trial.number,
            value=trial.value,
        )
    raise ConfigError(f"fit.from={shown}: every COMPLETE trial of {name} used the LEAKY split")
