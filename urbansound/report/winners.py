"""What a search kept and what it threw away: pruned winners, each family's best, ensembles.

- :func:`pruned_above_best`: PRUNED trials whose last reported value was above the best
  COMPLETE value at the moment they were pruned (a pruner that stops such trials is not safe on
  a noisy per-fold curve).
- :func:`family_bests` / :func:`family_comparisons`: the best configuration of each model family
  (``model.family``: mlp, svm, random_forest, ...) with its per-fold accuracies, and the paired
  comparison (corrected resampled t-test, Wilcoxon; :mod:`urbansound.report.stats`) of the best
  family's best against every other family's best, over their common folds.
- :func:`ensemble`: the average of the top-K configurations' class probabilities
  (``predictions.npz`` of each run directory) under the same folds, scored per fold beside the
  single best configuration and compared with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from urbansound.errors import ConfigError
from urbansound.report import stats
from urbansound.report.analysis import fold_rows, fold_sizes_known, ranked
from urbansound.report.trials import Sweep, TrialRecord

__all__ = [
    "PREDICTIONS",
    "ensemble",
    "family_bests",
    "family_comparisons",
    "family_of",
    "load_predictions",
    "pruned_above_best",
]

PREDICTIONS = "predictions.npz"
_PREDICTION_KEYS = ("fold", "clip", "index", "y_true", "probabilities")
DEFAULT_FAMILY = "mlp"


def pruned_above_best(sweep: Sweep) -> dict[str, Any]:
    """How many PRUNED trials were above the study's best completed value when pruned.

    "When pruned" is the trial's completion time where the storage recorded one, else its
    trial number (a trial is compared with the COMPLETE trials numbered before it). The value
    when pruned is the last one the trial reported.

    Returns
    -------
    dict
        ``pruned`` (count), ``above_best`` (count), ``trials``: one entry per such trial
        (``number``, ``step``, ``value`` when pruned, ``best_then``).
    """
    sign = 1.0 if sweep.direction == "maximize" else -1.0
    trials = sweep.study.trials
    complete = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    pruned = [t for t in trials if t.state == "PRUNED" and t.intermediate_values]
    found = []
    for p in sorted(pruned, key=lambda t: t.number):

        def before(c: Any, p: Any = p) -> bool:
            if c.completed is not None and p.completed is not None:
                return c.completed < p.completed
            return c.number < p.number

        earlier = [sign * c.value for c in complete if before(c)]
        if not earlier:
            continue
        step = max(p.intermediate_values)
        value = p.intermediate_values[step]
        best_then = sign * max(earlier)
        if sign * value > sign * best_then:
            found.append({"number": p.number, "step": step, "value": value, "best_then": best_then})
    return {
        "pruned": sum(t.state == "PRUNED" for t in trials),
        "above_best": len(found),
        "trials": found,
    }


def family_of(rec: TrialRecord) -> str:
    """A trial's model family: ``model.family`` of its config, its ``model`` choice, or mlp."""
    model = (rec.config or {}).get("model")
    if isinstance(model, dict) and model.get("family"):
        return str(model["family"])
    if rec.params.get("model"):
        return str(rec.params["model"])
    return DEFAULT_FAMILY


def _folds(rec: TrialRecord) -> list[dict[str, Any]]:
    return [
        {k: row[k] for k in ("fold", "accuracy", "n_train", "n_test")} for row in fold_rows(rec)
    ]


def family_bests(sweep: Sweep) -> list[dict[str, Any]]:
    """The best COMPLETE fold-CV trial of each model family, best family first.

    Each entry: ``family``, ``number``, ``value``, ``std``, ``label``, ``params``, ``n_trials``
    (the family's COMPLETE trials), ``folds`` (per-fold accuracy, n_train, n_test).
    """
    best: dict[str, TrialRecord] = {}
    counts: dict[str, int] = {}
    for r in ranked(sweep.trials, direction=sweep.direction):
        if r.leaky:
            continue
        fam = family_of(r)
        counts[fam] = counts.get(fam, 0) + 1
        best.setdefault(fam, r)
    return [
        {
            "family": fam,
            "number": r.number,
            "value": r.value,
            "std": r.std,
            "label": r.label(),
            "params": dict(r.params),
            "n_trials": counts[fam],
            "folds": _folds(r),
        }
        for fam, r in best.items()
    ]


