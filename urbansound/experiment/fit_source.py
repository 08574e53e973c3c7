"""Where a final fit's configuration comes from: the ``fit`` config node, sources, overrides.

- :func:`fit_options`: the ``fit`` node of ``conf/fit.yaml`` (``fit.from``, ``fit.study``,
  ``fit.trial``, ``fit.seeds``) validated, one line naming the key otherwise; importing this
  module registers ``fit_config_schema``, the top-level schema plus that node.
- :func:`resolve_source`: ``fit.from`` (a run directory, a sweep directory, a storage URL or
  journal file) and ``fit.trial`` to a :class:`Source`: a run directory, its ``config.yaml`` and
  ``results.json``. Trials are read through :mod:`urbansound.sweep.records`; the best is the best
  COMPLETE trial not evaluated on the LEAKY random split.
- :func:`apply_overrides`: the command line's overrides on top of the source's configuration.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from urbansound.errors import ConfigError

log = logging.getLogger("urbansound.fit")

__all__ = [
    "FitOptions",
    "Source",
    "apply_overrides",
    "fit_options",
    "resolve_source",
]

_FIT_KEYS = ("from", "study", "trial", "seeds")
#: The largest seed NumPy and scikit-learn take (``random_state < 2**32``), as for train.seed.
_SEED_MAX = 2**32 - 1

# --------------------------------------------------------------------------------------------
# The `fit` node of the config


def _register_schema() -> None:
    """``fit_config_schema``: the top-level schema plus a ``fit`` node (``conf/fit.yaml``).

    Its inherited fields are MISSING, so merging it after ``config`` keeps every value composed
    there and only adds ``fit`` (a dict: ``fit.from`` cannot be a dataclass field).
    """
    import dataclasses
    import typing

    from hydra.core.config_store import ConfigStore
    from omegaconf import MISSING

    from urbansound.config.schema import ConfigSchema

    hints = typing.get_type_hints(ConfigSchema)
    inherited = [
        (f.name, hints[f.name], dataclasses.field(default=MISSING))
        for f in dataclasses.fields(ConfigSchema)
    ]
    schema = dataclasses.make_dataclass(
        "FitConfigSchema",
        [*inherited, ("fit", dict[str, Any], dataclasses.field(default_factory=dict))],
        bases=(ConfigSchema,),
    )
    schema.__module__ = __name__
    ConfigStore.instance().store(name="fit_config_schema", node=schema)


_register_schema()


@dataclass(frozen=True)
class FitOptions:
    """The ``fit`` node: where the configuration comes from and which seeds to train."""

    source: str | None = None  # fit.from
    study: str | None = None
    trial: int | None = None
    seeds: tuple[int, ...] | None = None


def fit_options(node: Mapping[str, Any] | None) -> FitOptions:
    """Validate the ``fit`` node; :class:`ConfigError` naming the key otherwise."""
    import difflib

    node = dict(node or {})
    for key in node:
        if key not in _FIT_KEYS:
            match = difflib.get_close_matches(key, _FIT_KEYS, n=1)
            hint = f"did you mean fit.{match[0]}?" if match else f"fit has {', '.join(_FIT_KEYS)}"
            raise ConfigError(f"unknown key fit.{key}; {hint}")
    source, study, trial, seeds = (node.get(k) for k in _FIT_KEYS)
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
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= _SEED_MAX for s in seeds
        )
        if not ok or len(set(seeds)) != len(seeds):
            raise ConfigError(
                f"fit.seeds must be a list of distinct integers between 0 and {_SEED_MAX} "
                f"(e.g. [0,1,2]), got {seeds!r}"
            )
        seeds = tuple(int(s) for s in seeds)
    return FitOptions(source=source, study=study, trial=trial, seeds=seeds)


# --------------------------------------------------------------------------------------------
# Sources: a run directory, a sweep directory, a study


@dataclass
class Source:
    """Where a fitted configuration came from: a run directory and what it recorded."""

    kind: str  # "run" | "sweep" | "study"
    location: str  # fit.from as given
    run_dir: Path
    config: dict[str, Any]
    results: dict[str, Any] | None = None
    study_name: str | None = None
    storage: str | None = None
    trial: int | None = None
    value: float | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the source and the CV figures of its configuration."""
        from urbansound.utils.redaction import redact_url

        r = self.results or {}
        folds = [{"fold": f.get("fold"), "accuracy": f.get("accuracy")} for f in r.get("folds", [])]
        return {
            "kind": self.kind,
            "location": redact_url(self.location),
            "run_dir": str(self.run_dir),
            "study_name": self.study_name,
            "storage": redact_url(self.storage),
            "trial": self.trial,
            "value": self.value,
            "cv": {
                "protocol": r.get("protocol"),
                "leaky": r.get("leaky"),
                "dataset": r.get("dataset"),
                "n_clips": r.get("n_clips"),
                "mean_accuracy": r.get("mean_accuracy"),
                "std_accuracy": r.get("std_accuracy"),
                "n_folds": len(folds),
                "folds": folds,
            },
        }


