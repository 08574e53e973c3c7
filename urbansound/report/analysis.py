"""What a report says about a sweep: ranking, paired comparisons, protocols, outer estimates.

Plain functions of :class:`~urbansound.report.trials.Sweep` and its records; :func:`summarize`
gathers them into the dict written as ``summary.json`` (the one model the HTML and Markdown
pages are rendered from).

The "best" configuration is the best COMPLETE trial that used the predefined folds; a trial on
the random split is never chosen (its score is inflated by leakage). Both rules are written once,
in :mod:`urbansound.sweep.records` (:func:`~urbansound.sweep.records.best_trial`,
:func:`~urbansound.sweep.records.is_leaky`).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from urbansound.report import stats
from urbansound.report.trials import Sweep, TrialRecord
from urbansound.sweep import records as study_records

__all__ = [
    "SUMMARY_KEYS",
    "all_failed",
    "best_record",
    "config_signature",
    "fold_rows",
    "outer_estimates",
    "paired_comparisons",
    "protocol_comparison",
    "ranked",
    "summarize",
    "trial_order",
]

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

# summary.json's top-level keys (pinned by a test: readers such as benchmarks/readme_results.py
# depend on them).
SUMMARY_KEYS = (
    "study",
    "source",
    "direction",
    "generated",
    "datasets",
    "fixed_overrides",
    "n_trials",
    "states",
    "best",
    "trials",
    "importances",
    "paired_comparisons",
    "protocol_comparison",
    "outer_estimate",
    "pruned_above_best",
    "families",
    "family_comparisons",
    "ensemble",
)


def ranked(trials: Iterable[TrialRecord], *, direction: str = "maximize") -> list[TrialRecord]:
    """COMPLETE trials with a value, best first; LEAKY (random-split) trials last."""
    return sorted(study_records.ranked(trials, direction=direction), key=lambda r: r.leaky)


def best_record(sweep: Sweep) -> TrialRecord | None:
    """The best COMPLETE trial on the predefined folds (None when there is none)."""
    return study_records.best_trial(
        sweep.trials, direction=sweep.direction, leaky=lambda r: r.leaky
    )


def all_failed(sweep: Sweep) -> bool:
    """True when the study has trials and every one of them failed."""
    trials = sweep.trials
    return bool(trials) and all(r.state == "FAIL" for r in trials)


def trial_order(sweep: Sweep) -> list[TrialRecord]:
    """The study's trials as the tables list them: by value, best first; LEAKY and unfinished
    ones last."""
    sign = -1.0 if sweep.direction == "maximize" else 1.0
    return sorted(
        sweep.trials,
        key=lambda r: (
            r.value is None,
            r.leaky,
            sign * (r.value if r.value is not None else 0.0),
            r.number,
        ),
    )


def fold_rows(rec: TrialRecord) -> list[dict[str, Any]]:
    """``rec``'s per-fold results as JSON-ready rows: fold, accuracy, loss, n_train, n_test."""
    return [
        {"fold": f.fold, "accuracy": f.accuracy, "loss": f.loss, "n_train": f.n_train,
         "n_test": f.n_test}
        for f in rec.folds
    ]  # fmt: skip


def _fold_table(rec: TrialRecord) -> dict[Any, dict[str, Any]]:
    return {row["fold"]: row for row in fold_rows(rec)}


def no_folds_note(rec: TrialRecord) -> str:
    """Why ``rec`` has no per-fold accuracies (no run directory, no readable results.json)."""
    if rec.run_dir is None:
        return "no run directory recorded; no per-fold accuracies to test"
    if rec.results is None:
        return f"no readable results.json in {rec.run_dir}; no per-fold accuracies to test"
    return f"no per-fold accuracies in {rec.run_dir / 'results.json'}; no test possible"


