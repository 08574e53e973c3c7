"""Sweep reports: ``python -m urbansound.report <sweep dir>... | --storage URL --study NAME``.

Reads a study's trials (from its Optuna storage, or from the job directories of a sweep, each
with its ``results.json``) and writes into one folder (default ``<sweep dir>/report`` or
``outputs/reports/<study>``):

- ``report.html``: a self-contained page (plotly.js inlined, PNGs embedded; no network needed):
  the trials sorted by value, the best configuration with its per-fold accuracies, Optuna's
  optimisation history, parameter importances and parallel coordinates, per-epoch CV curves,
  the best trial's confusion matrix and per-class accuracy, the paired comparison of the top
  configurations across folds, the protocol comparison (predefined folds next to the LEAKY random
  split) and the held-out outer-fold estimate;
- ``report.md``: the same numbers as Markdown, linking the PNG copies of the key plots;
- ``summary.json``: the numbers, machine-readable;
- ``*.png``: matplotlib copies of the key plots.

Two optional evaluations train the best configuration once more (they never touch the study):

- ``--evaluate-outer``: for a sweep run with ``cv.outer_fold=k`` (fold k held out of the search;
  every trial cross-validates on the other folds) the winner is trained on all folds but k and
  tested once on fold k (``cv.evaluate_outer=true``). That accuracy is an unbiased estimate of the
  chosen configuration; the search objective, maximised over trials, is optimistic.
- ``--random-split``: the winner evaluated with ``cv=random_split``, the tutorial's LEAKY 80/20
  split, on the same clips, so the report shows both protocols side by side.

Their run directories go to ``<report dir>/evaluations/`` and the report picks them up.

The "best" configuration is the best COMPLETE trial that used the predefined folds; a trial on
the random split is never chosen (its score is inflated by leakage) and is marked LEAKY wherever it
appears.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as _dt
import html
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from urbansound import plots, stats
from urbansound.errors import ConfigError, UrbansoundError

log = logging.getLogger(__name__)

__all__ = [
    "Sweep",
    "TrialRecord",
    "build_report",
    "evaluate_outer",
    "evaluate_random_split",
    "load_sweep",
    "main",
    "paired_comparisons",
    "protocol_comparison",
]

RUN_DIR_ATTRS = ("run_dir", "job_dir", "output_dir", "run_directory")
EVALUATIONS = "evaluations"
LEAKY = "LEAKY"
# Config keys that do not change what a run computes (where files go, how fast, tracking).
_NEUTRAL_KEYS = {
    "trial": None,
    "tracking": None,
    "hydra": None,
    "cv": None,  # the protocol itself; the outer fold is added back separately
    "data": ("demo_dir",),
    "features": ("cache_dir", "n_jobs"),
    "train": ("device", "threads"),
}


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class TrialRecord:
    """One trial (or one evaluation run): its Optuna fields and its run directory's content."""

    number: int | None
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    run_dir: Path | None = None
    results: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    error: str | None = None

    @property
    def leaky(self) -> bool:
        """True for the random-split protocol (slices of one recording in train and test)."""
        if self.results and "leaky" in self.results:
            return bool(self.results["leaky"])
        if self.results and str(self.results.get("protocol", "")).startswith("random_split"):
            return True
        cv = (self.config or {}).get("cv") or {}
        return cv.get("name") == "random_split" or self.params.get("cv") == "random_split"

    @property
    def outer_fold(self) -> int | None:
        """The fold held out of the search (``cv.outer_fold``), if any."""
        cv = (self.config or {}).get("cv") or {}
        k = cv.get("outer_fold")
        return int(k) if k is not None else None

    @property
    def folds(self) -> list[dict[str, Any]]:
        """``results.json``'s per-fold entries (empty when the run has none)."""
        return list((self.results or {}).get("folds") or [])

    @property
    def std(self) -> float | None:
        v = (self.results or {}).get("std_accuracy")
        return float(v) if v is not None else None

    @property
    def pooled_accuracy(self) -> float | None:
        """Accuracy over all test clips of all folds (each clip counts once; the objective is the
        unweighted mean over folds, which small folds sway as much as large ones)."""
        folds = [f for f in self.folds if f.get("n_test")]
        n = sum(int(f["n_test"]) for f in folds)
        if not n:
            return None
        return sum(float(f["accuracy"]) * int(f["n_test"]) for f in folds) / n

    @property
    def dataset(self) -> str | None:
        return (self.results or {}).get("dataset")

    @property
    def name(self) -> str:
        return f"#{self.number}" if self.number is not None else (self.run_dir or Path("?")).name

    def label(self) -> str:
        """Short text naming the configuration (its swept parameters)."""
        text = ", ".join(f"{k}={_fmt_param(v)}" for k, v in sorted(self.params.items()))
        return text or "defaults"

    def protocol(self) -> str:
        """Protocol text as shown in tables (the LEAKY split says so)."""
        if self.results and self.results.get("protocol"):
            text = str(self.results["protocol"])
        else:
            text = "random_split" if self.leaky else "folds"
        if self.leaky and LEAKY not in text:
            text += f" ({LEAKY})"
        return text


@dataclass
class Sweep:
    """A study's trials, ready to report."""

    name: str
    source: str
    direction: str
    records: list[TrialRecord]
    study: Any  # optuna.Study: the real one, or one rebuilt in memory from the run directories
    storage: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)  # overrides shared by every job


def _fmt_param(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
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


def _parse_override(text: str) -> tuple[str, Any] | None:
    """``key=value`` of a Hydra override as (key, int | float | bool | str); None for the sweeper's
    own ``trial.*`` and ``hydra.*`` keys."""
    text = text.lstrip("+~")
    if "=" not in text:
        return None
    key, raw = text.split("=", 1)
    if key.startswith(("trial.", "hydra.", "hydra/")) or key in ("trial", "hydra"):
        return None
    for kind in (int, float):  # Hydra reads 3e-3 as a float; YAML 1.1 would keep it a string
        try:
            return key, kind(raw)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(raw) if raw else raw
    except yaml.YAMLError:
        value = raw
    if not isinstance(value, bool | str) and value is not None:
        value = raw  # lists, dicts: compared and shown as written
    return key, value


def _number_from_dir(run_dir: Path) -> int | None:
    return int(run_dir.name) if run_dir.name.isdigit() else None


def record_from_run_dir(run_dir: str | Path) -> TrialRecord | None:
    """A :class:`TrialRecord` from a run directory's ``results.json`` and ``config.yaml``."""
    run_dir = Path(run_dir)
    results = _read_json(run_dir / "results.json")
    if results is None:
        return None
    trial = results.get("trial") or {}
    number = trial.get("number")
    if number is None:
        number = _number_from_dir(run_dir)
    params = dict(p for o in results.get("overrides") or [] if (p := _parse_override(o)))
    status = str(results.get("status", "complete")).lower()
    state = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}.get(status, "RUNNING")
    value = results.get("mean_accuracy") if state == "COMPLETE" else None
    total = (results.get("durations") or {}).get("total")
    return TrialRecord(
        number=int(number) if number is not None else None,
        state=state,
        value=float(value) if value is not None else None,
        params=params,
        duration_s=float(total) if total is not None else None,
        run_dir=run_dir,
        results=results,
        config=_read_config(run_dir),
    )