def _read_run_dir(run_dir: Path, what: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A run directory's ``config.yaml`` (required) and ``results.json`` (if readable)."""
    import yaml

    config_path = run_dir / "config.yaml"
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{what}: {config_path} not found; fit.from needs a run directory with the "
            "config.yaml that urbansound.run wrote"
        ) from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{what}: cannot read {config_path} ({exc})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{what}: {config_path} holds no configuration")
    results = None
    with contextlib.suppress(OSError, ValueError):
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    return config, results


def _leaky(config: Mapping[str, Any], results: Mapping[str, Any] | None) -> bool:
    if results and "leaky" in results:
        return bool(results["leaky"])
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
    study_json = path / "study.json"
    if study_json.is_file():
        try:
            info = json.loads(study_json.read_text(encoding="utf-8"))
            name, storage = str(info["study_name"]), str(info["storage"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"fit.from={location}: unreadable {study_json} ({exc})") from None
        try:
            return _from_study(location, storage, replace(opts, study=name), kind="sweep")
        except ConfigError as exc:
            if "cannot open" not in str(exc) and "no such" not in str(exc).lower():
                raise
            log.warning("%s; choosing among the job directories of %s instead", exc, path)
    if (path / "config.yaml").is_file() and (path / "results.json").is_file():
        if opts.trial is not None:
            raise ConfigError(
                f"fit.trial={opts.trial}: fit.from={location} is one run's directory, not a sweep"
            )
        config, results = _read_run_dir(path, f"fit.from={location}")
        return Source("run", location, path, config, results, value=_value(results))
    return _from_job_dirs(location, path, opts)


def _value(results: Mapping[str, Any] | None) -> float | None:
    value = (results or {}).get("mean_accuracy")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _from_job_dirs(location: str, sweep_dir: Path, opts: FitOptions) -> Source:
    """A sweep directory without a readable study: its job directories' ``results.json``."""
    jobs = []
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        if not ((d / "config.yaml").is_file() and (d / "results.json").is_file()):
            continue
        config, results = _read_run_dir(d, f"fit.from={location}")
        number = ((results or {}).get("trial") or {}).get("number")
        if number is None and d.name.isdigit():
            number = int(d.name)
        jobs.append((number, d, config, results))
    if not jobs:
        raise ConfigError(
            f"fit.from={location}: neither a run directory (config.yaml, results.json) nor a "
            "sweep directory (study.json, or job directories with results.json)"
        )
    if opts.trial is not None:
        found = [j for j in jobs if j[0] == opts.trial]
        if not found:
            raise ConfigError(
                f"fit.trial={opts.trial}: no job of {location} is trial {opts.trial} "
                f"(trials there: {sorted(j[0] for j in jobs if j[0] is not None)})"
            )
        chosen = found[0]
        status = (chosen[3] or {}).get("status")
        if status != "complete":
            raise ConfigError(
                f"fit.trial={opts.trial}: the job of trial {opts.trial} in {location} is "
                f"{status or 'unfinished'}; choose a complete trial"
            )
    else:
        done = [
            j
            for j in jobs
            if (j[3] or {}).get("status") == "complete"
            and _value(j[3]) is not None
            and not _leaky(j[2], j[3])
        ]
        if not done:
            raise ConfigError(f"fit.from={location}: no job completed on the fold protocol")
        chosen = max(done, key=lambda j: _value(j[3]) or -math.inf)
    number, d, config, results = chosen
    return Source("sweep", location, d, config, results, trial=number, value=_value(results))


def _storage_call(call: Any, location: str, storage: str, *args: Any) -> Any:
    """``call(storage, *args)`` of :mod:`urbansound.sweep.records`; its error as one line that
    names ``fit.from`` (the URL without its password) and what to give instead."""
    from urbansound.utils.redaction import redact_url

    try:
        return call(storage, *args)
    except ConfigError as exc:
        message = " ".join(str(exc).split())
        if "://" not in storage and Path(storage).is_file() and "cannot open" in message:
            message += (
                "; it is neither an SQLite database nor an Optuna journal file: give a run "
                "directory, a sweep directory, a study file or a storage URL"
            )
        raise ConfigError(f"fit.from={redact_url(location)}: {message}") from None


def _from_study(location: str, storage: str, opts: FitOptions, *, kind: str) -> Source:
    from urbansound.sweep import records
    from urbansound.utils.redaction import redact_url

    shown = redact_url(location)
    name = opts.study
    # The names first: a study that is not there is named together with those that are.
    names = _storage_call(records.study_names, location, storage)
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
    study = _storage_call(records.load_study, location, storage, name)
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
        sign = -1.0 if study.direction == "maximize" else 1.0
        candidates = sorted(
            (t for t in study.trials if t.state == "COMPLETE" and t.value is not None),
            key=lambda t: (sign * float(t.value), t.number),
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


# --------------------------------------------------------------------------------------------
# Overrides on top of a source's configuration


def apply_overrides(
    base: Mapping[str, Any], composed: Any, overrides: Sequence[str]
) -> dict[str, Any]:
    """``base`` (a resolved config) with the keys that ``overrides`` set taken from ``composed``.

    ``composed`` is the Hydra config composed with those overrides (a DictConfig). A group choice
    (``features=logmel``) replaces the whole group; a key that other keys interpolate
    (``n_mfcc``, read by ``features.n_mfcc``) sets those too. ``fit.*``, ``hydra.*`` and
    ``trial.*`` overrides are not configuration of the model.
    """
    from omegaconf import OmegaConf

    from urbansound.config.overrides import parse_all

    out = OmegaConf.create(dict(base))
    raw = OmegaConf.to_container(composed, resolve=False)
    assert isinstance(raw, dict)
    parsed = parse_all(overrides)
    for o in parsed:
        key = o.key_or_group
        if key.split(".")[0].split("/")[0] in ("fit", "hydra", "trial", "sweep"):
            continue
        if o.is_delete():
            raise ConfigError(f"~{key}: deleting keys is not supported by fit")
        keys = [key.replace("/", "."), *_followers(raw, "${" + key + "}")]
        for k in keys:
            value = OmegaConf.select(composed, k, throw_on_missing=False)
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
            OmegaConf.update(out, k, value, merge=False, force_add=True)
    result = OmegaConf.to_container(out, resolve=True)
    assert isinstance(result, dict)
    result["trial"] = {"study_name": None, "storage": None, "number": None}
    result.pop("fit", None)
    return result


def _followers(node: Any, text: str, prefix: str = "") -> list[str]:
    """Dotted keys under ``node`` whose value is exactly the interpolation ``text``."""
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            out += _followers(v, text, f"{prefix}{k}.")
        return out
    return [prefix[:-1]] if node == text else []