def _compare(a: Sequence[dict], b: Sequence[dict]) -> dict[str, Any]:
    """Paired comparison of two per-fold tables over their common folds (a minus b)."""
    ta = {f["fold"]: f for f in a}
    tb = {f["fold"]: f for f in b}
    common = [f for f in ta if f in tb]
    if len(common) < 2:
        return {"note": f"only {len(common)} common fold(s); a paired test needs at least 2 folds"}
    if not fold_sizes_known([ta[f] for f in common]):
        return {"note": "fold sizes (n_train, n_test) missing; no corrected t-test possible"}
    cmp = stats.paired_comparison(
        [ta[f]["accuracy"] for f in common],
        [tb[f]["accuracy"] for f in common],
        folds=common,
        n_train=[ta[f]["n_train"] for f in common],
        n_test=[ta[f]["n_test"] for f in common],
    )
    return {"comparison": cmp.to_dict()}


def family_comparisons(bests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best family's best against each other family's best (``family_bests`` order)."""
    if len(bests) < 2:
        return []
    top = bests[0]
    return [
        {
            "best": {k: top[k] for k in ("family", "number", "value")},
            "other": {k: other[k] for k in ("family", "number", "value")},
            **_compare(top["folds"], other["folds"]),
        }
        for other in bests[1:]
    ]


def load_predictions(run_dir: str | Path) -> dict[str, np.ndarray]:
    """A run's ``predictions.npz`` as arrays (fold, clip, index, y_true, probabilities, ...).

    Raises
    ------
    ConfigError
        When the file is missing or unreadable, naming it.
    """
    path = Path(run_dir) / PREDICTIONS
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such file; an ensemble needs each member's predictions.npz (every run "
            "of this version writes one): run that trial again, or lower --ensemble"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # truncated or not an npz: BadZipFile, EOFError, ValueError, ...
        raise ConfigError(
            f"{path}: cannot read the run's predictions ({type(exc).__name__}: {exc}); the file "
            "is damaged: run that trial again, or lower --ensemble"
        ) from None
    missing = [k for k in _PREDICTION_KEYS if k not in arrays]
    if missing:
        raise ConfigError(
            f"{path}: not a run's predictions (no {', '.join(missing)}); run that trial again, "
            "or lower --ensemble"
        )
    rows = {len(arrays[k]) if arrays[k].ndim else -1 for k in _PREDICTION_KEYS}
    if len(rows) != 1 or arrays["probabilities"].ndim != 2:
        raise ConfigError(
            f"{path}: its arrays disagree in length (or probabilities is not clips x classes); "
            "the file is damaged: run that trial again, or lower --ensemble"
        )
    return arrays


def _per_fold(
    folds: np.ndarray, y_true: np.ndarray, probs: np.ndarray, order: Sequence[str]
) -> list[float]:
    hits = probs.argmax(axis=1) == y_true
    return [float(hits[folds == f].mean()) for f in order]


def ensemble(sweep: Sweep, k: int) -> dict[str, Any] | None:
    """The mean class probabilities of the top-``k`` fold-CV configurations, scored per fold.

    A trial whose parameters equal a better trial's (the sampler drew the configuration again)
    is skipped: the members are ``k`` distinct configurations.

    Rows are matched across runs by (fold, index); every member must have the same test rows
    with the same labels, or ConfigError names the one that differs. The accuracy of a fold is
    the share of its test clips whose mean-probability argmax is the label; the ensemble's value
    is the unweighted mean over folds (as the sweep's objective). When fewer than ``k`` distinct
    configurations exist, all of them are used (``k`` says how many, ``requested`` what was
    asked); when fewer than two, the dict has ``value`` and ``best`` None, no folds, and a
    ``note`` saying why.

    Returns
    -------
    dict
        ``k``, ``requested``, ``members`` (trial numbers, best first), ``folds`` (per-fold
        accuracy, n_train, n_test), ``value``, ``best`` (the single best: number, value,
        per-fold accuracies from its own predictions), and ``comparison`` (ensemble minus best,
        :mod:`urbansound.report.stats`) or ``note``.

    Raises
    ------
    ConfigError
        When a member's ``predictions.npz`` is missing or its rows differ from the best's.
    """
    if k < 2:
        raise ConfigError(f"--ensemble {k}: an ensemble needs at least 2 configurations")
    members: list[TrialRecord] = []
    seen: set[str] = set()
    for r in ranked(sweep.trials, direction=sweep.direction):
        key = json.dumps(r.params, sort_keys=True, default=str)
        if r.leaky or r.run_dir is None or key in seen:
            continue  # a configuration the sampler drew again adds nothing to an ensemble
        seen.add(key)
        members.append(r)
        if len(members) == k:
            break
    if len(members) < 2:
        return {
            "k": len(members),
            "requested": k,
            "members": [r.number for r in members],
            "folds": [],
            "value": None,
            "best": None,
            "note": (
                f"--ensemble {k}: the study has {len(members)} distinct COMPLETE fold-CV "
                "configuration(s) with a run directory; an ensemble needs at least 2"
            ),
        }
    preds = [load_predictions(r.run_dir) for r in members]  # type: ignore[arg-type]
    for p in preds:
        order = np.lexsort((p["index"], p["fold"]))
        for name in _PREDICTION_KEYS:
            p[name] = p[name][order]
    ref = preds[0]
    for r, p in zip(members[1:], preds[1:], strict=True):
        same = (
            len(p["index"]) == len(ref["index"])
            and np.array_equal(p["fold"], ref["fold"])
            and np.array_equal(p["index"], ref["index"])
            and np.array_equal(p["y_true"], ref["y_true"])
            and p["probabilities"].shape == ref["probabilities"].shape
        )
        if not same:
            raise ConfigError(
                f"trial {r.number} ({r.run_dir}) was tested on other clips or folds than trial "
                f"{members[0].number}: an ensemble needs the same folds and data"
            )
    fold_order = list(dict.fromkeys(str(f.fold) for f in members[0].folds)) or sorted(
        set(ref["fold"].tolist())
    )
    fold_order = [f for f in fold_order if (ref["fold"] == f).any()]
    mean = np.mean([p["probabilities"].astype(np.float64) for p in preds], axis=0)
    acc = _per_fold(ref["fold"], ref["y_true"], mean, fold_order)
    best_acc = _per_fold(ref["fold"], ref["y_true"], ref["probabilities"], fold_order)
    sizes = {str(f.fold): f.n_train for f in members[0].folds}
    n_train = [sizes.get(f) for f in fold_order]
    n_test = [int((ref["fold"] == f).sum()) for f in fold_order]
    folds = [
        {"fold": f, "accuracy": a, "n_train": t, "n_test": n}
        for f, a, t, n in zip(fold_order, acc, n_train, n_test, strict=True)
    ]
    best_folds = [{**f, "accuracy": a} for f, a in zip(folds, best_acc, strict=True)]
    out: dict[str, Any] = {
        "k": len(members),
        "requested": k,
        "members": [r.number for r in members],
        "folds": folds,
        "value": float(np.mean(acc)),
        "best": {
            "number": members[0].number,
            "value": members[0].value,
            "folds": [{"fold": f["fold"], "accuracy": f["accuracy"]} for f in best_folds],
            "value_from_predictions": float(np.mean(best_acc)),
        },
    }
    if len(folds) < 2:
        out["note"] = f"only {len(folds)} fold(s); a paired test needs at least 2 folds"
    elif not fold_sizes_known(folds):
        out["note"] = (
            f"training-set sizes missing from trial {members[0].number}'s results.json; "
            "no corrected t-test possible"
        )
    else:
        out.update(_compare(folds, best_folds))
    if math.isnan(out["value"]):
        out["value"] = None
    return out