def _run_dir_from_attrs(attrs: Mapping[str, Any]) -> Path | None:
    for key in RUN_DIR_ATTRS:
        if attrs.get(key):
            return Path(str(attrs[key]))
    for value in attrs.values():  # any attribute naming a directory with results
        if isinstance(value, str) and value and (Path(value) / "results.json").is_file():
            return Path(value)
    return None


def records_from_study(study: Any) -> list[TrialRecord]:
    """One record per trial of an Optuna study, with its run directory's results when found."""
    records = []
    for t in study.get_trials(deepcopy=False):
        run_dir = _run_dir_from_attrs(t.user_attrs)
        rec = record_from_run_dir(run_dir) if run_dir and run_dir.is_dir() else None
        duration = t.duration.total_seconds() if t.duration is not None else None
        error = t.user_attrs.get("error") or t.system_attrs.get("fail_reason")
        records.append(
            TrialRecord(
                number=t.number,
                state=t.state.name,
                value=float(t.value) if t.value is not None else None,
                params=dict(t.params),
                duration_s=duration,
                run_dir=run_dir,
                results=rec.results if rec else None,
                config=rec.config if rec else None,
                error=str(error) if error else None,
            )
        )
    return records


def open_study(storage: str, study_name: str | None) -> Any:
    """Load a study, or raise :class:`ConfigError` naming the studies the storage holds."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage.startswith("sqlite:///"):  # opening a missing SQLite file would create it
        db = storage.removeprefix("sqlite:///").split("?", 1)[0]
        if db != ":memory:" and not Path(db).is_file():
            raise ConfigError(
                f"--storage {storage}: no such SQLite file {db} (relative to {Path.cwd()}); run "
                "the report from where the sweep ran or give the absolute path"
            )
    try:
        names = optuna.study.get_all_study_names(storage=storage)
    except Exception as exc:
        raise ConfigError(f"--storage {storage}: cannot open the study storage ({exc})") from None
    if study_name is None:
        if len(names) == 1:
            study_name = names[0]
        else:
            raise ConfigError(
                f"--study is needed: {storage} holds {len(names)} studies "
                f"({', '.join(names) or 'none'})"
            )
    if study_name not in names:
        raise ConfigError(
            f"--study {study_name}: no such study in {storage}; it holds: "
            f"{', '.join(names) or 'no study'}"
        )
    study = optuna.load_study(study_name=study_name, storage=storage)
    if len(study.directions) != 1:
        raise ConfigError(f"study {study_name} has several objectives; reports need one")
    return study


def study_from_records(records: Sequence[TrialRecord], *, name: str) -> Any:
    """An in-memory Optuna study holding the records (for Optuna's plots of a plain multirun)."""
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    values: dict[str, list[Any]] = {}
    for r in records:
        for k, v in r.params.items():
            values.setdefault(k, []).append(v)
    dists: dict[str, Any] = {}
    for k, vs in values.items():
        if all(isinstance(v, int) and not isinstance(v, bool) for v in vs):
            dists[k] = IntDistribution(min(vs), max(vs))
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in vs):
            dists[k] = FloatDistribution(float(min(vs)), float(max(vs)))
        else:
            dists[k] = CategoricalDistribution(sorted({str(v) for v in vs}))
    study = optuna.create_study(study_name=name, direction="maximize")
    for r in sorted(records, key=lambda r: (r.number is None, r.number or 0)):
        if r.state not in ("COMPLETE", "PRUNED"):
            continue
        params = {
            k: (str(v) if isinstance(dists[k], CategoricalDistribution) else v)
            for k, v in r.params.items()
        }
        history = (r.results or {}).get("history") or []
        inter = {int(h["epoch"]): float(h["mean_test_accuracy"]) for h in history}
        state = optuna.trial.TrialState[r.state]
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=r.value if state == optuna.trial.TrialState.COMPLETE else None,
                params=params,
                distributions={k: dists[k] for k in params},
                intermediate_values=inter,
            )
        )
    return study


def _storage_of(records: Sequence[TrialRecord]) -> tuple[str | None, str | None]:
    pairs = {((r.config or {}).get("trial") or {}).get("storage") for r in records if r.config} - {
        None
    }
    names = {((r.results or {}).get("trial") or {}).get("study_name") for r in records} - {None}
    if len(pairs) == 1 and len(names) == 1:
        return pairs.pop(), names.pop()
    return None, None


def load_sweep(
    paths: Sequence[str | Path] = (),
    *,
    storage: str | None = None,
    study_name: str | None = None,
) -> Sweep:
    """Collect a study's trials from its storage, from sweep/run directories, or from both.

    With directories only, the study named in their ``results.json`` is opened from the storage
    in their ``config.yaml`` where that works (so failed trials, which have no results, are
    listed too); otherwise the records of the directories alone make the report.

    Raises
    ------
    ConfigError
        When nothing to report is found, naming where it looked.
    """
    dir_records: list[TrialRecord] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise ConfigError(f"{p}: no such sweep or run directory")
        for d in find_run_dirs(p):
            rec = record_from_run_dir(d)
            if rec is not None:
                dir_records.append(rec)
    if paths and not dir_records and storage is None:
        raise ConfigError(
            f"{', '.join(map(str, paths))}: no results.json found; pass a sweep directory "
            "(outputs/multirun/<date>/<time>) or --storage URL --study NAME"
        )
    if storage is None and dir_records:
        found_storage, found_name = _storage_of(dir_records)
        if found_storage is not None:
            try:
                study = open_study(found_storage, found_name)
            except ConfigError as exc:
                log.warning("%s; reporting the run directories only", exc)
            else:
                storage, study_name = found_storage, found_name
                log.info("study %s opened from %s", found_name, found_storage)
                return _merge(study, storage, dir_records, paths)
    if storage is not None:
        return _merge(open_study(storage, study_name), storage, dir_records, paths)
    if len(paths) == 1:
        here = Path(paths[0]).resolve()
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
        study=study_from_records(dir_records, name=name),
        fixed=fixed,
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


