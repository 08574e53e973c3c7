"""Which study a sweep directory belongs to, and which trial each of its job directories.

A sweep directory belongs to one study: its storage (:func:`~urbansound.sweep.urls.
storage_identity`: the database or file itself, not the driver or password that reach it) and
its name. The sweep records them in the directory's ``study.json`` when it claims the directory
(:func:`claim_sweep_dir`), before any trial runs; a job directory records its trial in Hydra's
``.hydra/overrides.yaml`` (``trial.study_name``, ``trial.storage``, ``trial.number``) and in its
``results.json`` (``trial``). So:

- a sweep whose directory holds another study's ``study.json`` or job directories stops before
  any trial with one line naming both studies (:func:`check_sweep_dir`): job numbers are trial
  numbers, and its trials would overwrite the other study's files;
- a reader (the report, ``fit``) takes a run directory as a trial's only when what the
  directory records is that trial of that study (:func:`trial_mismatch`).

Nothing here imports Optuna: readers use it freely.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from urbansound.config.overrides import parse_override
from urbansound.errors import ConfigError
from urbansound.sweep.urls import display_storage, storage_identity

#: The file of a sweep directory that names its study.
STUDY_FILE = "study.json"


@dataclass(frozen=True)
class Owner:
    """A study as the owner of directories: its storage's identity and its name."""

    storage: str  # as given (shown without a password)
    study_name: str

    @property
    def identity(self) -> tuple[str, str]:
        """What two owners must share to be one study."""
        return storage_identity(self.storage), self.study_name

    def __str__(self) -> str:
        return f"study {self.study_name} in {display_storage(self.storage)}"


@dataclass(frozen=True)
class JobRecord:
    """What a job directory records of its trial (fields None where it records nothing)."""

    study_name: str | None
    storage: str | None
    number: int | None

    def owner(self) -> Owner | None:
        """The study the job ran for; None for a run of no study (a single run, another
        sweeper), or when it recorded the study's name but not its storage."""
        if self.study_name is None or self.storage is None:
            return None
        return Owner(self.storage, self.study_name)


def read_study_file(sweep_dir: Path) -> dict[str, Any] | None:
    """``<sweep_dir>/study.json`` as written by the sweeper; None when there is none.

    Raises
    ------
    ConfigError
        The file is there but no study record (not JSON, or without its name and storage).
    """
    path = sweep_dir / STUDY_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} cannot be read ({exc}); it names the study this directory belongs to: "
            "restore it, or choose another directory"
        ) from None
    if not isinstance(info, dict) or not info.get("study_name") or not info.get("storage"):
        raise ConfigError(
            f"{path} names no study (study_name, storage); restore it, or choose another directory"
        )
    return info


def job_record(job_dir: Path) -> JobRecord | None:
    """What ``job_dir`` records of its trial; None when it is no job directory (no
    ``.hydra/overrides.yaml``, no ``results.json``)."""
    overrides = job_dir / ".hydra" / "overrides.yaml"
    found: dict[str, Any] = {}
    if overrides.is_file():
        try:
            items = yaml.safe_load(overrides.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            items = None
        for text in items if isinstance(items, list) else []:
            if not str(text).startswith("trial."):
                continue
            try:
                parsed = parse_override(str(text))
            except ConfigError:  # not Hydra's grammar: records nothing
                parsed = None
            if parsed is not None:
                found[parsed[0].removeprefix("trial.")] = parsed[1]
    results = job_dir / "results.json"
    if results.is_file():
        try:
            trial = json.loads(results.read_text(encoding="utf-8")).get("trial")
        except (OSError, ValueError, AttributeError):
            trial = None
        for key, value in (trial if isinstance(trial, dict) else {}).items():
            found.setdefault(key, value)
    elif not overrides.is_file():
        return None
    number = found.get("number")
    return JobRecord(
        study_name=_text(found.get("study_name")),
        storage=_text(found.get("storage")),
        number=number if isinstance(number, int) and not isinstance(number, bool) else None,
    )


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def check_sweep_dir(sweep_dir: Path, owner: Owner) -> None:
    """ConfigError when ``sweep_dir`` holds another study's ``study.json`` or job directories.

    Job directories are the immediate subdirectories holding ``.hydra/overrides.yaml`` or
    ``results.json`` (Hydra's ``hydra.sweep.subdir``); a report folder is none. A job of no
    study (a single run, Hydra's basic sweeper) counts as another's: this sweep would
    overwrite it. A missing directory belongs to nobody yet.
    """
    info = read_study_file(sweep_dir)
    here = f"hydra.sweep.dir={sweep_dir}"
    if info is not None:
        theirs = Owner(str(info["storage"]), str(info["study_name"]))
        if theirs.identity != owner.identity:
            raise ConfigError(
                f"{here} belongs to {theirs} (its {STUDY_FILE}); this sweep is {owner}: give "
                "this sweep another hydra.sweep.dir, or run that study's own command to "
                "continue it there"
            )
    if not sweep_dir.is_dir():
        return
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        record = job_record(job_dir)
        if record is None:
            continue
        theirs = record.owner()
        if theirs is not None and theirs.identity == owner.identity:
            continue
        what = (
            f"a job of {theirs} (trial {record.number})"
            if theirs is not None
            else "a run of no study (a single run, or another sweeper's job)"
        )
        raise ConfigError(
            f"{here} holds {job_dir.name}/, {what}; this sweep is {owner} and would write over "
            "it: give this sweep another hydra.sweep.dir"
        )


def claim_sweep_dir(sweep_dir: Path, owner: Owner, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as ``<sweep_dir>/study.json``, making the directory ``owner``'s.

    The file is created only if no other process created it first (two sweeps starting at
    once on one directory); an existing one is rewritten only when it is ``owner``'s.
    Returns its path.

    Raises
    ------
    ConfigError
        The directory is another study's (:func:`check_sweep_dir`), or cannot be written.
    """
    path = sweep_dir / STUDY_FILE
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=sweep_dir, prefix=f".{STUDY_FILE}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} cannot be written ({exc.strerror or exc}): choose a "
            "writable location"
        ) from None
    try:
        try:
            os.link(tmp, path)  # atomic: fails when the file exists
        except FileExistsError:
            check_sweep_dir(sweep_dir, owner)
            os.replace(tmp, path)
        except OSError:  # a file system without hard links: check, then replace
            check_sweep_dir(sweep_dir, owner)
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def trial_mismatch(
    recorded: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    *,
    owner: Owner,
    number: int,
) -> str | None:
    """Why a run directory is not trial ``number`` of ``owner``; None when it is.

    ``recorded`` is its ``results.json``'s ``trial`` (study name and number, and the storage
    where written; None without a ``results.json``); ``config`` its ``config.yaml``, whose
    ``trial`` node (``study_name``, ``storage``, ``number``) fills in what ``recorded`` lacks. A
    storage recorded nowhere is not held against it; a study name or number that differs is.
    """
    in_config = dict((config or {}).get("trial") or {})
    recorded = dict(recorded or in_config)
    storage = recorded.get("storage") or in_config.get("storage")
    name, found = recorded.get("study_name"), recorded.get("number")
    if name != owner.study_name or found != number:
        of = f"trial {found} of study {name}" if name is not None else "a run of no study"
        return f"it records {of}, not trial {number} of study {owner.study_name}"
    if storage and storage_identity(str(storage)) != storage_identity(owner.storage):
        return (
            f"it records study {name} in {display_storage(str(storage))}, not in "
            f"{display_storage(owner.storage)}"
        )
    return None
