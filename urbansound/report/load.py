"""Reading a sweep: its study (through :mod:`urbansound.sweep.records`) and its run directories.

A sweep directory is found by what it holds, in this order:

1. ``study.json`` (``{"study_name", "storage", "direction", "metric", "password_env"}``,
   written by the sweeper at the start of every sweep): the study is read from that storage
   (with the password of the environment variable it names), so a directory holding only
   ``trials.csv`` and ``best_params.yaml`` (a re-run of a finished sweep) is reported too;
2. the jobs' ``results.json``: the storage named in their ``config.yaml`` (``trial.storage``)
   is opened where that works, so failed trials, which have no results, are listed too;
3. the run directories alone (Hydra's basic sweeper, or a storage that cannot be opened).

A run directory's ``results.json`` is read as the typed
:class:`~urbansound.training.results.RunResult` (every value checked); one that cannot be read
is one warning naming the file and the key, and the trial is reported without its results. So
is a run directory that records another study or trial than the one the storage links it to
(:func:`urbansound.sweep.ownership.trial_mismatch`): its results are never mixed into this
study's. The rules every reader shares (the LEAKY split, the best trial) are
:mod:`urbansound.sweep.records`'.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from urbansound.errors import ConfigError, DataError
from urbansound.report.trials import Sweep, TrialRecord, finite
from urbansound.sweep.ownership import STUDY_FILE, Owner, trial_mismatch
from urbansound.sweep.records import (
    StudyRecords,
    StudyTrial,
    load_study,
    override_params,
    study_names,
)
from urbansound.sweep.urls import display_storage, refuse_password
from urbansound.training.results import RunResult

log = logging.getLogger(__name__)

__all__ = [
    "EVALUATIONS",
    "find_run_dirs",
    "load_evaluations",
    "load_sweep",
    "open_study",
    "record_from_run_dir",
]

EVALUATIONS = "evaluations"
_SKIP_KEYS = ("trial", "hydra")  # the sweeper's own overrides: not parameters of a trial


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _read_results(path: Path) -> RunResult | None:
    """``results.json`` as a checked :class:`RunResult`; None, with one warning, when it cannot
    be read (missing, not JSON, or a value that is not what ``urbansound.run`` writes)."""
    data = _read_json(path)
    if data is None:
        return None
    try:
        return RunResult.from_dict(data, where=str(path))
    except DataError as exc:
        log.warning("cannot read %s", exc)
        return None


def _read_config(run_dir: Path) -> dict[str, Any] | None:
    for candidate in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if candidate.is_file():
            try:
                cfg = yaml.safe_load(candidate.read_text())
            except (OSError, yaml.YAMLError) as exc:
                log.warning("cannot read %s: %s", candidate, exc)
                return None
            return cfg if isinstance(cfg, dict) else None
    return None


def find_run_dirs(path: str | Path) -> list[Path]:
    """Directories at or below ``path`` holding a ``results.json`` (report folders excluded)."""
    path = Path(path)
    if (path / "results.json").is_file():
        return [path]
    found = []
    for res in sorted(path.rglob("results.json")):
        rel = res.parent.relative_to(path).parts
        if "report" in rel or EVALUATIONS in rel:
            continue
        found.append(res.parent)
    return found


def record_from_run_dir(run_dir: str | Path) -> TrialRecord | None:
    """A :class:`TrialRecord` from a run directory's ``results.json`` and ``config.yaml``."""
    run_dir = Path(run_dir)
    results = _read_results(run_dir / "results.json")
    if results is None:
        return None
    number = results.trial.get("number")
    if not isinstance(number, int) and run_dir.name.isdigit():
        number = int(run_dir.name)
    status = results.status.lower()
    state = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}.get(status, "RUNNING")
    value = finite(results.mean_accuracy) if state == "COMPLETE" else None
    total = results.durations.get("total")
    return TrialRecord(
        number=number if isinstance(number, int) else None,
        state=state,
        value=value,
        params=override_params(results.overrides, skip=_SKIP_KEYS),
        duration_s=total,
        run_dir=run_dir,
        results=results,
        config=_read_config(run_dir),
    )


def _record_from_trial(t: StudyTrial, owner: Owner) -> TrialRecord:
    run_dir = t.run_dir
    if run_dir is None:  # any attribute naming a directory with results
        for value in t.user_attrs.values():
            if isinstance(value, str) and value and (Path(value) / "results.json").is_file():
                run_dir = Path(value)
                break
    rec = record_from_run_dir(run_dir) if run_dir and run_dir.is_dir() else None
    why = _not_this_trial(rec, owner, t.number)
    if why is not None:  # another study's (or trial's) files in its place: never mixed in
        log.warning("trial #%d: %s/results.json is not used: %s", t.number, run_dir, why)
        rec, run_dir = None, None
    return TrialRecord(
        number=t.number,
        state=t.state,
        value=t.value,
        params=dict(t.params),
        duration_s=t.duration_s,
        run_dir=run_dir,
        results=rec.results if rec else None,
        config=rec.config if rec else None,
        error=t.error,
    )