def _merge(
    study: Any, storage: str, dir_records: Sequence[TrialRecord], paths: Sequence[str | Path]
) -> Sweep:
    records = records_from_study(study)

    def of_study(r: TrialRecord) -> bool:
        return ((r.results or {}).get("trial") or {}).get("study_name") == study.study_name

    pool = {r.number: r for r in dir_records if r.number is not None and of_study(r)}
    for rec in records:
        extra = pool.get(rec.number)
        if rec.results is None and extra is not None:
            rec.run_dir, rec.results, rec.config = extra.run_dir, extra.results, extra.config
    # run directories given besides the study's own (a separate cv=random_split run, say) take
    # part in the protocol comparison but are not trials
    others = [r for r in dir_records if not of_study(r)]
    for r in others:
        r.number = None
    return Sweep(
        name=study.study_name,
        source=f"{storage} (study {study.study_name})"
        + (f"; {', '.join(map(str, paths))}" if paths else ""),
        direction=study.direction.name.lower(),
        records=records + others,
        study=study,
        storage=storage,
    )


# ---------------------------------------------------------------------------------------------
# Analysis


def ranked(records: Iterable[TrialRecord], *, direction: str = "maximize") -> list[TrialRecord]:
    """COMPLETE trials with a value, best first; LEAKY (random-split) trials last."""
    done = [r for r in records if r.state == "COMPLETE" and r.value is not None]
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(done, key=lambda r: (r.leaky, sign * float(r.value), r.number or 0))


def best_record(sweep: Sweep) -> TrialRecord | None:
    """The best COMPLETE trial on the predefined folds (None when there is none)."""
    trials = [r for r in sweep.records if r.number is not None]
    for r in ranked(trials, direction=sweep.direction):
        if not r.leaky:
            return r
    return None


def _fold_table(rec: TrialRecord) -> dict[Any, dict[str, Any]]:
    return {f["fold"]: f for f in rec.folds if f.get("accuracy") is not None}


def paired_comparisons(sweep: Sweep, *, top: int = 5) -> list[dict[str, Any]]:
    """The best configuration against each of the next ``top - 1`` across their common folds.

    Only COMPLETE trials on the predefined folds with per-fold results take part. Each entry has
    ``best`` and ``other`` (trial numbers and labels) and ``comparison``
    (:class:`urbansound.stats.PairedComparison` as a dict) or ``note`` when fewer than two folds
    are shared.
    """
    cands = [
        r
        for r in ranked(
            [r for r in sweep.records if r.number is not None], direction=sweep.direction
        )
        if not r.leaky and len(r.folds) >= 2
    ][:top]
    if len(cands) < 2:
        return []
    best = cands[0]
    bt = _fold_table(best)
    out = []
    for other in cands[1:]:
        ot = _fold_table(other)
        common = [f for f in bt if f in ot]
        entry: dict[str, Any] = {
            "best": {"number": best.number, "label": best.label(), "value": best.value},
            "other": {"number": other.number, "label": other.label(), "value": other.value},
        }
        if len(common) < 2:
            entry["note"] = f"only {len(common)} common fold(s); no test possible"
        else:
            cmp = stats.paired_comparison(
                [bt[f]["accuracy"] for f in common],
                [ot[f]["accuracy"] for f in common],
                folds=common,
                n_train=[bt[f]["n_train"] for f in common],
                n_test=[bt[f]["n_test"] for f in common],
            )
            entry["comparison"] = cmp.to_dict()
        out.append(entry)
    return out


def config_signature(rec: TrialRecord) -> str | None:
    """What a run computes, apart from its protocol: the resolved config minus neutral keys."""
    if rec.config is None:
        if rec.results is None:
            return None
        params = {
            k: v for k, v in rec.params.items() if k != "cv" and not k.startswith(("cv.", "cv/"))
        }
        return json.dumps({"dataset": rec.dataset, "params": params}, sort_keys=True, default=str)
    cfg = copy.deepcopy(rec.config)
    for group, keys in _NEUTRAL_KEYS.items():
        if keys is None:
            cfg.pop(group, None)
        elif isinstance(cfg.get(group), dict):
            for k in keys:
                cfg[group].pop(k, None)
    cfg["outer_fold"] = rec.outer_fold
    cfg["dataset"] = rec.dataset
    return json.dumps(cfg, sort_keys=True, default=str)


