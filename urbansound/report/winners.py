"""What a search kept and what it threw away: pruned winners, each family's best, ensembles.

- :func:`pruned_above_best`: PRUNED trials whose last reported value was above the best
  COMPLETE value at the moment they were pruned (a pruner that stops such trials is not safe on
  a noisy per-fold curve).
- :func:`family_bests` / :func:`family_comparisons`: the best configuration of each model family
  (``model.family``: mlp, svm, random_forest, ...) with its per-fold accuracies, and the paired
  comparison (corrected resampled t-test, Wilcoxon; :mod:`urbansound.report.stats`) of the best
  family's best against every other family's best, over their common folds.
- :func:`kind_bests` / :func:`kind_comparisons`: the same for each feature kind
  (``features.kind``: mfcc, logmel, birdnet, onnx): hand-made features against embeddings under
  the same folds and the same paired tests.
- :func:`ensemble`: the average of the top-K configurations' class probabilities
  (``predictions.npz`` of each run directory) under the same folds, scored per fold beside the
  single best configuration and compared with it. Members may differ in feature kind (hand-made
  features beside embeddings): each predicted from its own trial's features, and rows are matched
  by fold and clip, so a clip one member's extraction skipped (``features.on_error=skip``) is left
  out of every member's score rather than misaligning them.
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
    "kind_bests",
    "kind_comparisons",
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
    (the family's COMPLETE trials), ``folds`` (per-fold accuracy, n_train, n_test) and ``kind``
    (its feature kind).
    """
    return _bests(sweep, family_of, "family")


def kind_bests(sweep: Sweep) -> list[dict[str, Any]]:
    """The best COMPLETE fold-CV trial of each feature kind, best kind first: entries as
    :func:`family_bests`' with ``kind`` the group and ``family`` the model family of that best."""
    return _bests(sweep, lambda r: r.feature_kind, "kind")