def one_line(text: str) -> str:
    """An error text on one line: SQLAlchemy's ``[SQL: ...]`` and ``(Background on this error
    at: ...)`` lines dropped, the other lines joined with spaces, a parenthesis left open by the
    cut closed."""
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and not ln.strip().startswith(("[SQL:", "[parameters:", "(Background on"))
    ]
    out = " ".join(lines)
    return out + ")" * max(0, out.count("(") - out.count(")"))


def open_study(
    storage: str,
    study_name: str | None,
    *,
    where: str = "--storage",
    password_env: str | None = None,
) -> StudyRecords:
    """A study's records, or :class:`ConfigError` naming the studies the storage holds.

    ``where`` names the storage's origin in messages (the option, or a ``study.json`` file);
    ``password_env`` the environment variable holding the storage's password.
    """
    shown = display_storage(storage)
    try:
        names = study_names(storage, password_env=password_env)
    except ConfigError as exc:
        raise ConfigError(f"{where} {shown}: {one_line(str(exc))}") from None
    if not names:  # "--study is needed" would send the user looking for a name
        raise ConfigError(
            f"{where} {shown}: holds no study; give the storage a sweep wrote "
            "(its hydra.sweeper.storage; the sweep directory's study.json names it)"
        )
    if study_name is None:
        if len(names) == 1:
            study_name = names[0]
        else:
            raise ConfigError(
                f"--study is needed: {shown} holds {len(names)} studies "
                f"({', '.join(names) or 'none'})"
            )
    if study_name not in names:
        raise ConfigError(
            f"--study {study_name}: no such study in {shown}; it holds: "
            f"{', '.join(names) or 'no study'}"
        )
    try:
        return load_study(storage, study_name, password_env=password_env)
    except ConfigError as exc:
        raise ConfigError(f"{where} {shown}: {one_line(str(exc))}") from None


def _storage_of(records: Sequence[TrialRecord]) -> tuple[str | None, str | None]:
    """The storage and study named by the jobs' own ``config.yaml`` / ``results.json``."""
    pairs = {((r.config or {}).get("trial") or {}).get("storage") for r in records if r.config}
    names = {r.results.trial.get("study_name") for r in records if r.results is not None}
    pairs.discard(None)
    names.discard(None)
    if len(pairs) == 1 and len(names) == 1:
        return pairs.pop(), names.pop()
    return None, None


def _study_file(paths: Sequence[Path]) -> tuple[Path, dict[str, Any]] | None:
    for p in paths:
        f = p / STUDY_FILE
        if f.is_file():
            info = _read_json(f)
            if info and info.get("storage") and info.get("study_name"):
                return f, info
            log.warning("%s: no study_name/storage in it; reading the run directories", f)
    return None


def load_sweep(
    paths: Sequence[str | Path] = (),
    *,
    storage: str | None = None,
    study_name: str | None = None,
    password_env: str | None = None,
) -> Sweep:
    """Collect a study's trials from its storage, from sweep/run directories, or from both.

    See the module docstring for how a sweep directory is read. ``password_env`` names the
    environment variable holding ``storage``'s password (a sweep directory's ``study.json``
    names its own).

    Raises
    ------
    ConfigError
        When nothing to report is found, naming where it looked; when ``storage`` holds a
        password (it would be written into the report: give it through the environment).
    """
    paths = [Path(p) for p in paths]
    if storage is not None:
        refuse_password(
            storage,
            key="--storage",
            how="name an environment variable that holds it with --password-env NAME",
        )
    dir_records: list[TrialRecord] = []
    for p in paths:
        if not p.exists():
            raise ConfigError(f"{p}: no such sweep or run directory")
        if not p.is_dir():
            raise ConfigError(
                f"{p}: a file, not a directory; pass the sweep directory "
                f"(outputs/multirun/<date>/<time>) or a run directory, e.g. {p.parent}"
            )
        dir_records += [r for d in find_run_dirs(p) if (r := record_from_run_dir(d))]
    if storage is not None:
        study = open_study(storage, study_name, password_env=password_env)
        return _merge(study, dir_records, paths)
    candidates: list[tuple[str, str, str, str | None]] = []
    if found := _study_file(paths):
        f, info = found
        env = info.get("password_env")
        candidates.append(
            (str(info["storage"]), str(info["study_name"]), str(f), env if env else None)
        )
    if dir_records:
        found_storage, found_name = _storage_of(dir_records)
        if found_storage is not None and found_name is not None:
            candidates.append((found_storage, found_name, "the jobs' config.yaml storage", None))
    failed: list[str] = []
    for url, name, where, env in candidates:
        try:
            study = open_study(url, name, where=where, password_env=env)
        except ConfigError as exc:
            if dir_records:
                log.warning("%s; reporting the run directories only", exc)
            failed.append(str(exc))
            continue
        log.info("study %s opened from %s", name, display_storage(url))
        return _merge(study, dir_records, paths)
    if not dir_records:
        where = ", ".join(map(str, paths))
        if failed:  # the study file was there: its storage is the problem
            raise ConfigError(f"{where}: no results.json found, and {failed[0]}")
        raise ConfigError(
            f"{where}: no results.json found and no readable {STUDY_FILE}; pass a sweep "
            "directory (outputs/multirun/<date>/<time>) or --storage URL --study NAME"
        )
    return _from_run_dirs(dir_records, paths)