def protocol_comparison(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """Configurations run with both protocols: fold-CV and LEAKY random-split accuracy."""
    groups: dict[str, dict[str, TrialRecord]] = {}
    for r in records:
        if r.state != "COMPLETE" or r.value is None or r.results is None:
            continue
        if (r.results or {}).get("evaluate_outer") or _is_outer_eval(r):
            continue
        sig = config_signature(r)
        if sig is None:
            continue
        slot = "random_split" if r.leaky else "folds"
        g = groups.setdefault(sig, {})
        if slot not in g or (r.number is not None and g[slot].number is None):
            g[slot] = r
    rows = []
    for g in groups.values():
        if "folds" in g and "random_split" in g:
            cv, rs = g["folds"], g["random_split"]
            rows.append(
                {
                    "label": cv.label() if cv.number is not None else rs.label(),
                    "dataset": cv.dataset,
                    "folds": {
                        "trial": cv.number,
                        "accuracy": cv.value,
                        "std": cv.std,
                        "n_folds": len(cv.folds),
                        "pooled_accuracy": cv.pooled_accuracy,
                        "run_dir": str(cv.run_dir),
                    },
                    "random_split": {
                        "trial": rs.number,
                        "accuracy": rs.value,
                        "run_dir": str(rs.run_dir),
                        "protocol": rs.protocol(),
                    },
                    "ratio": rs.value / cv.value if cv.value else None,
                }
            )
    return rows


def _is_outer_eval(rec: TrialRecord) -> bool:
    cv = (rec.config or {}).get("cv") or {}
    return bool(cv.get("evaluate_outer"))


def outer_estimates(sweep: Sweep, evaluations: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """Per held-out fold: the search's best inner-CV value and the once-only outer-fold score."""
    best = best_record(sweep)
    if best is None or best.outer_fold is None:
        return []
    k = best.outer_fold
    entry: dict[str, Any] = {
        "outer_fold": k,
        "trial": best.number,
        "label": best.label(),
        "search_objective": best.value,
        "inner_folds": [f["fold"] for f in best.folds],
        "outer_accuracy": None,
        "run_dir": None,
    }
    sig = config_signature(best)
    for ev in evaluations:
        if _is_outer_eval(ev) and ev.outer_fold == k and ev.state == "COMPLETE":
            if sig is not None and config_signature(ev) != sig:
                continue
            entry["outer_accuracy"] = ev.value
            entry["n_test"] = sum(f.get("n_test", 0) for f in ev.folds)
            entry["n_train"] = sum(f.get("n_train", 0) for f in ev.folds)
            entry["run_dir"] = str(ev.run_dir)
    return [entry]


# ---------------------------------------------------------------------------------------------
# Evaluations (train the winner once more; never reported to the study)


def _evaluate(
    rec: TrialRecord, *, out_dir: Path, cv_changes: Mapping[str, Any], progress: bool
) -> dict[str, Any]:
    from urbansound.config import settings_from_config
    from urbansound.run import run_experiment

    if rec.config is None:
        raise ConfigError(
            f"trial {rec.name}: its run directory ({rec.run_dir}) has no config.yaml to rebuild "
            "the configuration from"
        )
    cfg = copy.deepcopy(rec.config)
    cfg.pop("hydra", None)
    cfg["trial"] = {"study_name": None, "storage": None, "number": None}
    cfg.setdefault("cv", {}).update(cv_changes)
    settings = settings_from_config(cfg)
    overrides = [
        o
        for o in (rec.results or {}).get("overrides") or []
        if not o.lstrip("+~").startswith(("trial.", "cv="))
    ] + [f"cv.{k}={v}" for k, v in cv_changes.items()]
    return run_experiment(
        settings, run_dir=out_dir, resolved_config=cfg, overrides=overrides, progress=progress
    )


def evaluate_outer(rec: TrialRecord, *, out_dir: str | Path, progress: bool = True) -> dict:
    """Train ``rec``'s configuration on every fold but its held-out one and test on that fold once.

    Raises
    ------
    ConfigError
        When the trial did not hold a fold out (``cv.outer_fold`` unset).
    """
    if rec.outer_fold is None:
        raise ConfigError(
            f"trial {rec.name} did not hold a fold out of the search: run the sweep with "
            "cv.outer_fold=k (k = the fold to keep for the final estimate)"
        )
    return _evaluate(
        rec, out_dir=Path(out_dir), cv_changes={"evaluate_outer": True}, progress=progress
    )


def evaluate_random_split(rec: TrialRecord, *, out_dir: str | Path, progress: bool = True) -> dict:
    """Evaluate ``rec``'s configuration on the tutorial's LEAKY random 80/20 split (same clips)."""
    return _evaluate(
        rec, out_dir=Path(out_dir), cv_changes={"name": "random_split"}, progress=progress
    )


def load_evaluations(out_dir: Path) -> list[TrialRecord]:
    """Evaluation runs previously written under ``<report dir>/evaluations/``."""
    root = out_dir / EVALUATIONS
    if not root.is_dir():
        return []
    recs = []
    for d in sorted(p for p in root.iterdir() if (p / "results.json").is_file()):
        rec = record_from_run_dir(d)
        if rec is not None:
            rec.number = None
            recs.append(rec)
    return recs


# ---------------------------------------------------------------------------------------------
# Figures


def _plotly_div(fig: Any, div_id: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


def _png_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _importances(study: Any) -> dict[str, float]:
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2 or not any(t.params for t in complete):
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    with warnings.catch_warnings():
        # fANOVA warns when a parameter never varied; the importance is still defined (0)
        warnings.simplefilter("ignore", UserWarning)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


@dataclass
class _Figures:
    divs: dict[str, str] = field(default_factory=dict)  # section -> plotly HTML
    pngs: dict[str, Path] = field(default_factory=dict)  # name -> png path
    notes: dict[str, str] = field(default_factory=dict)  # section -> why it is missing


def _make_figures(
    sweep: Sweep,
    best: TrialRecord | None,
    comparisons: Sequence[dict[str, Any]],
    protocols: Sequence[dict[str, Any]],
    importances: Mapping[str, float],
    out_dir: Path,
) -> _Figures:
    import plotly.graph_objects as go
    from optuna import visualization as vis

    figs = _Figures()
    trials = [r for r in sweep.records if r.number is not None]
    done = [r for r in trials if r.state == "COMPLETE" and r.value is not None]

    def attempt(section: str, fn: Any) -> None:
        try:
            fn()
        except Exception as exc:  # one plot that cannot be drawn must not cost the report
            log.warning("plot %s not drawn: %s", section, exc)
            figs.notes[section] = f"not drawn: {exc}"

    if done:

        def history() -> None:
            figs.divs["history"] = _plotly_div(
                vis.plot_optimization_history(sweep.study), "plot-history"
            )
            fig = plots.sweep_history_figure(
                [r.number for r in done],
                [r.value for r in done],
                direction=sweep.direction,
                leaky=[r.leaky for r in done],
            )
            figs.pngs["optimization_history"] = plots.save_figure(
                fig, out_dir / "optimization_history.png"
            )

        attempt("history", history)
    else:
        figs.notes["history"] = "no COMPLETE trial yet"

    if importances:

        def importance() -> None:
            items = sorted(importances.items(), key=lambda kv: kv[1])
            fig = go.Figure(
                go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h")
            )
            fig.update_layout(
                title="Hyperparameter importances (fANOVA, seed 0)",
                xaxis_title="importance",
                height=200 + 30 * len(items),
            )
            figs.divs["importances"] = _plotly_div(fig, "plot-importances")
            figs.pngs["param_importances"] = plots.save_figure(
                plots.param_importance_figure(importances), out_dir / "param_importances.png"
            )

        attempt("importances", importance)
    else:
        figs.notes["importances"] = "needs at least two COMPLETE trials with parameters"

    if len(done) >= 2 and any(r.params for r in done):
        attempt(
            "parallel",
            lambda: figs.divs.__setitem__(
                "parallel",
                _plotly_div(vis.plot_parallel_coordinate(sweep.study), "plot-parallel"),
            ),
        )
    else:
        figs.notes["parallel"] = "needs at least two COMPLETE trials with parameters"

    curves = [r for r in trials if (r.results or {}).get("history")]
    if curves:

        def epochs() -> None:
            fig = go.Figure()
            for r in curves:
                hist = r.results["history"]
                is_best = best is not None and r is best
                fig.add_trace(
                    go.Scatter(
                        x=[h["epoch"] for h in hist],
                        y=[h["mean_test_accuracy"] for h in hist],
                        mode="lines",
                        name=f"{r.name} {r.label()}" + (f" ({LEAKY})" if r.leaky else ""),
                        line={"width": 3 if is_best else 1},
                        opacity=1.0 if is_best else 0.6,
                    )
                )
            fig.update_layout(
                title="Mean CV test accuracy per epoch (bold: best trial)",
                xaxis_title="epoch",
                yaxis_title="mean test accuracy over folds",
            )
            figs.divs["epochs"] = _plotly_div(fig, "plot-epochs")

        attempt("epochs", epochs)
    else:
        figs.notes["epochs"] = "no trial recorded per-epoch history"

    if best is not None and best.results:
        res = best.results
        names = list(res.get("class_names") or [])
        if best.results.get("history"):
            attempt(
                "best_epochs",
                lambda: figs.pngs.__setitem__(
                    "best_epoch_curves",
                    plots.save_figure(
                        plots.epoch_curves_figure(
                            res["history"], title=f"best trial {best.name}: {best.label()}"
                        ),
                        out_dir / "best_epoch_curves.png",
                    ),
                ),
            )
        if names and any(f.get("confusion") for f in best.folds):

            def confusion() -> None:
                cm = plots.summed_confusion(best.folds)
                rows = cm.sum(axis=1, keepdims=True)
                share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
                heat = go.Figure(
                    go.Heatmap(
                        z=share,
                        x=names,
                        y=names,
                        text=cm,
                        texttemplate="%{text}",
                        colorscale="Blues",
                        zmin=0,
                        zmax=1,
                        colorbar={"title": "share"},
                    )
                )
                heat.update_layout(
                    title=f"Confusion matrix of trial {best.name} (summed over test folds)",
                    xaxis_title="predicted",
                    yaxis_title="true",
                    yaxis={"autorange": "reversed"},
                    height=600,
                )
                figs.divs["confusion"] = _plotly_div(heat, "plot-confusion")
                figs.pngs["confusion_matrix"] = plots.save_figure(
                    plots.confusion_matrix_figure(
                        cm, names, title=f"best trial {best.name}: {best.label()}"
                    ),
                    out_dir / "confusion_matrix.png",
                )
                acc = [
                    float(cm[i, i] / rows[i, 0]) if rows[i, 0] else None for i in range(len(names))
                ]
                figs.pngs["per_class_accuracy"] = plots.save_figure(
                    plots.per_class_accuracy_figure(
                        acc, names, title="Per-class accuracy (pooled over test folds)"
                    ),
                    out_dir / "per_class_accuracy.png",
                )

            attempt("confusion", confusion)

    with_folds = [c for c in comparisons if "comparison" in c]
    if with_folds:

        def folds_fig() -> None:
            folds = with_folds[0]["comparison"]["folds"]
            series = {f"best #{with_folds[0]['best']['number']}": with_folds[0]["comparison"]["a"]}
            for c in with_folds:
                if c["comparison"]["folds"] == folds:
                    series[f"#{c['other']['number']}"] = c["comparison"]["b"]
            figs.pngs["fold_comparison"] = plots.save_figure(
                plots.fold_comparison_figure(folds, series), out_dir / "fold_comparison.png"
            )

        attempt("fold_comparison", folds_fig)

    if protocols:
        attempt(
            "protocols",
            lambda: figs.pngs.__setitem__(
                "protocol_comparison",
                plots.save_figure(
                    plots.protocol_comparison_figure(
                        [p["label"] for p in protocols],
                        [p["folds"]["accuracy"] for p in protocols],
                        [p["random_split"]["accuracy"] for p in protocols],
                    ),
                    out_dir / "protocol_comparison.png",
                ),
            ),
        )
    return figs


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass
class ReportFiles:
    """What :func:`build_report` wrote."""

    html: Path
    markdown: Path
    summary: Path
    pngs: list[Path]
    best: TrialRecord | None


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:.{digits}f}"
    return str(v)


def _p(v: float) -> str:
    return "–" if v is None or math.isnan(v) else (f"{v:.3g}" if v >= 0.001 else f"{v:.1e}")


def _verdict(cmp: Mapping[str, Any], alpha: float = 0.05) -> str:
    pt, pw = cmp["ttest"]["pvalue"], cmp["wilcoxon"]["pvalue"]
    if pt < alpha and pw < alpha:
        return f"significant at {alpha:g} by both tests"
    if pt < alpha or pw < alpha:
        return f"significant at {alpha:g} by one test only"
    return f"not significant at {alpha:g}: the difference is within fold-to-fold noise"


TRIAL_COLUMNS = ["trial", "state", "value", "std", "protocol", "parameters", "seconds"]


def _trial_cells(r: TrialRecord) -> list[Any]:
    """One row of the trials table (Markdown and HTML share it)."""
    return [
        r.number,
        r.state,
        _f(r.value),
        _f(r.std),
        r.protocol() if r.results or r.leaky else "–",
        r.label(),
        _f(r.duration_s, 1),
    ]


def _trial_rows(sweep: Sweep) -> list[TrialRecord]:
    trials = [r for r in sweep.records if r.number is not None]
    sign = -1.0 if sweep.direction == "maximize" else 1.0
    return sorted(
        trials,
        key=lambda r: (
            r.value is None,
            r.leaky,
            sign * (r.value if r.value is not None else 0.0),
            r.number,
        ),
    )


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="leaky">{html.escape(str(c))}</td>'
            if LEAKY in str(c)
            else f"<td>{html.escape(str(c))}</td>"
            for c in row
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def _summary(
    sweep: Sweep,
    best: TrialRecord | None,
    comparisons: Sequence[dict[str, Any]],
    protocols: Sequence[dict[str, Any]],
    outer: Sequence[dict[str, Any]],
    importances: Mapping[str, float],
) -> dict[str, Any]:
    trials = [r for r in sweep.records if r.number is not None]
    states: dict[str, int] = {}
    for r in trials:
        states[r.state] = states.get(r.state, 0) + 1
    datasets = sorted({r.dataset for r in trials if r.dataset})
    return {
        "study": sweep.name,
        "source": sweep.source,
        "direction": sweep.direction,
        "generated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "datasets": datasets,
        "fixed_overrides": dict(sweep.fixed),
        "n_trials": len(trials),
        "states": states,
        "best": None
        if best is None
        else {
            "number": best.number,
            "value": best.value,
            "std": best.std,
            "pooled_accuracy": best.pooled_accuracy,
            "params": best.params,
            "label": best.label(),
            "protocol": best.protocol(),
            "run_dir": str(best.run_dir) if best.run_dir else None,
            "folds": [
                {k: f.get(k) for k in ("fold", "accuracy", "loss", "n_train", "n_test")}
                for f in best.folds
            ],
        },
        "trials": [
            {
                "number": r.number,
                "state": r.state,
                "value": r.value,
                "std": r.std,
                "params": r.params,
                "leaky": r.leaky,
                "duration_s": r.duration_s,
                "run_dir": str(r.run_dir) if r.run_dir else None,
            }
            for r in _trial_rows(sweep)
        ],
        "importances": dict(importances),
        "paired_comparisons": list(comparisons),
        "protocol_comparison": list(protocols),
        "outer_estimate": list(outer),
    }


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1150px;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:left}
th{background:#f4f6f8}td.leaky{background:#fdecea;color:#a11;font-weight:600}
.best-value{font-size:2.2rem;font-weight:700;color:#1f77b4}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5rem .8rem;margin:.8rem 0}
.leaky-note{background:#fdecea;border-left:4px solid #d62728;padding:.5rem .8rem;margin:.8rem 0}
.note{color:#777;font-style:italic}img{max-width:100%}
#script-errors:empty{display:none}
#script-errors{background:#fdecea;color:#a11;padding:.5rem;white-space:pre-wrap}
code{background:#f4f6f8;padding:0 .2rem}
"""

# Collects uncaught script errors into the page (visible, and readable by the headless test).
_ERROR_HOOK = """
window.__reportErrors = [];
window.addEventListener('error', function (e) {
  window.__reportErrors.push(String(e.message || e));
  var box = document.getElementById('script-errors');
  if (box) {
    box.textContent = 'Script errors on this page:\\n' + window.__reportErrors.join('\\n');
  }
});
"""

_RENDER_CHECK = """
window.addEventListener('load', function () {
  var divs = document.querySelectorAll('.plotly-graph-div');
  var drawn = 0;
  divs.forEach(function (d) { if (d.querySelector('.main-svg')) { drawn += 1; } });
  document.body.setAttribute('data-plots', String(divs.length));
  document.body.setAttribute('data-plots-drawn', String(drawn));
});
"""


def build_report(
    sweep: Sweep,
    *,
    out_dir: str | Path,
    top: int = 5,
    evaluations: Sequence[TrialRecord] | None = None,
) -> ReportFiles:
    """Write ``report.html``, ``report.md``, ``summary.json`` and PNGs of ``sweep`` into a folder.

    Parameters
    ----------
    sweep:
        From :func:`load_sweep`.
    out_dir:
        Created if needed; files in it are replaced.
    top:
        How many of the best configurations take part in the paired comparison.
    evaluations:
        Extra evaluation runs (outer fold, random split); default: those found in
        ``out_dir/evaluations``.
    """
    import plotly.offline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    evals = list(load_evaluations(out_dir) if evaluations is None else evaluations)
    best = best_record(sweep)
    comparisons = paired_comparisons(sweep, top=top)
    protocols = protocol_comparison([*sweep.records, *evals])
    outer = outer_estimates(sweep, evals)
    try:
        importances = _importances(sweep.study)
    except Exception as exc:
        log.warning("parameter importances not computed: %s", exc)
        importances = {}
    figs = _make_figures(sweep, best, comparisons, protocols, importances, out_dir)
    summary = _summary(sweep, best, comparisons, protocols, outer, importances)

    md = _markdown(sweep, summary, best, figs)
    page = _html(sweep, summary, best, figs, plotly.offline.get_plotlyjs())
    paths = {
        "html": out_dir / "report.html",
        "markdown": out_dir / "report.md",
        "summary": out_dir / "summary.json",
    }
    for key, text in (
        ("html", page),
        ("markdown", md),
        ("summary", json.dumps(summary, indent=2, default=_json_default) + "\n"),
    ):
        tmp = paths[key].with_name(paths[key].name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, paths[key])
    return ReportFiles(
        html=paths["html"],
        markdown=paths["markdown"],
        summary=paths["summary"],
        pngs=list(figs.pngs.values()),
        best=best,
    )


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return str(v)


def _header_notes(summary: Mapping[str, Any], sweep: Sweep) -> list[tuple[str, str]]:
    notes = []
    if "demo" in summary["datasets"]:
        notes.append(
            ("warn", "Dataset: the built-in DEMO corpus (synthetic sounds), not UrbanSound8K.")
        )
    leaky = [r for r in sweep.records if r.number is not None and r.leaky]
    if leaky:
        notes.append(
            (
                "leaky-note",
                f"{len(leaky)} trial(s) used the random 80/20 split ({LEAKY}: slices of one "
                "recording land in both train and test, so their scores are inflated). They are "
                "marked in red and never chosen as the best.",
            )
        )
    if sweep.study is not None and sweep.storage is not None:
        try:
            sb = sweep.study.best_trial
        except ValueError:
            sb = None
        best = summary["best"]
        if sb is not None and best is not None and sb.number != best["number"]:
            notes.append(
                (
                    "leaky-note",
                    f"Optuna's best trial #{sb.number} ({_f(sb.value)}) used the {LEAKY} random "
                    f"split; the best trial on the predefined folds is #{best['number']}.",
                )
            )
    return notes


def _fixed_text(sweep: Sweep) -> str:
    return " ".join(f"{k}={_fmt_param(v)}" for k, v in sorted(sweep.fixed.items()))


def _markdown(
    sweep: Sweep, summary: Mapping[str, Any], best: TrialRecord | None, figs: _Figures
) -> str:
    out = [f"# Sweep report: {sweep.name}", ""]
    out.append(
        f"Source: `{sweep.source}` · direction: {sweep.direction} · "
        f"datasets: {', '.join(summary['datasets']) or '–'} · trials: {summary['n_trials']} ("
        + ", ".join(f"{v} {k}" for k, v in sorted(summary["states"].items()))
        + f") · generated {summary['generated']}"
    )
    out.append("")
    if sweep.fixed:
        out += [f"Overrides shared by every job: `{_fixed_text(sweep)}`", ""]
    for _, text in _header_notes(summary, sweep):
        out += [f"> **Note.** {text}", ""]
    out += ["## Best configuration", ""]
    if best is None:
        out += ["No COMPLETE trial on the predefined folds yet.", ""]
    else:
        out += [
            f"**Trial #{best.number}: mean CV accuracy {_f(best.value)}** "
            f"(± {_f(best.std)} std over {len(best.folds)} folds; protocol {best.protocol()}; "
            f"pooled over all {sum(f.get('n_test', 0) for f in best.folds)} test clips: "
            f"{_f(best.pooled_accuracy)})",
            "",
            f"Parameters: {best.label()}  ",
            f"Run directory: `{best.run_dir}`",
            "",
            _md_table(
                ["fold", "accuracy", "loss", "n_train", "n_test"],
                [
                    [f["fold"], _f(f["accuracy"]), _f(f.get("loss")), f["n_train"], f["n_test"]]
                    for f in best.folds
                ],
            ),
            "",
        ]
    out += ["## Trials (best first)", ""]
    out.append(_md_table(TRIAL_COLUMNS, [_trial_cells(r) for r in _trial_rows(sweep)]))
    out.append("")
    out += _md_comparisons(summary)
    out += _md_protocols(summary)
    out += _md_outer(summary, sweep)
    if summary["importances"]:
        out += ["## Parameter importances (fANOVA)", ""]
        out.append(
            _md_table(
                ["parameter", "importance"],
                [[k, _f(v, 3)] for k, v in summary["importances"].items()],
            )
        )
        out.append("")
    if figs.pngs:
        out += ["## Plots", ""]
        for name, path in figs.pngs.items():
            out.append(f"![{name.replace('_', ' ')}]({path.name})")
            out.append("")
    return "\n".join(out)


def _md_comparisons(summary: Mapping[str, Any]) -> list[str]:
    out = ["## Is the best really better? (paired across folds)", ""]
    comps = summary["paired_comparisons"]
    if not comps:
        return [*out, "Needs at least two COMPLETE fold-CV trials with per-fold results.", ""]
    out.append(
        "Differences are best − other per test fold. Corrected resampled t-test (Nadeau & "
        "Bengio 2003: variance factor 1/J + n_test/n_train) and Wilcoxon signed-rank, two-sided."
    )
    out.append("")
    rows = []
    for c in comps:
        if "comparison" not in c:
            rows.append(
                [f"#{c['other']['number']}", c["other"]["label"], "–", "–", "–", "–", c["note"]]
            )
            continue
        cmp = c["comparison"]
        rows.append(
            [
                f"#{c['other']['number']}",
                c["other"]["label"],
                f"{cmp['mean_difference']:+.4f}",
                f"{_f(cmp['ttest']['statistic'], 2)} (p={_p(cmp['ttest']['pvalue'])})",
                f"p={_p(cmp['wilcoxon']['pvalue'])}",
                len(cmp["folds"]),
                _verdict(cmp),
            ]
        )
    out.append(
        _md_table(
            ["vs trial", "parameters", "mean diff", "corrected t", "Wilcoxon", "folds", "verdict"],
            rows,
        )
    )
    first = next((c for c in comps if "comparison" in c), None)
    if first:
        cmp = first["comparison"]
        out += [
            "",
            f"Per-fold accuracies, best #{first['best']['number']} vs #{first['other']['number']}:",
            "",
            _md_table(
                ["fold", "best", "other", "difference"],
                [
                    [f, _f(a), _f(b), f"{d:+.4f}"]
                    for f, a, b, d in zip(
                        cmp["folds"], cmp["a"], cmp["b"], cmp["differences"], strict=True
                    )
                ],
            ),
        ]
    out.append("")
    return out


def _md_protocols(summary: Mapping[str, Any]) -> list[str]:
    out = ["## Protocol comparison: predefined folds vs random split (LEAKY)", ""]
    rows = summary["protocol_comparison"]
    if not rows:
        return [
            *out,
            "No configuration was run with both protocols. Add one with "
            "`python -m urbansound.report <sweep dir> --random-split` (the best configuration on "
            "the tutorial's random 80/20 split).",
            "",
        ]
    out.append(
        _md_table(
            [
                "configuration",
                "dataset",
                "predefined folds (mean CV)",
                "random split (LEAKY)",
                "ratio",
            ],
            [
                [
                    p["label"],
                    p["dataset"],
                    f"{_f(p['folds']['accuracy'])} ± {_f(p['folds']['std'])} "
                    f"({p['folds']['n_folds']} folds)",
                    f"{_f(p['random_split']['accuracy'])} ({LEAKY})",
                    f"{p['ratio']:.2f}×" if p["ratio"] else "–",
                ]
                for p in rows
            ],
        )
    )
    out += [
        "",
        "The random split puts slices of one recording in both train and test, so it measures "
        "recall of recordings already heard; the predefined folds keep each recording in one fold.",
        "",
    ]
    return out


def _md_outer(summary: Mapping[str, Any], sweep: Sweep) -> list[str]:
    rows = summary["outer_estimate"]
    if not rows:
        return []
    out = ["## Unbiased estimate of the winner (held-out outer fold)", ""]
    for e in rows:
        out.append(
            f"Fold {e['outer_fold']} was kept out of the search; the search objective of the "
            f"winner (trial #{e['trial']}, mean CV over folds {e['inner_folds']}) is "
            f"{_f(e['search_objective'])}, optimistic because it was maximised over trials."
        )
        out.append("")
        if e["outer_accuracy"] is None:
            out.append(
                "Not evaluated yet: `python -m urbansound.report "
                f"{_src_arg(sweep)} --evaluate-outer` trains the winner on the other folds and "
                f"tests it once on fold {e['outer_fold']}."
            )
        else:
            out.append(
                f"**Held-out fold {e['outer_fold']}: accuracy {_f(e['outer_accuracy'])}** "
                f"({e.get('n_test', '?')} test clips, trained on {e.get('n_train', '?')}; "
                f"run `{e['run_dir']}`)."
            )
        out.append("")
    return out


def _src_arg(sweep: Sweep) -> str:
    if sweep.storage:
        return f"--storage {sweep.storage} --study {sweep.name}"
    return sweep.source


def _html(
    sweep: Sweep,
    summary: Mapping[str, Any],
    best: TrialRecord | None,
    figs: _Figures,
    plotly_js: str,
) -> str:
    esc = html.escape
    parts = [f"<h1>Sweep report: {esc(sweep.name)}</h1>"]
    parts.append(
        f"<p>Source: <code>{esc(sweep.source)}</code> · direction {esc(sweep.direction)} · "
        f"datasets: {esc(', '.join(summary['datasets']) or '–')} · {summary['n_trials']} trials ("
        + esc(", ".join(f"{v} {k}" for k, v in sorted(summary["states"].items())))
        + f") · generated {esc(summary['generated'])}</p>"
    )
    if sweep.fixed:
        parts.append(
            f"<p>Overrides shared by every job: <code>{esc(_fixed_text(sweep))}</code></p>"
        )
    for cls, text in _header_notes(summary, sweep):
        parts.append(f'<div class="{cls}">{esc(text)}</div>')

    parts.append('<h2 id="best">Best configuration</h2>')
    if best is None:
        parts.append("<p>No COMPLETE trial on the predefined folds yet.</p>")
    else:
        parts.append(
            f'<p>Trial #{best.number}, mean CV accuracy</p><p class="best-value" '
            f'id="best-value">{_f(best.value)}</p>'
            f"<p>± {_f(best.std)} std over {len(best.folds)} folds · pooled over all "
            f"{sum(f.get('n_test', 0) for f in best.folds)} test clips: "
            f"{_f(best.pooled_accuracy)} · protocol "
            f"{esc(best.protocol())}<br>Parameters: <code>{esc(best.label())}</code><br>"
            f"Run directory: <code>{esc(str(best.run_dir))}</code></p>"
        )
        parts.append(
            _html_table(
                ["fold", "accuracy", "loss", "n_train", "n_test"],
                [
                    [f["fold"], _f(f["accuracy"]), _f(f.get("loss")), f["n_train"], f["n_test"]]
                    for f in best.folds
                ],
            )
        )

    parts.append('<h2 id="trials">Trials (best first)</h2>')
    parts.append(
        _html_table(
            [*TRIAL_COLUMNS, "run dir"],
            [
                [*_trial_cells(r), str(r.run_dir) if r.run_dir else (r.error or "–")]
                for r in _trial_rows(sweep)
            ],
            cls="trials",
        )
    )

    def section(key: str, title: str, png: str | None = None) -> None:
        parts.append(f'<h2 id="{key}">{esc(title)}</h2>')
        if key in figs.divs:
            parts.append(figs.divs[key])
        elif png and png in figs.pngs:
            parts.append(
                f'<img alt="{esc(title)}" src="data:image/png;base64,{_png_b64(figs.pngs[png])}">'
            )
        if key in figs.notes:
            parts.append(f'<p class="note">{esc(figs.notes[key])}</p>')

    section("history", "Optimisation history")
    section("importances", "Parameter importances")
    section("parallel", "Parallel coordinates")
    section("epochs", "Per-epoch CV curves")
    if "best_epoch_curves" in figs.pngs:
        parts.append(
            '<p>Best trial, per fold (thin) and mean (bold):</p><img alt="best epoch curves" '
            f'src="data:image/png;base64,{_png_b64(figs.pngs["best_epoch_curves"])}">'
        )
    if best is not None:
        section("confusion", f"Confusion matrix and per-class accuracy of trial #{best.number}")
        if "per_class_accuracy" in figs.pngs:
            parts.append(
                '<img alt="per-class accuracy" src="data:image/png;base64,'
                f'{_png_b64(figs.pngs["per_class_accuracy"])}">'
            )
    parts.append(_md_to_html_section(_md_comparisons(summary), figs, "fold_comparison"))
    parts.append(_md_to_html_section(_md_protocols(summary), figs, "protocol_comparison"))
    if summary["outer_estimate"]:
        parts.append(_md_to_html_section(_md_outer(summary, sweep), figs, None))

    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Sweep report: {esc(sweep.name)}</title><style>{_CSS}</style>"
        f"<script>{_ERROR_HOOK}</script>"
        f'<script type="text/javascript">{plotly_js}</script>'
        f"<script>{_RENDER_CHECK}</script></head>\n"
        f'<body><pre id="script-errors"></pre>\n{body}\n</body></html>\n'
    )


def _md_to_html_section(lines: Sequence[str], figs: _Figures, png: str | None) -> str:
    """Render the small Markdown subset used by the sections (headings, tables, paragraphs)."""
    esc = html.escape
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            header, rows = table[0], [r for r in table[2:]]
            out.append(_html_table(header, rows))
            table.clear()

    for line in "\n".join(lines).split("\n"):
        if line.startswith("|"):
            table.append([c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")])
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{esc(line[3:])}</h2>")
        elif line.strip():
            text = esc(line)
            text = _inline(text)
            out.append(f"<p>{text}</p>")
    flush()
    if png and png in figs.pngs:
        out.append(f'<img alt="{png}" src="data:image/png;base64,{_png_b64(figs.pngs[png])}">')
    return "\n".join(out)


def _inline(text: str) -> str:
    import re

    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


# ---------------------------------------------------------------------------------------------
# Entry point


def _console_table(sweep: Sweep, *, limit: int = 15) -> str:
    rows = _trial_rows(sweep)
    lines = [f"{'trial':>6} {'state':<9} {'value':>8} {'std':>7}  protocol / parameters"]
    for r in rows[:limit]:
        proto = f"random_split ({LEAKY})" if r.leaky else ("folds" if r.results else "–")
        lines.append(
            f"{r.number!s:>6} {r.state:<9} {_f(r.value):>8} {_f(r.std):>7}  {proto}: {r.label()}"
        )
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more in the report")
    return "\n".join(lines)


def _default_out(args: argparse.Namespace, sweep: Sweep) -> Path:
    if args.out:
        return Path(args.out)
    if len(args.paths) == 1:
        return Path(args.paths[0]) / "report"
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in sweep.name)
    return Path("outputs") / "reports" / slug


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m urbansound.report",
        description="Write an HTML + Markdown report of a sweep (its directory, or an Optuna "
        "storage and study name).",
    )
    p.add_argument("paths", nargs="*", help="sweep directories or run directories")
    p.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///outputs/optuna.db")
    p.add_argument("--study", help="study name (needed when the storage holds several)")
    p.add_argument(
        "--out", help="report folder (default <sweep dir>/report or outputs/reports/<study>)"
    )
    p.add_argument("--top", type=int, default=5, help="configurations in the paired comparison")
    p.add_argument(
        "--evaluate-outer",
        action="store_true",
        help="train the winner on all folds but the held-out cv.outer_fold and test it there once",
    )
    p.add_argument(
        "--random-split",
        action="store_true",
        help="also evaluate the winner on the LEAKY random 80/20 split (protocol comparison)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if not args.paths and not args.storage:
        p.error("give a sweep directory or --storage URL (with --study NAME)")
    if args.top < 2:
        p.error("--top must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        sweep = load_sweep(args.paths, storage=args.storage, study_name=args.study)
        out_dir = _default_out(args, sweep)
        best = best_record(sweep)
        if args.evaluate_outer or args.random_split:
            if best is None:
                raise ConfigError(
                    f"{sweep.source}: no COMPLETE fold-CV trial to evaluate; let the sweep finish "
                    "at least one trial"
                )
            tag = f"trial{best.number}"
            if args.evaluate_outer:
                k = best.outer_fold
                dest = out_dir / EVALUATIONS / f"outer_fold{k}_{tag}"
                res = evaluate_outer(best, out_dir=dest, progress=not args.no_progress)
                print(
                    f"held-out fold {k}: accuracy {res['mean_accuracy']:.4f} "
                    f"(search objective {best.value:.4f}) -> {dest}"
                )
            if args.random_split:
                dest = out_dir / EVALUATIONS / f"random_split_{tag}"
                res = evaluate_random_split(best, out_dir=dest, progress=not args.no_progress)
                print(
                    f"random split ({LEAKY}): accuracy {res['mean_accuracy']:.4f} vs predefined "
                    f"folds {best.value:.4f} -> {dest}"
                )
        files = build_report(sweep, out_dir=out_dir, top=args.top)
    except UrbansoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"study {sweep.name} ({sweep.source})")
    print(_console_table(sweep))
    if files.best is not None:
        print(f"best (predefined folds): trial #{files.best.number} = {files.best.value:.4f}")
    print(f"report: {files.html}\nmarkdown: {files.markdown}\nsummary: {files.summary}")
    return 0