def paired_comparisons(sweep: Sweep, *, top: int = 5) -> list[dict[str, Any]]:
    """The best configuration against each of the next ``top - 1`` across their common folds.

    The ``top`` best COMPLETE trials on the predefined folds take part; the best of them with
    per-fold results is ``best``. Each entry has ``best`` and ``other`` (trial numbers and
    labels) and ``comparison`` (:class:`urbansound.report.stats.PairedComparison` as a dict) or
    ``note`` when no test is possible (fewer than two common folds; no readable
    ``results.json``).
    """
    cands = [r for r in ranked(sweep.trials, direction=sweep.direction) if not r.leaky][:top]
    if len(cands) < 2:
        return []
    # the best with per-fold results (a single-fold sweep: notes saying why there is no test)
    best = next((r for r in cands if len(_fold_table(r)) >= 2), None)
    best = best or next((r for r in cands if _fold_table(r)), cands[0])
    bt = _fold_table(best)
    out = []
    for other in cands:
        if other is best:
            continue
        ot = _fold_table(other)
        common = [f for f in bt if f in ot]
        entry: dict[str, Any] = {
            "best": {"number": best.number, "label": best.label(), "value": best.value},
            "other": {"number": other.number, "label": other.label(), "value": other.value},
        }
        if not ot:  # a top configuration is never dropped silently: say why it is not tested
            entry["note"] = no_folds_note(other)
        elif not bt:
            entry["note"] = f"trial #{best.number}: " + no_folds_note(best)
        elif len(common) < 2:
            entry["note"] = (
                f"only {len(common)} common fold(s); a paired test needs at least 2 folds"
            )
        elif not fold_sizes_known([bt[f] for f in common]):
            entry["note"] = (
                f"fold sizes (n_train, n_test) missing from trial #{best.number}'s results.json; "
                "no corrected t-test possible"
            )
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


def fold_sizes_known(folds: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every fold names a positive ``n_train`` and a non-negative ``n_test`` (the
    corrected t-test needs them; a hand-edited or old ``results.json`` may lack them)."""
    try:
        return all(float(f["n_train"]) > 0 and float(f["n_test"]) >= 0 for f in folds)
    except (KeyError, TypeError, ValueError):
        return False


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


def is_outer_evaluation(rec: TrialRecord) -> bool:
    """True for a run of ``cv.evaluate_outer=true`` (trained once, tested on the outer fold)."""
    cv = (rec.config or {}).get("cv") or {}
    extra = rec.results.extra if rec.results is not None else {}
    return bool(cv.get("evaluate_outer") or extra.get("evaluate_outer"))


def protocol_comparison(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """Configurations run with both protocols: fold-CV and LEAKY random-split accuracy."""
    groups: dict[str, dict[str, TrialRecord]] = {}
    for r in records:
        if r.state != "COMPLETE" or r.value is None or r.results is None:
            continue
        if is_outer_evaluation(r):
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
        "inner_folds": [f.fold for f in best.folds],
        "outer_accuracy": None,
        "run_dir": None,
    }
    sig = config_signature(best)
    for ev in evaluations:
        if is_outer_evaluation(ev) and ev.outer_fold == k and ev.state == "COMPLETE":
            if sig is not None and config_signature(ev) != sig:
                continue
            entry["outer_accuracy"] = ev.value
            entry["n_test"] = sum(f.n_test for f in ev.folds)
            entry["n_train"] = sum(f.n_train for f in ev.folds)
            entry["run_dir"] = str(ev.run_dir)
    return [entry]


def summarize(
    sweep: Sweep,
    *,
    comparisons: Sequence[dict[str, Any]],
    protocols: Sequence[dict[str, Any]],
    outer: Sequence[dict[str, Any]],
    importances: Mapping[str, float],
    pruned: Mapping[str, Any] | None = None,
    families: Sequence[dict[str, Any]] = (),
    family_comparisons: Sequence[dict[str, Any]] = (),
    ensemble: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's numbers as JSON-ready values (``summary.json``; keys: :data:`SUMMARY_KEYS`).

    ``pruned``, ``families``, ``family_comparisons`` and ``ensemble`` come from
    :mod:`urbansound.report.winners` (``ensemble`` None unless asked for with ``--ensemble K``).
    """
    best = best_record(sweep)
    trials = sweep.trials
    states: dict[str, int] = {}
    for r in trials:
        states[r.state] = states.get(r.state, 0) + 1
    return {
        "study": sweep.name,
        "source": sweep.source,
        "direction": sweep.direction,
        "generated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "datasets": sorted({r.dataset for r in trials if r.dataset}),
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
            "folds": fold_rows(best),
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
            for r in trial_order(sweep)
        ],
        "importances": dict(importances),
        "paired_comparisons": list(comparisons),
        "protocol_comparison": list(protocols),
        "outer_estimate": list(outer),
        "pruned_above_best": dict(pruned or {"pruned": 0, "above_best": 0, "trials": []}),
        "families": list(families),
        "family_comparisons": list(family_comparisons),
        "ensemble": dict(ensemble) if ensemble is not None else None,
    }