def _from_run_dirs(dir_records: list[TrialRecord], paths: Sequence[Path]) -> Sweep:
    if len(paths) == 1:
        here = paths[0].resolve()
        name = f"{here.parent.name}/{here.name}"
    else:
        name = "runs"
    taken = {r.number for r in dir_records if r.number is not None}
    free = (n for n in range(len(dir_records) + len(taken) + 1) if n not in taken)
    for r in dir_records:  # a plain run directory: number it after the sweep's jobs
        if r.number is None:
            r.number = next(free)
    fixed = _common_params(dir_records)
    for r in dir_records:  # label trials by what was swept, not by what every job shares
        r.params = {k: v for k, v in r.params.items() if k not in fixed}
    return Sweep(
        name=name,
        source=", ".join(str(p) for p in paths),
        direction="maximize",
        records=dir_records,
        study=StudyRecords(
            name=name, direction="maximize", trials=[r.study_trial() for r in dir_records]
        ),
        fixed=fixed,
        paths=list(paths),
    )


def _common_params(records: Sequence[TrialRecord]) -> dict[str, Any]:
    """Overrides with one value in every record (none when there is a single record)."""
    if len(records) < 2:
        return {}
    first = records[0].params
    return {
        k: v
        for k, v in first.items()
        if all(k in r.params and repr(r.params[k]) == repr(v) for r in records[1:])
    }


def _not_this_trial(rec: TrialRecord | None, owner: Owner, number: int | None) -> str | None:
    """Why a run directory's record is not trial ``number`` of ``owner`` (None: it is)."""
    if rec is None or rec.results is None or number is None:
        return None
    return trial_mismatch(rec.results.trial, rec.config, owner=owner, number=number)


def _merge(study: StudyRecords, dir_records: Sequence[TrialRecord], paths: Sequence[Path]) -> Sweep:
    owner = Owner(study.storage or "", study.name)
    records = [_record_from_trial(t, owner) for t in study.trials]
    pool = {
        r.number: r
        for r in dir_records
        if r.number is not None and r.results is not None
        if r.results.trial.get("study_name") is not None
        and _not_this_trial(r, owner, r.number) is None
    }
    for rec in records:
        extra = pool.get(rec.number)
        if rec.results is None and extra is not None:
            rec.run_dir, rec.results, rec.config = extra.run_dir, extra.results, extra.config
    # run directories given besides the study's own (a separate cv=random_split run, say) take
    # part in the protocol comparison but are not trials; another study's jobs take no part
    others = []
    for r in dir_records:
        recorded = r.results.trial.get("study_name") if r.results is not None else None
        if r.number is not None and pool.get(r.number) is r:
            continue
        if recorded is not None:
            log.warning(
                "%s is not used: %s",
                r.run_dir,
                _not_this_trial(r, owner, r.number) or f"it records study {recorded}",
            )
            continue
        r.number = None
        others.append(r)
    source = f"{display_storage(study.storage)} (study {study.name})"
    if paths:
        source += f"; {', '.join(map(str, paths))}"
    return Sweep(
        name=study.name,
        source=source,
        direction=study.direction,
        records=records + others,
        study=study,
        storage=study.storage,
        paths=list(paths),
    )


def load_evaluations(out_dir: str | Path) -> list[TrialRecord]:
    """Evaluation runs previously written under ``<report dir>/evaluations/``."""
    root = Path(out_dir) / EVALUATIONS
    if not root.is_dir():
        return []
    recs = []
    for d in sorted(p for p in root.iterdir() if (p / "results.json").is_file()):
        rec = record_from_run_dir(d)
        if rec is not None:
            rec.number = None
            recs.append(rec)
    return recs