def _bests(sweep: Sweep, group_of: Any, name: str) -> list[dict[str, Any]]:
    """The best COMPLETE fold-CV trial of each group ``group_of(record)``, best group first."""
    best: dict[str, TrialRecord] = {}
    counts: dict[str, int] = {}
    for r in ranked(sweep.trials, direction=sweep.direction):
        if r.leaky:
            continue
        group = group_of(r)
        counts[group] = counts.get(group, 0) + 1
        best.setdefault(group, r)
    return [
        {
            "family": family_of(r),
            "kind": r.feature_kind,
            name: group,
            "number": r.number,
            "value": r.value,
            "std": r.std,
            "label": r.label(),
            "params": dict(r.params),
            "n_trials": counts[group],
            "folds": _folds(r),
        }
        for group, r in best.items()
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
    return _group_comparisons(bests, "family")


def kind_comparisons(bests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best feature kind's best against each other kind's best (``kind_bests`` order)."""
    return _group_comparisons(bests, "kind")


def _group_comparisons(bests: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    if len(bests) < 2:
        return []
    top = bests[0]
    keys = (name, "number", "value", "family" if name == "kind" else "kind")
    return [
        {
            "best": {k: top[k] for k in keys},
            "other": {k: other[k] for k in keys},
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


def _skipped_clips(rec: TrialRecord) -> set[str]:
    """The file names of the clips a run's extraction left out (``results.json``'s ``skipped``)."""
    if rec.results is None:
        return set()
    return {Path(str(s.get("path", ""))).name for s in rec.results.skipped}


def _aligned(members: Sequence[TrialRecord]) -> tuple[list[dict[str, np.ndarray]], list[dict]]:
    """Each member's predictions on the (fold, clip) rows every member tested, in one order.

    Returns the members' arrays (rows sorted by fold, then clip) and ``left_out``: for each
    member that skipped clips another member tested, ``{"number", "features", "clips"}`` (sorted
    file names). Raises ConfigError naming the first member whose rows differ from the best's by
    more than the clips either of them skipped.
    """
    preds = [load_predictions(r.run_dir) for r in members]  # type: ignore[arg-type]
    keys: list[set[tuple[str, str]]] = []
    for r, p in zip(members, preds, strict=True):
        rows = set(zip(p["fold"].astype(str).tolist(), p["clip"].astype(str).tolist(), strict=True))
        if len(rows) != len(p["clip"]):
            raise ConfigError(
                f"{Path(r.run_dir or '.') / PREDICTIONS}: a clip appears twice in one fold; the "
                "file is damaged: run that trial again, or lower --ensemble"
            )
        keys.append(rows)
    best_skipped = _skipped_clips(members[0])
    for r, rows in zip(members[1:], keys[1:], strict=True):
        # a clip only one of them tested must be one the other's extraction skipped
        unexplained = {c for _, c in keys[0] - rows} - _skipped_clips(r)
        unexplained |= {c for _, c in rows - keys[0]} - best_skipped
        if unexplained:
            raise ConfigError(
                f"trial {r.number} ({r.run_dir}) was tested on other clips or folds than trial "
                f"{members[0].number}: an ensemble needs the same folds and data"
            )
    every = set().union(*keys)
    left_out = []
    for r, rows in zip(members, keys, strict=True):
        missing = every - rows
        if missing:
            left_out.append(
                {
                    "number": r.number,
                    "features": r.feature_kind,
                    "clips": sorted({clip for _, clip in missing}),
                }
            )
    common = set.intersection(*keys)
    for p in preds:
        fold, clip = p["fold"].astype(str), p["clip"].astype(str)
        keep = np.array([(f, c) in common for f, c in zip(fold, clip, strict=True)], dtype=bool)
        order = np.flatnonzero(keep)[np.lexsort((clip[keep], fold[keep]))]
        for name in _PREDICTION_KEYS:
            p[name] = p[name][order]
    ref, names = preds[0], preds[0].get("class_names")
    for r, p in zip(members[1:], preds[1:], strict=True):
        other_names = p.get("class_names")
        same = (
            np.array_equal(p["y_true"], ref["y_true"])
            and p["probabilities"].shape == ref["probabilities"].shape
            and (names is None or other_names is None or np.array_equal(names, other_names))
        )
        if not same:
            raise ConfigError(
                f"trial {r.number} ({r.run_dir}) labels its clips with other classes than trial "
                f"{members[0].number}: an ensemble needs the same folds and data"
            )
    return preds, left_out


def _per_fold(
    folds: np.ndarray, y_true: np.ndarray, probs: np.ndarray, order: Sequence[str]
) -> list[float]:
    hits = probs.argmax(axis=1) == y_true
    return [float(hits[folds == f].mean()) for f in order]


def ensemble(sweep: Sweep, k: int) -> dict[str, Any] | None:
    """The mean class probabilities of the top-``k`` fold-CV configurations, scored per fold.

    A trial whose parameters equal a better trial's (the sampler drew the configuration again)
    is skipped: the members are ``k`` distinct configurations.

    Members may differ in feature kind and family: each contributes the probabilities its own
    trial predicted from its own features. Rows are matched across runs by (fold, clip); a member
    may lack a clip that another tested only when its ``results.json`` lists that clip as skipped
    (its extraction could not read it, ``features.on_error=skip``), and such clips are left out of
    every member's score (``left_out``), the single best's included, so the paired comparison is
    on the same clips. Any other difference (another clip, fold or label, other classes) raises
    ConfigError naming the member. The accuracy of a fold is the share of its test clips whose
    mean-probability argmax is the label; the ensemble's value is the unweighted mean over folds
    (as the sweep's objective). When fewer than ``k`` distinct configurations exist, all of them
    are used (``k`` says how many, ``requested`` what was asked); when fewer than two, the dict
    has ``value`` and ``best`` None, no folds, and a ``note`` saying why.

    Returns
    -------
    dict
        ``k``, ``requested``, ``members`` (trial numbers, best first), ``member_features`` and
        ``member_families`` (each member's feature kind and model family, in that order),
        ``n_clips`` (test clips scored), ``left_out`` (``[{"number", "features", "clips"}]``:
        the clips a member skipped, which no member is scored on), ``folds`` (per-fold
        accuracy, n_train, n_test), ``value``, ``best`` (the single best: number, value,
        per-fold accuracies from its own predictions on the scored clips), and ``comparison``
        (ensemble minus best, :mod:`urbansound.report.stats`) or ``note``.

    Raises
    ------
    ConfigError
        When a member's ``predictions.npz`` is missing or damaged, or its rows differ from the
        other members' by more than the clips its extraction skipped.
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
    preds, left_out = _aligned(members)
    ref = preds[0]
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
        "member_features": [r.feature_kind for r in members],
        "member_families": [family_of(r) for r in members],
        "n_clips": len(ref["index"]),
        "left_out": left_out,
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
